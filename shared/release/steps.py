"""The step machine: TRAINED → register → REGISTERED → endpoint → DEPLOYING → deployment at 0 %
→ DEPLOYED → smoke test → gate → promote → PROMOTED (or HELD).

Every step reads the run from the ledger, does one idempotent platform call and records its
progress (ETag-guarded) before the next step starts, so a crash, a duplicate delivery or a
redelivery resumes from the recorded step. Long operations (endpoint, deployment) are
started and left: the run waits in DEPLOYING and :func:`advance_release`, called by later
events or the reconciler, polls and continues.

One release at a time per line (the line lease in :mod:`shared.leases`): a worker that finds
the line's lease taken returns at once; the reconciler advances the waiting run later.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace

from shared import telemetry
from shared.errors import (
    LedgerConflictError,
    NameOwnedByAnotherLineError,
    NotFoundError,
    PlatformError,
    TransientError,
    TuneloopError,
)
from shared.leases import acquire_line, next_version, release_line
from shared.ledger import IN_RELEASE, ReleaseRecord, RunRecord, RunState
from shared.naming import (
    BLOB_TAG,
    DATASET_TAG,
    JOB_TAG,
    LINE_TAG,
    MANAGED_TAG,
    RUN_TAG,
    deployment_name,
    endpoint_name,
    endpoint_scope,
    model_name,
)
from shared.platform.metadata import size_refusal
from shared.platform.port import (
    BaseModelInfo,
    ProvisioningState,
)
from shared.release.context import (
    ReleaseContext,
    advance,
    deployment_spec,
    hold,
    recorded,
    reread,
    serving,
)
from shared.release.exam import MAX_EXAM_ATTEMPTS, examine
from shared.release.gate import decide_promotion, uses_exam
from shared.release.promote import live_run, promote
from shared.release.smoke import smoke_test
from shared.retract import hold_if_retracted

__all__ = [
    "MAX_EXAM_ATTEMPTS", "MAX_SMOKE_ATTEMPTS", "MAX_STEP_FAILURES", "advance_release",
    "inference_allow_list",
]

log = logging.getLogger(__name__)

MAX_STEP_FAILURES = 3  # non-transient failures of one step before the run is HELD
MAX_SMOKE_ATTEMPTS = 3  # transient smoke-test failures before the run is HELD
_MAX_STEPS = 12

Step = Callable[[ReleaseContext, RunRecord], tuple[RunRecord, bool]]


def advance_release(ctx: ReleaseContext, run: RunRecord, *, kick: bool = True) -> RunRecord:
    """Drive a run that is mid-release as far as it can go now; never waits for Azure.

    When the run's release ends (PROMOTED, HELD, FAILED) and ``kick`` is set, the next run
    waiting for the same line is started at once instead of at the next reconcile.
    """
    if run.state not in IN_RELEASE:
        return run
    token = uuid.uuid4().hex
    if not acquire_line(ctx.ledger, run.line, run.run_id, token, now=ctx.now()):
        return run
    done = False
    try:
        # The run's trace (stored at ingest): a release step, from any trigger, joins it.
        with telemetry.span(ctx.settings, "tuneloop.release", run=run) as current:
            run = _drive(ctx, reread(ctx, run))
            telemetry.mark(current, run)
        done = run.state not in IN_RELEASE
    finally:
        release_line(ctx.ledger, run.line, token, done=done)
    if done and kick:
        _start_next(ctx, run)
    return run


def _start_next(ctx: ReleaseContext, finished: RunRecord) -> None:
    """Start the oldest run still waiting on the line; its failures are the reconciler's."""
    waiting = [
        r for r in ctx.ledger.list(line=finished.line, states=IN_RELEASE)
        if r.run_id != finished.run_id
    ]
    if not waiting:
        return
    try:
        advance_release(ctx, waiting[0], kick=False)
    except Exception as exc:  # the finished run's delivery must not fail for the next one
        log.warning(
            "line %s: next release %s did not start (%s); the reconciler retries",
            finished.line, waiting[0].run_id, exc,
        )


