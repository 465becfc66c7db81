"""The idle endpoint sweeper: a pure policy (:func:`select_idle`) and the shell that acts on it.

Functional core, imperative shell. :func:`run_sweep` gathers facts (the workspace's endpoints,
their request counts over the idle window, the lines with a release in progress), asks
:func:`select_idle` for one decision per endpoint, then acts: deletes (or, in dry-run, only
reports), retires the line's live run in the ledger and writes ``_sweeps/<timestamp>.json``
to the reports container.

The policy fails closed: an endpoint is deleted only when every rule holds, and any fact
that is missing, unknown or in the future keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from shared import telemetry
from shared.errors import LedgerConflictError, TuneloopError, UnknownTrafficError
from shared.ledger import IN_RELEASE, InvalidTransitionError, RunState
from shared.naming import LINE_TAG, MANAGED_TAG, PROTECT_TAG, endpoint_name, endpoint_scope
from shared.platform.port import EndpointInfo, Platform, ProvisioningState

if TYPE_CHECKING:
    from shared.ledger import Ledger, RunRecord
    from shared.settings import Settings
    from shared.storage import Storage

__all__ = [
    "LINE_TAG",
    "MANAGED_TAG",
    "PROTECT_TAG",
    "SWEEPS_PREFIX",
    "Action",
    "Decision",
    "SweepPolicy",
    "SweepReport",
    "is_managed",
    "lines_in_release",
    "run_sweep",
    "select_idle",
]

log = logging.getLogger(__name__)

SWEEPS_PREFIX = "_sweeps/"

# Runs whose deployment lives on the line's endpoint: deleting the endpoint ends them.
_LIVE_STATES = frozenset({RunState.PROMOTED, RunState.HELD})


class Action(StrEnum):
    """What the policy decided for one endpoint."""

    DELETE = "delete"
    KEEP = "keep"
    SKIP_OVER_CAP = "skip-over-cap"


@dataclass(frozen=True)
class SweepPolicy:
    """The knobs of the idle policy (from ``TUNELOOP_IDLE_*`` / ``TUNELOOP_SWEEP_*``)."""

    idle_after: timedelta
    max_requests: int = 0
    max_deletions: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> SweepPolicy:
        return cls(
            idle_after=settings.idle_after,
            max_requests=settings.idle_max_requests,
            max_deletions=settings.sweep_max_deletions,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "idle_after": _duration(self.idle_after),
            "idle_max_requests": self.max_requests,
            "max_deletions": self.max_deletions,
        }


@dataclass(frozen=True)
class Decision:
    """One endpoint's fate and the human reason for it.

    ``idle_since`` is the endpoint's last known activity (the later of created and modified);
    ``outcome``/``error`` are filled in by the shell once it has acted.
    """

    endpoint: str
    line: str | None
    action: Action
    reason: str
    requests: int | None
    created: datetime | None
    modified: datetime | None
    idle_since: datetime | None
    provisioning_state: str
    location: str | None = None
    outcome: str | None = None
    error: str | None = None

    def to_dict(self, *, now: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "endpoint": self.endpoint,
            "line": self.line,
            "action": self.action.value,
            "reason": self.reason,
            "requests": self.requests,
            "created": _iso(self.created),
            "modified": _iso(self.modified),
            "idle_since": _iso(self.idle_since),
            "provisioning_state": self.provisioning_state,
            "location": self.location,
            "outcome": self.outcome,
            "error": self.error,
        }
        if now is not None:
            out["age"] = _duration(now - self.created) if self.created else None
        return out


# -- the pure policy ------------------------------------------------------------------------


def _tag(tags: Mapping[str, str], key: str) -> str | None:
    """A tag's value; Azure tag names are case-insensitive."""
    for name, value in tags.items():
        if name.lower() == key:
            return "" if value is None else str(value)
    return None


def is_managed(endpoint: EndpointInfo) -> bool:
    """Whether tuneloop manages the endpoint (tag ``tuneloop_managed=true``, any case)."""
    value = _tag(endpoint.tags, MANAGED_TAG)
    return value is not None and value.strip().lower() == "true"


