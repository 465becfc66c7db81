"""Azure ML job events (Event Grid schema or CloudEvents) → typed domain events.

Pure: no I/O. The trigger hands over whatever the binding decoded (``func.EventGridEvent``,
``func.CloudEvent``) or a plain dict (the local platform, tests); :func:`parse_job_event`
returns a :class:`JobEvent` or a :class:`Skip` that says why the event changes nothing.

Facts this relies on (Event Grid docs for the Machine Learning system topic, and payloads
seen in the wild): ``topic`` (CloudEvents: ``source``) is the workspace ARM id; the subject is
``experiments/<experiment id>/runs/<run id>``; ``RunCompleted`` fires on success only and has
no ``runStatus``; ``RunStatusChanged`` carries ``runStatus`` in varying case; ``runType`` may
be null; some payloads capitalise keys (``RunTags``); step runs of a pipeline emit their own
events and point at their parent through run properties; delivery is at least once, unordered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.naming import LINE_TAG
from shared.platform.port import JobStatus

__all__ = [
    "FAILED_STATUSES",
    "RUNNING_STATUSES",
    "RUN_COMPLETED",
    "RUN_STATUS_CHANGED",
    "Envelope",
    "JobEvent",
    "Skip",
    "envelope_of",
    "normalize_status",
    "parse_job_event",
]

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"

# A job in one of these is on its way (not yet finished, not being canceled).
RUNNING_STATUSES = frozenset({
    JobStatus.NOT_STARTED, JobStatus.QUEUED, JobStatus.PREPARING, JobStatus.PROVISIONING,
    JobStatus.STARTING, JobStatus.RUNNING, JobStatus.FINALIZING,
})
# A job in one of these ended without a model.
FAILED_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELED, JobStatus.NOT_RESPONDING})

# Run types of pipeline steps and other child runs; a parent pipeline is "azureml.PipelineRun".
_CHILD_RUN_TYPES = frozenset({"azureml.steprun", "azureml.reusedsteprun", "azureml.stepjob"})
# Run properties through which a child run names its parent.
_PARENT_KEYS = ("azureml.pipelinerunid", "azureml.parentrunid", "azureml.rootrunid")


@dataclass(frozen=True)
class Envelope:
    """The schema-independent part of one delivered event."""

    id: str
    topic: str
    subject: str
    event_type: str
    data: Any
    event_time: datetime | None = None
    schema: str = "eventgrid"  # or "cloudevents"


@dataclass(frozen=True)
class JobEvent:
    """A status change of an Azure ML run from the trusted workspace."""

    event_id: str
    event_type: str
    run_id: str
    status: JobStatus
    run_type: str | None = None
    experiment_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    event_time: datetime | None = None

    @property
    def line(self) -> str | None:
        """The tuneloop line from the run's tags, when the payload carries them."""
        return self.tags.get(LINE_TAG) or None

    @property
    def completed(self) -> bool:
        return self.status == JobStatus.COMPLETED

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATUSES


@dataclass(frozen=True)
class Skip:
    """An event that changes nothing, and why (logged by the caller)."""

    reason: str
    event_id: str | None = None
    warn: bool = False  # True when it looks like misconfiguration or tampering


def normalize_status(value: Any) -> JobStatus | None:
    """The Azure ML run status spelled in any case; None if it is not one we act on.

    ``Paused`` and ``Unknown`` are statuses of other job kinds; an event carrying them is
    skipped as it always was.
    """
    status = JobStatus.parse(value)
    return None if status in (None, JobStatus.PAUSED, JobStatus.UNKNOWN) else status


def envelope_of(event: Any) -> Envelope:
    """Read the envelope of a ``func.EventGridEvent``, a ``func.CloudEvent`` or a raw dict."""
    if isinstance(event, Mapping):
        if "specversion" in event:
            return Envelope(
                id=str(event.get("id") or ""),
                topic=str(event.get("source") or ""),
                subject=str(event.get("subject") or ""),
                event_type=str(event.get("type") or ""),
                data=event.get("data"),
                schema="cloudevents",
            )
        return Envelope(
            id=str(event.get("id") or ""),
            topic=str(event.get("topic") or ""),
            subject=str(event.get("subject") or ""),
            event_type=str(event.get("eventType") or ""),
            data=event.get("data"),
        )
    if hasattr(event, "event_type"):  # azure.functions.EventGridEvent
        return Envelope(
            id=str(event.id or ""),
            topic=str(event.topic or ""),
            subject=str(event.subject or ""),
            event_type=str(event.event_type or ""),
            data=event.get_json(),
            event_time=event.event_time,
        )
    if hasattr(event, "specversion"):  # azure.functions.CloudEvent
        return Envelope(
            id=str(event.id or ""),
            topic=str(event.source or ""),
            subject=str(event.subject or ""),
            event_type=str(event.type or ""),
            data=event.get_json(),
            event_time=event.time,
            schema="cloudevents",
        )
    raise TypeError(f"not an Event Grid event: {type(event).__name__}")


def _get(data: Mapping[str, Any], key: str) -> Any:
    """``data[key]`` tolerating capitalised variants (``runTags`` / ``RunTags``)."""
    if key in data:
        return data[key]
    lowered = key.lower()
    for k, v in data.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return None


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _run_id_from_subject(subject: str) -> str | None:
    parts = subject.strip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "runs" and parts[-4] == "experiments":
        return parts[-1] or None
    return None


def _is_child(run_id: str, run_type: str | None, properties: Mapping[str, str]) -> bool:
    if run_type and run_type.lower() in _CHILD_RUN_TYPES:
        return True
    lowered = {k.lower(): v for k, v in properties.items()}
    return any(lowered.get(key) not in (None, "", run_id) for key in _PARENT_KEYS)


def parse_job_event(event: Any, *, trusted_topic: str) -> JobEvent | Skip:
    """Validate and type one delivered event; anything we must not act on becomes a Skip."""
    env = envelope_of(event)
    if env.topic.strip().lower() != trusted_topic.strip().lower():
        return Skip(f"event from foreign topic {env.topic!r}", env.id, warn=True)
    if env.event_type == RUN_COMPLETED:
        status: JobStatus | None = JobStatus.COMPLETED
    elif env.event_type == RUN_STATUS_CHANGED:
        status = None
    else:
        return Skip(f"event type {env.event_type!r} is not a run status event", env.id)
    data = env.data if isinstance(env.data, Mapping) else {}
    run_id = _get(data, "runId") or _run_id_from_subject(env.subject)
    if not isinstance(run_id, str) or not run_id:
        return Skip("event names no run", env.id, warn=True)
    if status is None:
        raw = _get(data, "runStatus")
        status = normalize_status(raw)
        if status is None:
            return Skip(f"run {run_id}: unknown runStatus {raw!r}", env.id, warn=True)
    run_type = _get(data, "runType")
    run_type = str(run_type) if run_type else None
    properties = _str_map(_get(data, "runProperties"))
    if _is_child(run_id, run_type, properties):
        return Skip(f"run {run_id} is a child step run ({run_type or 'no runType'})", env.id)
    experiment = _get(data, "experimentName")
    return JobEvent(
        event_id=env.id,
        event_type=env.event_type,
        run_id=run_id,
        status=status,
        run_type=run_type,
        experiment_name=str(experiment) if experiment else None,
        tags=_str_map(_get(data, "runTags")),
        properties=properties,
        event_time=env.event_time,
    )
