"""The ledger's outbox: a run's lifecycle event is written in the same entity write as its
state change, found again through the outbox rows of the active table, delivered once per id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.errors import TransientError
from shared.ledger import INDEX_GRACE, OUTBOX_PARTITION, ReleaseRecord, RunRecord, RunState
from shared.lifecycle import Origin
from tests.fakes.ledger import FakeLedger

ORIGIN = Origin("0a1b2c3d")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def ids(rec: RunRecord) -> list[str]:
    return [str(e["id"]) for e in rec.outbox.pending]


def outbox_rows(ledger: FakeLedger) -> list[str]:
    rows = ledger.active.query_entities("PartitionKey eq @pk", parameters={"pk": OUTBOX_PARTITION})
    return [str(r["RowKey"]) for r in rows]


def test_without_events_nothing_is_recorded() -> None:
    """No origin (no endpoint configured): no outbox column, no outbox row, no extra request."""
    ledger = FakeLedger()
    rec = ledger.create("chat", "r1", RunState.ACCEPTED)
    rec = ledger.advance(rec, RunState.SUBMITTED)
    assert "outbox" not in ledger.table.get_entity("chat", "r1")
    assert outbox_rows(ledger) == []
    assert ledger.active.calls["upsert_entity"] == 1  # the in-flight index row only


def test_each_state_change_writes_its_event_in_the_same_entity_write() -> None:
    """create and advance put the state's event in the run's own row (one write each), and
    the first pending event puts the run's outbox row; the next ones reuse it."""
    ledger = FakeLedger(events=ORIGIN)
    rec = ledger.create("chat", "r1", RunState.ACCEPTED, note="valid")
    assert ledger.table.calls["create_entity"] == 1
    rec = ledger.advance(rec, RunState.SUBMITTED)
    assert ledger.table.calls["update_entity"] == 1
    stored = ledger.get("chat", "r1")
    assert ids(stored) == ["r1.accepted.1", "r1.submitted.1"]
    assert stored.outbox.pending[0]["data"]["reason"] == "valid"
    assert stored.outbox.pending[1]["time"] == stored.timeline[-1]["at"]
    assert outbox_rows(ledger) == ["o:chat:r1"]
    # 1 in-flight index row + 1 outbox row (not one per event)
    assert ledger.active.calls["upsert_entity"] == 2


def test_a_crash_before_the_publish_is_delivered_later_once_per_id() -> None:
    """The process dies after the state change (nothing published): another instance finds
    the run through the outbox rows, settles it, and a second pass finds nothing."""
    writer = FakeLedger(events=ORIGIN)
    rec = writer.create("chat", "r1", RunState.ACCEPTED)
    writer.advance(rec, RunState.SUBMITTED)
    # the writer crashed here; the reconciler's ledger over the same tables:
    reader = FakeLedger(writer.table, active=writer.active, events=ORIGIN)
    found = reader.undelivered()
    assert [r.run_id for r in found] == ["r1"]
    assert ids(found[0]) == ["r1.accepted.1", "r1.submitted.1"]
    settled = reader.settle_events(found[0], sent=ids(found[0]))
    assert settled.outbox.pending == []
    assert outbox_rows(reader) == []
    assert reader.undelivered() == []
    # the counts stay: the next event of a kind seen before would have attempt 2
    assert reader.get("chat", "r1").outbox.counts == {"accepted": 1, "submitted": 1}


def test_a_crash_between_the_outbox_row_and_the_run_write_leaves_a_row_that_is_repaired() -> None:
    """The outbox row is written before the run: if the run write fails the row points at
    a run with nothing pending; the reader keeps it while young, removes it once aged."""
    clock = Clock()
    ledger = FakeLedger(events=ORIGIN, clock=clock)
    rec = ledger.create("chat", "r1", RunState.RECEIVED)
    ledger.settle_events(rec, sent=ids(rec))
    rec = ledger.get("chat", "r1")
    ledger.table.fail_next(ServiceRequestError("connection reset"), method="update_entity")
    with pytest.raises(TransientError):
        ledger.advance(rec, RunState.ACCEPTED)
    assert ledger.table.faults_fired == 1
    assert outbox_rows(ledger) == ["o:chat:r1"]
    assert ledger.undelivered() == []
    assert outbox_rows(ledger) == ["o:chat:r1"]  # young: its writer may be between writes
    clock.now += INDEX_GRACE + timedelta(seconds=1)
    assert ledger.undelivered() == []
    assert outbox_rows(ledger) == []


