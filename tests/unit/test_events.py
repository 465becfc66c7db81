"""Job events: Event Grid and CloudEvents payloads in the public samples' shapes → domain events.

Fixtures in tests/fixtures/events/ml_* follow `event-schema-machine-learning.md` with our tags
and ids, plus the variants seen in the wild (lower-case status, RunTags, runType null, no
runProperties, extra fields, a pipeline step's own event).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from shared.events import JobEvent, Skip, normalize_status, parse_job_event
from shared.settings import LOCAL_WORKSPACE_ID

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
RUN = "tl-chat-0123456789ab-cdef0123"


def payload(name: str) -> dict[str, Any]:
    body: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text())
    return body[0]


def delivered(body: dict[str, Any]) -> Any:
    """What the Functions host hands the trigger: the binding's own decoder on the JSON."""
    return EventGridEventInConverter.decode(
        Datum(json.dumps(body), "json"), trigger_metadata=None
    )


def parse(body: dict[str, Any]) -> JobEvent | Skip:
    return parse_job_event(delivered(body), trusted_topic=LOCAL_WORKSPACE_ID)


def test_run_completed_becomes_a_completed_job_event() -> None:
    """RunCompleted carries no runStatus: it means Completed, with the run's tags and line."""
    event = parse(payload("ml_RunCompleted.eventgrid.json"))
    assert isinstance(event, JobEvent)
    assert (event.run_id, event.status, event.line) == (RUN, "Completed", "chat")
    assert event.run_type == "azureml.PipelineRun"


def test_cloudevents_schema_parses_the_same() -> None:
    """A CloudEvents delivery decodes to func.CloudEvent and parses like the Event Grid one."""
    raw = delivered(payload("ml_RunCompleted.cloudevents.json"))
    assert isinstance(raw, func.CloudEvent)
    event = parse_job_event(raw, trusted_topic=LOCAL_WORKSPACE_ID)
    assert isinstance(event, JobEvent)
    assert (event.run_id, event.status) == (RUN, "Completed")


def test_foreign_topic_is_skipped_with_a_warning() -> None:
    """An event from another workspace is never acted on."""
    body = payload("ml_RunCompleted.eventgrid.json")
    body["topic"] = body["topic"].replace("tuneloop-local", "someone-else")
    skip = parse(body)
    assert isinstance(skip, Skip)
    assert skip.warn
    assert "foreign topic" in skip.reason


def test_topic_compares_case_insensitively() -> None:
    """ARM ids are case-insensitive: an upper-cased topic is still ours."""
    body = payload("ml_RunCompleted.eventgrid.json")
    body["topic"] = body["topic"].upper()
    assert isinstance(parse(body), JobEvent)


def test_lowercase_status_is_normalised() -> None:
    """runStatus 'failed' / 'completed' (as in the public sample) map to canonical names."""
    failed = parse(payload("ml_RunStatusChanged.failed.eventgrid.json"))
    done = parse(payload("ml_RunStatusChanged.completed-lowercase.eventgrid.json"))
    assert isinstance(failed, JobEvent)
    assert failed.status == "Failed"
    assert failed.failed
    assert isinstance(done, JobEvent)
    assert done.completed


def test_capitalised_keys_null_runtype_and_extra_fields_are_tolerated() -> None:
    """RunTags/RunId/RunStatus, runType null, no runProperties, unknown fields: still parsed."""
    event = parse(payload("ml_RunStatusChanged.RunTags.eventgrid.json"))
    assert isinstance(event, JobEvent)
    assert (event.run_id, event.status, event.line, event.run_type) == (
        RUN, "Completed", "chat", None
    )
    assert event.properties == {}


def test_child_step_run_is_skipped() -> None:
    """A pipeline step's own event (StepRun, parent in its properties) is not our run."""
    skip = parse(payload("ml_RunStatusChanged.childstep.eventgrid.json"))
    assert isinstance(skip, Skip)
    assert "child step" in skip.reason


def test_child_named_only_by_its_parent_property_is_skipped() -> None:
    """Even with runType null, a run that points at a different parent run is a child."""
    body = payload("ml_RunStatusChanged.childstep.eventgrid.json")
    body["data"]["runType"] = None
    assert isinstance(parse(body), Skip)


def test_unknown_event_type_is_skipped() -> None:
    """ModelRegistered and other workspace events are not run status events."""
    skip = parse(payload("ml_ModelRegistered.eventgrid.json"))
    assert isinstance(skip, Skip)
    assert not skip.warn


def test_unknown_status_is_skipped() -> None:
    """A status we do not know changes nothing (and is logged as a warning)."""
    body = payload("ml_RunStatusChanged.running.eventgrid.json")
    body["data"]["runStatus"] = "Hibernating"
    skip = parse(body)
    assert isinstance(skip, Skip)
    assert skip.warn


def test_run_id_falls_back_to_the_subject() -> None:
    """Without runId in data, the subject experiments/<id>/runs/<run> names the run."""
    body = payload("ml_RunCompleted.eventgrid.json")
    del body["data"]["runId"]
    event = parse(body)
    assert isinstance(event, JobEvent)
    assert event.run_id == RUN


def test_raw_dict_deliveries_parse_too() -> None:
    """The local platform delivers plain dicts in the Event Grid schema."""
    body = payload("ml_RunCompleted.eventgrid.json")
    event = parse_job_event(body, trusted_topic=LOCAL_WORKSPACE_ID)
    assert isinstance(event, JobEvent)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("running", "Running"), ("COMPLETED", "Completed"), ("Cancelled", "Canceled"),
     ("notresponding", "NotResponding"), (None, None), ("", None)],
)
def test_normalize_status(raw: Any, expected: str | None) -> None:
    """Statuses in any case map to Azure ML's spelling; junk maps to None."""
    assert normalize_status(raw) == expected


def test_event_statuses_are_the_ports_job_status() -> None:
    """An event's status is the port's JobStatus, and the status sets are made of it."""
    from shared.events import FAILED_STATUSES, RUNNING_STATUSES
    from shared.platform.port import TERMINAL_JOB_STATUSES, JobInfo, JobStatus

    event = parse(payload("ml_RunStatusChanged.failed.eventgrid.json"))
    assert isinstance(event, JobEvent)
    assert event.status is JobStatus.FAILED
    assert all(isinstance(s, JobStatus) for s in RUNNING_STATUSES | FAILED_STATUSES)
    assert FAILED_STATUSES <= TERMINAL_JOB_STATUSES
    assert not RUNNING_STATUSES & TERMINAL_JOB_STATUSES
    assert JobInfo("j", "completed").status is JobStatus.COMPLETED  # read once, at the edge
    assert JobInfo("j", "Sleeping").status is JobStatus.UNKNOWN
