"""The doctor's result types, its error-to-result rule and the CLI's rendering (pure)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import cli.main
from cli.commands.doctor import format_report
from shared.doctor import Check, Outcome, Report, Role, attempt
from shared.errors import PermissionDeniedError, TransientError, UnreachableError


def test_a_permission_error_with_a_role_reads_missing_role_on_scope() -> None:
    """401/403 in a check with a role: "missing <role> on <scope>" and the grant as the fix."""
    def denied() -> Check:
        raise PermissionDeniedError("listing blobs of incoming: not authorised (403)")

    [row] = attempt("role.blob", denied, role=Role("Storage Blob Data Owner", "account st"))
    assert row.outcome == Outcome.FAIL
    assert row.what == ("missing Storage Blob Data Owner on account st: listing blobs of "
                        "incoming: not authorised (403)")
    assert row.fix == "grant the identity Storage Blob Data Owner on account st"


def test_tuneloop_errors_keep_their_message_and_hint() -> None:
    """A transient or unreachable error becomes a failed row with the error's own words."""
    def down() -> Check:
        raise UnreachableError("storage at http://127.0.0.1:1: cannot connect")

    def busy() -> Check:
        raise TransientError("HTTP 503", hint="try again in a minute")

    [first] = attempt("azurite", down)
    [second] = attempt("x", busy)
    assert first.outcome == Outcome.FAIL
    assert first.what == "storage at http://127.0.0.1:1: cannot connect"
    assert first.fix
    assert second.fix == "try again in a minute"


def test_a_broken_check_is_a_failed_row_not_a_crash() -> None:
    """An unexpected exception (a bug in a check) fails that row; the doctor goes on."""
    def broken() -> Check:
        raise KeyError("properties")

    [row] = attempt("datastore", broken)
    assert row.outcome == Outcome.FAIL
    assert "KeyError" in row.what
    assert "tuneloop -v doctor" in row.fix


def test_an_error_half_way_through_a_check_of_several_rows_is_caught() -> None:
    """A check yielding rows that raises after the first still gives one failed row."""
    def rows() -> Iterator[Check]:
        yield Check("port.blob", Outcome.OK, "free")
        raise UnreachableError("gone")

    [row] = attempt("ports", rows)
    assert row.name == "ports"
    assert row.outcome == Outcome.FAIL


def test_warnings_pass_and_a_failure_does_not() -> None:
    """Exit 0 needs no failed row; warnings are allowed."""
    ok, warn = Check("a", Outcome.OK, "fine"), Check("b", Outcome.WARN, "hm", "look")
    fail = Check("c", Outcome.FAIL, "broken", "fix it")
    assert Report("local", (ok, warn)).passed
    assert not Report("local", (ok, warn, fail)).passed
    assert Report("local", (ok, warn, fail)).to_dict()["counts"] == {"ok": 1, "warn": 1,
                                                                       "fail": 1, "skip": 0}


def test_the_table_marks_each_row_and_gives_fixes_only_where_needed() -> None:
    """✓ ok, ! warning, ✗ failure; a fix line under each non-ok row; a summary last."""
    report = Report("azureml", (
        Check("workspace", Outcome.OK, "reachable", "never shown"),
        Check("ledger", Outcome.WARN, "table missing", "created on first use"),
        Check("role.blob", Outcome.FAIL, "missing X on Y", "grant X on Y"),
    ))
    lines = format_report(report).splitlines()
    assert lines[0].startswith("✓ workspace")
    assert lines[1].startswith("! ledger")
    assert lines[2].strip() == "fix: created on first use"
    assert lines[3].startswith("✗ role.blob")
    assert lines[4].strip() == "fix: grant X on Y"
    assert lines[5] == "azureml: not ready: 1 ok, 1 warning(s), 1 failed"


def test_skipped_rows_are_marked_and_counted() -> None:
    """A row not checked because another failed: "-" and "N not checked" in the summary."""
    report = Report("azureml", (
        Check("workspace", Outcome.FAIL, "not found", "fix the settings"),
        Check("datastore", Outcome.SKIP, "not checked", "fix the workspace check first"),
    ))
    lines = format_report(report).splitlines()
    assert lines[2].startswith("- datastore")
    assert lines[-1].endswith("1 failed, 1 not checked")
    assert "never shown" not in "\n".join(lines)


@pytest.mark.usefixtures("clean_env")
def test_azureml_without_a_workspace_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """TUNELOOP_PLATFORM=azureml with no workspace settings: one config_error line, exit 2."""
    monkeypatch.setenv("TUNELOOP_PLATFORM", "azureml")
    assert cli.main.main(["doctor"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("tuneloop doctor: config_error: TUNELOOP_PLATFORM=azureml but")
    assert "TUNELOOP_WORKSPACE_NAME" in err[0]
