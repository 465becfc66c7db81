"""The pure parts of ingest: which blobs are datasets, delivery identity, claim leases, reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.dataset import DatasetInfo, Issue, ValidationReport
from shared.ingest import (
    LEASE,
    DatasetPath,
    _ingest_markdown,
    _reason,
    blob_from_subject,
    claim_status,
    delivery_key,
    delivery_run_id,
    parse_dataset_path,
)
from shared.ledger import RunRecord, RunState
from shared.reports import RUN_SCHEMA, run_report, run_report_ref
from shared.settings import Settings

NOW = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("blob", "line", "name"),
    [
        ("chat/data.jsonl", "chat", "data"),
        ("support-bot/2026/11/week-47.jsonl", "support-bot", "2026/11/week-47"),
        ("a.b_c/x.JSONL", "a.b_c", "x"),
    ],
)
def test_dataset_paths_split_into_line_and_name(blob: str, line: str, name: str) -> None:
    """The first folder is the line; the rest, without .jsonl, names the dataset."""
    assert parse_dataset_path(blob) == DatasetPath(blob=blob, line=line, name=name)


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        ("chat/notes.txt", "not a .jsonl"),
        ("data.jsonl", "not under a <line>/"),
        ("bad line/x.jsonl", "not a valid line"),
        ("-dash/x.jsonl", "not a valid line"),
        ("chat/.jsonl", "empty"),
        ("chat//x.jsonl", "empty"),
    ],
)
def test_other_blobs_are_not_datasets(blob: str, why: str) -> None:
    """Anything else is refused with a reason the ignore log line shows."""
    with pytest.raises(ValueError, match=why):
        parse_dataset_path(blob)


def test_delivery_key_names_one_blob_version() -> None:
    """The key is stable for a version and differs across versions, names and containers."""
    key = delivery_key("incoming", "chat/a.jsonl", '"0x1"')
    assert key == delivery_key("incoming", "chat/a.jsonl", '"0x1"')
    assert len({key, delivery_key("incoming", "chat/a.jsonl", '"0x2"'),
                delivery_key("incoming", "chat/b.jsonl", '"0x1"'),
                delivery_key("other", "chat/a.jsonl", '"0x1"')}) == 4
    assert delivery_run_id("Chat Bot", key) == f"in-chat-bot-{key[:16]}"


def test_claim_status_follows_the_heartbeat_and_the_lease() -> None:
    """A claim is done when marked, busy while its heartbeat is fresh, stale after the lease."""
    fresh = (NOW - timedelta(minutes=1)).isoformat()
    old = (NOW - LEASE - timedelta(seconds=1)).isoformat()
    assert claim_status({"done": True, "heartbeat": fresh}, now=NOW, lease=LEASE) == "done"
    assert claim_status({"heartbeat": fresh}, now=NOW, lease=LEASE) == "busy"
    assert claim_status({"heartbeat": old}, now=NOW, lease=LEASE) == "stale"
    assert claim_status({"claimed": fresh}, now=NOW, lease=LEASE) == "busy"
    assert claim_status({}, now=NOW, lease=LEASE) == "stale"


def _report(errors: dict[str, list[int]]) -> ValidationReport:
    issues = sorted(
        (Issue(line, code, f"{code} here") for code, lines in errors.items() for line in lines),
        key=lambda i: i.line or 0,
    )
    return ValidationReport(
        valid=not errors,
        dataset=DatasetInfo(name="chat/a.jsonl", bytes=10, sha256="0" * 64, lines=9),
        errors=issues,
        error_counts={code: len(lines) for code, lines in errors.items()},
    )


def test_rejection_reason_names_the_top_codes_and_the_first_line() -> None:
    """The REJECTED reason is short: top codes by count, and where the first error is."""
    reason = _reason(_report({"invalid_json": [7, 8, 9], "empty_messages": [3], "x": [5],
                              "y": [6]}))
    assert reason == "invalid dataset: invalid_json×3, empty_messages×1, x×1; first at line 3"


def test_ingest_section_of_the_summary_says_what_happened() -> None:
    """The Markdown summary ends with what ingest did and what the user can do."""
    assert "moved to `rejected/chat/a.jsonl`" in _ingest_markdown(
        {"outcome": "rejected", "quarantined": "rejected/chat/a.jsonl"})
    assert "run `tl-1`" in _ingest_markdown(
        {"outcome": "duplicate", "duplicate_of": "tl-1", "duplicate_of_blob": "incoming/x"})
    failed = _ingest_markdown({"outcome": "failed", "error": {
        "code": "plan_error", "message": "bad", "hint": "fix TUNELOOP_LINE_OVERRIDES"}})
    assert "(`plan_error`): bad. fix TUNELOOP_LINE_OVERRIDES" in failed
    assert _ingest_markdown({}) == ""


def test_run_report_has_the_timeline_and_hides_bookkeeping() -> None:
    """run.json carries state, reason and timeline; delivery keys and ETags stay out."""
    rec = RunRecord(
        line="chat", run_id="tl-x", state=RunState.REJECTED,
        fields={"name": "a", "report_prefix": "chat/a", "delivery": "k", "etag": '"0x1"',
                "reason": "invalid dataset: invalid_json×1"},
        timeline=[{"at": NOW.isoformat(), "state": "RECEIVED"},
                  {"at": NOW.isoformat(), "state": "REJECTED"}],
    )
    doc = run_report(rec)
    assert doc["schema"] == RUN_SCHEMA
    assert doc["state"] == "REJECTED"
    assert [e["state"] for e in doc["timeline"]] == ["RECEIVED", "REJECTED"]
    assert "delivery" not in doc
    assert "etag" not in doc
    settings = Settings(reports_container="reports")
    assert str(run_report_ref(settings, rec)) == "reports/chat/a/run.json"
    rec.fields.pop("report_prefix")
    assert str(run_report_ref(settings, rec)) == "reports/chat/a/run.json"
    rec.fields.pop("name")
    assert str(run_report_ref(settings, rec)) == "reports/chat/runs/tl-x/run.json"


def test_event_subjects_name_container_and_blob() -> None:
    """A BlobCreated subject splits into container and the full blob name (folders kept)."""
    subject = "/blobServices/default/containers/incoming/blobs/support-bot/2026/a.jsonl"
    assert blob_from_subject(subject) == ("incoming", "support-bot/2026/a.jsonl")
    for bad in ("/blobServices/default/containers/incoming", "/queueServices/x/blobs/y",
                "/blobServices/default/containers/incoming/blobs/"):
        with pytest.raises(ValueError, match="not a blob event subject"):
            blob_from_subject(bad)
