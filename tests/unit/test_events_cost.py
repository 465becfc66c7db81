"""What events cost in Table requests, counted on the in-memory tables with the real ingest:
the figures /work/notes/events.md (and docs/scale.md) give per drop."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.ingest import Ingest, Outcome
from shared.lifecycle import Origin
from shared.outbox import drain_after
from shared.settings import Settings
from shared.storage import BlobRef
from tests.fakes.events import FakePublisher
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform
from tests.fakes.storage import FakeStorage
from tests.integration.test_ingest import invalid_dataset, valid_dataset
from tests.integration.test_ingest_resume import Clock, SimplePlanner

SETTINGS = Settings(platform="local", min_examples=10)
NOW = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def table_requests(ledger: FakeLedger) -> int:
    return sum(ledger.table.calls.values()) + sum(ledger.active.calls.values())


def drop_costs(data: bytes, *, events: bool) -> tuple[Outcome, int, int, list[str]]:
    """(outcome, Table requests of the ingest step, of the drain after it, events sent)."""
    ledger = FakeLedger(events=Origin("0a1b2c3d") if events else None)
    storage = FakeStorage(SETTINGS)
    ingest = Ingest(settings=SETTINGS, storage=storage, ledger=ledger, platform=FakePlatform(),
                    planner=SimplePlanner(SETTINGS), clock=Clock())
    storage.write_bytes(BlobRef(SETTINGS.incoming_container, "chat/a.jsonl"), data)
    start = table_requests(ledger)
    result = ingest.handle(SETTINGS.incoming_container, "chat/a.jsonl")
    step = table_requests(ledger) - start
    publisher = FakePublisher()
    drain_after(ledger, publisher if events else None, now=NOW)
    return result.outcome, step, table_requests(ledger) - start - step, publisher.ids


def test_events_add_one_request_to_a_step_and_two_to_its_drain() -> None:
    """A new drop (RECEIVED → ACCEPTED → SUBMITTED): events off 17 Table requests (measured
    here with the line corpus reads of issue 11), on 18 (the outbox row, once for all three
    events), and the drain after the step 2 more (the run's outbox cleared, the row deleted)
    and one HTTP publish of the three events. An invalid drop: 10 → 11, + 2."""
    off = drop_costs(valid_dataset(), events=False)
    on = drop_costs(valid_dataset(), events=True)
    assert off[:3] == (Outcome.SUBMITTED, 17, 0)
    assert on[0] is Outcome.SUBMITTED
    assert on[1:3] == (off[1] + 1, 2)
    assert [i.rsplit(".", 2)[1] for i in on[3]] == ["received", "accepted", "submitted"]
    bad_off = drop_costs(invalid_dataset(), events=False)
    bad_on = drop_costs(invalid_dataset(), events=True)
    assert bad_off[:3] == (Outcome.REJECTED, 10, 0)
    assert bad_on[1:3] == (bad_off[1] + 1, 2)
