"""A sweep pass publishes its decisions as one tuneloop.sweep.decided CloudEvent, recorded in
the ledger's outbox before anything is deleted and drained like the run events."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.messaging import CloudEvent
from jsonschema import Draft202012Validator

from cli.commands import sweep as sweep_command
from shared.clients import Clients
from shared.ledger import OUTBOX_PARTITION
from shared.lifecycle import SWEEP_EVENT_BUDGET, Origin, sweep_event
from shared.naming import endpoint_name, endpoint_scope
from shared.outbox import drain, drain_after
from shared.platform.port import EndpointInfo
from shared.settings import Settings
from shared.sweep import EVENT_HOLD, run_sweep
from tests.fakes.events import FakePublisher
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform
from tests.fakes.storage import FakeStorage

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "tuneloop.event.v1.json").read_text()
)
SWEEP_ID = "sweep-20260301T120000.000000Z"


class Crash(BaseException):
    """The process dies (not an Exception: nothing in the sweep catches it)."""


def _endpoint(name: str, line: str | None, *, managed: bool = True) -> EndpointInfo:
    tags = {"tuneloop_managed": "true"} if managed else {}
    if line:
        tags["tuneloop_line"] = line
    return EndpointInfo(
        name=name, id=f"/subscriptions/s/onlineEndpoints/{name}", tags=tags,
        created=NOW - timedelta(days=8), modified=NOW - timedelta(days=5),
        provisioning_state="Succeeded", traffic={"v01": 100}, location="eastus",
    )


def _world(tmp_path: Path, *, events: bool = True, **settings: Any) -> tuple[
    Settings, FakeLedger, FakePlatform, str
]:
    """An idle endpoint (deleted), a busy one (kept), someone else's (kept)."""
    s = Settings(platform="local", home=tmp_path, idle_after=timedelta(days=1), **settings)
    ledger = FakeLedger(events=Origin.from_settings(s) if events else None)
    platform = FakePlatform(now=NOW)
    idle = endpoint_name("support", endpoint_scope(s))
    platform.add_endpoint(_endpoint(idle, "support"), requests=0)
    platform.add_endpoint(_endpoint("tl-chat-busy", "chat"), requests=12)
    platform.add_endpoint(_endpoint("someone-elses", None, managed=False), requests=0)
    return s, ledger, platform, idle


def _valid(event: dict[str, Any]) -> None:
    CloudEvent.from_dict(dict(event))  # a CloudEvent 1.0 the SDK accepts
    errors = [e.message for e in Draft202012Validator(SCHEMA).iter_errors(event["data"])]
    assert errors == [], errors


def _sweep_events(publisher: FakePublisher) -> list[dict[str, Any]]:
    return [e for e in publisher.received if e["type"] == "tuneloop.sweep.decided"]


def _outbox_rows(ledger: FakeLedger) -> list[str]:
    return [
        str(e["RowKey"]) for e in ledger.active.list_entities()
        if e["PartitionKey"] == OUTBOX_PARTITION and str(e["RowKey"]).startswith("s:")
    ]


def test_a_pass_publishes_one_event_listing_every_decision_and_its_outcome(
    tmp_path: Path,
) -> None:
    """The drain after the sweep sends one tuneloop.sweep.decided: id <sweep id>.decided,
    subject sweeps/<id>, source without a line, every endpoint's decision with its outcome,
    the report's path, valid against the schema; nothing is left for the reconciler."""
    settings, ledger, platform, idle = _world(tmp_path)
    storage = FakeStorage(settings)
    report = run_sweep(platform=platform, ledger=ledger, storage=storage, settings=settings,
                       now=NOW)
    publisher = FakePublisher()
    drain_after(ledger, publisher, now=NOW)
    [event] = _sweep_events(publisher)
    _valid(event)
    scope = Origin.from_settings(settings).scope
    assert (event["id"], event["subject"], event["source"]) == (
        f"{SWEEP_ID}.decided", f"sweeps/{SWEEP_ID}", f"/tuneloop/{scope}"
    )
    data = event["data"]
    assert (data["line"], data["run"], data["state"]) == (None, None, None)
    assert data["reports"] == {"sweep": report.blob}
    sweep = data["sweep"]
    assert (sweep["mode"], sweep["metrics_available"], sweep["omitted"]) == ("delete", True, 0)
    assert sweep["finished"] is not None
    assert sweep["summary"] == report.summary()
    decided = {d["endpoint"]: (d["action"], d["outcome"]) for d in sweep["decisions"]}
    assert decided == {
        idle: ("delete", "deletion-started"),
        "tl-chat-busy": ("keep", None),
        "someone-elses": ("keep", None),
    }
    busy = next(d for d in sweep["decisions"] if d["endpoint"] == "tl-chat-busy")
    assert busy["reason"].startswith("busy: 12 requests")
    assert "1 deletions started" in data["reason"]
    assert _outbox_rows(ledger) == []
    assert drain(ledger, publisher, now=NOW + timedelta(hours=1)).sent == 0


