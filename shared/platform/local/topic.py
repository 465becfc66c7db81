"""The local Event Grid topic: what tuneloop's own lifecycle events are published to locally.

An HTTP server on 127.0.0.1 that accepts exactly what ``azure-eventgrid``'s
``EventGridPublisherClient(endpoint, AzureKeyCredential(key)).send([CloudEvent, ...])`` posts
to an Event Grid topic with the CloudEvents 1.0 input schema, and answers like one:

- ``POST /api/events`` (the topic endpoint's path; ``?api-version=`` is accepted and ignored)
  with ``Content-Type: application/cloudevents-batch+json`` (a JSON array, what the client
  sends for CloudEvents) or ``application/cloudevents+json`` (one event);
- auth: the ``aeg-sas-key`` header equal to the home's topic key, or an ``aeg-sas-token``
  signed with it (``azure.eventgrid.generate_sas`` + ``AzureSasCredential``); anything else,
  a bearer token included (no Entra ID locally), is a 401;
- every event needs the CloudEvents 1.0 required attributes ``id``, ``source``,
  ``specversion`` (= ``"1.0"``) and ``type`` as non-empty strings; otherwise the whole batch
  is refused with a 400 that names each event and what it lacks (Event Grid refuses a batch
  as a whole too); 200 with an empty body on success.

Each accepted event is appended, as received, as one JSON line to
``<home>/events/received.jsonl`` (oldest first; ``read_events`` / ``tuneloop events``), then,
when a webhook URL is set (``TUNELOOP_WEBHOOK_URL``), forwarded to it in CloudEvents
structured mode (``application/cloudevents+json``, one POST per event) by a background
thread: best effort, retried with back-off on connection errors, 408, 429 and 5xx, dropped
(with a warning) after the last attempt; a slow or dead webhook never delays the topic.

Why plain http: the publisher client takes any endpoint URL as is (azure-eventgrid
``_legacy/_helpers.py`` ``_build_request`` posts to ``endpoint`` + ``?api-version=``) and
azure-core's ``AzureKeyCredentialPolicy`` only adds the header, while only the bearer-token
policy refuses non-https URLs (azure-core ``pipeline/policies/_authentication.py``
``_enforce_https``). So the real client posts to ``http://127.0.0.1:<port>/api/events`` with a
key credential; managed identity (the Azure default) needs https and is not offered locally.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from shared.platform.local.httpbase import BodyError, JsonHandler, Server

__all__ = [
    "KEY_HEADER",
    "REQUIRED",
    "SAS_HEADER",
    "TOPIC_PATH",
    "LocalTopic",
    "cloud_event_problems",
    "events_file",
    "follow_events",
    "line_of",
    "read_events",
    "topic_key",
]

log = logging.getLogger(__name__)

TOPIC_PATH = "/api/events"
KEY_HEADER = "aeg-sas-key"
SAS_HEADER = "aeg-sas-token"
REQUIRED = ("id", "source", "specversion", "type")  # CloudEvents 1.0 required attributes
BATCH_TYPE = "application/cloudevents-batch+json"
SINGLE_TYPE = "application/cloudevents+json"


def events_file(home: Path) -> Path:
    """Where the local topic stores what it received: ``<home>/events/received.jsonl``."""
    return Path(home) / "events" / "received.jsonl"


def topic_key(home: Path) -> str:
    """The home's topic key (``<home>/events/topic.key``, created once, owner-only).

    Base64 of 32 random bytes, the shape of an Event Grid topic key, so that SAS tokens made
    with ``azure.eventgrid.generate_sas`` (which base64-decodes the key) work too.
    """
    path = Path(home) / "events" / "topic.key"
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    os.replace(path.with_suffix(".tmp"), path)
    return key


# -- checks ----------------------------------------------------------------------------------
def cloud_event_problems(event: Any) -> list[str]:
    """What makes ``event`` not a CloudEvents 1.0 event (empty list: nothing)."""
    if not isinstance(event, dict):
        return [f"not a JSON object but {type(event).__name__}"]
    missing = [name for name in REQUIRED
               if not isinstance(event.get(name), str) or not event.get(name)]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    spec = event.get("specversion")
    if isinstance(spec, str) and spec and spec != "1.0":
        problems.append(f"specversion is {spec!r}, expected '1.0'")
    return problems


def _sas_valid(token: str, key: str, now: datetime) -> bool:
    """An ``aeg-sas-token`` as ``azure.eventgrid.generate_sas`` makes it:
    ``r=<resource>&e=<expiry>&s=<base64 HMAC-SHA256 of 'r=..&e=..' with the decoded key>``."""
    unsigned, sep, signature = token.rpartition("&s=")
    if not sep:
        return False
    fields = parse_qs(unsigned)
    if "r" not in fields or "e" not in fields:
        return False
    try:
        expected = base64.b64encode(
            hmac.new(base64.b64decode(key), unsigned.encode("ascii"), hashlib.sha256).digest()
        )
        expires = datetime.fromisoformat(unquote(fields["e"][0]))
    except (ValueError, UnicodeEncodeError):
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    given = unquote(signature).encode()
    return hmac.compare_digest(given, expected) and expires > now


def line_of(event: Mapping[str, Any]) -> str | None:
    """The line an event is about: ``data.line``, else from ``subject`` ``lines/<line>/...``."""
    data = event.get("data")
    if isinstance(data, dict) and isinstance(data.get("line"), str):
        return str(data["line"])
    subject = event.get("subject")
    if isinstance(subject, str) and subject.startswith("lines/"):
        return subject.split("/")[1] or None
    return None


# -- the store -------------------------------------------------------------------------------
def _parse_lines(text: str, line: str | None) -> list[dict[str, Any]]:
    events = []
    for raw in text.splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue  # only a line being written can be partial; it is read next time
        if isinstance(event, dict) and (line is None or line_of(event) == line):
            events.append(event)
    return events


def read_events(home: Path, line: str | None = None) -> list[dict[str, Any]]:
    """The events the home's topic received (for ``line``, or all), oldest first, as received."""
    try:
        text = events_file(home).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return _parse_lines(text, line)


