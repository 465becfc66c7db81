"""The sweep shell on Azurite (ledger, reports) with the in-memory FakePlatform."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions import meta

from cli.commands import sweep as sweep_command
from functions import _root
from shared.clients import Clients
from shared.errors import ConflictError
from shared.ledger import RunState
from shared.naming import endpoint_name as scoped_endpoint_name
from shared.platform.port import EndpointInfo
from shared.settings import Settings
from shared.storage import BlobRef
from shared.sweep import Action, SweepReport, run_sweep
from tests.fakes.platform import FakePlatform

SCOPE = "tests:sweep"  # endpoint names are per workspace (shared.naming.endpoint_scope)


def endpoint_name(line: str) -> str:
    return scoped_endpoint_name(line, SCOPE)


pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def endpoint(
    line: str,
    *,
    idle_days: float = 5,
    protect: bool = False,
    managed: bool = True,
    state: str = "Succeeded",
    location: str = "eastus",
) -> EndpointInfo:
    name = endpoint_name(line)
    tags = {"tuneloop_line": line}
    if managed:
        tags["tuneloop_managed"] = "true"
    if protect:
        tags["tuneloop_protect"] = "true"
    return EndpointInfo(
        name=name,
        id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices"
        f"/workspaces/ws/onlineEndpoints/{name}",
        tags=tags,
        created=NOW - timedelta(days=idle_days + 3),
        modified=NOW - timedelta(days=idle_days),
        provisioning_state=state,
        traffic={"blue": 100},
        location=location,
    )


@pytest.fixture
def sweep_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"idle_after": DAY, "idle_max_requests": 0, "sweep_max_deletions": 5}
    )


@pytest.fixture
def wired(sweep_settings: Settings) -> tuple[Clients, FakePlatform]:
    c = Clients(sweep_settings)
    c.storage.ensure_containers()
    c.ledger.ensure_table()
    platform = FakePlatform(now=NOW)
    c.use_platform(platform)
    return c, platform


def sweep(c: Clients, **kwargs: Any) -> SweepReport:
    return run_sweep(
        platform=c.platform, ledger=c.ledger, storage=c.storage, settings=c.settings,
        now=kwargs.pop("now", NOW), **kwargs,
    )


def stored_report(c: Clients, report: SweepReport) -> dict[str, Any]:
    assert report.blob is not None
    container, name = report.blob.split("/", 1)
    data: dict[str, Any] = c.storage.read_json(BlobRef(container, name))
    return data


def test_idle_endpoint_deleted_run_retired_and_report_written(
    wired: tuple[Clients, FakePlatform],
) -> None:
    """An idle managed endpoint is deleted, its line's live run RETIRED with the reason, the
    others kept, and the report lists every decision."""
    c, platform = wired
    platform.add_endpoint(endpoint("alpha"), requests=0)
    platform.add_endpoint(endpoint("beta"), requests=12)
    platform.add_endpoint(endpoint("gamma", protect=True), requests=0)
    platform.add_endpoint(endpoint("delta", managed=False), requests=0)
    old = c.ledger.create("alpha", "run-old", RunState.RETIRED)
    live = c.ledger.create("alpha", "run-live", RunState.PROMOTED)
    c.ledger.create("beta", "run-b", RunState.PROMOTED)

    report = sweep(c)

    assert platform.deleted_endpoints == [endpoint_name("alpha")]
    retired = c.ledger.get("alpha", live.run_id)
    assert retired.state is RunState.RETIRED
    assert retired.reason is not None
    assert "deleted by the sweeper: idle since 2026-02-24T12:00:00+00:00" in retired.reason
    assert c.ledger.get("alpha", old.run_id).state is RunState.RETIRED
    assert c.ledger.get("beta", "run-b").state is RunState.PROMOTED

    data = stored_report(c, report)
    assert report.blob == f"{c.settings.reports_container}/_sweeps/20260301T120000.000000Z.json"
    assert data["mode"] == "delete"
    assert data["metrics"]["available"] is True
    assert data["summary"]["endpoints"] == 4
    assert data["summary"]["deletion_started"] == 1
    by_name = {d["endpoint"]: d for d in data["decisions"]}
    assert by_name[endpoint_name("alpha")]["action"] == "delete"
    assert by_name[endpoint_name("alpha")]["outcome"] == "deletion-started"
    assert "busy: 12 requests" in by_name[endpoint_name("beta")]["reason"]
    assert "protected" in by_name[endpoint_name("gamma")]["reason"]
    assert "not managed" in by_name[endpoint_name("delta")]["reason"]
    assert all(d["reason"] for d in data["decisions"])


def test_metrics_outage_deletes_nothing_and_the_report_says_why(
    wired: tuple[Clients, FakePlatform],
) -> None:
    """Metrics down: every endpoint is kept, the ledger is untouched, the report explains."""
    c, platform = wired
    for line in ("alpha", "beta", "gamma"):
        platform.add_endpoint(endpoint(line), requests=0)
    c.ledger.create("alpha", "run-a", RunState.PROMOTED)
    platform.metrics_down = True

    report = sweep(c)

    assert platform.deleted_endpoints == []
    assert platform.calls["delete_endpoint"] == 0
    assert c.ledger.get("alpha", "run-a").state is RunState.PROMOTED
    data = stored_report(c, report)
    assert data["metrics"]["available"] is False
    assert "nothing was deleted" in data["metrics"]["note"]
    assert "metrics service unavailable" in data["metrics"]["error"]
    assert all(d["action"] == "keep" for d in data["decisions"])
    assert all("request count unknown: metrics query failed" in d["reason"]
               for d in data["decisions"])


def test_unknown_traffic_for_one_endpoint_keeps_only_that_one(
    wired: tuple[Clients, FakePlatform],
) -> None:
    """An endpoint the metrics omitted is kept; its idle neighbour is deleted."""
    c, platform = wired
    platform.add_endpoint(endpoint("alpha"), requests=None)
    platform.add_endpoint(endpoint("beta"), requests=0)
    sweep(c)
    assert platform.deleted_endpoints == [endpoint_name("beta")]


def test_dry_run_deletes_nothing_and_records_nothing(
    wired: tuple[Clients, FakePlatform],
) -> None:
    """Dry-run decides and reports the same way but deletes and retires nothing."""
    c, platform = wired
    platform.add_endpoint(endpoint("alpha"), requests=0)
    c.ledger.create("alpha", "run-a", RunState.PROMOTED)

    report = sweep(c, mode="dry-run")

    assert platform.deleted_endpoints == []
    assert c.ledger.get("alpha", "run-a").state is RunState.PROMOTED
    [d] = report.decisions
    assert d.action is Action.DELETE
    assert d.outcome == "dry-run"
    assert stored_report(c, report)["mode"] == "dry-run"


def test_cap_deletes_the_oldest_idle_first(wired: tuple[Clients, FakePlatform]) -> None:
    """Seven idle endpoints, cap 5: the five idle longest go; two are skipped over the cap."""
    c, platform = wired
    for i in range(7):
        platform.add_endpoint(endpoint(f"line{i}", idle_days=2 + i), requests=0)
    report = sweep(c)
    assert sorted(platform.deleted_endpoints) == sorted(
        endpoint_name(f"line{i}") for i in range(2, 7)
    )
    skipped = [d.endpoint for d in report.decisions if d.action is Action.SKIP_OVER_CAP]
    assert sorted(skipped) == sorted([endpoint_name("line0"), endpoint_name("line1")])


def test_mid_release_line_is_kept(wired: tuple[Clients, FakePlatform]) -> None:
    """A line with a run DEPLOYING keeps its endpoint however idle."""
    c, platform = wired
    platform.add_endpoint(endpoint("alpha"), requests=0)
    c.ledger.create("alpha", "run-live", RunState.PROMOTED)
    c.ledger.create("alpha", "run-next", RunState.DEPLOYING)
    [d] = sweep(c).decisions
    assert d.action is Action.KEEP
    assert "release is in progress" in d.reason
    assert platform.deleted_endpoints == []


class ReleaseStartsMidSweep(FakePlatform):
    """A platform whose metrics query is slow enough for a release to start meanwhile."""

    ledger: Any = None

    def endpoint_requests(
        self, endpoints: Sequence[EndpointInfo], window: timedelta, *, now: datetime
    ) -> dict[str, int]:
        self.ledger.create("alpha", "run-new", RunState.DEPLOYING)
        return super().endpoint_requests(endpoints, window, now=now)


def test_release_started_during_the_sweep_is_respected(sweep_settings: Settings) -> None:
    """The ledger is checked again right before deleting: a release that began after the
    gather keeps the endpoint."""
    c = Clients(sweep_settings)
    c.storage.ensure_containers()
    platform = ReleaseStartsMidSweep(now=NOW)
    platform.ledger = c.ledger
    c.use_platform(platform)
    platform.add_endpoint(endpoint("alpha"), requests=0)
    [d] = sweep(c).decisions
    assert platform.deleted_endpoints == []
    assert d.action is Action.KEEP
    assert "release started" in d.reason


def test_failed_deletion_is_recorded_and_the_sweep_goes_on(
    wired: tuple[Clients, FakePlatform],
) -> None:
    """A 409-style conflict on one endpoint is recorded on its decision; the next is deleted
    and the failed line's run stays live."""
    c, platform = wired
    platform.add_endpoint(endpoint("alpha", idle_days=9), requests=0)
    platform.add_endpoint(endpoint("beta", idle_days=4), requests=0)
    c.ledger.create("alpha", "run-a", RunState.PROMOTED)
    platform.fail_once("delete_endpoint", ConflictError("endpoint busy: update in progress"))

    report = sweep(c)

    platform.assert_faults_fired()
    assert platform.deleted_endpoints == [endpoint_name("beta")]
    [failed] = report.failed
    assert failed.endpoint == endpoint_name("alpha")
    assert failed.error == "conflict: endpoint busy: update in progress"
    assert c.ledger.get("alpha", "run-a").state is RunState.PROMOTED
    assert stored_report(c, report)["summary"]["failed"] == 1