def test_a_crash_between_the_decision_and_the_publish_sends_it_later_once(
    tmp_path: Path,
) -> None:
    """The decisions are recorded before the first deletion: a pass that dies while deleting
    leaves its event to the reconciler's drain, which sends it once the pass's hold is over
    (decisions without outcomes, finished null), once per id."""
    settings, ledger, platform, _ = _world(tmp_path)

    def die(name: str) -> None:
        raise Crash

    platform.delete_endpoint = die  # type: ignore[method-assign]
    try:
        run_sweep(platform=platform, ledger=ledger, storage=None, settings=settings, now=NOW)
    except Crash:
        pass
    else:  # pragma: no cover - the fake must crash
        raise AssertionError("the sweep did not reach the deletion")
    ledger.take_written_rows()  # the dead process's memory is gone
    publisher = FakePublisher()
    assert drain(ledger, publisher, now=NOW + EVENT_HOLD / 2).sent == 0  # still held
    drain(ledger, publisher, now=NOW + EVENT_HOLD + timedelta(seconds=1))
    [event] = _sweep_events(publisher)
    _valid(event)
    assert event["id"] == f"{SWEEP_ID}.decided"
    sweep = event["data"]["sweep"]
    assert sweep["finished"] is None
    assert [d["outcome"] for d in sweep["decisions"]] == [None, None, None]
    assert "not yet acted on" in event["data"]["reason"]
    drain(ledger, publisher, now=NOW + timedelta(hours=2))
    assert publisher.ids.count(f"{SWEEP_ID}.decided") == 1


def test_a_pass_that_finished_but_was_not_drained_is_sent_by_the_reconciler(
    tmp_path: Path,
) -> None:
    """A crash after the sweep, before its drain: the reconciler sends the event with the
    outcomes at once (the hold ends with the pass), and only once."""
    settings, ledger, platform, idle = _world(tmp_path)
    run_sweep(platform=platform, ledger=ledger, storage=None, settings=settings, now=NOW)
    ledger.take_written_rows()
    ledger.take_written()
    publisher = FakePublisher()
    drain(ledger, publisher, now=NOW)
    drain(ledger, publisher, now=NOW + timedelta(minutes=30))
    [event] = _sweep_events(publisher)
    outcomes = {d["endpoint"]: d["outcome"] for d in event["data"]["sweep"]["decisions"]}
    assert outcomes[idle] == "deletion-started"


def test_a_transient_failure_backs_off_then_sends_once_and_a_refusal_is_dropped(
    tmp_path: Path,
) -> None:
    """A 503 keeps the event pending (backing off on its row); the next due drain sends it
    once. A refused sweep event (400) leaves the outbox: it is not retried."""
    settings, ledger, platform, _ = _world(tmp_path)
    run_sweep(platform=platform, ledger=ledger, storage=None, settings=settings, now=NOW)
    publisher = FakePublisher()
    publisher.fail_next(503)  # no run here: the sweep's event is the only batch
    drain_after(ledger, publisher, now=NOW)
    assert _sweep_events(publisher) == []
    assert drain(ledger, publisher, now=NOW + timedelta(seconds=5)).sent == 0  # backing off
    drain(ledger, publisher, now=NOW + timedelta(minutes=5))
    assert publisher.ids.count(f"{SWEEP_ID}.decided") == 1

    settings2, ledger2, platform2, _ = _world(tmp_path / "b")
    run_sweep(platform=platform2, ledger=ledger2, storage=None, settings=settings2, now=NOW)
    refusing = FakePublisher()
    refusing.refuse[f"{SWEEP_ID}.decided"] = 400
    drain_after(ledger2, refusing, now=NOW)
    assert _outbox_rows(ledger2) == []
    assert drain(ledger2, refusing, now=NOW + timedelta(hours=2)).failed == 0