def _drive(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    for _ in range(_MAX_STEPS):
        step = _STEPS.get(run.state)
        if step is None:
            return run
        try:
            run, moved = step(ctx, run)
        except LedgerConflictError:
            run = reread(ctx, run)
            continue
        except TransientError:
            raise
        except NameOwnedByAnotherLineError as exc:
            run = _hold_refused(ctx, run, exc)
            if run.state not in IN_RELEASE:
                return run
            raise
        except PlatformError as exc:
            run = _record_failure(ctx, run, exc)
            if run.state not in IN_RELEASE:
                return run
            raise
        if not moved:
            return run
    return run


def _record_failure(ctx: ReleaseContext, run: RunRecord, exc: TuneloopError) -> RunRecord:
    failures = run.release.failures + 1
    try:
        current = reread(ctx, run)
        if current.state != run.state:
            return current
        if failures >= MAX_STEP_FAILURES:
            _discard_deployment(ctx, current)
            return hold(ctx, current, f"{run.state.value} step failed {failures} times: {exc}")
        return ctx.ledger.update(
            current, release=replace(current.release, failures=failures, last_error=str(exc)),
            note=f"{run.state.value} step failed ({exc.code}); will retry",
        )
    except LedgerConflictError:
        return run


def _hold_refused(
    ctx: ReleaseContext, run: RunRecord, exc: NameOwnedByAnotherLineError
) -> RunRecord:
    """The step's model or endpoint name belongs to another line: no retry can change that,
    so the run is HELD at once with the refusal as its reason. Nothing is deleted: the
    endpoint (and a deployment of the same name on it) may be the other line's."""
    try:
        current = reread(ctx, run)
        if current.state != run.state:
            return current
        return hold(ctx, current, f"{run.state.value} step refused: {exc}")
    except LedgerConflictError:
        return run


def _discard_deployment(ctx: ReleaseContext, run: RunRecord) -> None:
    """Best effort: remove a held run's new deployment (never once it may carry traffic)."""
    r = run.release
    if run.state not in (RunState.DEPLOYING, RunState.DEPLOYED) or r.promoting:
        return
    try:
        ctx.platform.delete_deployment(*serving(run))
    except TuneloopError as exc:
        log.warning("run %s: could not delete deployment %s: %s", run.run_id, r.deployment, exc)


# -- TRAINED: register the model ------------------------------------------------------------
def _step_trained(ctx: ReleaseContext, run: RunRecord) -> tuple[RunRecord, bool]:
    if not run.release.model_version:
        version = next_version(ctx.ledger, run.line)
        names = replace(
            run.release,
            model_version=version,
            model_name=model_name(run.line),
            endpoint=endpoint_name(run.line, endpoint_scope(ctx.settings)),
            deployment=deployment_name(version),
        )
        run = ctx.ledger.update(run, release=names, note=f"model version {version} assigned")
    model = ctx.platform.register_model(
        recorded(run, run.release.model_name, "model_name"),
        recorded(run, run.release.model_version, "model_version"),
        job_name=run.run_id, tags=_lineage_tags(run),
    )
    run = advance(
        ctx, run, RunState.REGISTERED, note=f"registered {model.name}:{model.version}",
        release=replace(run.release, model_id=model.id),
    )
    return run, True


def _lineage_tags(run: RunRecord) -> dict[str, str]:
    tags = {
        RUN_TAG: run.run_id,
        LINE_TAG: run.line,
        JOB_TAG: run.run_id,
        DATASET_TAG: str(run.get("dataset_sha256") or run.get("sha256") or ""),
        BLOB_TAG: str(run.get("blob") or ""),
    }
    return {k: v for k, v in tags.items() if v}


# -- REGISTERED: the line's endpoint --------------------------------------------------------
def _step_registered(ctx: ReleaseContext, run: RunRecord) -> tuple[RunRecord, bool]:
    endpoint, _ = serving(run)
    ep = ctx.platform.ensure_endpoint(endpoint, tags=_endpoint_tags(run))
    if ep.provisioning_state == ProvisioningState.FAILED:
        return hold(ctx, run, f"endpoint {endpoint} is in state Failed"), True
    run = advance(
        ctx, run, RunState.DEPLOYING, note=f"endpoint {endpoint} {ep.provisioning_state}",
        release=replace(run.release, endpoint_state=ep.provisioning_state),
    )
    return run, True


def _endpoint_tags(run: RunRecord) -> dict[str, str]:
    return {MANAGED_TAG: "true", LINE_TAG: run.line}


# -- DEPLOYING: endpoint ready, then the deployment at 0 % ----------------------------------
def _step_deploying(ctx: ReleaseContext, run: RunRecord) -> tuple[RunRecord, bool]:
    endpoint, deployment = serving(run)
    try:
        ep = ctx.platform.get_endpoint(endpoint)
    except NotFoundError:  # gone since (e.g. swept): start it again
        ep = ctx.platform.ensure_endpoint(endpoint, tags=_endpoint_tags(run))
    if ep.provisioning_state == ProvisioningState.FAILED:
        return hold(ctx, run, f"endpoint {endpoint} is in state Failed"), True
    if ep.provisioning_state != ProvisioningState.SUCCEEDED:
        return _note_wait(ctx, run, endpoint_state=ep.provisioning_state), False
    if not run.release.instance_checked:
        problem = _check_instance_type(ctx)
        if problem:
            return hold(ctx, run, problem), True
        run = ctx.ledger.update(run, release=replace(run.release, instance_checked=True))
    dep = ctx.platform.deploy(deployment_spec(ctx, run))
    if dep.provisioning_state == ProvisioningState.SUCCEEDED:
        ready = replace(
            run.release, endpoint_state=ep.provisioning_state,
            deployment_state=dep.provisioning_state, scoring_uri=ep.scoring_uri,
        )
        run = advance(
            ctx, run, RunState.DEPLOYED, note=f"deployment {deployment} ready at 0 % traffic",
            release=ready,
        )
        return run, True
    if dep.provisioning_state in (ProvisioningState.FAILED, ProvisioningState.CANCELED):
        ctx.platform.delete_deployment(endpoint, deployment)
        reason = f"deployment {deployment} {dep.provisioning_state}: {dep.error or 'no detail'}"
        return hold(ctx, run, reason), True
    return _note_wait(ctx, run, deployment_state=dep.provisioning_state), False


def _check_instance_type(ctx: ReleaseContext) -> str | None:
    """A reason to hold if the inference instance type is off the base model's allow-list."""
    s = ctx.settings
    retired = size_refusal(s.inference_instance_type, ctx.now().date(), use="inference")
    if retired:  # refused whatever a (stale) allow-list says: Phi-3's still names NC6s_v3
        return f"{retired}; set TUNELOOP_INFERENCE_INSTANCE_TYPE to a current size"
    base = ctx.platform.get_base_model(s.base_model, s.base_model_version or "latest")
    allowed = inference_allow_list(base)
    if allowed is None or s.inference_instance_type.lower() in {a.lower() for a in allowed}:
        return None
    return (
        f"instance type {s.inference_instance_type} is not on the inference allow-list of "
        f"{base.name}:{base.version} ({', '.join(allowed)}); set TUNELOOP_INFERENCE_INSTANCE_TYPE "
        "to one of them"
    )


def inference_allow_list(base: BaseModelInfo) -> list[str] | None:
    """The instance types the base model may be served on, or None if it does not say.

    Parsed once with the rest of the model's metadata (``BaseModelInfo.metadata``); an
    unreadable list counts as not saying (the release never holds on a metadata typo).
    """
    skus = base.metadata.inference_skus
    return list(skus) if skus is not None else None


def _note_wait(
    ctx: ReleaseContext, run: RunRecord, *,
    endpoint_state: str | None = None, deployment_state: str | None = None,
) -> RunRecord:
    """Record what the run waits on, once per change (the timeline stays short)."""
    waits = replace(
        run.release,
        endpoint_state=endpoint_state or run.release.endpoint_state,
        deployment_state=deployment_state or run.release.deployment_state,
    )
    if waits == run.release:
        return run
    what = "endpoint state" if endpoint_state else "deployment state"
    try:
        note = f"waiting: {what} {endpoint_state or deployment_state}"
        return ctx.ledger.update(run, note=note, release=waits)
    except LedgerConflictError:
        return run


# -- DEPLOYED: smoke test, gate (the exam), promote -----------------------------------------
def _step_deployed(ctx: ReleaseContext, run: RunRecord) -> tuple[RunRecord, bool]:
    endpoint, deployment = serving(run)
    if not run.release.promoting:
        if (held := hold_if_retracted(ctx, run)) is not None:  # retracted data never goes live
            return held, True
        if (run.release.exam or {}).get("decision") == "hold" and run.release.gate:
            # The exam held it and the worker died before HELD was written: finish the hold.
            return _hold_examined(ctx, run, run.release, run.release.gate), True
        # An exam that stopped (exam_attempts) started after the smoke test passed.
        problem = None if run.release.exam_attempts else _smoke(ctx, run, deployment)
        if problem:
            ctx.platform.delete_deployment(endpoint, deployment)
            return hold(ctx, run, f"smoke test failed: {problem}"), True
        live = live_run(ctx, run)
        exam = None
        if uses_exam(ctx.settings.promotion):
            decision, exam = examine(ctx, run, live)  # TransientError: resumes at the next try
        else:
            decision = decide_promotion(ctx.settings.promotion)
        telemetry.record("tuneloop.gate.decisions", 1, line=run.line,
                         decision="promote" if decision.promote else "hold",
                         promotion=ctx.settings.promotion)
        if not decision.promote:
            held_release = replace(run.release, exam=exam or run.release.exam)
            if exam is not None:
                # The exam's verdict before its deployment is deleted: a worker that dies
                # between the two leaves a run the next try holds for the exam's reason
                # (above), not one whose smoke test finds its deployment gone.
                held_release = replace(held_release, gate=decision.reason)
                run = ctx.ledger.update(run, release=held_release)
                return _hold_examined(ctx, run, held_release, decision.reason), True
            if not decision.keep_deployment:
                ctx.platform.delete_deployment(endpoint, deployment)
            log.warning("run %s line %s HELD: %s", run.run_id, run.line, decision.reason)
            run = advance(ctx, run, RunState.HELD, reason=decision.reason, release=held_release)
            return run, True
        promoting = replace(
            run.release, promoting=True, gate=decision.reason, exam=exam or run.release.exam,
            previous_run=live.run_id if live else None,
            previous_deployment=live.release.deployment if live else None,
        )
        run = ctx.ledger.update(
            run, release=promoting, note=f"smoke test passed; {decision.reason}; promoting"
        )
    return promote(ctx, run), True


def _hold_examined(
    ctx: ReleaseContext, run: RunRecord, held_release: ReleaseRecord, reason: str
) -> RunRecord:
    """HELD by the exam (its verdict already on the row): the candidate's deployment is
    deleted (it bills by the hour; already gone is fine), then the run is HELD."""
    endpoint, deployment = serving(run)
    ctx.platform.delete_deployment(endpoint, deployment)
    log.warning("run %s line %s HELD: %s", run.run_id, run.line, reason)
    return advance(ctx, run, RunState.HELD, reason=reason, release=held_release)


def _smoke(ctx: ReleaseContext, run: RunRecord, deployment: str) -> str | None:
    """The smoke test's problem, or None; a transient failure is retried by later tries, up to
    :data:`MAX_SMOKE_ATTEMPTS` (then it is the problem)."""
    try:
        return smoke_test(ctx, run)
    except TransientError as exc:
        attempts = run.release.smoke_attempts + 1
        if attempts < MAX_SMOKE_ATTEMPTS:
            retry = replace(run.release, smoke_attempts=attempts, last_error=str(exc))
            ctx.ledger.update(run, release=retry)
            raise
        return f"{deployment} did not answer after {attempts} attempts: {exc}"


_STEPS: dict[RunState, Step] = {
    RunState.TRAINED: _step_trained,
    RunState.REGISTERED: _step_registered,
    RunState.DEPLOYING: _step_deploying,
    RunState.DEPLOYED: _step_deployed,
}
