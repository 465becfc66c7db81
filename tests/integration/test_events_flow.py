"""Lifecycle events of real flows on Azurite + FakePlatform: a release from SUBMITTED to
PROMOTED and a retraction publish their events once each, in order, each valid against
schemas/tuneloop.event.v1.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from shared.clients import Clients
from shared.ledger import Ledger
from shared.lifecycle import Origin
from shared.release import ReleaseContext, handle_job_event, reconcile
from shared.retract import Retraction
from shared.settings import Settings
from tests.fakes.events import FakePublisher
from tests.fakes.platform import FakePlatform
from tests.integration.test_release import RUN1, completed, seed
from tests.integration.test_retract import LINE as RETRACT_LINE
from tests.integration.test_retract import seed as seed_line

pytestmark = pytest.mark.integration

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "tuneloop.event.v1.json").read_text()
)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def events_clients(settings: Settings, publisher: FakePublisher) -> Clients:
    """Clients on Azurite whose ledger records events, publishing to ``publisher``."""
    base = Clients(settings)
    base.storage.ensure_containers()
    ledger = Ledger(base.ledger_table, events=Origin.from_settings(settings))
    ledger.ensure_table()
    return Clients(settings, storage=base.storage, ledger=ledger, platform=FakePlatform(),
                   events_publisher=publisher)


def valid(events: list[dict[str, Any]]) -> None:
    check = Draft202012Validator(SCHEMA)
    for event in events:
        assert event["specversion"] == "1.0"
        assert [e.message for e in check.iter_errors(event["data"])] == [], event["id"]


def test_a_release_publishes_each_state_once_in_order(
    events_clients: Clients, publisher: FakePublisher
) -> None:
    """SUBMITTED → … → PROMOTED with the exam: one event per state entered and the exam
    result, drained after each step, no id twice, every one valid."""
    c = events_clients
    fake = c.platform
    assert isinstance(fake, FakePlatform)
    ctx = ReleaseContext.from_clients(c)
    seed(ctx, fake, RUN1)
    c.publish_events()
    handle_job_event(ctx, completed(RUN1))
    c.publish_events()
    for _ in range(10):
        reconcile(ctx)
        c.publish_events()
    assert c.publish_events(undelivered=True).sent == 0  # nothing was left behind
    types = [e["type"].removeprefix("tuneloop.run.") for e in publisher.received]
    assert types == [
        "submitted", "trained", "registered", "deploying", "deployed", "examined", "promoted"
    ]
    assert len(set(publisher.ids)) == len(publisher.ids)
    valid(publisher.received)
    promoted = publisher.received[-1]["data"]
    assert promoted["model"] == {"name": "tuneloop-chat", "version": "1"}
    assert promoted["deployment"] == "v01"
    examined = publisher.received[-2]["data"]["exam"]
    assert examined["decision"] == "promote"
    assert publisher.received[-1]["subject"] == f"lines/chat/runs/{RUN1}"


def test_a_retraction_publishes_retracted_once_and_the_retrain_its_states(
    events_clients: Clients, publisher: FakePublisher
) -> None:
    """tuneloop retract: tuneloop.run.retracted on the run the drop came in with (once, also
    when retracted again), and the retrain's own events."""
    c = events_clients
    fake = c.platform
    assert isinstance(fake, FakePlatform)
    s = seed_line(c.ledger, c.storage, fake, c.settings)
    c.publish_events()
    before = len(publisher.received)
    result = Retraction.from_clients(c).retract(RETRACT_LINE, "support-2", by="test",
                                                reason="bad facts")
    c.publish_events()
    Retraction.from_clients(c).retract(RETRACT_LINE, "support-2", by="test")
    c.publish_events()
    new = publisher.received[before:]
    retracted = [e for e in new if e["type"] == "tuneloop.run.retracted"]
    assert [e["id"] for e in retracted] == [f"{s.r2}.retracted.1"]
    assert "support-2" in retracted[0]["data"]["reason"]
    assert "bad facts" in retracted[0]["data"]["reason"]
    assert result.retrain is not None
    retrain = [e["type"] for e in new if e["data"]["run"] == result.retrain.run_id]
    assert retrain[-1] == "tuneloop.run.submitted"
    valid(new)
