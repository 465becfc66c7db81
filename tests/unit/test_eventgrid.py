"""The Event Grid publisher adapter through a fake HTTP transport (the request it sends), and
the publisher contract that it and tests/fakes/events.py's FakePublisher both keep."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential

from shared import lifecycle
from shared.errors import PermissionDeniedError, TransientError, TuneloopError
from shared.eventgrid import EventGridPublisher
from shared.ledger import RunRecord, RunState
from shared.outbox import is_refusal
from tests.fakes.credential import FakeCredential
from tests.fakes.events import FakePublisher
from tests.fakes.transport import FakeTransport, Recorded, Reply

ENDPOINT = "https://tl-topic.westeurope-1.eventgrid.azure.net/api/events"
KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHM="  # not a real key
ORIGIN = lifecycle.Origin("0a1b2c3d")
WHEN = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def events(*kinds: str) -> list[Any]:
    rec = RunRecord("chat", "tl-chat-1", RunState.PROMOTED)
    return [
        lifecycle.from_wire(lifecycle.build(ORIGIN, rec, k, attempt=1, time=WHEN, reason=None))
        for k in kinds
    ]


def topic(status: int = 200) -> FakeTransport:
    transport = FakeTransport()
    transport.add("POST", r"/api/events", Reply(status, {} if status < 300 else {
        "error": {"code": "BadRequest", "message": f"status {status}"}}))
    return transport


def adapter(transport: FakeTransport, credential: Any | None = None) -> EventGridPublisher:
    return EventGridPublisher.create(
        ENDPOINT, credential or AzureKeyCredential(KEY), transport=transport, retry_total=0
    )


def test_a_key_is_sent_as_aeg_sas_key_with_a_cloudevents_batch() -> None:
    """TUNELOOP_EVENTS_KEY: one POST to the topic's endpoint with the aeg-sas-key header, the
    CloudEvents batch content type and every event, as CloudEvents 1.0 JSON."""
    transport = topic()
    adapter(transport).send(events("trained", "promoted"))
    [request] = transport.requests
    assert request.method == "POST"
    assert request.url.startswith(ENDPOINT + "?api-version=")
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["aeg-sas-key"] == KEY
    assert "authorization" not in headers
    assert headers["content-type"].startswith("application/cloudevents-batch+json")
    body = json.loads(request.body)
    assert [e["id"] for e in body] == ["tl-chat-1.trained.1", "tl-chat-1.promoted.1"]
    first = body[0]
    assert first["specversion"] == "1.0"
    assert first["type"] == "tuneloop.run.trained"
    assert first["source"] == "/tuneloop/0a1b2c3d/lines/chat"
    assert first["subject"] == "lines/chat/runs/tl-chat-1"
    assert first["dataschema"] == lifecycle.SCHEMA_ID
    assert first["datacontenttype"] == "application/json"
    assert first["data"]["schema"] == "tuneloop.event/v1"
    assert datetime.fromisoformat(first["time"].replace("Z", "+00:00")) == WHEN


def test_managed_identity_is_a_bearer_token_for_event_grid() -> None:
    """The default (no key): the app's credential, a bearer token for eventgrid.azure.net."""
    transport = topic()
    credential = FakeCredential()
    adapter(transport, credential).send(events("accepted"))
    headers = {k.lower(): v for k, v in transport.requests[0].headers.items()}
    assert headers["authorization"].startswith("Bearer ")
    assert "aeg-sas-key" not in headers
    assert credential.scopes == ["https://eventgrid.azure.net/.default"]


def test_nothing_to_send_sends_nothing() -> None:
    transport = topic()
    adapter(transport).send([])
    assert transport.requests == []


# -- the contract: the adapter over a fake topic, and the fake publisher ------------------------
@dataclass
class Driver:
    """A publisher and a way to make its topic answer a status."""

    publisher: Any
    answer: Callable[[int], None]
    accepted: Callable[[], list[str]]


def _real() -> Driver:
    transport = FakeTransport()
    status = [200]
    accepted: list[str] = []

    def reply(rec: Recorded) -> Reply:
        if status[0] < 300:
            accepted.extend(e["id"] for e in rec.json())
            return Reply(status[0], {})
        return Reply(status[0], {"error": {"code": "Refused", "message": "no"}})

    transport.add("POST", r"/api/events", reply)

    def answer(code: int) -> None:
        status[0] = code

    return Driver(adapter(transport), answer, lambda: list(accepted))


def _fake() -> Driver:
    fake = FakePublisher()

    def answer(code: int) -> None:
        fake.fail_next(code, times=100)

    return Driver(fake, answer, lambda: fake.ids)


@pytest.fixture(params=["eventgrid", "fake"])
def driver(request: pytest.FixtureRequest) -> Driver:
    return _real() if request.param == "eventgrid" else _fake()


def test_contract_accepted_events_arrive_in_order(driver: Driver) -> None:
    driver.publisher.send(events("accepted", "submitted"))
    assert driver.accepted() == ["tl-chat-1.accepted.1", "tl-chat-1.submitted.1"]


@pytest.mark.parametrize("status", [400, 404, 413])
def test_contract_a_4xx_is_a_refusal(driver: Driver, status: int) -> None:
    """A 4xx other than 408/429 is a permanent refusal (the outbox moves it to failed)."""
    driver.answer(status)
    with pytest.raises(TuneloopError) as caught:
        driver.publisher.send(events("accepted"))
    assert is_refusal(caught.value)
    assert driver.accepted() == []


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_contract_throttling_and_server_errors_are_transient(driver: Driver, status: int) -> None:
    """408, 429 and 5xx are TransientError: the outbox keeps the events and backs off."""
    driver.answer(status)
    with pytest.raises(TransientError) as caught:
        driver.publisher.send(events("accepted"))
    assert not is_refusal(caught.value)


def test_contract_a_403_names_the_role(driver: Driver) -> None:
    """No EventGrid Data Sender role: PermissionDeniedError whose hint names the role."""
    driver.answer(403)
    with pytest.raises(PermissionDeniedError) as caught:
        driver.publisher.send(events("accepted"))
    assert "EventGrid Data Sender" in str(caught.value)
    assert is_refusal(caught.value)