def _is_protected(endpoint: EndpointInfo) -> bool:
    # Fail closed: any value but an explicit "false" protects (a typo must not delete).
    value = _tag(endpoint.tags, PROTECT_TAG)
    return value is not None and value.strip().lower() != "false"


def _line(endpoint: EndpointInfo) -> str | None:
    value = _tag(endpoint.tags, LINE_TAG)
    return (value.strip() or None) if value is not None else None


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _duration(delta: timedelta) -> str:
    """A short human duration: ``3d4h``, ``5h``, ``12m``, ``40s`` (negative: ``-5m``)."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours}h" if hours else f"{sign}{days}d"
    if hours:
        return f"{sign}{hours}h{minutes}m" if minutes else f"{sign}{hours}h"
    if minutes:
        return f"{sign}{minutes}m"
    return f"{sign}{secs}s"


def _reasons_to_keep(
    endpoint: EndpointInfo,
    requests: int | None,
    *,
    now: datetime,
    policy: SweepPolicy,
    release_lines: Collection[str],
    release_endpoints: Collection[str],
    traffic_error: str | None,
) -> list[str]:
    """Every rule the endpoint fails (empty = idle and deletable)."""
    if not is_managed(endpoint):
        # Not ours: nothing else matters, and nothing else is worth saying.
        return [f"not managed by tuneloop (no {MANAGED_TAG}=true tag)"]
    reasons: list[str] = []
    if _is_protected(endpoint):
        reasons.append(f"protected ({PROTECT_TAG} tag)")
    line = _line(endpoint)
    if line is None:
        reasons.append(f"no {LINE_TAG} tag, so the ledger cannot rule out a release")
    if line in release_lines or endpoint.name in release_endpoints:
        reasons.append(f"a release is in progress on line {line or endpoint.name!r}")
    state = endpoint.provisioning_state or "unknown"
    if state.lower() != ProvisioningState.SUCCEEDED.lower():
        reasons.append(f"provisioning state is {state}, not Succeeded")
    window = _duration(policy.idle_after)
    created, modified = _aware(endpoint.created), _aware(endpoint.modified)
    if created is None or modified is None:
        reasons.append("creation or modification time unknown")
    if (created and created > now) or (modified and modified > now):
        reasons.append("timestamp in the future (clock skew): age cannot be trusted")
    elif created and now - created < policy.idle_after:
        reasons.append(f"young: created {_duration(now - created)} ago (idle window {window})")
    elif modified and now - modified < policy.idle_after:
        reasons.append(
            f"recently modified: {_duration(now - modified)} ago (idle window {window})"
        )
    if requests is None:
        why = f": {traffic_error}" if traffic_error else ""
        reasons.append(f"request count unknown{why}")
    elif requests > policy.max_requests:
        reasons.append(
            f"busy: {requests} requests in the last {window} (idle means ≤ {policy.max_requests})"
        )
    return reasons


def select_idle(
    endpoints: Sequence[EndpointInfo],
    traffic: Mapping[str, int],
    *,
    now: datetime,
    policy: SweepPolicy,
    lines_in_release: Collection[str],
    traffic_error: str | None = None,
    scope: str | None = None,
) -> list[Decision]:
    """Decide, for every endpoint, delete / keep / skip-over-cap, with a reason. Pure.

    ``traffic`` maps endpoint name to requests over the idle window; a missing name means
    unknown (kept). ``lines_in_release`` are lines with a release in progress in the ledger;
    ``scope`` (:func:`shared.naming.endpoint_scope`) also keeps the endpoints named for them.
    At most ``policy.max_deletions`` endpoints are deleted, the longest idle first.
    Decisions come back in the order of ``endpoints``.
    """
    now = _aware(now) or now
    release_lines = frozenset(lines_in_release)
    # the names the release derives for those lines in this workspace (shared.naming); without
    # a scope only the line tags say which endpoints are mid-release
    release_endpoints = frozenset(
        endpoint_name(line, scope) for line in release_lines if scope
    )
    window = _duration(policy.idle_after)
    decisions: list[Decision] = []
    idle: list[int] = []
    for endpoint in endpoints:
        requests = traffic.get(endpoint.name)
        created, modified = _aware(endpoint.created), _aware(endpoint.modified)
        idle_since = max(created, modified) if created and modified else None
        reasons = _reasons_to_keep(
            endpoint,
            requests,
            now=now,
            policy=policy,
            release_lines=release_lines,
            release_endpoints=release_endpoints,
            traffic_error=traffic_error,
        )
        if not reasons:
            idle.append(len(decisions))
            reason = (
                f"idle: {requests} requests in the last {window}, "
                f"unchanged for {_duration(now - idle_since) if idle_since else '?'}"
            )
        else:
            reason = "; ".join(reasons)
        decisions.append(
            Decision(
                endpoint=endpoint.name,
                line=_line(endpoint),
                action=Action.KEEP if reasons else Action.DELETE,
                reason=reason,
                requests=requests,
                created=created,
                modified=modified,
                idle_since=idle_since,
                provisioning_state=endpoint.provisioning_state,
                location=endpoint.location,
            )
        )
    # Oldest idle first; the name breaks ties so the choice is deterministic.
    idle.sort(key=lambda i: (decisions[i].idle_since or now, decisions[i].endpoint))
    for rank, index in enumerate(idle):
        if rank >= policy.max_deletions:
            d = decisions[index]
            decisions[index] = replace(
                d,
                action=Action.SKIP_OVER_CAP,
                reason=f"{d.reason}; not deleted this run: the cap of "
                f"{policy.max_deletions} deletions per run is reached (older idle ones first)",
            )
    return decisions


# -- the shell ------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What one sweep saw, decided and did; written as ``_sweeps/<timestamp>.json``."""

    started: datetime
    mode: Literal["delete", "dry-run"]
    policy: SweepPolicy
    platform: str
    decisions: list[Decision] = field(default_factory=list)
    metrics_error: str | None = None
    finished: datetime | None = None
    blob: str | None = None

    @property
    def deleted(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == "deletion-started"]

    @property
    def failed(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == "failed"]

    def summary(self) -> dict[str, int]:
        counts = {action.value: 0 for action in Action}
        for d in self.decisions:
            counts[d.action.value] += 1
        return {
            "endpoints": len(self.decisions),
            **counts,
            "deletion_started": len(self.deleted),
            "failed": len(self.failed),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "tuneloop.sweep",
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "mode": self.mode,
            "platform": self.platform,
            "policy": self.policy.to_dict(),
            "metrics": {
                "available": self.metrics_error is None,
                "error": self.metrics_error,
                "note": (
                    "request counts unavailable: nothing was deleted"
                    if self.metrics_error
                    else None
                ),
            },
            "summary": self.summary(),
            "decisions": [d.to_dict(now=self.started) for d in self.decisions],
        }


