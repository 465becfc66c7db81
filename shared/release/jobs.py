"""Job tracking: Azure ML job events in, jobs polled by the reconciler, runs moved on.

A job event moves its run to TRAINING, FAILED or TRAINED, and a TRAINED run on into the
release. The reconciler (a timer) asks Azure ML about runs whose events never came and
advances every run mid-release: events make the loop fast, the reconciler makes it certain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from shared import telemetry
from shared.errors import LedgerConflictError, NotFoundError, TransientError, TuneloopError
from shared.events import FAILED_STATUSES, RUNNING_STATUSES, JobEvent, Skip, parse_job_event
from shared.ledger import IN_FLIGHT, IN_RELEASE, ReleaseRecord, RunRecord, RunState
from shared.platform.port import JobInfo, JobStatus
from shared.release.context import ReleaseContext, advance, reread
from shared.release.steps import advance_release

__all__ = ["ReconcileSummary", "handle_delivery", "handle_job_event", "reconcile"]

log = logging.getLogger(__name__)

_BEFORE_TRAINING = frozenset({RunState.ACCEPTED, RunState.SUBMITTED})
_BEFORE_TRAINED = frozenset({RunState.ACCEPTED, RunState.SUBMITTED, RunState.TRAINING})
_POLLED = frozenset({RunState.SUBMITTED, RunState.TRAINING})


# -- events in ------------------------------------------------------------------------------
def handle_delivery(ctx: ReleaseContext, event: Any) -> RunRecord | None:
    """Parse one delivered event and act on it; events that change nothing return None."""
    parsed = parse_job_event(event, trusted_topic=ctx.settings.workspace_arm_id)
    if isinstance(parsed, Skip):
        level = logging.WARNING if parsed.warn else logging.INFO
        log.log(level, "job event %s ignored: %s", parsed.event_id, parsed.reason)
        return None
    return handle_job_event(ctx, parsed)


def handle_job_event(ctx: ReleaseContext, event: JobEvent) -> RunRecord | None:
    """Move the event's run forward: TRAINING, FAILED, or TRAINED and on into the release."""
    run = _lookup(ctx, event)
    if run is None:
        log.info("job event %s: run %s is not in the ledger; ignored", event.event_id, event.run_id)
        return None
    log.info(
        "job event %s run=%s line=%s status=%s state=%s",
        event.event_id, run.run_id, run.line, event.status, run.state.value,
    )
    with telemetry.span(ctx.settings, "tuneloop.job_event", run=run,
                        job_status=str(event.status)) as current:
        run = _on_job_event(ctx, run, event)
        telemetry.mark(current, run)
        return run


def _on_job_event(ctx: ReleaseContext, run: RunRecord, event: JobEvent) -> RunRecord:
    if event.running:
        return _mark_training(ctx, run)
    if event.failed:
        return _mark_failed(ctx, run, event.status)
    if event.completed:
        run = _mark_trained(ctx, run)
        return advance_release(ctx, run)
    return run


def _lookup(ctx: ReleaseContext, event: JobEvent) -> RunRecord | None:
    try:
        if event.line:
            try:
                return ctx.ledger.get(event.line, event.run_id)
            except NotFoundError:
                pass
        return ctx.ledger.find(event.run_id)
    except NotFoundError:
        return None


# -- the reconciler -------------------------------------------------------------------------
@dataclass
class ReconcileSummary:
    polled: int = 0
    advanced: int = 0
    errors: int = 0