def follow_events(
    home: Path, line: str | None = None, *, poll: float = 0.5,
    stop: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """Every event stored so far, then each new one as it arrives (until ``stop`` is set)."""
    path = events_file(home)
    offset = 0
    pending = b""
    while True:
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        pending += chunk
        complete, _, pending = pending.rpartition(b"\n")
        if complete:
            yield from _parse_lines(complete.decode("utf-8", errors="replace"), line)
        if stop is not None and stop.is_set():
            return
        if stop is not None:
            stop.wait(poll)
        else:
            time.sleep(poll)


class _Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, events: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())


# -- forwarding ------------------------------------------------------------------------------
class _Forwarder:
    """Posts each event to the webhook from one background thread; never blocks the topic."""

    def __init__(self, url: str, *, attempts: int, backoff: float, timeout: float) -> None:
        self.url = url
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10_000)
        self.delivered = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-webhook", daemon=True)
        self._thread.start()

    def put(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.warning("local topic: webhook queue full; event %s not forwarded", event["id"])

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        last = ""
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(  # noqa: S310 -- the operator's own URL
                self.url, data=body, method="POST",
                headers={"Content-Type": f"{SINGLE_TYPE}; charset=utf-8"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
                    resp.read()
                self.delivered += 1
                return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code not in (408, 429) and exc.code < 500:
                    break  # refused for good: retrying sends the same refused event
            except (OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts and self._stop.wait(self.backoff * 2 ** (attempt - 1)):
                break
        self.dropped += 1
        log.warning("local topic: event %s not forwarded to the webhook (%s)", event["id"], last)


# -- the server ------------------------------------------------------------------------------
def _handler(topic: LocalTopic) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            if self.path == "/":
                self.send_json(200, {"status": "alive", "topic": "tuneloop-local"})
            else:
                self.send_error_json(404, "NotFound", f"no route GET {self.path}")

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path != TOPIC_PATH:
                self.send_error_json(404, "NotFound",
                                     f"no route POST {path}; publish to {TOPIC_PATH}")
                return
            if not self._authorized():
                self.send_error_json(
                    401, "Unauthorized",
                    f"missing or wrong key: send '{KEY_HEADER}: <topic key>' or an "
                    f"'{SAS_HEADER}' made with it (the key is in <home>/events/topic.key)",
                )
                return
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type not in (BATCH_TYPE, SINGLE_TYPE):
                self.send_error_json(
                    400, "BadRequest",
                    f"Content-Type {content_type or '(none)'} is not CloudEvents: this topic "
                    f"takes the CloudEvents 1.0 schema ({BATCH_TYPE} or {SINGLE_TYPE})",
                )
                return
            try:
                body = self.read_json()
            except BodyError as exc:
                self.send_error_json(exc.status, "BadRequest", str(exc))
                return
            if content_type == SINGLE_TYPE and isinstance(body, dict):
                body = [body]
            if not isinstance(body, list) or not body:
                self.send_error_json(400, "BadRequest",
                                     "the body must be a non-empty JSON array of CloudEvents")
                return
            problems = [f"event {i}: {p}" for i, event in enumerate(body)
                        for p in cloud_event_problems(event)]
            if problems:
                self.send_error_json(400, "BadRequest", "not CloudEvents 1.0: "
                                     + "; ".join(problems))
                return
            topic.receive(body)
            self.send_raw(200, b"")

        def _authorized(self) -> bool:
            key = self.headers.get(KEY_HEADER)
            if key is not None:
                return hmac.compare_digest(key.strip().encode(), topic.key.encode())
            token = self.headers.get(SAS_HEADER)
            if token is not None:
                return _sas_valid(token.strip(), topic.key, datetime.now(UTC))
            return False

    return Handler


class LocalTopic:
    """The home's topic, served from a thread of this process: ``start()``, ``url``, ``stop()``.

    ``port`` 0 picks a free one. ``webhook_url`` forwards each received event (best effort:
    ``forward_attempts`` tries, back-off from ``forward_backoff`` seconds, doubling).
    """

    def __init__(
        self, home: Path, key: str, *, port: int = 0, webhook_url: str | None = None,
        forward_attempts: int = 4, forward_backoff: float = 1.0, forward_timeout: float = 10.0,
    ) -> None:
        self.home = Path(home)
        self.key = key
        self.port = port
        self.webhook_url = webhook_url or None
        self._store = _Store(events_file(self.home))
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._forward_opts = (forward_attempts, forward_backoff, forward_timeout)
        self.forwarder: _Forwarder | None = None

    @property
    def url(self) -> str:
        """The topic endpoint, as ``TUNELOOP_EVENTS_ENDPOINT`` takes it."""
        if self._server is None:
            raise RuntimeError("the local topic is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{TOPIC_PATH}"

    def start(self) -> LocalTopic:
        if self.webhook_url:
            attempts, backoff, timeout = self._forward_opts
            self.forwarder = _Forwarder(
                self.webhook_url, attempts=attempts, backoff=backoff, timeout=timeout
            )
        self._server = Server(("127.0.0.1", self.port), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="local-topic", daemon=True,
        )
        self._thread.start()
        log.info("local topic listening on %s (store %s)", self.url, self._store.path)
        return self

    def receive(self, events: list[dict[str, Any]]) -> None:
        """Store a checked batch, then queue it for the webhook."""
        self._store.append(events)
        if self.forwarder is not None:
            for event in events:
                self.forwarder.put(event)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.forwarder is not None:
            self.forwarder.close()

    def __enter__(self) -> LocalTopic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

