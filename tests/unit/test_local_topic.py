"""The local Event Grid topic, driven by the real ``azure-eventgrid`` publisher client."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient, generate_sas

from shared.platform.local.httpbase import Server
from shared.platform.local.topic import (
    LocalTopic,
    cloud_event_problems,
    events_file,
    follow_events,
    line_of,
    read_events,
    topic_key,
)
from tests.polling import wait_until


class _Response:
    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def _post(url: str, *, content: bytes, headers: dict[str, str]) -> _Response:
    """A raw POST (what a client other than the SDK could send)."""
    request = urllib.request.Request(  # noqa: S310 -- the test's own 127.0.0.1 URL
        url, data=content, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return _Response(resp.status, resp.read())
    except urllib.error.HTTPError as exc:
        return _Response(exc.code, exc.read())


def _event(line: str, run: str, state: str, **extra: Any) -> CloudEvent[Any]:
    return CloudEvent(
        source=f"/tuneloop/local/lines/{line}",
        type=f"tuneloop.run.{state}",
        subject=f"lines/{line}/runs/{run}",
        data={"schema": "tuneloop.event/v1", "line": line, "run": run, "state": state.upper()},
        id=f"{run}-{state}-1",
        time=datetime(2026, 12, 2, 1, 0, tzinfo=UTC),
        datacontenttype="application/json",
        **extra,
    )


@pytest.fixture
def topic(tmp_path: Path) -> Iterator[LocalTopic]:
    with LocalTopic(tmp_path, topic_key(tmp_path)) as running:
        yield running


def test_the_real_publisher_client_posts_to_it_and_each_event_is_stored_as_received(
    topic: LocalTopic,
) -> None:
    """EventGridPublisherClient + AzureKeyCredential over http://127.0.0.1 is accepted; each
    CloudEvent is stored once, in order, with its attributes and data as the client sent them."""
    client = EventGridPublisherClient(topic.url, AzureKeyCredential(topic.key))
    client.send([_event("support", "r1", "accepted"), _event("billing", "r2", "accepted")])
    client.send(_event("support", "r1", "submitted"))

    stored = read_events(topic.home)
    assert [(e["id"], e["type"]) for e in stored] == [
        ("r1-accepted-1", "tuneloop.run.accepted"),
        ("r2-accepted-1", "tuneloop.run.accepted"),
        ("r1-submitted-1", "tuneloop.run.submitted"),
    ]
    first = stored[0]
    assert first["specversion"] == "1.0"
    assert first["source"] == "/tuneloop/local/lines/support"
    assert first["subject"] == "lines/support/runs/r1"
    assert first["time"].startswith("2026-12-02T01:00:00")
    assert first["datacontenttype"] == "application/json"
    assert first["data"] == {"schema": "tuneloop.event/v1", "line": "support", "run": "r1",
                             "state": "ACCEPTED"}
    assert [e["id"] for e in read_events(topic.home, "support")] == ["r1-accepted-1",
                                                                     "r1-submitted-1"]


def test_a_wrong_or_missing_key_is_refused_with_401_and_nothing_is_stored(
    topic: LocalTopic,
) -> None:
    """The topic checks aeg-sas-key: the client gets ClientAuthenticationError (401)."""
    client = EventGridPublisherClient(topic.url, AzureKeyCredential("d3Jvbmc="))
    with pytest.raises(ClientAuthenticationError):
        client.send(_event("support", "r1", "accepted"))
    bare = _post(topic.url, content=b"[]",
                      headers={"Content-Type": "application/cloudevents-batch+json"})
    assert bare.status_code == 401
    assert "aeg-sas-key" in bare.json()["error"]["message"]
    assert read_events(topic.home) == []


def test_a_sas_token_made_with_the_key_is_accepted_and_an_expired_one_refused(
    topic: LocalTopic,
) -> None:
    """aeg-sas-token from azure.eventgrid.generate_sas works like the key, until it expires."""
    soon = datetime.now(UTC) + timedelta(hours=1)
    good = generate_sas(topic.url, topic.key, soon)
    EventGridPublisherClient(topic.url, AzureSasCredential(good)).send(
        _event("support", "r1", "accepted"))
    expired = generate_sas(topic.url, topic.key, datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(ClientAuthenticationError):
        EventGridPublisherClient(topic.url, AzureSasCredential(expired)).send(
            _event("support", "r1", "submitted"))
    forged = generate_sas(topic.url, topic_key(topic.home / "other"), soon)
    with pytest.raises(ClientAuthenticationError):
        EventGridPublisherClient(topic.url, AzureSasCredential(forged)).send(
            _event("support", "r1", "submitted"))
    assert [e["id"] for e in read_events(topic.home)] == ["r1-accepted-1"]


def test_an_event_missing_required_attributes_refuses_the_batch_naming_them(
    topic: LocalTopic,
) -> None:
    """400 naming the event and each missing CloudEvents 1.0 attribute; nothing is stored."""
    good = {"specversion": "1.0", "id": "a", "source": "/s", "type": "t"}
    bad = {"specversion": "0.3", "source": "/s", "data": {}}
    response = _post(
        topic.url, content=json.dumps([good, bad]).encode(),
        headers={"aeg-sas-key": topic.key, "Content-Type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "event 1: missing id, type" in message
    assert "specversion is '0.3'" in message
    assert "event 0" not in message
    assert read_events(topic.home) == []
    client = EventGridPublisherClient(topic.url, AzureKeyCredential(topic.key))
    with pytest.raises(HttpResponseError):
        client.send([{"specversion": "1.0", "id": "x", "source": "", "type": "t"}])


def test_a_body_that_is_not_cloud_events_is_a_400(topic: LocalTopic) -> None:
    """Event Grid schema (application/json) and a non-array batch are refused, not stored."""
    headers = {"aeg-sas-key": topic.key}
    as_json = _post(topic.url, content=b"[]",
                         headers={**headers, "Content-Type": "application/json"})
    assert as_json.status_code == 400
    assert "CloudEvents" in as_json.json()["error"]["message"]
    empty = _post(topic.url, content=b"[]", headers={
        **headers, "Content-Type": "application/cloudevents-batch+json"})
    assert empty.status_code == 400
    wrong_path = _post(topic.url.replace("/api/events", "/events"), content=b"[]",
                            headers=headers)
    assert wrong_path.status_code == 404
    assert not events_file(topic.home).exists()


def test_the_topic_listens_on_loopback_only(topic: LocalTopic) -> None:
    """127.0.0.1, never all interfaces."""
    assert topic.url.startswith("http://127.0.0.1:")


def test_the_key_is_made_once_per_home_and_kept_private(tmp_path: Path) -> None:
    """topic_key creates a base64 key (owner-only file) and returns the same one after."""
    key = topic_key(tmp_path)
    assert topic_key(tmp_path) == key
    assert len(key) == 44
    assert (tmp_path / "events" / "topic.key").stat().st_mode & 0o077 == 0


def test_cloud_event_problems_and_line_of() -> None:
    """The checks name each missing attribute; the line comes from data, else the subject."""
    assert cloud_event_problems([]) == ["not a JSON object but list"]
    assert cloud_event_problems({"specversion": "1.0"}) == ["missing id, source, type"]
    assert line_of({"data": {"line": "a"}, "subject": "lines/b/runs/r"}) == "a"
    assert line_of({"subject": "lines/b/runs/r"}) == "b"
    assert line_of({"subject": "endpoints/x"}) is None


class _Hook:
    """A webhook that answers 503 to its first ``fail`` posts, then 200, recording each body."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.bodies: list[dict[str, Any]] = []
        self.types: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.fail > 0:
                    hook.fail -= 1
                    self.send_response(503)
                else:
                    hook.bodies.append(json.loads(body))
                    hook.types.append(self.headers["Content-Type"])
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_events_are_forwarded_to_the_webhook_with_retries(tmp_path: Path) -> None:
    """A webhook failing twice still gets each event (structured CloudEvents), in order."""
    hook = _Hook(fail=2)
    try:
        with LocalTopic(tmp_path, topic_key(tmp_path), webhook_url=hook.url,
                        forward_backoff=0.01) as running:
            client = EventGridPublisherClient(running.url, AzureKeyCredential(running.key))
            client.send([_event("support", "r1", "accepted"), _event("support", "r1",
                                                                     "submitted")])
            wait_until(lambda: len(hook.bodies) == 2, timeout=30, what="both forwarded")
    finally:
        hook.close()
    assert [b["id"] for b in hook.bodies] == ["r1-accepted-1", "r1-submitted-1"]
    assert hook.types[0].startswith("application/cloudevents+json")
    assert hook.bodies[0] == read_events(tmp_path)[0]