def lines_in_release(ledger: Ledger) -> set[str]:
    """Lines with a run between TRAINED and DEPLOYED (a release is under way)."""
    return {rec.line for rec in ledger.list(states=IN_RELEASE)}


def run_sweep(
    *,
    platform: Platform,
    ledger: Ledger,
    storage: Storage | None,
    settings: Settings,
    now: datetime | None = None,
    mode: Literal["delete", "dry-run"] | None = None,
    publish: bool = True,
) -> SweepReport:
    """Gather, decide, act; return the report (also written to the reports container).

    A metrics outage deletes nothing (every managed endpoint's traffic is unknown). A failed
    deletion is recorded on its decision and the sweep goes on. ``storage=None`` skips the
    report blob (the CLI's ``--no-report``). With events on and ``publish``, the pass's
    ``tuneloop.sweep.decided`` event is recorded in the ledger's outbox before anything is
    deleted and rewritten with the outcomes after (:func:`_record_event`); ``publish=False``
    (``tuneloop sweep --dry-run``) records none.
    """
    now = _aware(now) or datetime.now(UTC)
    telemetry.mode(settings)  # installs the metrics _act records (shared.telemetry)
    policy = SweepPolicy.from_settings(settings)
    report = SweepReport(
        started=now, mode=mode or settings.sweep_mode, policy=policy, platform=platform.kind
    )
    endpoints = platform.list_endpoints()
    in_release = lines_in_release(ledger)
    # Only our endpoints' traffic matters; others are kept whatever their traffic.
    managed = [e for e in endpoints if is_managed(e)]
    traffic: dict[str, int] = {}
    if managed:
        try:
            traffic = platform.endpoint_requests(managed, policy.idle_after, now=now)
        except UnknownTrafficError as exc:
            report.metrics_error = f"metrics query failed: {exc}"
            log.warning("sweep: %s; nothing will be deleted", report.metrics_error)
    decisions = select_idle(
        endpoints,
        traffic,
        now=now,
        policy=policy,
        lines_in_release=in_release,
        traffic_error=report.metrics_error,
        scope=endpoint_scope(settings),
    )
    report.decisions = decisions
    ref = _report_ref(settings, report) if storage is not None else None
    if publish:  # before acting: a crash while deleting still publishes what was decided
        _record_event(ledger, report, ref, hold=True)
    report.decisions = [_act(d, platform, ledger, report.mode, now) for d in decisions]
    for d in report.decisions:
        log.info(
            "sweep decision endpoint=%s line=%s action=%s outcome=%s requests=%s reason=%s",
            d.endpoint, d.line, d.action.value, d.outcome, d.requests, d.reason,
        )
    report.finished = datetime.now(UTC)
    if publish:
        try:  # the outcomes; the decisions are recorded already
            _record_event(ledger, report, ref, hold=False)
        except TuneloopError as exc:
            log.warning("sweep: the outcomes were not added to the sweep event: %s", exc)
    if storage is not None:
        report.blob = _write_report(storage, settings, report)
    log.info("sweep done mode=%s %s", report.mode, report.summary())
    return report