def test_an_event_added_during_a_drain_keeps_the_row_and_is_delivered_next() -> None:
    """A drain that read the run before a new state change settles what it sent (re-reading
    the run), and the outbox row stays for the new event."""
    ledger = FakeLedger(events=ORIGIN)
    rec = ledger.create("chat", "r1", RunState.ACCEPTED)
    drained = ledger.undelivered()[0]
    ledger.advance(rec, RunState.SUBMITTED)  # between the drain's read and its settle
    settled = ledger.settle_events(drained, sent=["r1.accepted.1"])
    assert ids(settled) == ["r1.submitted.1"]
    assert outbox_rows(ledger) == ["o:chat:r1"]
    again = ledger.undelivered()
    assert [ids(r) for r in again] == [["r1.submitted.1"]]
    ledger.settle_events(again[0], sent=ids(again[0]))
    assert outbox_rows(ledger) == []


def test_a_row_rewritten_after_the_drain_read_it_is_not_deleted() -> None:
    """A drain whose run emptied, then got a new event (its writer rewrote the outbox row),
    does not delete the new row: the delete is guarded by the ETag it read."""
    ledger = FakeLedger(events=ORIGIN)
    ledger.create("chat", "r1", RunState.ACCEPTED)
    drained = ledger.undelivered()[0]
    ledger._put_outbox(ledger.get("chat", "r1"))  # a writer's upsert, before its run write
    ledger.settle_events(drained, sent=ids(drained))
    assert outbox_rows(ledger) == ["o:chat:r1"]


def test_refused_events_move_to_the_failed_list_and_transient_ones_back_off() -> None:
    """settle_events: failed ids leave pending for the failed list with their reason; a
    transient failure counts an attempt and a retry time, cleared when something is sent."""
    clock = Clock()
    ledger = FakeLedger(events=ORIGIN, clock=clock)
    rec = ledger.create("chat", "r1", RunState.ACCEPTED)
    rec = ledger.advance(rec, RunState.SUBMITTED)
    later = clock.now + timedelta(seconds=30)
    rec = ledger.settle_events(rec, retry_at=later)
    assert (rec.outbox.attempts, rec.outbox.retry_at) == (1, later.isoformat())
    rec = ledger.settle_events(rec, sent=["r1.submitted.1"],
                               failed={"r1.accepted.1": "HTTP 400 (bad event)"})
    stored = ledger.get("chat", "r1")
    assert stored.outbox.pending == []
    assert (stored.outbox.attempts, stored.outbox.retry_at) == (0, None)
    assert [(f["event"]["id"], f["error"]) for f in stored.outbox.failed] == [
        ("r1.accepted.1", "HTTP 400 (bad event)")
    ]
    assert outbox_rows(ledger) == []


def test_an_exam_outcome_and_a_swept_endpoint_are_events_too() -> None:
    """A new exam outcome (update or advance) adds tuneloop.run.examined once; the sweeper's
    retirement adds tuneloop.endpoint.swept after tuneloop.run.retired."""
    ledger = FakeLedger(events=ORIGIN)
    rec = ledger.create("chat", "r1", RunState.DEPLOYED)
    exam = {"metric": "chrf", "candidate": 50.0, "champion": None, "decision": "promote"}
    rec = ledger.update(rec, release=ReleaseRecord(exam=exam, promoting=True))
    rec = ledger.update(rec, release=ReleaseRecord(exam=exam, promoting=True))  # unchanged
    rec = ledger.advance(rec, RunState.PROMOTED)
    rec = ledger.advance(rec, RunState.RETIRED, reason="idle", events=("swept",))
    assert ids(rec) == [
        "r1.deployed.1", "r1.examined.1", "r1.promoted.1", "r1.retired.1", "r1.swept.1"
    ]
    swept = rec.outbox.pending[-1]
    assert swept["type"] == "tuneloop.endpoint.swept"
    assert swept["data"]["reason"] == "idle"
    assert rec.outbox.pending[1]["data"]["exam"]["candidate"] == 50.0