def test_a_dead_webhook_never_blocks_the_topic(tmp_path: Path) -> None:
    """Nothing listens at the webhook: the topic still answers 200 and stores the event."""
    hook = _Hook(fail=0)
    url = hook.url
    hook.close()  # the port is now closed: every forward attempt fails
    with LocalTopic(tmp_path, topic_key(tmp_path), webhook_url=url, forward_attempts=2,
                    forward_backoff=0.01) as running:
        EventGridPublisherClient(running.url, AzureKeyCredential(running.key)).send(
            _event("support", "r1", "accepted"))
        assert [e["id"] for e in read_events(tmp_path)] == ["r1-accepted-1"]
        forwarder = running.forwarder
        assert forwarder is not None
        wait_until(lambda: forwarder.dropped == 1, timeout=30, what="the forward given up")


def test_follow_yields_stored_events_then_new_ones(topic: LocalTopic) -> None:
    """follow_events returns what is stored, then what arrives later, for one line."""
    client = EventGridPublisherClient(topic.url, AzureKeyCredential(topic.key))
    client.send(_event("support", "r1", "accepted"))
    stop = threading.Event()
    seen: list[str] = []

    def read() -> None:
        for event in follow_events(topic.home, "support", poll=0.05, stop=stop):
            seen.append(event["id"])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_until(lambda: seen == ["r1-accepted-1"], timeout=30, what="the stored event")
        client.send([_event("billing", "r9", "accepted"), _event("support", "r1", "submitted")])
        wait_until(lambda: len(seen) == 2, timeout=30, what="the new event")
    finally:
        stop.set()
        reader.join(10)
    assert seen == ["r1-accepted-1", "r1-submitted-1"]