def test_endpoint_already_gone_is_success(wired: tuple[Clients, FakePlatform]) -> None:
    """If the endpoint vanished between list and delete, the sweep still records it deleted."""
    c, platform = wired
    info = endpoint("alpha")
    platform.add_endpoint(info, requests=0)

    class Vanishing(FakePlatform):
        def list_endpoints(self) -> list[EndpointInfo]:
            listed = platform.list_endpoints()
            platform.endpoints.clear()
            return listed

    c.use_platform(Vanishing(now=NOW))
    vanishing = c.platform
    assert isinstance(vanishing, Vanishing)
    vanishing.endpoints = platform.endpoints
    vanishing.requests = platform.requests
    [d] = sweep(c).decisions
    assert d.outcome == "deletion-started"


def test_concurrent_sweeps_retire_once_and_never_crash(
    wired: tuple[Clients, FakePlatform],
) -> None:
    """Two overlapping sweeps (timer + CLI): the run is retired once, nothing raises."""
    c, platform = wired
    for line in ("alpha", "beta"):
        platform.add_endpoint(endpoint(line), requests=0)
        c.ledger.create(line, f"run-{line}", RunState.PROMOTED)
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: sweep(c), range(2)))
    assert all(r.failed == [] for r in reports)
    for line in ("alpha", "beta"):
        rec = c.ledger.get(line, f"run-{line}")
        assert rec.state is RunState.RETIRED
        assert [e["state"] for e in rec.timeline].count("RETIRED") == 1


