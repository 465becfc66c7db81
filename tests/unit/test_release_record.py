"""The release's typed fields on a run record: read from stored columns, written back the same."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from shared.ledger import RELEASE_COLUMNS, ReleaseRecord, RunRecord, RunState

# The columns a promoted run's row had before the release's fields were typed (ingest's
# columns next to them stay untyped in ``fields``).
OLD_COLUMNS: dict[str, Any] = {
    "blob": "incoming/chat/a.jsonl",
    "created": "2026-11-30T09:00:00.000+00:00",
    "updated": "2026-11-30T10:00:00.500+00:00",
    "job_name": "tl-chat-1",
    "studio_url": "https://ml.azure.com/runs/tl-chat-1",
    "metrics": {"eval_loss": 0.5, "train_loss": 0.75},
    "eval_loss": 0.5,
    "model_name": "chat",
    "model_version": "3",
    "model_id": "azureml:chat:3",
    "endpoint": "tl-chat",
    "deployment": "v3",
    "endpoint_state": "Succeeded",
    "deployment_state": "Succeeded",
    "scoring_uri": "http://127.0.0.1:1/score",
    "instance_checked": True,
    "promoting": True,
    "gate": "promotion auto",
    "previous_run": "tl-chat-0",
    "previous_deployment": "v2",
    "promoted_at": "2026-11-30T10:00:00.123456+00:00",
}


def old_run(**columns: Any) -> RunRecord:
    return RunRecord("chat", "tl-chat-1", RunState.PROMOTED, fields={**OLD_COLUMNS, **columns})


def test_an_old_rows_release_columns_read_as_typed_fields() -> None:
    """Release columns stored untyped become typed attributes; other columns stay in fields."""
    rec = old_run()
    assert rec.release == ReleaseRecord(
        studio_url="https://ml.azure.com/runs/tl-chat-1",
        metrics={"eval_loss": 0.5, "train_loss": 0.75},
        eval_loss=0.5,
        model_name="chat",
        model_version="3",
        model_id="azureml:chat:3",
        endpoint="tl-chat",
        deployment="v3",
        endpoint_state="Succeeded",
        deployment_state="Succeeded",
        scoring_uri="http://127.0.0.1:1/score",
        instance_checked=True,
        promoting=True,
        gate="promotion auto",
        previous_run="tl-chat-0",
        previous_deployment="v2",
        promoted_at=datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC),
    )
    assert set(rec.fields) == {"blob", "created", "updated", "job_name"}


def test_the_stored_shape_is_unchanged() -> None:
    """to_dict (run.json, --json) gives the same keys and values the untyped row had."""
    rec = old_run()
    assert rec.to_dict() == {
        "line": "chat", "run_id": "tl-chat-1", "state": "PROMOTED", **OLD_COLUMNS, "timeline": [],
    }


def test_get_reads_release_columns_as_stored() -> None:
    """get() by column name still works for release columns (times as ISO text, unset as
    the default), so readers of the untyped record keep working."""
    rec = old_run()
    assert rec.get("deployment") == "v3"
    assert rec.get("promoted_at") == "2026-11-30T10:00:00.123456+00:00"
    assert rec.get("failures") is None
    assert rec.get("held_reason", "-") == "-"


def test_unset_values_are_not_stored() -> None:
    """None, False and zero counts write no column (as the untyped ledger dropped None)."""
    assert ReleaseRecord().to_columns() == {}
    reset = replace(ReleaseRecord(failures=2, last_error="boom", promoting=True), failures=0,
                    last_error=None, promoting=False)
    assert reset.to_columns() == {}


def test_reading_is_lenient() -> None:
    """Text counts and flags, an unreadable loss and a time without zone still read."""
    release = ReleaseRecord.from_columns({
        "failures": "2", "smoke_attempts": None, "promoting": "true", "instance_checked": False,
        "eval_loss": "n/a", "promoted_at": "2026-11-30T10:00:00", "metrics": '{"eval_loss": 1}',
        "model_version": 3, "unrelated": "x",
    })
    assert release == ReleaseRecord(
        failures=2, promoting=True, model_version="3", metrics={"eval_loss": 1.0},
        promoted_at=datetime(2026, 11, 30, 10, tzinfo=UTC),
    )


def test_release_columns_given_as_fields_go_to_the_typed_record() -> None:
    """A release column given in fields (an ingest-style write) lands in ``release`` only."""
    rec = RunRecord("chat", "r", RunState.SUBMITTED, fields={"studio_url": "u", "job_name": "r"})
    assert rec.release.studio_url == "u"
    assert rec.fields == {"job_name": "r"}
    assert "studio_url" in RELEASE_COLUMNS
    assert "job_name" not in RELEASE_COLUMNS