def reconcile(ctx: ReleaseContext) -> ReconcileSummary:
    """Ask Azure ML about runs whose events never came, and advance every run mid-release.

    Reads the runs in flight once, through the ledger's in-flight index (1 + runs in flight
    Table requests, whatever the history; docs/scale.md); a run whose job completed in the
    first loop goes on into the release in the second."""
    summary = ReconcileSummary()
    runs = ctx.ledger.list(states=IN_FLIGHT)
    for i, run in enumerate(runs):
        if run.state not in _POLLED:
            continue
        summary.polled += 1
        try:
            with telemetry.span(ctx.settings, "tuneloop.reconcile.poll", run=run) as current:
                runs[i] = _poll_job(ctx, run)
                telemetry.mark(current, runs[i])
        except TransientError as exc:
            summary.errors += 1
            log.warning("reconcile: run %s job status unavailable: %s", run.run_id, exc)
    for run in runs:
        if run.state not in IN_RELEASE:
            continue
        before = run.state
        try:
            after = advance_release(ctx, run, kick=False)
        except TuneloopError as exc:
            summary.errors += 1
            log.warning("reconcile: run %s line %s at %s: %s", run.run_id, run.line, before, exc)
            continue
        except Exception:  # one broken run must not stop the others
            summary.errors += 1
            log.exception("reconcile: run %s line %s at %s failed", run.run_id, run.line, before)
            continue
        if after.state != before:
            summary.advanced += 1
    log.info(
        "reconcile polled=%s advanced=%s errors=%s",
        summary.polled, summary.advanced, summary.errors,
    )
    return summary


def _poll_job(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    job = _job_or_none(ctx, run.run_id)
    if job is None:
        log.warning("reconcile: run %s has no Azure ML job", run.run_id)
        return run
    if job.status == JobStatus.COMPLETED:
        return _mark_trained(ctx, run, job)  # the release loop in reconcile picks it up
    if job.status in FAILED_STATUSES:
        return _mark_failed(ctx, run, job.status, job)
    if job.status in RUNNING_STATUSES and job.status != JobStatus.NOT_STARTED:
        return _mark_training(ctx, run)
    return run


# -- moving a run by its job ----------------------------------------------------------------
def _mark_training(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    return _move(ctx, run, _BEFORE_TRAINING, RunState.TRAINING, note="job running")


def _mark_failed(
    ctx: ReleaseContext, run: RunRecord, status: JobStatus, job: JobInfo | None = None
) -> RunRecord:
    if run.state not in _BEFORE_TRAINED:
        return run
    job = job or _job_or_none(ctx, run.run_id)
    error = (job.error if job else None) or "Azure ML gave no error message"
    studio_url = job.studio_url if job else None
    return _move(
        ctx, run, _BEFORE_TRAINED, RunState.FAILED, reason=f"job {status}: {error}",
        release=lambda r: replace(r, job_status=status, studio_url=studio_url),
    )


def _mark_trained(ctx: ReleaseContext, run: RunRecord, job: JobInfo | None = None) -> RunRecord:
    if run.state not in _BEFORE_TRAINED:
        return run
    job = job or ctx.platform.get_job(run.run_id)
    if job.status in FAILED_STATUSES:
        return _mark_failed(ctx, run, job.status, job)
    metrics = {str(k): float(v) for k, v in job.metrics.items()}
    return _move(
        ctx, run, _BEFORE_TRAINED, RunState.TRAINED, note="job completed",
        release=lambda r: replace(
            r, metrics=metrics or None, eval_loss=_eval_loss(metrics), studio_url=job.studio_url
        ),
    )


def _move(
    ctx: ReleaseContext, run: RunRecord, allowed: frozenset[RunState], state: RunState, *,
    release: Callable[[ReleaseRecord], ReleaseRecord] = lambda r: r, **kwargs: Any,
) -> RunRecord:
    """Advance while the run is in ``allowed``, re-reading on conflicts; later states stay.
    ``release`` makes the new release fields from the run's current ones."""
    while run.state in allowed:
        try:
            return advance(ctx, run, state, release=release(run.release), **kwargs)
        except LedgerConflictError:
            run = reread(ctx, run)
    return run


def _job_or_none(ctx: ReleaseContext, run_id: str) -> JobInfo | None:
    try:
        return ctx.platform.get_job(run_id)
    except NotFoundError:
        return None


def _eval_loss(metrics: Mapping[str, float]) -> float | None:
    if "eval_loss" in metrics:
        return float(metrics["eval_loss"])
    for key, value in metrics.items():
        if key.lower().replace("/", "_").endswith("eval_loss"):
            return float(value)
    return None