def test_clock_skew_keeps_an_endpoint_from_the_future(
    wired: tuple[Clients, FakePlatform],
) -> None:
    """An endpoint modified 'in the future' (our clock behind Azure's) is kept."""
    c, platform = wired
    info = endpoint("alpha")
    skewed = EndpointInfo(**{**info.__dict__, "modified": NOW + timedelta(minutes=10)})
    platform.add_endpoint(skewed, requests=0)
    [d] = sweep(c).decisions
    assert d.action is Action.KEEP
    assert "clock skew" in d.reason


# -- the timer function and the CLI --------------------------------------------------------------


def timer_binding(*, past_due: bool = False) -> func.TimerRequest:
    """The TimerRequest the worker builds from the host's JSON payload."""
    from azure.functions.timer import TimerRequestConverter

    payload = {
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {
            "Last": "2026-03-01T11:30:00.0000000+00:00",
            "Next": "2026-03-01T12:30:00.0000000+00:00",
            "LastUpdated": "2026-03-01T11:30:00.0000000+00:00",
        },
        "IsPastDue": past_due,
    }
    request: func.TimerRequest = TimerRequestConverter.decode(
        meta.Datum(json.dumps(payload), "json"), trigger_metadata={}
    )
    return request


def test_timer_function_is_registered_on_the_schedule_setting() -> None:
    """The blueprint registers sweep_idle_endpoints on %TUNELOOP_SWEEP_SCHEDULE%."""
    from functions.sweeper import bp

    app = func.FunctionApp()
    app.register_functions(bp)
    [fn] = [f for f in app.get_functions() if f.get_function_name() == "sweep_idle_endpoints"]
    [trigger] = [b for b in fn.get_bindings() if b.type == "timerTrigger"]
    assert trigger.get_dict_repr()["schedule"] == "%TUNELOOP_SWEEP_SCHEDULE%"


