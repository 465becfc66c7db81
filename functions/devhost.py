"""Run the app's functions locally, without the Functions host.

What the host and Event Grid do in Azure, done here on one machine:
- starts Azurite (persisted under ``<home>/azurite``) unless storage is configured or running;
- watches the incoming container and delivers BlobCreated to ``ingest_dataset``;
- delivers the local platform's job events (Azure ML Event Grid schema) to ``on_job_event``,
  retrying failed deliveries with back-off and dead-lettering after ``MAX_ATTEMPTS``;
- fires the timer functions (``reconcile_runs``, ``sweep_idle_endpoints``) on their NCRONTAB
  schedules (or on fixed intervals given by the caller, for the demo and tests).

Every delivery goes through the same function objects ``function_app`` registers, with real
``azure.functions`` binding objects.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func
from azure.functions.timer import TimerRequest

from functions import _root
from shared.clients import Clients
from shared.schedule import next_fire
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.platform.local import LocalPlatform
    from shared.platform.local.azurite import Azurite

__all__ = ["MAX_ATTEMPTS", "DevHost", "blob_created_event", "load_functions"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
AZURITE_PORTS = (10000, 10001, 10002)  # blob, queue, table: the emulator's defaults


def load_functions() -> dict[str, Callable[..., Any]]:
    """The user functions ``function_app`` registers, by function name."""
    import function_app

    return {
        str(f.get_function_name()): f.get_user_function() for f in function_app.app.get_functions()
    }


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def blob_created_event(account_url: str, container: str, name: str, etag: str,
                       size: int) -> dict[str, Any]:
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
    schedule: str | None  # NCRONTAB, or None when ``every`` is set
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
class DevHost:
    """The local stand-in for the Functions host. ``step()`` does one pass (tests call it)."""

    settings: Settings
    poll_every: float = 1.0
    reconcile_every: float | None = None  # None = the NCRONTAB schedule from settings
    sweep_every: float | None = None
    run_timers: bool = True
    clients: Clients | None = None
    platform: LocalPlatform | None = None
    _azurite: Azurite | None = None
    _functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    _seen_blobs: set[tuple[str, str]] = field(default_factory=set)
    _attempts: dict[str, int] = field(default_factory=dict)
    _retry_at: dict[str, float] = field(default_factory=dict)
    _timers: list[_Timer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> DevHost:
        """Start storage, wire the clients and the local platform, restore endpoints."""
        self.settings = self._ensure_storage(self.settings)
        clients = Clients(self.settings)
        clients.storage.ensure_containers()
        clients.ledger.ensure_table()
        from shared.platform.local import LocalPlatform

        platform = LocalPlatform.from_settings(self.settings, storage=clients.storage)
        for problem in platform.restore():
            log.warning("devhost restore: %s", problem)
        clients.use_platform(platform)
        self.clients, self.platform = clients, platform
        _root.set_clients(clients)
        self._functions = load_functions()
        now = time.time()
        self._timers = [
            _Timer("reconcile_runs", self.settings.reconcile_schedule, self.reconcile_every),
            _Timer("sweep_idle_endpoints", self.settings.sweep_schedule, self.sweep_every),
        ]
        for timer in self._timers:
            timer.arm(now)
        log.info("devhost up storage=%s home=%s", self._blob_endpoint(), self.settings.home)
        return self

    def start_background(self) -> DevHost:
        """``start()`` then run the delivery loop in a daemon thread."""
        self.start()
        self._thread = threading.Thread(target=self._loop, name="devhost", daemon=True)
        self._thread.start()
        return self

    def run_forever(self) -> None:
        self.start()
        try:
            self._loop()
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self.platform is not None:
            self.platform.close()
        _root.set_clients(None)
        if self._azurite is not None:
            self._azurite.stop()
            self._azurite = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the loop must outlive any one delivery
                log.exception("devhost step failed; continuing")
            self._stop.wait(self.poll_every)

    # -- one pass -----------------------------------------------------------------------
    def step(self) -> None:
        """Deliver new blobs, pending platform events and due timers, once."""
        self.deliver_blobs()
        self.deliver_events()
        if self.run_timers:
            self.fire_due_timers()

    def deliver_blobs(self) -> int:
        assert self.clients is not None
        s = self.settings
        container = self.clients.blob_service.get_container_client(s.incoming_container)
        delivered = 0
        for blob in container.list_blobs():
            key = (blob.name, str(blob.etag))
            if key in self._seen_blobs:
                continue
            event = blob_created_event(
                self._blob_endpoint(), s.incoming_container, blob.name, str(blob.etag),
                int(blob.size or 0),
            )
            if self._call_with_retry(f"blob:{blob.name}:{blob.etag}", "ingest_dataset",
                                     self._ingest_binding(event)):
                self._seen_blobs.add(key)
                delivered += 1
        return delivered

    def deliver_events(self) -> int:
        assert self.platform is not None
        delivered = 0
        for raw in self.platform.pending_events():
            event = func.EventGridEvent(
                id=raw["id"],
                data=raw["data"],
                topic=raw["topic"],
                subject=raw["subject"],
                event_type=raw["eventType"],
                event_time=datetime.fromisoformat(raw["eventTime"]),
                data_version=raw.get("dataVersion", ""),
            )
            if self._call_with_retry(f"event:{raw['id']}", "on_job_event", event):
                self.platform.ack_event(raw["id"])
                delivered += 1
            elif self._attempts.get(f"event:{raw['id']}", 0) >= MAX_ATTEMPTS:
                log.error("devhost dead-lettered event id=%s after %s attempts",
                          raw["id"], MAX_ATTEMPTS)
                self.platform.ack_event(raw["id"])
        return delivered

    def fire_due_timers(self, *, force: bool = False) -> list[str]:
        fired = []
        now = time.time()
        for timer in self._timers:
            if force or now >= timer.next_at:
                past_due = now - timer.next_at > 60
                self._call_with_retry(f"timer:{timer.name}:{timer.next_at}", timer.name,
                                      TimerRequest(past_due=past_due), retries=False)
                timer.arm(time.time())
                fired.append(timer.name)
        return fired

    def fire(self, name: str) -> None:
        """Run one timer function now (the CLI's ``sweep`` and tests use this)."""
        self._functions[name](TimerRequest(past_due=False))

    # -- internals ----------------------------------------------------------------------
    def _call_with_retry(self, key: str, name: str, binding: Any, *, retries: bool = True) -> bool:
        """Call a function; on failure back off exponentially like the host (True = done)."""
        if retries and time.time() < self._retry_at.get(key, 0.0):
            return False
        try:
            self._functions[name](binding)
        except Exception as exc:
            attempts = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempts
            self._retry_at[key] = time.time() + min(2.0**attempts, 60.0)
            log.warning("devhost %s failed (attempt %s): %s", name, attempts, exc)
            if attempts >= MAX_ATTEMPTS and key.startswith("blob:"):
                log.error("devhost gives up on %s after %s attempts", key, attempts)
                return True
            return False
        self._attempts.pop(key, None)
        self._retry_at.pop(key, None)
        return True

    def _ingest_binding(self, event: dict[str, Any]) -> Any:
        """The binding object the blob trigger receives (see functions/ingest.py)."""
        from functions.ingest import binding_for_blob_event

        assert self.clients is not None
        return binding_for_blob_event(event, self.clients)

    def _blob_endpoint(self) -> str:
        assert self.clients is not None
        return str(self.clients.blob_service.url)

    def _ensure_storage(self, settings: Settings) -> Settings:
        if settings.storage_connection_string or settings.storage_account_url:
            return settings
        from shared.platform.local.azurite import connection_string, start_azurite

        blob, queue, table = AZURITE_PORTS
        if not all(_port_open(p) for p in (blob, table)):
            home = Path(settings.home)
            home.mkdir(parents=True, exist_ok=True)
            self._azurite = start_azurite(
                location=home / "azurite", ports=AZURITE_PORTS, log_file=home / "azurite.log"
            )
            log.info("devhost started Azurite on %s", AZURITE_PORTS)
        return settings.model_copy(
            update={"storage_connection_string": connection_string(blob, table, queue)}
        )
