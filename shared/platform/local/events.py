"""The durable outbox of Azure ML Event Grid events the local platform emits.

Events have the Event Grid schema Azure ML uses (``Microsoft.MachineLearningServices.
RunStatusChanged`` / ``RunCompleted``), with the local workspace id as ``topic``. Each is one
JSON file under ``<home>/local/events/``; the file name starts with the emission time so a
directory listing is oldest first. Event ids are deterministic per (job, status), so emitting
the same change twice (trainer and reaper racing) writes the same file once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.platform.local.state import read_json, write_json
from shared.settings import LOCAL_WORKSPACE_ID

__all__ = [
    "RUN_COMPLETED",
    "RUN_STATUS_CHANGED",
    "ack_event",
    "emit_job_event",
    "experiment_id",
    "job_event",
    "pending_events",
]

log = logging.getLogger(__name__)

RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_TYPE = "azureml.PipelineRun"

_NAMESPACE = uuid.UUID("5b0c1a8e-7f0e-4b7d-9a51-3c6f2f7b9d10")


def experiment_id(experiment_name: str) -> str:
    """A stable GUID for an experiment name (Azure ML experiment ids are GUIDs)."""
    return str(uuid.uuid5(_NAMESPACE, f"experiment:{experiment_name}"))


def job_event(
    event_type: str,
    *,
    job_name: str,
    experiment_name: str,
    status: str,
    tags: Mapping[str, str],
    properties: Mapping[str, str],
    when: datetime | None = None,
) -> dict[str, Any]:
    """One Event Grid event for a job status change, shaped like Azure ML's."""
    exp_id = experiment_id(experiment_name)
    when = when or datetime.now(UTC)
    data: dict[str, Any] = {
        "experimentId": exp_id,
        "experimentName": experiment_name,
        "runId": job_name,
        "runType": RUN_TYPE,
        "runTags": dict(tags),
        "runProperties": dict(properties),
    }
    if event_type == RUN_STATUS_CHANGED:
        data["runStatus"] = status
    return {
        "topic": LOCAL_WORKSPACE_ID,
        "subject": f"experiments/{exp_id}/runs/{job_name}",
        "eventType": event_type,
        "eventTime": when.isoformat().replace("+00:00", "Z"),
        "id": str(uuid.uuid5(_NAMESPACE, f"{job_name}|{event_type}|{status}")),
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }


def _outbox(home: Path) -> Path:
    return home / "local" / "events"


def _acked(home: Path) -> Path:
    return home / "local" / "events" / "acked"


def emit(home: Path, event: Mapping[str, Any]) -> bool:
    """Write ``event`` to the outbox unless an event with its id was emitted before."""
    outbox = _outbox(home)
    outbox.mkdir(parents=True, exist_ok=True)
    event_id = str(event["id"])
    if (_acked(home) / event_id).exists() or any(outbox.glob(f"*-{event_id}.json")):
        return False
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    write_json(outbox / f"{stamp}-{event_id}.json", dict(event))
    log.info("event %s %s emitted for %s", event["eventType"], event["id"], event["subject"])
    return True


def emit_job_event(
    home: Path,
    *,
    job_name: str,
    experiment_name: str,
    status: str,
    tags: Mapping[str, str],
    properties: Mapping[str, str],
) -> None:
    """Emit RunStatusChanged for ``status`` (and RunCompleted after it when Completed)."""
    common: dict[str, Any] = {
        "job_name": job_name,
        "experiment_name": experiment_name,
        "status": status,
        "tags": tags,
        "properties": properties,
    }
    emit(home, job_event(RUN_STATUS_CHANGED, **common))
    if status == "Completed":
        emit(home, job_event(RUN_COMPLETED, **common))


def pending_events(home: Path) -> list[dict[str, Any]]:
    """Every event not yet acknowledged, oldest first."""
    outbox = _outbox(home)
    if not outbox.is_dir():
        return []
    events: list[dict[str, Any]] = []
    for path in sorted(outbox.glob("*.json")):
        event = read_json(path)
        if isinstance(event, dict):
            events.append(event)
    return events


def ack_event(home: Path, event_id: str) -> None:
    """Mark an event delivered (it is no longer pending); unknown or acked ids are fine."""
    outbox = _outbox(home)
    acked = _acked(home)
    acked.mkdir(parents=True, exist_ok=True)
    (acked / event_id).touch()
    for path in outbox.glob(f"*-{event_id}.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