def test_timer_function_runs_the_sweep(wired: tuple[Clients, FakePlatform]) -> None:
    """Called with a real TimerRequest, the function sweeps and writes a report."""
    from functions.sweeper import bp

    c, platform = wired
    info = endpoint("alpha")
    # The function uses the wall clock: make the endpoint idle relative to now.
    real_now = datetime.now(UTC)
    platform.add_endpoint(
        EndpointInfo(**{**info.__dict__, "created": real_now - 9 * DAY,
                        "modified": real_now - 8 * DAY}),
        requests=0,
    )
    app = func.FunctionApp()
    app.register_functions(bp)
    [fn] = [f for f in app.get_functions() if f.get_function_name() == "sweep_idle_endpoints"]
    _root.set_clients(c)
    try:
        fn.get_user_function()(timer_binding(past_due=True))
    finally:
        _root.set_clients(None)
    assert platform.deleted_endpoints == [endpoint_name("alpha")]
    names = c.storage.list_names(c.settings.reports_container, prefix="_sweeps/")
    assert len(names) == 1


def test_cli_prints_the_table_and_json(wired: tuple[Clients, FakePlatform]) -> None:
    """`tuneloop sweep --dry-run` prints one row per endpoint; --json prints the report."""
    c, platform = wired
    real_now = datetime.now(UTC)
    info = endpoint("alpha")
    platform.add_endpoint(
        EndpointInfo(**{**info.__dict__, "created": real_now - 9 * DAY,
                        "modified": real_now - 8 * DAY}),
        requests=0,
    )
    platform.add_endpoint(endpoint("beta"), requests=3)

    out = io.StringIO()
    args = argparse.Namespace(dry_run=True, json=False)
    assert sweep_command.run(args, out=out, clients=c) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["endpoint", "line", "requests", "age", "decision", "reason"]
    alpha = next(line for line in lines if line.startswith(endpoint_name("alpha")))
    assert "delete (dry-run)" in alpha
    assert "9d" in alpha
    assert any("busy: 3 requests" in line for line in lines)
    assert platform.deleted_endpoints == []

    out = io.StringIO()
    args = argparse.Namespace(dry_run=True, json=True)
    assert sweep_command.run(args, out=out, clients=c) == 0
    data = json.loads(out.getvalue())
    assert data["mode"] == "dry-run"
    assert {d["endpoint"] for d in data["decisions"]} == {
        endpoint_name("alpha"), endpoint_name("beta"),
    }
