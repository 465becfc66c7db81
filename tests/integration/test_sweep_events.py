"""A sweep pass's tuneloop.sweep.decided event on Azurite: its standalone outbox row (split
over columns when large) is written before the deletions, held from the drains until the pass
rewrites it, then drained once and removed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from shared.clients import Clients
from shared.ledger import OUTBOX_PARTITION, Ledger, RunState
from shared.lifecycle import Origin
from shared.outbox import drain
from shared.settings import Settings
from shared.sweep import EVENT_HOLD, run_sweep
from tests.fakes.events import FakePublisher
from tests.fakes.platform import FakePlatform
from tests.integration.test_sweep import DAY, NOW, endpoint, endpoint_name

pytestmark = pytest.mark.integration

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "tuneloop.event.v1.json").read_text()
)


class Crash(BaseException):
    """The process dies mid-sweep."""


def _clients(settings: Settings, platform: FakePlatform, publisher: FakePublisher) -> Clients:
    s = settings.model_copy(update={"idle_after": DAY, "sweep_max_deletions": 5})
    base = Clients(s)
    base.storage.ensure_containers()
    ledger = Ledger(base.ledger_table, events=Origin.from_settings(s))
    ledger.ensure_table()
    return Clients(s, storage=base.storage, ledger=ledger, platform=platform,
                   events_publisher=publisher)


def _rows(c: Clients) -> list[str]:
    active = c.table_service.get_table_client(c.settings.ledger_table + "active")
    return [str(e["RowKey"]) for e in active.query_entities(
        "PartitionKey eq @pk", parameters={"pk": OUTBOX_PARTITION})
        if str(e["RowKey"]).startswith("s:")]


def test_a_large_pass_crashing_mid_sweep_is_published_later_once(settings: Settings) -> None:
    """200 busy endpoints and an idle one (an event over one 30,000-character column): the
    pass dies at the deletion; its row survives on Azurite, is held for the pass, then the
    reconciler's drain sends it once, valid, and removes the row."""
    platform = FakePlatform(now=NOW)
    platform.add_endpoint(endpoint("idle"), requests=0)
    for i in range(200):
        platform.add_endpoint(endpoint(f"busy{i:03d}"), requests=5)

    def die(name: str) -> None:
        raise Crash

    platform.delete_endpoint = die  # type: ignore[method-assign]
    publisher = FakePublisher()
    c = _clients(settings, platform, publisher)
    with pytest.raises(Crash):
        run_sweep(platform=platform, ledger=c.ledger, storage=c.storage, settings=c.settings,
                  now=NOW)
    assert len(_rows(c)) == 1
    fresh = _clients(settings, platform, publisher)  # another process: the reconciler
    assert drain(fresh.ledger, publisher, now=NOW + EVENT_HOLD / 2).sent == 0
    assert drain(fresh.ledger, publisher, now=NOW + EVENT_HOLD * 2).sent == 1
    assert drain(fresh.ledger, publisher, now=NOW + EVENT_HOLD * 3).sent == 0
    [event] = publisher.received
    assert event["type"] == "tuneloop.sweep.decided"
    assert len(json.dumps(event)) > 30_000
    assert [e.message for e in Draft202012Validator(SCHEMA).iter_errors(event["data"])] == []
    decisions = event["data"]["sweep"]["decisions"]
    assert len(decisions) + event["data"]["sweep"]["omitted"] == 201
    assert {d["outcome"] for d in decisions} == {None}
    assert _rows(c) == []


def test_a_pass_publishes_right_after_the_sweep(settings: Settings) -> None:
    """The drain after the sweep (Clients.publish_events) sends the retired run's events and
    the pass's, with the outcome; no row is left."""
    platform = FakePlatform(now=NOW)
    platform.add_endpoint(endpoint("idle"), requests=0)
    publisher = FakePublisher()
    c = _clients(settings, platform, publisher)
    c.ledger.create("idle", "run-live", RunState.PROMOTED)
    run_sweep(platform=platform, ledger=c.ledger, storage=c.storage, settings=c.settings,
              now=NOW)
    c.publish_events()
    types = [e["type"] for e in publisher.received]
    assert types == ["tuneloop.run.promoted", "tuneloop.run.retired",
                     "tuneloop.endpoint.swept", "tuneloop.sweep.decided"]
    [decision] = publisher.received[-1]["data"]["sweep"]["decisions"]
    assert (decision["endpoint"], decision["outcome"]) == (
        endpoint_name("idle"), "deletion-started"
    )
    assert _rows(c) == []
    assert c.publish_events(undelivered=True).sent == 0


def test_a_full_event_of_non_ascii_text_fits_its_outbox_row(settings: Settings) -> None:
    """A sweep event whose reasons are all CJK text (6 bytes each as \\uXXXX on the wire and in
    the row) stays within the 60 KiB budget, is stored on Azurite and reads back."""
    from shared.lifecycle import SWEEP_EVENT_BUDGET, sweep_event

    platform = FakePlatform(now=NOW)
    c = _clients(settings, platform, FakePublisher())
    origin = c.ledger.events_origin
    assert origin is not None
    decisions = [
        {"endpoint": f"ep{i}", "line": None, "action": "keep", "reason": "忙碌的端点" * 40,
         "requests": 1, "idle_since": None, "outcome": None, "error": None}
        for i in range(200)
    ]
    sweep = {"id": "sweep-20260301T120000.000000Z", "mode": "delete",
             "started": NOW.isoformat(), "finished": None, "metrics_available": True,
             "metrics_error": None, "summary": {}}
    event = sweep_event(origin, sweep, decisions, time=NOW, reason="x", report=None)
    assert event["data"]["sweep"]["omitted"] > 0
    assert 2 * 30_000 < len(json.dumps(event)) <= SWEEP_EVENT_BUDGET  # three columns
    c.ledger.put_events(str(sweep["id"]), [event])
    [row] = c.ledger.outbox_rows()
    assert row.outbox.pending == [event]
