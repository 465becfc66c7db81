"""Which runs a sweep retires: only those served by the endpoint it deleted."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.ledger import RunState
from shared.naming import endpoint_name, endpoint_scope
from shared.platform.port import EndpointInfo
from shared.settings import Settings
from shared.sweep import run_sweep
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LINE = "support"


def _endpoint(name: str) -> EndpointInfo:
    return EndpointInfo(
        name=name,
        id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices"
        f"/workspaces/ws/onlineEndpoints/{name}",
        tags={"tuneloop_line": LINE, "tuneloop_managed": "true"},
        created=NOW - timedelta(days=8),
        modified=NOW - timedelta(days=5),
        provisioning_state="Succeeded",
        traffic={"v01": 100},
        location="eastus",
    )


def test_deleting_a_lines_old_endpoint_leaves_the_run_on_its_new_endpoint_live() -> None:
    """A line whose endpoint was renamed keeps its old, idle endpoint: the sweep deletes that
    one and retires the run recorded on it, never the run serving on the line's new endpoint."""
    settings = Settings(platform="local", idle_after=timedelta(days=1), sweep_max_deletions=5)
    ledger = FakeLedger()
    platform = FakePlatform(now=NOW)
    old_name = "tl-support"  # the name before endpoint names carried the workspace key
    new_name = endpoint_name(LINE, endpoint_scope(settings))
    platform.add_endpoint(_endpoint(old_name), requests=0)
    platform.add_endpoint(_endpoint(new_name), requests=40)
    old = ledger.create(LINE, "run-old", RunState.PROMOTED)
    ledger.update(old, release=replace(old.release, endpoint=old_name, deployment="v01"))
    new = ledger.create(LINE, "run-new", RunState.PROMOTED)
    ledger.update(new, release=replace(new.release, endpoint=new_name, deployment="v02"))

    run_sweep(platform=platform, ledger=ledger, storage=None, settings=settings, now=NOW)

    assert platform.deleted_endpoints == [old_name]
    assert ledger.get(LINE, "run-old").state is RunState.RETIRED
    assert ledger.get(LINE, "run-new").state is RunState.PROMOTED


def test_a_run_that_records_no_endpoint_is_retired_with_its_lines_endpoint() -> None:
    """A live run without a recorded endpoint (an older row) is still retired when its
    line's endpoint is deleted, as before."""
    settings = Settings(platform="local", idle_after=timedelta(days=1))
    ledger = FakeLedger()
    platform = FakePlatform(now=NOW)
    name = endpoint_name(LINE, endpoint_scope(settings))
    platform.add_endpoint(_endpoint(name), requests=0)
    ledger.create(LINE, "run-live", RunState.PROMOTED)

    run_sweep(platform=platform, ledger=ledger, storage=None, settings=settings, now=NOW)

    assert platform.deleted_endpoints == [name]
    assert ledger.get(LINE, "run-live").state is RunState.RETIRED