def _act(
    decision: Decision, platform: Platform, ledger: Ledger, mode: str, now: datetime
) -> Decision:
    if decision.action is not Action.DELETE:
        return decision
    if mode == "dry-run":
        return replace(decision, outcome="dry-run")
    line = decision.line
    # Re-check just before deleting: a release may have started since the ledger was read.
    if line is not None and ledger.list(line=line, states=IN_RELEASE):
        return replace(
            decision,
            action=Action.KEEP,
            reason=f"a release started on line {line!r} during the sweep",
            outcome="not-deleted",
        )
    try:
        platform.delete_endpoint(decision.endpoint)
    except Exception as exc:  # any failure is recorded on the decision; the sweep goes on
        log.warning("sweep: deleting endpoint %s failed: %s", decision.endpoint, exc)
        return replace(decision, outcome="failed", error=_describe(exc))
    telemetry.record("tuneloop.sweep.endpoints_deleted", 1, line=line)
    if decision.idle_since is not None:
        # Estimate: the endpoint would have stayed idle as long again as it had been idle
        # when deleted (now - idle_since, the decision's own figure).
        hours = max((now - decision.idle_since).total_seconds(), 0.0) / 3600
        telemetry.record("tuneloop.sweep.idle_hours_saved", hours, line=line)
    try:
        error = _retire_line(ledger, decision, now) if line is not None else None
    except TuneloopError as exc:
        error = f"endpoint deletion started, but the ledger was not updated: {_describe(exc)}"
    return replace(decision, outcome="deletion-started", error=error)


def _describe(exc: Exception) -> str:
    if isinstance(exc, TuneloopError):
        return f"{exc.code}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _retire_line(ledger: Ledger, decision: Decision, now: datetime) -> str | None:
    """Move the line's live run(s) on the deleted endpoint to RETIRED, so the next dataset
    recreates the endpoint."""
    assert decision.line is not None
    since = _iso(decision.idle_since) or "?"
    reason = (
        f"endpoint {decision.endpoint} deleted by the sweeper: idle since {since} "
        f"({decision.requests} requests in the window ending {_iso(now)})"
    )
    problems: list[str] = []
    for rec in ledger.list(line=decision.line, states=_LIVE_STATES):
        # A line can have two endpoints (its names changed: the old one keeps serving until
        # swept); a run recorded on another endpoint is still live. No record: an older row.
        if rec.release.endpoint not in (None, decision.endpoint):
            continue
        problem = _retire(ledger, rec, reason)
        if problem:
            problems.append(problem)
    return "; ".join(problems) or None


