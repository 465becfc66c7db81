"""Tuneloop's own lifecycle events: CloudEvents 1.0 with ``tuneloop.event/v1`` data. Pure.

One event per state a run enters (``tuneloop.run.<state>``, every :class:`RunState`), per exam
result (``tuneloop.run.examined``), per retracted drop (``tuneloop.run.retracted``, on the run
the drop came in with) and per endpoint the sweeper deletes (``tuneloop.endpoint.swept``, on
the run it retires). The ledger builds them in the same
entity write that changes the run (the outbox, shared/ledger.py); shared/outbox.py publishes.
A sweep pass publishes one ``tuneloop.sweep.decided`` (:func:`sweep_event`: every endpoint's
decision, subject ``sweeps/<sweep id>``, source without a line), recorded in a standalone
outbox row (``Ledger.put_events``).

* ``source`` = ``/tuneloop/<scope key>/lines/<line>``: the scope key is
  :func:`shared.naming.scope_key` of the endpoint scope (the workspace's ARM id, or the local
  home), so two deployments never share a source;
* ``subject`` = ``lines/<line>/runs/<run>``;
* ``id`` = ``<run>.<kind>.<attempt>`` (kind: the state in lower case, ``examined``,
  ``retracted`` or ``swept``; attempt: the n-th event of that kind for the run, counted on
  the run's row), so a redelivered event has the same id and subscribers deduplicate on it;
* ``time`` = when the state was entered (the run's timeline entry);
* ``datacontenttype`` ``application/json``, ``dataschema`` :data:`SCHEMA_ID`
  (schemas/tuneloop.event.v1.json).

Events are stored (outbox) and sent in their structured JSON form (:func:`to_wire`), the
form Event Grid's CloudEvents schema and the local topic receive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.naming import endpoint_scope, scope_key

if TYPE_CHECKING:
    from azure.core.messaging import CloudEvent

    from shared.ledger import RunRecord
    from shared.settings import Settings

__all__ = [
    "DATA_SCHEMA",
    "EXAMINED",
    "RETRACTED",
    "SCHEMA_ID",
    "SWEEP_DECIDED",
    "SWEPT",
    "TYPE_PREFIX",
    "Origin",
    "build",
    "event_id",
    "event_kinds",
    "event_type",
    "from_wire",
    "run_data",
    "sweep_event",
    "to_wire",
]

DATA_SCHEMA = "tuneloop.event/v1"
# The JSON Schema's $id (schemas/tuneloop.event.v1.json); CloudEvents' dataschema is a URI.
SCHEMA_ID = "https://tuneloop.dev/schemas/tuneloop.event.v1.json"
TYPE_PREFIX = "tuneloop."
EXAMINED = "examined"
RETRACTED = "retracted"
SWEPT = "swept"
# One event per sweep pass, its decisions listed (see sweep_event).
SWEEP_DECIDED = f"{TYPE_PREFIX}sweep.decided"
# The most a sweep event's JSON may take (as json.dumps writes it: ASCII): 60 KiB keeps it one
# Event Grid operation ("operations are charged in 64-KB increments"; an event or a batch may be
# 1 MB, else 413: https://learn.microsoft.com/azure/event-grid/event-schema) and within the
# outbox row's columns (shared/ledger.py: 4 x 30,000 characters).
SWEEP_EVENT_BUDGET = 60 * 1024
# The exam record's keys an event carries (the whole record stays in the ledger and report).
_EXAM_KEYS = ("metric", "candidate", "champion", "decision", "examples", "report")


@dataclass(frozen=True)
class Origin:
    """Where events come from: the scope key in ``source`` and the reports container that
    ``data.reports`` points into."""

    scope: str
    reports_container: str = "reports"

    @classmethod
    def from_settings(cls, settings: Settings) -> Origin:
        return cls(scope_key(endpoint_scope(settings)), settings.reports_container)

    def source(self, line: str | None) -> str:
        """``/tuneloop/<scope>/lines/<line>``; without a line (a sweep pass):
        ``/tuneloop/<scope>``."""
        if line is None:
            return f"/tuneloop/{self.scope}"
        return f"/tuneloop/{self.scope}/lines/{line}"


def event_type(kind: str) -> str:
    """``tuneloop.run.<state>`` / ``tuneloop.run.examined`` / ``tuneloop.endpoint.swept``."""
    if kind == SWEPT:
        return f"{TYPE_PREFIX}endpoint.swept"
    return f"{TYPE_PREFIX}run.{kind.lower()}"


def event_kinds() -> tuple[str, ...]:
    """Every kind of event the ledger builds: each run state, ``examined``, ``retracted``,
    ``swept``."""
    from shared.ledger import RunState

    return (*(state.value.lower() for state in RunState), EXAMINED, RETRACTED, SWEPT)


def event_id(run_id: str, kind: str, attempt: int) -> str:
    """Deterministic: the same run, kind and attempt always give the same id."""
    return f"{run_id}.{kind.lower()}.{attempt}"


def _report_path(origin: Origin, rec: RunRecord) -> str:
    # The same place shared.reports.run_report_ref writes run.json (its dataset's folder).
    prefix = rec.get("report_prefix")
    if not prefix:
        name = rec.get("name")
        prefix = f"{rec.line}/{name}" if name else f"{rec.line}/runs/{rec.run_id}"
    return f"{origin.reports_container}/{prefix}/run.json"


def run_data(origin: Origin, rec: RunRecord, *, reason: str | None) -> dict[str, Any]:
    """The ``tuneloop.event/v1`` data of ``rec`` as it is now; ``reason``: why this change
    (the ledger passes the transition's reason or note; None when it has none)."""
    r = rec.release
    model = (
        {"name": r.model_name, "version": r.model_version}
        if r.model_name and r.model_version else None
    )
    exam = {k: r.exam.get(k) for k in _EXAM_KEYS} if r.exam else None
    reports = {"run": _report_path(origin, rec)}
    if exam and exam.get("report"):
        reports["exam"] = str(exam["report"])
    return {
        "schema": DATA_SCHEMA,
        "line": rec.line,
        "run": rec.run_id,
        "state": rec.state.value,
        "reason": reason,
        "model": model,
        "endpoint": r.endpoint,
        "deployment": r.deployment,
        "exam": exam,
        "reports": reports,
    }


def build(
    origin: Origin, rec: RunRecord, kind: str, *, attempt: int, time: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    """The event of ``kind`` for ``rec`` in its wire form (see :func:`to_wire`)."""
    return {
        "specversion": "1.0",
        "type": event_type(kind),
        "source": origin.source(rec.line),
        "subject": f"lines/{rec.line}/runs/{rec.run_id}",
        "id": event_id(rec.run_id, kind, attempt),
        "time": time.isoformat(timespec="milliseconds"),
        "datacontenttype": "application/json",
        "dataschema": SCHEMA_ID,
        "data": run_data(origin, rec, reason=reason),
    }


def from_wire(wire: Mapping[str, Any]) -> CloudEvent[Any]:
    """The ``azure.core.messaging.CloudEvent`` of a stored event (what the publisher sends)."""
    from azure.core.messaging import CloudEvent

    return CloudEvent.from_dict(dict(wire))


def to_wire(event: CloudEvent[Any]) -> dict[str, Any]:
    """A CloudEvent's structured JSON form (the attributes CloudEvents 1.0 defines)."""
    out: dict[str, Any] = {
        "specversion": event.specversion,
        "type": event.type,
        "source": event.source,
        "id": event.id,
    }
    for name in ("subject", "datacontenttype", "dataschema"):
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    if event.time is not None:
        out["time"] = event.time.isoformat(timespec="milliseconds")  # as the ledger dates
    out["data"] = event.data
    return out


def sweep_event(
    origin: Origin,
    sweep: Mapping[str, Any],
    decisions: Sequence[Mapping[str, Any]],
    *,
    time: datetime,
    reason: str,
    report: str | None,
) -> dict[str, Any]:
    """The ``tuneloop.sweep.decided`` event of one sweep pass, in its wire form.

    ``sweep``: the pass (``id``, ``mode``, ``started``, ``finished``, ``metrics_available``,
    ``metrics_error``, ``summary``); ``decisions``: one per endpoint (``endpoint``, ``line``,
    ``action``, ``reason``, ``requests``, ``idle_since``, ``outcome``, ``error``), listed until
    the event would exceed :data:`SWEEP_EVENT_BUDGET`; the rest are counted in ``omitted``
    (the report at ``report``, ``<container>/<path>``, has them all). ``id`` =
    ``<sweep id>.decided``: the same pass always gives the same id.
    """
    data: dict[str, Any] = {
        "schema": DATA_SCHEMA, "line": None, "run": None, "state": None, "reason": reason,
        "model": None, "endpoint": None, "deployment": None, "exam": None,
        "reports": {"sweep": report} if report else {},
        "sweep": {**sweep, "decisions": [], "omitted": 0},
    }
    event = {
        "specversion": "1.0",
        "type": SWEEP_DECIDED,
        "source": origin.source(None),
        "subject": f"sweeps/{sweep['id']}",
        "id": f"{sweep['id']}.decided",
        "time": time.isoformat(timespec="milliseconds"),
        "datacontenttype": "application/json",
        "dataschema": SCHEMA_ID,
        "data": data,
    }
    listed: list[Mapping[str, Any]] = data["sweep"]["decisions"]
    data["sweep"]["omitted"] = len(decisions)  # sized with the most digits it can take
    size = len(_json(event))
    for decision in decisions:
        extra = len(_json(decision)) + 2  # and its ", "
        if size + extra > SWEEP_EVENT_BUDGET:
            break
        listed.append(dict(decision))
        size += extra
    data["sweep"]["omitted"] = len(decisions) - len(listed)
    return event


def _json(value: Any) -> str:
    # json.dumps' defaults (", " and ": ", non-ASCII as \uXXXX): the longest form it may take
    # on the wire or in the outbox row, so the budget holds for both, in bytes and characters
    import json

    return json.dumps(value)
