"""Run the app's functions locally, without the Functions host.

What the host and Event Grid do in Azure, done here on one machine:
- storage: the configured account, else the home's Azurite, which the local platform starts
  or adopts (``shared.platform.local.azurite.start_local_storage``; recorded in
  ``<home>/devhost.json``); a devhost that started or adopted it stops it on shutdown;
- watches the incoming container and delivers BlobCreated to ``ingest_dataset`` once per blob
  version (a restart redelivers; the ingest's ledger claim makes that a no-op);
- delivers the local platform's job events (Azure ML Event Grid schema) to ``on_job_event``;
- retries, as the run's next attempt, each job the local platform lost because its devhost
  stopped or died while it trained (``shared.recovery``);
- a failed delivery is retried with exponential back-off and dead-lettered after
  ``max_attempts`` (written to ``<home>/devhost/deadletter/``), as the host and Event Grid do;
- fires the timer functions (``reconcile_runs``, ``sweep_idle_endpoints``) on their NCRONTAB
  schedules, or on fixed intervals given by the caller (the demo and tests);
- serves the home's Event Grid topic for tuneloop's own lifecycle events
  (``shared.platform.local.topic``: stored in ``<home>/events/received.jsonl``, forwarded to
  ``TUNELOOP_WEBHOOK_URL`` when set) and points its app at it (``TUNELOOP_EVENTS_ENDPOINT`` /
  ``TUNELOOP_EVENTS_KEY``, unless an endpoint is configured); ``devhost.json`` records it.

Every delivery goes through the same function objects ``function_app`` registers, with real
``azure.functions`` binding objects.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import azure.functions as func
from azure.functions.timer import TimerRequest

from functions import _root
from shared.clients import Clients
from shared.errors import TuneloopError
from shared.schedule import next_fire
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.platform.local import LocalPlatform
    from shared.platform.local.azurite import LocalStorage
    from shared.platform.local.platform import LostJob
    from shared.platform.local.topic import LocalTopic
    from shared.platform.port import Platform

__all__ = [
    "MAX_ATTEMPTS",
    "DevHost",
    "HostedPlatform",
    "blob_created_event",
    "load_functions",
]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8  # Event Grid's and the blob trigger's retries end in a dead letter too


class HostedPlatform(Protocol):
    """What the devhost needs beyond the port: the event outbox and process lifecycle."""

    def pending_events(self) -> list[dict[str, Any]]: ...

    def ack_event(self, event_id: str) -> None: ...

    def restore(self) -> list[str]: ...

    def lost_jobs(self) -> list[LostJob]: ...

    def settle_lost(self, name: str, note: str) -> None: ...

    def close(self) -> None: ...


def load_functions() -> dict[str, Callable[..., Any]]:
    """The user functions ``function_app`` registers, by function name."""
    import importlib

    # The `tuneloop` script runs with its bin/ folder on sys.path, not the app's root.
    root = str(Path(__file__).resolve().parents[1])
    if (Path(root) / "function_app.py").exists() and root not in sys.path:
        sys.path.append(root)
    root_logger = logging.getLogger()
    root_logger.addFilter(_quiet_auth_level)
    try:
        function_app = importlib.import_module("function_app")
        # Index a copy: FunctionApp.get_functions() may run once per app (the worker's
        # indexing), and tests index function_app.app themselves.
        indexed = copy.copy(function_app.app)
        indexed.functions_bindings = {}
        return {str(f.get_function_name()): f.get_user_function() for f in indexed.get_functions()}
    finally:
        root_logger.removeFilter(_quiet_auth_level)


def _quiet_auth_level(record: logging.LogRecord) -> bool:
    """azure.functions warns that non-HTTP functions ignore the auth level: noise here."""
    return not str(record.msg).startswith("Auth level is not applied")


def blob_created_event(
    account_url: str, container: str, name: str, etag: str, size: int
) -> dict[str, Any]:
    """A Microsoft.Storage.BlobCreated event (Event Grid schema) as Azure would send it."""
    url = f"{account_url.rstrip('/')}/{container}/{name}"
    return {
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/"
        "tuneloop-local/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": datetime.now(UTC).isoformat(),
        "id": str(uuid.uuid4()),
        "data": {
            "api": "PutBlockList",
            "requestId": str(uuid.uuid4()),
            "eTag": etag,
            "contentType": "application/x-ndjson",
            "contentLength": size,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": f"{time.time_ns():032x}",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


@dataclass
class _Timer:
    name: str
    schedule: str | None  # NCRONTAB, used when ``every`` is None
    every: float | None
    next_at: float = 0.0

    def arm(self, now: float) -> None:
        if self.every is not None:
            self.next_at = now + self.every
        else:
            assert self.schedule is not None
            wall = datetime.fromtimestamp(now, UTC)
            self.next_at = next_fire(self.schedule, wall).timestamp()


@dataclass
class _Delivery:
    """Retry state of one delivery (a blob version or an event)."""

    attempts: int = 0
    retry_at: float = 0.0
    last_error: str = ""


@dataclass
class DevHost:
    """The local stand-in for the Functions host. ``step()`` does one pass (tests call it).

    ``functions`` replaces registered functions by name (tests wrap or break one);
    ``platform`` replaces the local platform (tests pass a fake with an outbox);
    ``clock`` is the time source for back-off and timers;
    ``sdk_options`` are extra keyword arguments for the storage SDK clients ``start()`` builds
    (``Clients(sdk_options=...)``; bench/burst.py counts requests with a ``raw_request_hook``).
    """

    settings: Settings
    poll_every: float = 1.0
    reconcile_every: float | None = None  # None = the NCRONTAB schedule from settings
    sweep_every: float | None = None
    run_timers: bool = True
    threads: int = 1  # torch threads of the local trainer and servers
    max_attempts: int = MAX_ATTEMPTS
    backoff: float = 2.0  # seconds before the first retry; doubles per failed attempt
    max_backoff: float = 60.0
    clock: Callable[[], float] = time.time
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    platform: HostedPlatform | None = None
    clients: Clients | None = None
    sdk_options: Mapping[str, Any] | None = None
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    _storage: LocalStorage | None = None
    _topic: LocalTopic | None = None
    _functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    _seen_blobs: set[tuple[str, str]] = field(default_factory=set)
    _deliveries: dict[str, _Delivery] = field(default_factory=dict)
    _timers: list[_Timer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _step_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what start() wired ---------------------------------------------------------------
    @property
    def started_clients(self) -> Clients:
        """The clients ``start()`` wired; a RuntimeError before that."""
        if self.clients is None:
            raise RuntimeError("the devhost is not started: call start() first")
        return self.clients

    @property
    def local_platform(self) -> LocalPlatform:
        """The embedded local platform ``start()`` wired (not a test's replacement)."""
        from shared.platform.local import LocalPlatform

        if not isinstance(self.platform, LocalPlatform):
            raise RuntimeError("the devhost runs no LocalPlatform (not started, or replaced)")
        return self.platform

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> DevHost:
        """Start storage, wire the clients and the local platform, restore endpoints."""
        settings = self.settings
        if settings.platform_kind != "local":
            log.warning("devhost runs the embedded local platform (settings chose %s)",
                        settings.platform_kind)
            settings = settings.model_copy(update={"platform": "local"})
        self.settings = self._ensure_events(self._ensure_storage(settings))
        self._write_state()  # at once: a devhost that dies from here on leaves it recorded
        clients = Clients(self.settings, sdk_options=self.sdk_options)
        clients.storage.ensure_containers()
        clients.ledger.ensure_table()
        if self.platform is None:
            from shared.platform.local import LocalPlatform

            self.platform = LocalPlatform(
                self.settings, storage=clients.storage, threads=self.threads
            )
        for problem in self.platform.restore():
            log.warning("devhost restore: %s", problem)
        port: Platform = self.platform  # type: ignore[assignment]
        clients.use_platform(port)
        self.clients = clients
        _root.set_clients(clients)
        self.retry_lost_jobs()
        self._functions = {**load_functions(), **self.functions}
        now = self.clock()
        self._timers = [
            _Timer("reconcile_runs", self.settings.reconcile_schedule, self.reconcile_every),
            _Timer("sweep_idle_endpoints", self.settings.sweep_schedule, self.sweep_every),
        ]
        for timer in self._timers:
            timer.arm(now)
        log.info("devhost up storage=%s home=%s", self.blob_endpoint, self.settings.home)
        return self

    def start_background(self) -> DevHost:
        """``start()`` then run the delivery loop in a daemon thread."""
        self.start()
        self._thread = threading.Thread(target=self.serve, name="devhost", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        """Run the delivery loop until :meth:`stop` (call after :meth:`start`)."""
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the loop must outlive any one delivery
                log.exception("devhost step failed; continuing")
            self._stop.wait(self.poll_every)

    def run_forever(self) -> None:
        """``start()``, serve until interrupted, ``stop()``."""
        self.start()
        try:
            self.serve()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the loop, every child process of the platform, and the home's Azurite if this
        devhost owns it (started it, or adopted it from a devhost that died)."""
        from shared.platform.local.azurite import read_host_state, write_host_state

        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)
        if self.platform is not None:
            self.platform.close()
        _root.set_clients(None)
        topic, self._topic = self._topic, None
        if topic is not None:
            topic.stop()
        storage, self._storage = self._storage, None
        if storage is not None and storage.owned:
            storage.stop()
            home = Path(self.settings.home)
            try:
                state = read_host_state(home)
            except TuneloopError:
                state = None  # replaced meanwhile by something unreadable: not ours to fix
            if state is not None and state.pid == os.getpid():
                write_host_state(home, pid=os.getpid(), storage=None, started=state.started)

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one pass -----------------------------------------------------------------------
    def step(self) -> None:
        """Deliver new blobs, pending platform events and due timers, once."""
        with self._step_lock:
            self.deliver_blobs()
            self.deliver_events()
            if self.run_timers:
                self.fire_due_timers()

    def deliver_blobs(self) -> int:
        """Deliver each new blob version in the incoming container once; the count delivered."""
        assert self.clients is not None
        s = self.settings
        container = self.clients.blob_service.get_container_client(s.incoming_container)
        delivered = 0
        for blob in container.list_blobs():
            seen = (blob.name, str(blob.etag))
            if seen in self._seen_blobs:
                continue
            key = f"blob:{s.incoming_container}/{blob.name}@{blob.etag}"
            event = blob_created_event(
                self.blob_endpoint, s.incoming_container, blob.name, str(blob.etag),
                int(blob.size or 0),
            )
            done = self._deliver(key, "ingest_dataset", self._ingest_binding(event),
                                 about={"event": event})
            if done:
                self._seen_blobs.add(seen)
                delivered += 1
        return delivered

    def deliver_events(self) -> int:
        """Deliver the platform's pending job events to ``on_job_event``; the count delivered."""
        assert self.platform is not None
        delivered = 0
        for raw in self.platform.pending_events():
            event = func.EventGridEvent(
                id=raw["id"],
                data=raw["data"],
                topic=raw["topic"],
                subject=raw["subject"],
                event_type=raw["eventType"],
                event_time=datetime.fromisoformat(str(raw["eventTime"]).replace("Z", "+00:00")),
                data_version=raw.get("dataVersion", ""),
            )
            if self._deliver(f"event:{raw['id']}", "on_job_event", event, about={"event": raw}):
                self.platform.ack_event(str(raw["id"]))
                delivered += 1
        return delivered

    def fire_due_timers(self, *, force: bool = False) -> list[str]:
        """Run each timer function that is due (all with ``force``); the names fired."""
        fired = []
        now = self.clock()
        for timer in self._timers:
            if force or now >= timer.next_at:
                past_due = now - timer.next_at > 60
                try:
                    self._functions[timer.name](TimerRequest(past_due=past_due))
                except Exception as exc:  # the host logs a failed timer run and waits
                    log.warning("devhost timer %s failed: %s", timer.name, exc)
                timer.arm(self.clock())
                fired.append(timer.name)
        return fired

    def retry_lost_jobs(self) -> int:
        """Retry each job the platform lost with its host as the run's next attempt; how many
        were settled. A failure (storage down) is logged; the next start tries again."""
        from shared.ingest import MAX_ATTEMPTS as RUN_ATTEMPTS
        from shared.recovery import retry_lost_run

        assert self.platform is not None
        assert self.clients is not None
        settled = 0
        for job in self.platform.lost_jobs():
            try:
                note = retry_lost_run(
                    settings=self.settings, ledger=self.clients.ledger,
                    storage=self.clients.storage, platform=self.clients.platform,
                    lost=job.plan, error=job.error, max_attempts=RUN_ATTEMPTS,
                )
            except Exception as exc:  # one run must not keep the devhost from starting
                log.warning("devhost: lost job %s not retried yet: %s: %s",
                            job.plan.run_id, type(exc).__name__, exc)
                continue
            self.platform.settle_lost(job.plan.run_id, note)
            log.warning("devhost: job %s was lost with its host; %s", job.plan.run_id, note)
            settled += 1
        return settled

    def fire(self, name: str) -> None:
        """Run one timer function now (tests use this)."""
        self._functions[name](TimerRequest(past_due=False))

    # -- where things are ---------------------------------------------------------------
    @property
    def blob_endpoint(self) -> str:
        assert self.clients is not None
        return str(self.clients.blob_service.url)

    @property
    def local_storage(self) -> LocalStorage | None:
        """The home's Azurite this devhost uses (None: storage is configured elsewhere)."""
        return self._storage

    @property
    def topic(self) -> LocalTopic | None:
        """The home's local Event Grid topic this devhost serves (None before ``start()``)."""
        return self._topic

    @property
    def azurite_ports(self) -> tuple[int, int, int] | None:
        """(blob, queue, table) of the home's Azurite this devhost uses, if it uses one."""
        return self._storage.ports if self._storage is not None else None

    # -- internals ----------------------------------------------------------------------
    def _deliver(self, key: str, name: str, binding: Any, *, about: dict[str, Any]) -> bool:
        """Call a function once its back-off allows; True once done (or dead-lettered)."""
        state = self._deliveries.setdefault(key, _Delivery())
        if self.clock() < state.retry_at:
            return False
        try:
            self._functions[name](binding)
        except Exception as exc:
            state.attempts += 1
            state.last_error = f"{type(exc).__name__}: {exc}"
            if state.attempts >= self.max_attempts:
                self._dead_letter(key, name, state, about)
                del self._deliveries[key]
                return True
            delay = min(self.backoff * 2.0 ** (state.attempts - 1), self.max_backoff)
            state.retry_at = self.clock() + delay
            log.warning("devhost %s failed (attempt %s of %s, retry in %.0fs): %s",
                        name, state.attempts, self.max_attempts, delay, state.last_error)
            return False
        self._deliveries.pop(key, None)
        return True

    def _dead_letter(
        self, key: str, name: str, state: _Delivery, about: dict[str, Any]
    ) -> None:
        letter = {
            "key": key,
            "function": name,
            "attempts": state.attempts,
            "last_error": state.last_error,
            "dead_lettered": datetime.now(UTC).isoformat(),
            **about,
        }
        self.dead_letters.append(letter)
        folder = Path(self.settings.home) / "devhost" / "deadletter"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        (folder / f"{name}-{digest}.json").write_text(
            json.dumps(letter, indent=2, default=str), encoding="utf-8"
        )
        log.error("devhost dead-lettered %s for %s after %s attempts: %s (see %s)",
                  key, name, state.attempts, state.last_error, folder)

    def _ingest_binding(self, event: dict[str, Any]) -> Any:
        """The binding object the blob trigger receives (see functions/ingest.py)."""
        from functions.ingest import binding_for_blob_event

        assert self.clients is not None
        return binding_for_blob_event(event, self.clients)

    def _ensure_storage(self, settings: Settings) -> Settings:
        """Configured storage as is; else the home's Azurite (found running, or started).

        A configured connection string that is the home's recorded Azurite (exported from
        the banner) counts as the home's Azurite: adopted or restarted like it.
        """
        from shared.platform.local.azurite import read_host_state, start_local_storage

        home = Path(settings.home)
        conn = settings.storage_connection_string
        if settings.storage_account_url:
            return settings
        if conn:
            state = read_host_state(home)
            if state is None or state.azurite_connection_string != conn:
                return settings
        self._storage = start_local_storage(home)
        return settings.model_copy(
            update={"storage_connection_string": self._storage.connection_string}
        )

    def _ensure_events(self, settings: Settings) -> Settings:
        """Start the home's local Event Grid topic; the settings with the app publishing to it.

        A configured ``TUNELOOP_EVENTS_ENDPOINT`` (a real topic) is kept: the app publishes
        there, and the local topic still serves whoever posts to it.
        """
        from shared.platform.local.topic import LocalTopic, topic_key

        home = Path(settings.home)
        self._topic = LocalTopic(home, topic_key(home), webhook_url=_webhook_url()).start()
        fields = type(settings).model_fields
        if "events_endpoint" not in fields or getattr(settings, "events_endpoint", None):
            return settings
        from pydantic import SecretStr

        update: dict[str, Any] = {"events_endpoint": self._topic.url}
        if "events_key" in fields:  # a secret setting: SecretStr, as load_settings makes it
            update["events_key"] = SecretStr(self._topic.key)
        return settings.model_copy(update=update)

    def _write_state(self) -> None:
        """Record where this devhost's things are (``tuneloop upload`` reads it)."""
        from shared.platform.local.azurite import write_host_state

        topic = (self._topic.url, self._topic.key) if self._topic is not None else None
        write_host_state(
            Path(self.settings.home), pid=os.getpid(), storage=self._storage, topic=topic
        )


def _webhook_url() -> str | None:
    """``TUNELOOP_WEBHOOK_URL``: where the local topic forwards each event (None: nowhere).

    Read here, in the devhost (a composition root), rather than as a ``Settings`` field:
    only the local topic uses it.
    """
    return os.environ.get("TUNELOOP_WEBHOOK_URL", "").strip() or None
