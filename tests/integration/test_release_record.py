"""The release's typed fields on Azurite: rows written before they were typed read and write back
the same columns; the release's own writes round-trip."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clients import Clients
from shared.errors import NotFoundError
from shared.leases import acquire_line
from shared.ledger import RunState
from shared.release import ReleaseContext, advance_release
from shared.release.context import advance

pytestmark = pytest.mark.integration

# A HELD run's row as the untyped release wrote it: counts as Int32, flags as booleans,
# metrics as JSON text, the promotion time as text.
OLD_ENTITY: dict[str, Any] = {
    "PartitionKey": "chat",
    "RowKey": "tl-chat-2",
    "state": "DEPLOYED",
    "timeline": json.dumps([{"at": "2026-11-30T10:00:00.000+00:00", "state": "DEPLOYED"}]),
    "blob": "incoming/chat/b.jsonl",
    "created": "2026-11-30T09:00:00.000+00:00",
    "updated": "2026-11-30T10:00:00.000+00:00",
    "metrics__json": '{"eval_loss":0.5,"train_loss":0.75}',
    "eval_loss": 0.5,
    "model_name": "chat",
    "model_version": "2",
    "model_id": "azureml:chat:2",
    "endpoint": "tl-chat",
    "deployment": "v2",
    "endpoint_state": "Succeeded",
    "deployment_state": "Succeeded",
    "instance_checked": True,
    "failures": 2,
    "smoke_attempts": 1,
    "last_error": "the deployment did not answer",
    "promoted_at": "2026-11-30T10:00:00.123456+00:00",
}


def stored(clients: Clients, line: str, run_id: str) -> dict[str, Any]:
    return dict(clients.ledger_table.get_entity(line, run_id))


def test_an_old_row_reads_typed_and_writes_back_the_same_columns(clients: Clients) -> None:
    """A row written by the untyped release reads as typed fields, and a later write keeps
    every column (name, value and type) it had."""
    clients.ledger.ensure_table()
    clients.ledger_table.create_entity(OLD_ENTITY)
    rec = clients.ledger.get("chat", "tl-chat-2")
    assert (rec.release.failures, rec.release.smoke_attempts) == (2, 1)
    assert rec.release.instance_checked is True
    assert rec.release.metrics == {"eval_loss": 0.5, "train_loss": 0.75}
    assert rec.release.promoted_at == datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC)
    clients.ledger.update(rec, note="touched")
    after = stored(clients, "chat", "tl-chat-2")
    for key, value in OLD_ENTITY.items():
        if key not in ("updated", "timeline"):
            assert (key, after[key], type(after[key])) == (key, value, type(value))


def test_moving_on_clears_the_step_failures_as_before(
    clients: Clients, ctx: ReleaseContext
) -> None:
    """When a run moves on, its failure count and last error leave the row (as the untyped
    release's ``failures=None`` did), and the other release columns stay."""
    clients.ledger_table.create_entity(OLD_ENTITY)
    rec = clients.ledger.get("chat", "tl-chat-2")
    advance(ctx, rec, RunState.HELD, reason="held for the test")
    after = stored(clients, "chat", "tl-chat-2")
    assert "failures" not in after
    assert "last_error" not in after
    assert (after["deployment"], after["smoke_attempts"]) == ("v2", 1)


def test_typed_writes_round_trip(clients: Clients) -> None:
    """What the release writes typed reads back equal, through the table."""
    ledger = clients.ledger
    rec = ledger.create("chat", "tl-chat-3", RunState.TRAINED)
    release = replace(
        rec.release, model_version="7", eval_loss=0.25, metrics={"eval_loss": 0.25},
        promoting=True, failures=1, promoted_at=datetime(2026, 12, 1, 8, 30, tzinfo=UTC),
    )
    ledger.update(rec, release=release)
    assert ledger.get("chat", "tl-chat-3").release == release


def test_ingest_style_keyword_writes_land_in_the_typed_fields(clients: Clients) -> None:
    """A release column passed as a keyword (ingest records ``studio_url`` on submit) is typed
    on the record and stored as the same column."""
    ledger = clients.ledger
    rec = ledger.create("chat", "tl-chat-4", RunState.ACCEPTED)
    rec = ledger.advance(rec, RunState.SUBMITTED, studio_url="https://studio/x", job_name="j")
    assert rec.release.studio_url == "https://studio/x"
    again = ledger.get("chat", "tl-chat-4")
    assert (again.release.studio_url, again.get("job_name")) == ("https://studio/x", "j")
    assert stored(clients, "chat", "tl-chat-4")["studio_url"] == "https://studio/x"


def test_a_run_missing_its_recorded_names_is_held_and_frees_the_line(
    clients: Clients, ctx: ReleaseContext
) -> None:
    """A mid-release row without its endpoint (edited by hand) fails its step until HELD,
    naming what is missing, instead of sending a made-up name to the platform."""
    rec = clients.ledger.create("chat", "tl-chat-5", RunState.REGISTERED)
    rec = clients.ledger.update(rec, release=replace(rec.release, model_version="1"))
    for _ in range(3):
        with contextlib.suppress(NotFoundError):
            advance_release(ctx, clients.ledger.get("chat", "tl-chat-5"))
    held = clients.ledger.get("chat", "tl-chat-5")
    assert held.state is RunState.HELD
    assert "has no endpoint recorded" in str(held.reason)
    assert acquire_line(clients.ledger, "chat", "tl-chat-6", "w", now=datetime.now(UTC))
