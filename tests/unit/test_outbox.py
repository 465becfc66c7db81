"""Draining the outbox: pending events go out through the publisher port once per id; transient
failures back off and stay pending; permanent refusals stay visible as failed events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ServiceRequestError

from shared.ledger import OUTBOX_PARTITION, RunState
from shared.lifecycle import Origin
from shared.outbox import BACKOFF_MAX, backoff, drain, drain_after, failed_events
from tests.fakes.events import FakePublisher
from tests.fakes.ledger import FakeLedger

ORIGIN = Origin("0a1b2c3d")
NOW = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def outbox_rows(ledger: FakeLedger) -> list[str]:
    rows = ledger.active.query_entities("PartitionKey eq @pk", parameters={"pk": OUTBOX_PARTITION})
    return [str(r["RowKey"]) for r in rows]


def run_to_submitted(ledger: FakeLedger, run: str = "r1") -> None:
    rec = ledger.create("chat", run, RunState.ACCEPTED)
    ledger.advance(rec, RunState.SUBMITTED)


def test_a_step_is_drained_right_after_it() -> None:
    """drain_after sends the step's events in one batch, clears the outbox and its row;
    the cost is the outbox row (1 upsert, 1 delete) and one run write."""
    ledger = FakeLedger(events=ORIGIN)
    publisher = FakePublisher()
    rec = ledger.create("chat", "r1", RunState.ACCEPTED)
    rec = ledger.advance(rec, RunState.SUBMITTED)
    before = ledger.table.calls.copy(), ledger.active.calls.copy()
    report = drain_after(ledger, publisher, [rec], now=NOW)
    table, active = ledger.table.calls - before[0], ledger.active.calls - before[1]
    assert dict(table) == {"update_entity": 1}
    assert dict(active) == {"delete_entity": 1}
    assert (report.sent, report.failed, report.pending) == (2, 0, 0)
    assert publisher.ids == ["r1.accepted.1", "r1.submitted.1"]
    assert publisher.calls == 1
    assert ledger.get("chat", "r1").outbox.pending == []
    assert outbox_rows(ledger) == []


def test_a_crash_after_the_state_change_is_published_by_the_reconciler_once() -> None:
    """The step's process dies before the drain: the timer's drain finds the run through
    the outbox rows and publishes each event once; later drains publish nothing again."""
    ledger = FakeLedger(events=ORIGIN)
    run_to_submitted(ledger)
    publisher = FakePublisher()
    reconciler = FakeLedger(ledger.table, active=ledger.active, events=ORIGIN)
    assert drain(reconciler, publisher, now=NOW).sent == 2
    assert drain(reconciler, publisher, now=NOW).sent == 0
    assert publisher.ids == ["r1.accepted.1", "r1.submitted.1"]


def test_a_crash_between_publish_and_settle_resends_with_the_same_ids() -> None:
    """At least once: the topic accepted, the ledger write that marks them sent failed;
    the next drain sends the same events again, with the same ids."""
    ledger = FakeLedger(events=ORIGIN)
    run_to_submitted(ledger)
    publisher = FakePublisher()
    ledger.table.fail_next(ServiceRequestError("connection reset"), method="update_entity")
    first = drain(ledger, publisher, now=NOW)
    assert ledger.table.faults_fired == 1
    assert first.sent == 2
    assert drain(ledger, publisher, now=NOW).sent == 2
    assert publisher.ids == ["r1.accepted.1", "r1.submitted.1"] * 2
    assert drain(ledger, publisher, now=NOW).sent == 0


def test_transient_failures_back_off_and_stay_pending() -> None:
    """A 503 keeps the events, records the attempt and a retry time; a drain before that
    time leaves the run alone, one after it sends."""
    ledger = FakeLedger(events=ORIGIN)
    run_to_submitted(ledger)
    publisher = FakePublisher()
    publisher.fail_next(503)
    report = drain(ledger, publisher, now=NOW)
    assert (report.sent, report.pending) == (0, 2)
    stored = ledger.get("chat", "r1").outbox
    assert stored.attempts == 1
    assert stored.retry_at == (NOW + backoff(1)).isoformat()
    assert drain(ledger, publisher, now=NOW + timedelta(seconds=1)).pending == 2
    assert publisher.calls == 1  # backing off: not even tried
    assert drain(ledger, publisher, now=NOW + backoff(1)).sent == 2
    assert ledger.get("chat", "r1").outbox.attempts == 0


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(50) == BACKOFF_MAX


def test_a_refused_event_moves_to_failed_and_its_batch_neighbours_go_out() -> None:
    """A 400 for a batch: each event is tried alone, the refused one goes to the run's
    failed list (tuneloop events --failed), the others are sent; nothing is retried."""
    ledger = FakeLedger(events=ORIGIN)
    run_to_submitted(ledger)
    run_to_submitted(ledger, "r2")
    publisher = FakePublisher()
    publisher.refuse["r1.accepted.1"] = 400
    report = drain(ledger, publisher, now=NOW)
    assert (report.sent, report.failed, report.pending) == (3, 1, 0)
    assert sorted(publisher.ids) == ["r1.submitted.1", "r2.accepted.1", "r2.submitted.1"]
    failed = failed_events(ledger, "chat")
    assert [(f.run, f.id, f.type) for f in failed] == [
        ("r1", "r1.accepted.1", "tuneloop.run.accepted")
    ]
    assert "HTTP 400" in failed[0].error
    assert failed_events(ledger) == failed
    assert failed_events(ledger, "other") == []
    assert outbox_rows(ledger) == []
    assert drain(ledger, publisher, now=NOW).sent == 0


def test_a_broken_publisher_never_breaks_the_step() -> None:
    """drain_after swallows anything (the step already succeeded): the events stay."""
    ledger = FakeLedger(events=ORIGIN)
    run_to_submitted(ledger)
    publisher = FakePublisher()
    publisher.fail_next(RuntimeError("bug"))
    rec = ledger.get("chat", "r1")
    assert drain_after(ledger, publisher, [rec], now=NOW).sent == 0
    assert len(ledger.get("chat", "r1").outbox.pending) == 2


def test_without_an_endpoint_nothing_is_drained() -> None:
    """No publisher (no endpoint) or a ledger without events: drain_after does nothing."""
    ledger = FakeLedger()
    run_to_submitted(ledger)
    publisher = FakePublisher()
    assert drain_after(ledger, publisher, now=NOW).runs == 0
    assert drain_after(FakeLedger(events=ORIGIN), None, now=NOW).runs == 0
    assert publisher.calls == 0


def test_the_drain_after_a_step_sends_what_this_thread_wrote() -> None:
    """drain_after without runs sends the runs this thread wrote with events (no Table read),
    not those another thread (another invocation) wrote; they wait for their own drain."""
    import threading

    ledger = FakeLedger(events=ORIGIN)
    publisher = FakePublisher()
    other = threading.Thread(target=run_to_submitted, args=(ledger, "r2"))
    other.start()
    other.join()
    run_to_submitted(ledger, "r1")
    reads = ledger.table.calls["get_entity"], ledger.active.calls["query_entities"]
    assert drain_after(ledger, publisher, now=NOW).sent == 2
    assert (ledger.table.calls["get_entity"], ledger.active.calls["query_entities"]) == reads
    assert publisher.ids == ["r1.accepted.1", "r1.submitted.1"]
    assert drain_after(ledger, publisher, now=NOW).sent == 0
    assert [r.run_id for r in ledger.undelivered()] == ["r2"]
