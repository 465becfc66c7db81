"""The devhost's deliveries on Azurite: blob versions once, retries with back-off, dead
letters, event acknowledgement and timers, with a fake platform and a fake clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from functions.devhost import DevHost, load_functions
from shared.clients import Clients
from shared.ledger import RunState
from shared.settings import Settings
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()  # on a whole minute


def dataset(n: int = 12, topic: str = "a") -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"{topic} question {i}"},
                      {"role": "assistant", "content": f"{topic} answer {i}"}]}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


class HostedFake(FakePlatform):
    """The in-memory platform plus the outbox and lifecycle the devhost drives."""

    def __init__(self) -> None:
        super().__init__()
        self.outbox: list[dict[str, Any]] = []
        self.acked: list[str] = []
        self.restored = 0
        self.closed = 0

    def pending_events(self) -> list[dict[str, Any]]:
        return [e for e in self.outbox if e["id"] not in self.acked]

    def ack_event(self, event_id: str) -> None:
        self.acked.append(event_id)

    def restore(self) -> list[str]:
        self.restored += 1
        return []

    def lost_jobs(self) -> list[Any]:
        return []

    def settle_lost(self, name: str, note: str) -> None:
        raise AssertionError(f"no job was lost, yet {name} was settled: {note}")

    def close(self) -> None:
        self.closed += 1


class Clock:
    """A settable time source (seconds since the epoch)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Wraps a function: records each binding, then fails ``fail`` times or calls through."""

    def __init__(self, through: Callable[..., Any] | None = None, *, fail: int = 0) -> None:
        self.through = through
        self.fail = fail
        self.calls: list[Any] = []

    def __call__(self, binding: Any) -> None:
        self.calls.append(binding)
        if len(self.calls) <= self.fail:
            raise RuntimeError(f"delivery {len(self.calls)} refused")
        if self.through is not None:
            self.through(binding)


@pytest.fixture
def platform() -> HostedFake:
    return HostedFake()


@pytest.fixture
def hosts(settings: Settings, platform: HostedFake) -> Iterator[Callable[..., DevHost]]:
    """Start devhosts on this test's storage and platform; every one is stopped at the end."""
    started: list[DevHost] = []

    def make(**kwargs: Any) -> DevHost:
        kwargs.setdefault("clock", Clock())
        host = DevHost(settings, platform=platform, **kwargs)
        started.append(host)
        return host.start()

    yield make
    for host in started:
        host.stop()


def upload(clients: Clients, name: str, data: bytes) -> None:
    clients.storage.write_bytes(BlobRef(clients.settings.incoming_container, name), data)


def job_event(run_id: str, status: str = "Completed") -> dict[str, Any]:
    return {
        "topic": "/subscriptions/x/resourceGroups/y/providers/"
        "Microsoft.MachineLearningServices/workspaces/z",
        "subject": f"experiments/e/runs/{run_id}",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "eventTime": "2026-03-01T12:00:00.1234567Z",
        "id": f"evt-{run_id}-{status}",
        "data": {"runId": run_id, "runStatus": status, "experimentName": "e"},
        "dataVersion": "",
        "metadataVersion": "1",
    }


# -- blobs ----------------------------------------------------------------------------------
def test_each_blob_version_is_delivered_once(
    hosts: Callable[..., DevHost], clients: Clients, platform: HostedFake
) -> None:
    """A blob version reaches ingest_dataset once however many passes run; a new version again."""
    ingest = Recorder(load_functions()["ingest_dataset"])
    host = hosts(functions={"ingest_dataset": ingest})
    upload(clients, "colors/one.jsonl", dataset())
    for _ in range(3):
        host.step()
    assert [b.blob_name for b in ingest.calls] == ["colors/one.jsonl"]
    (run,) = clients.ledger.list(line="colors")
    assert run.state == RunState.SUBMITTED
    upload(clients, "colors/one.jsonl", dataset(topic="b"))  # a new version of the same blob
    host.step()
    host.step()
    assert len(ingest.calls) == 2
    assert platform.calls["submit_finetune"] == 2


def test_redelivery_after_a_restart_is_harmless(
    hosts: Callable[..., DevHost], clients: Clients, platform: HostedFake
) -> None:
    """A restarted devhost delivers the blob again; the ledger claim makes it a no-op."""
    first = Recorder(load_functions()["ingest_dataset"])
    host = hosts(functions={"ingest_dataset": first})
    upload(clients, "colors/one.jsonl", dataset())
    host.step()
    host.stop()
    again = Recorder(load_functions()["ingest_dataset"])
    hosts(functions={"ingest_dataset": again}).step()
    assert len(first.calls) == 1
    assert len(again.calls) == 1
    assert platform.calls["submit_finetune"] == 1
    assert [r.state for r in clients.ledger.list(line="colors")] == [RunState.SUBMITTED]
    assert platform.restored == 2


