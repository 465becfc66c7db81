"""bench/burst.py at a small size (40 drops over 5 lines): the invariants of a burst hold
through the real functions on Azurite, and the bench's checks catch a late event that writes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from functions import _root
from functions.devhost import load_functions
from shared.events import parse_job_event
from shared.ledger import RunState

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_burst", ROOT / "bench" / "burst.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


burst = _load_bench()
SMALL = burst.Options(drops=40, lines=5, workers=4, seed=3)


def test_a_small_burst_keeps_every_invariant(azurite: str, tmp_path: Path) -> None:
    """40 drops over 5 lines with redeliveries and late, out-of-order events: one run per
    distinct content and line, every duplicate and invalid file recorded, nothing lost."""
    result = burst.run_burst(azurite, tmp_path / "home", SMALL)
    assert result["violations"] == []
    expected = result["expected"]
    assert min(expected["runs"], expected["duplicates"], expected["rejected"]) > 0
    assert (result["runs"], result["duplicates"], result["rejected"]) == (
        expected["runs"], expected["duplicates"], expected["rejected"])
    assert result["lost"] == 0
    # The late cases really ran: events for RETIRED runs, and held-back events.
    assert result["retired_runs_hit_late"] > 0
    assert result["held_back_runs"] > 0
    assert result["late_events"] > result["retired_runs_hit_late"] * 2
    assert result["late_violations"] == 0
    # Requests were counted through the devhost's clients, per service.
    assert min(result["table_requests_per_drop"], result["blob_requests_per_drop"]) > 0
    cost = result["cost_per_outcome"]
    assert cost["new"]["table"] > cost["redundant"]["table"]


def test_the_bench_counts_a_late_event_that_writes_as_a_violation(
    azurite: str, tmp_path: Path
) -> None:
    """A job-event handler that writes to a RETIRED run is caught by the late-delivery check."""
    real = load_functions()["on_job_event"]

    def writes_on_retired(event: Any) -> None:
        real(event)
        parsed = parse_job_event(event, trusted_topic=_root.clients().settings.workspace_arm_id)
        ledger = _root.clients().ledger
        run = ledger.find(parsed.run_id)  # type: ignore[union-attr]
        if run.state == RunState.RETIRED:
            ledger.update(run, note="touched by a late event")

    functions: dict[str, Callable[..., Any]] = {"on_job_event": writes_on_retired}
    options = burst.Options(drops=12, lines=2, workers=2, seed=5)
    result = burst.run_burst(azurite, tmp_path / "home", options, functions=functions)
    assert result["retired_runs_hit_late"] > 0
    assert result["late_violations"] >= result["retired_runs_hit_late"]
    # keys are <table>/<partition>/<row>: the run's own row in its line's partition changed
    assert any(
        v.startswith("late delivery changed ") and "/line-" in v for v in result["violations"]
    )