def _retire(ledger: Ledger, rec: RunRecord, reason: str) -> str | None:
    for _ in range(3):
        try:
            # the run's tuneloop.run.retired event, then tuneloop.endpoint.swept (same write)
            ledger.advance(rec, RunState.RETIRED, reason=reason, events=("swept",))
            return None
        except LedgerConflictError:
            rec = ledger.get(rec.line, rec.run_id)
            if rec.state not in _LIVE_STATES:
                return None  # someone else moved it on; nothing left to record
        except InvalidTransitionError:
            return None
    return f"ledger: run {rec.run_id} kept changing; not retired"


def _stamp(report: SweepReport) -> str:
    # Microseconds: two sweeps in one second (timer + CLI) must not overwrite each other.
    return report.started.strftime("%Y%m%dT%H%M%S.%fZ")


def _report_ref(settings: Settings, report: SweepReport) -> str:
    """``<container>/_sweeps/<stamp>.json``: where :func:`_write_report` writes the report."""
    return f"{settings.reports_container}/{SWEEPS_PREFIX}{_stamp(report)}.json"


def _write_report(storage: Storage, settings: Settings, report: SweepReport) -> str:
    from shared.storage import BlobRef

    ref = BlobRef(settings.reports_container, f"{SWEEPS_PREFIX}{_stamp(report)}.json")
    storage.write_json(ref, report.to_dict())
    return str(ref)


# How long the drains leave a pass's event alone after it is recorded before the deletions:
# the pass rewrites it with the outcomes (a Functions invocation lasts at most 10 min); after
# a crash, the reconciler's drain sends the decisions without outcomes once this has passed.
EVENT_HOLD = timedelta(minutes=10)


def sweep_id(report: SweepReport) -> str:
    """The pass's id: ``sweep-<started, to the microsecond>`` (the report blob's stamp)."""
    return f"sweep-{_stamp(report)}"


def _record_event(ledger: Ledger, report: SweepReport, ref: str | None, *, hold: bool) -> None:
    """Record the pass's ``tuneloop.sweep.decided`` event in the ledger's outbox (one row;
    nothing when events are off). ``hold``: before acting, the decisions without outcomes,
    left to this pass's own second write (drains skip it for :data:`EVENT_HOLD`)."""
    if not ledger.records_events:
        return
    origin = ledger.events_origin
    assert origin is not None
    from shared.lifecycle import sweep_event

    summary = report.summary()
    if hold:
        reason = (
            f"{summary['endpoints']} endpoints: {summary['delete']} to delete, "
            f"{summary['skip-over-cap']} over the cap, {summary['keep']} kept "
            f"(mode {report.mode}; decided, not yet acted on)"
        )
    else:
        reason = (
            f"{summary['endpoints']} endpoints: {summary['deletion_started']} deletions "
            f"started, {summary['failed']} failed, {summary['skip-over-cap']} over the cap, "
            f"{summary['keep']} kept (mode {report.mode})"
        )
    if report.metrics_error:
        reason += f"; metrics unavailable, nothing deleted: {report.metrics_error}"
    sweep = {
        "id": sweep_id(report),
        "mode": report.mode,
        "started": _iso(report.started),
        "finished": None if hold else _iso(report.finished),
        "metrics_available": report.metrics_error is None,
        "metrics_error": report.metrics_error,
        "summary": summary,
    }
    # endpoints with a line first: if the event must leave some out, those without go first
    ordered = sorted(report.decisions, key=lambda d: d.line is None)
    decisions = [
        {
            "endpoint": d.endpoint, "line": d.line, "action": d.action.value,
            "reason": d.reason, "requests": d.requests, "idle_since": _iso(d.idle_since),
            "outcome": d.outcome, "error": d.error,
        }
        for d in ordered
    ]
    time = report.started if hold or report.finished is None else report.finished
    event = sweep_event(origin, sweep, decisions, time=time, reason=reason, report=ref)
    ledger.put_events(
        str(sweep["id"]), [event], hold_until=report.started + EVENT_HOLD if hold else None
    )