def test_a_failing_blob_delivery_backs_off_then_is_dead_lettered(
    hosts: Callable[..., DevHost], clients: Clients, settings: Settings
) -> None:
    """Retries wait 2, 4, 8 s (doubling); after max_attempts the delivery goes to a dead letter."""
    clock = Clock()
    broken = Recorder(fail=99)
    host = hosts(functions={"ingest_dataset": broken}, clock=clock, max_attempts=4, backoff=2.0)
    upload(clients, "colors/bad.jsonl", dataset())
    calls_at = []
    for offset in (0, 1, 2.5, 4, 6.6, 10, 14.7, 20, 40):
        clock.now = T0 + offset
        before = len(broken.calls)
        host.step()
        if len(broken.calls) > before:
            calls_at.append(offset)
    assert calls_at == [0, 2.5, 6.6, 14.7]
    (letter,) = host.dead_letters
    assert letter["function"] == "ingest_dataset"
    assert letter["attempts"] == 4
    assert "delivery 4 refused" in letter["last_error"]
    assert letter["event"]["subject"].endswith("/blobs/colors/bad.jsonl")
    files = list((Path(settings.home) / "devhost" / "deadletter").glob("*.json"))
    assert [json.loads(f.read_text())["key"] for f in files] == [letter["key"]]


# -- events ---------------------------------------------------------------------------------
def test_events_are_delivered_as_event_grid_events_and_acked(
    hosts: Callable[..., DevHost], platform: HostedFake
) -> None:
    """A pending platform event reaches on_job_event as an EventGridEvent, then is acked."""
    handler = Recorder()
    host = hosts(functions={"on_job_event": handler})
    raw = job_event("tl-x-1")
    platform.outbox.append(raw)
    host.step()
    host.step()
    (event,) = handler.calls
    assert isinstance(event, func.EventGridEvent)
    assert (event.id, event.event_type, event.subject) == (
        raw["id"], raw["eventType"], raw["subject"])
    assert event.get_json() == raw["data"]
    assert event.event_time is not None
    assert platform.acked == [raw["id"]]


def test_a_failing_event_is_retried_until_it_succeeds(
    hosts: Callable[..., DevHost], platform: HostedFake
) -> None:
    """An event whose handler fails twice stays pending, is redelivered after back-off, acked."""
    clock = Clock()
    handler = Recorder(fail=2)
    host = hosts(functions={"on_job_event": handler}, clock=clock, backoff=1.0)
    platform.outbox.append(job_event("tl-x-2"))
    for offset in (0, 0.5, 1.0, 2.0, 3.0, 10.0):
        clock.now = T0 + offset
        host.step()
    assert len(handler.calls) == 3
    assert platform.acked == ["evt-tl-x-2-Completed"]
    assert host.dead_letters == []


def test_an_event_that_always_fails_is_dead_lettered_and_acked(
    hosts: Callable[..., DevHost], platform: HostedFake
) -> None:
    """After max_attempts the event leaves the outbox into a dead letter (no endless loop)."""
    clock = Clock()
    handler = Recorder(fail=99)
    host = hosts(functions={"on_job_event": handler}, clock=clock, max_attempts=3, backoff=1.0)
    platform.outbox.append(job_event("tl-x-3"))
    for offset in range(0, 30, 1):
        clock.now = T0 + offset
        host.step()
    assert len(handler.calls) == 3
    assert platform.acked == ["evt-tl-x-3-Completed"]
    assert host.dead_letters[0]["event"]["id"] == "evt-tl-x-3-Completed"


# -- timers ---------------------------------------------------------------------------------
def test_timers_fire_on_their_ncrontab_schedule_or_interval(settings: Settings) -> None:
    """reconcile_runs fires on its NCRONTAB seconds; the sweeper on its fixed interval."""
    clock = Clock()
    reconcile, sweep = Recorder(), Recorder()
    every_10s = settings.model_copy(update={"reconcile_schedule": "*/10 * * * * *"})
    host = DevHost(every_10s, platform=HostedFake(), clock=clock, sweep_every=25.0,
                   functions={"reconcile_runs": reconcile, "sweep_idle_endpoints": sweep})
    host.start()
    try:
        fired = {}
        for offset in (5, 9, 10, 15, 20, 25, 26, 49, 50):
            clock.now = T0 + offset
            fired[offset] = host.fire_due_timers()
    finally:
        host.stop()
    assert [o for o, names in fired.items() if "reconcile_runs" in names] == [10, 20, 49, 50]
    assert [o for o, names in fired.items() if "sweep_idle_endpoints" in names] == [25, 50]
    assert not any(t.past_due for t in reconcile.calls)


def test_a_late_timer_run_is_past_due(settings: Settings, hosts: Callable[..., DevHost]) -> None:
    """A timer more than a minute late is called with past_due=True, as the host does."""
    clock = Clock()
    sweep = Recorder()
    host = hosts(clock=clock, sweep_every=10.0, reconcile_every=1000.0,
                 functions={"sweep_idle_endpoints": sweep})
    clock.now = T0 + 200
    assert host.fire_due_timers() == ["sweep_idle_endpoints"]
    assert sweep.calls[0].past_due is True


def test_background_loop_fires_timers_on_tiny_intervals(settings: Settings) -> None:
    """start_background runs passes by itself: a 0.1 s reconcile interval fires repeatedly."""
    fired = threading.Event()
    count: list[int] = []

    def reconcile(timer: func.TimerRequest) -> None:
        count.append(1)
        if len(count) >= 3:
            fired.set()

    host = DevHost(settings, platform=HostedFake(), poll_every=0.05, reconcile_every=0.1,
                   functions={"reconcile_runs": reconcile})
    host.start_background()
    try:
        assert fired.wait(timeout=30)
    finally:
        host.stop()
    assert host._thread is not None
    assert not host._thread.is_alive()
