"""Conformance: the public Event Grid samples in ../shared/reference/events parse as documented.

Optional: skipped when the reference folder is absent (a fresh clone has none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.events import JobEvent, Skip, parse_job_event

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "events"

pytestmark = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason="reference samples (../shared/reference) not present"
)


def sample(name: str) -> dict[str, Any]:
    body: list[dict[str, Any]] = json.loads((REFERENCE / name).read_text())
    return body[0]


def parse(body: dict[str, Any]) -> JobEvent | Skip:
    topic = body.get("topic") or body.get("source") or ""
    return parse_job_event(body, trusted_topic=topic)


def test_run_completed_samples_in_both_schemas() -> None:
    """RunCompleted (Event Grid and CloudEvents) → Completed for the sample's run id."""
    for name in ("ml_RunCompleted.eventgrid.json", "ml_RunCompleted.cloudevents.json"):
        event = parse(sample(name))
        assert isinstance(event, JobEvent), name
        assert event.status == "Completed"
        assert event.run_id == "AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc_5"
        assert event.run_type is None


def test_run_status_changed_sample_lowercase_failed() -> None:
    """The sample's runStatus is 'failed' (lower case): it is a failure."""
    event = parse(sample("ml_RunStatusChanged.eventgrid.json"))
    assert isinstance(event, JobEvent)
    assert event.failed


def test_model_events_are_not_run_events() -> None:
    """ModelRegistered / ModelDeployed samples are skipped."""
    for name in ("ml_ModelRegistered.eventgrid.json", "ml_ModelDeployed.eventgrid.json"):
        assert isinstance(parse(sample(name)), Skip)


def test_sample_topic_is_foreign_to_our_workspace() -> None:
    """The sample's topic is not our workspace: with our topic trusted, it is skipped."""
    body = sample("ml_RunCompleted.eventgrid.json")
    skip = parse_job_event(body, trusted_topic="/subscriptions/x/resourceGroups/y/providers/"
                           "Microsoft.MachineLearningServices/workspaces/z")
    assert isinstance(skip, Skip)
    assert skip.warn