def test_without_an_events_endpoint_a_pass_records_nothing(tmp_path: Path) -> None:
    """No endpoint configured: the sweep writes no outbox row (as the run events)."""
    settings, ledger, platform, _ = _world(tmp_path, events=False)
    writes_before = len(list(ledger.active.list_entities()))
    run_sweep(platform=platform, ledger=ledger, storage=None, settings=settings, now=NOW)
    assert _outbox_rows(ledger) == []
    assert len(list(ledger.active.list_entities())) == writes_before
    assert ledger.put_events("sweep-x", [{"id": "x"}]) is None


def test_a_timer_pass_in_dry_run_mode_is_published_with_its_mode(tmp_path: Path) -> None:
    """TUNELOOP_SWEEP_MODE=dry-run (the timer's configured mode): the pass is published with
    mode dry-run and the dry-run outcomes; nothing is deleted."""
    settings, ledger, platform, idle = _world(tmp_path, sweep_mode="dry-run")
    run_sweep(platform=platform, ledger=ledger, storage=None, settings=settings, now=NOW)
    publisher = FakePublisher()
    drain_after(ledger, publisher, now=NOW)
    [event] = _sweep_events(publisher)
    _valid(event)
    assert event["data"]["sweep"]["mode"] == "dry-run"
    outcomes = {d["endpoint"]: d["outcome"] for d in event["data"]["sweep"]["decisions"]}
    assert outcomes[idle] == "dry-run"


def _cli_clients(tmp_path: Path, publisher: FakePublisher) -> tuple[Clients, FakeLedger]:
    settings, ledger, platform, _ = _world(tmp_path)
    clients = Clients(settings, ledger=ledger, storage=FakeStorage(settings), platform=platform,
                      events_publisher=publisher)
    return clients, ledger


def test_tuneloop_sweep_dry_run_publishes_nothing_and_a_real_one_publishes_after_it(
    tmp_path: Path,
) -> None:
    """`tuneloop sweep --dry-run` is a person's what-if answered on the terminal: no event is
    recorded or sent. `tuneloop sweep` publishes its pass (and the retired run's events) right
    after it."""
    publisher = FakePublisher()
    clients, ledger = _cli_clients(tmp_path / "dry", publisher)
    out = io.StringIO()
    assert sweep_command.run(argparse.Namespace(dry_run=True, json=False), out=out,
                             clients=clients) == 0
    assert publisher.received == []
    assert _outbox_rows(ledger) == []

    clients, ledger = _cli_clients(tmp_path / "real", publisher)
    assert sweep_command.run(argparse.Namespace(dry_run=False, json=False), out=out,
                             clients=clients) == 0
    [event] = _sweep_events(publisher)
    _valid(event)
    assert event["data"]["sweep"]["mode"] == "delete"
    assert _outbox_rows(ledger) == []


def test_a_large_workspace_event_stays_one_event_within_the_budget(tmp_path: Path) -> None:
    """500 decisions: the event lists what fits in 60 KiB and counts the rest in omitted
    (the report has them all); it validates, and its outbox row (split over columns) reads
    back the same."""
    origin = Origin("0a1b2c3d", "reports")
    decisions = [
        {"endpoint": f"tl-line{i:03d}-0a1b2c3d", "line": f"line{i:03d}", "action": "keep",
         "reason": f"busy: {i + 1} requests in the last 1d (idle means ≤ 0)",
         "requests": i + 1, "idle_since": NOW.isoformat(), "outcome": None, "error": None}
        for i in range(500)
    ]
    sweep = {"id": SWEEP_ID, "mode": "delete", "started": NOW.isoformat(),
             "finished": NOW.isoformat(), "metrics_available": True, "metrics_error": None,
             "summary": {"endpoints": 500}}
    event = sweep_event(origin, sweep, decisions, time=NOW, reason="500 endpoints",
                        report="reports/_sweeps/x.json")
    _valid(event)
    listed = event["data"]["sweep"]["decisions"]
    assert 0 < len(listed) < 500
    assert len(listed) + event["data"]["sweep"]["omitted"] == 500
    assert SWEEP_EVENT_BUDGET - 1024 < len(json.dumps(event)) <= SWEEP_EVENT_BUDGET
    ledger = FakeLedger(events=origin)
    ledger.put_events(SWEEP_ID, [event])
    [row] = ledger.outbox_rows()
    assert row.outbox.pending == [event]
