"""Lifecycle events wired into the app: the settings (the key never shown), the composition
root's publisher and drain, the sweep's events, and doctor's events check."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.clients import Clients
from shared.doctor.checks import Outcome
from shared.doctor.events import events_check
from shared.eventgrid import EventGridPublisher
from shared.ledger import RunState
from shared.lifecycle import Origin
from shared.naming import endpoint_name, endpoint_scope
from shared.outbox import drain
from shared.platform.port import EndpointInfo
from shared.settings import Settings, settings_error
from shared.sweep import run_sweep
from tests.fakes.events import FakePublisher
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform
from tests.fakes.transport import FakeTransport, Reply

ENDPOINT = "https://tl-topic.westeurope-1.eventgrid.azure.net/api/events"
KEY = "a-distinctive-events-key-0123456789"  # not a real key
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_key_is_never_shown() -> None:
    """TUNELOOP_EVENTS_KEY is a secret: not in the settings' repr, nor in a settings error."""
    settings = Settings(events_endpoint=ENDPOINT, events_key=KEY)
    assert KEY not in repr(settings)
    assert KEY not in str(settings.model_dump())
    assert settings.events_key is not None
    assert settings.events_key.get_secret_value() == KEY


def test_an_endpoint_that_is_not_a_url_is_one_clear_error() -> None:
    """A bad TUNELOOP_EVENTS_ENDPOINT names the setting and what it must look like."""
    with pytest.raises(ValidationError) as caught:
        Settings(events_endpoint="tl-topic.westeurope-1")
    message = str(settings_error(caught.value))
    assert "TUNELOOP_EVENTS_ENDPOINT" in message
    assert "eventgrid.azure.net/api/events" in message


def test_the_composition_root_builds_the_key_publisher_lazily() -> None:
    """No endpoint: no publisher. An endpoint and a key: an Event Grid publisher sending the
    key as aeg-sas-key through the Clients' transport."""
    assert Clients(Settings()).events_publisher is None
    transport = FakeTransport()
    transport.add("POST", r"/api/events", Reply(200, {}))
    with Clients(Settings(events_endpoint=ENDPOINT, events_key=KEY),
                 transport=transport) as c:
        assert transport.requests == []
        publisher = c.events_publisher
        assert isinstance(publisher, EventGridPublisher)
        ledger = FakeLedger(events=Origin("0a1b2c3d"))
        ledger.create("chat", "r1", RunState.ACCEPTED)
        assert drain(ledger, publisher, now=NOW).sent == 1
    headers = {k.lower(): v for k, v in transport.requests[0].headers.items()}
    assert headers["aeg-sas-key"] == KEY


def test_publish_events_sends_what_the_step_wrote() -> None:
    """Clients.publish_events after a step sends the events this thread wrote; with
    undelivered (the reconciler) it also sends what other invocations left."""
    ledger = FakeLedger(events=Origin("0a1b2c3d"))
    publisher = FakePublisher()
    c = Clients(Settings(), ledger=ledger, events_publisher=publisher)
    ledger.create("chat", "r1", RunState.ACCEPTED)
    assert c.publish_events().sent == 1
    assert publisher.ids == ["r1.accepted.1"]
    left = FakeLedger(ledger.table, active=ledger.active, events=Origin("0a1b2c3d"))
    left.create("chat", "r2", RunState.ACCEPTED)  # another worker, which then died
    assert c.publish_events().sent == 0
    assert c.publish_events(undelivered=True).sent == 1
    assert publisher.ids == ["r1.accepted.1", "r2.accepted.1"]


def test_a_swept_endpoint_publishes_retired_then_swept(tmp_path: Path) -> None:
    """The sweeper's retirement of the live run writes tuneloop.run.retired and
    tuneloop.endpoint.swept (the deleted endpoint, the idle reason) in one write; the pass's
    tuneloop.sweep.decided follows."""
    settings = Settings(platform="local", home=tmp_path, idle_after=timedelta(days=1))
    ledger = FakeLedger(events=Origin.from_settings(settings))
    platform = FakePlatform(now=NOW)
    name = endpoint_name("support", endpoint_scope(settings))
    platform.add_endpoint(EndpointInfo(
        name=name, id=f"/subscriptions/s/onlineEndpoints/{name}",
        tags={"tuneloop_line": "support", "tuneloop_managed": "true"},
        created=NOW - timedelta(days=8), modified=NOW - timedelta(days=5),
        provisioning_state="Succeeded", traffic={"v01": 100}, location="eastus",
    ), requests=0)
    live = ledger.create("support", "run-live", RunState.PROMOTED)
    ledger.update(live, release=replace(live.release, endpoint=name, deployment="v01"))
    publisher = FakePublisher()
    drain(ledger, publisher, now=NOW)
    run_sweep(platform=platform, ledger=ledger, storage=None, settings=settings, now=NOW)
    drain(ledger, publisher, now=NOW)
    types = [e["type"] for e in publisher.received]
    assert types == ["tuneloop.run.promoted", "tuneloop.run.retired", "tuneloop.endpoint.swept",
                     "tuneloop.sweep.decided"]  # the pass's own (tests/unit/test_sweep_events.py)
    swept = publisher.received[-2]
    assert swept["data"]["endpoint"] == name
    assert "deleted by the sweeper" in swept["data"]["reason"]


def test_doctor_says_when_events_are_not_published(tmp_path: Path) -> None:
    """No endpoint: a warning that events are not published; an endpoint: ok, naming how it
    authenticates (never the key)."""
    local = events_check(Settings(platform="local", home=tmp_path))
    assert local.outcome is Outcome.WARN
    assert "not published" in local.what
    keyed = events_check(Settings(events_endpoint=ENDPOINT, events_key=KEY))
    assert keyed.outcome is Outcome.OK
    assert KEY not in keyed.what
    assert "TUNELOOP_EVENTS_KEY" in keyed.what
    identity = events_check(Settings(events_endpoint=ENDPOINT))
    assert "EventGrid Data Sender" in identity.what
