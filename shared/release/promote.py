"""Promotion: the release's last step, and the same step run by hand on a HELD run.

:func:`promote` moves traffic to the run's deployment, deletes the previous deployment and
retires the previous live run; :func:`promote_held` is ``tuneloop promote``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

from shared import telemetry
from shared.corpus import carry_line_corpus
from shared.corpus import live_run as corpus_live_run
from shared.errors import LedgerConflictError, NotFoundError, NotPromotableError
from shared.leases import acquire_line, release_line
from shared.ledger import RunRecord, RunState
from shared.platform.port import ProvisioningState
from shared.release.context import ReleaseContext, advance, deployment_spec, reread, serving
from shared.retract import refuse_retracted

__all__ = ["live_run", "promote", "promote_held"]

log = logging.getLogger(__name__)


def promote(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    """Traffic 100 % to the run's deployment → delete the previous one → retire the previous
    run → PROMOTED with the line's corpus (:func:`shared.corpus.carry_line_corpus`). Every call
    is idempotent; ``previous_*`` were recorded before the first."""
    r = run.release
    endpoint, deployment = serving(run)
    ctx.platform.set_traffic(endpoint, {deployment: 100})
    if r.previous_deployment and r.previous_deployment != deployment:
        ctx.platform.delete_deployment(endpoint, r.previous_deployment)
    if r.previous_run:
        _retire(ctx, run.line, r.previous_run, by=run.run_id)
    ep = ctx.platform.get_endpoint(endpoint)
    # The line's corpus goes live in the same write as the run (one entity: no crash between).
    line = carry_line_corpus(ctx.storage, ctx.settings, ctx.ledger, run)
    run = advance(
        ctx, run, RunState.PROMOTED, note=f"{deployment} takes 100 % of {endpoint}",
        reason=None,
        release=replace(r, scoring_uri=ep.scoring_uri or r.scoring_uri, promoted_at=ctx.now()),
        **({} if line is None else {"line_corpus": line}),
    )
    log.info("run %s line %s PROMOTED as %s on %s", run.run_id, run.line, deployment, endpoint)
    return run


def live_run(ctx: ReleaseContext, run: RunRecord) -> RunRecord | None:
    """The line's live (PROMOTED) run other than ``run``: the one a promotion replaces."""
    return corpus_live_run(ctx.ledger, run.line, other_than=run.run_id)


def _retire(ctx: ReleaseContext, line: str, run_id: str, *, by: str) -> None:
    while True:
        try:
            prev = ctx.ledger.get(line, run_id)
        except NotFoundError:
            return
        if prev.state != RunState.PROMOTED:
            return
        try:
            advance(ctx, prev, RunState.RETIRED, reason=f"superseded by {by}")
            return
        except LedgerConflictError:
            continue


# -- by hand --------------------------------------------------------------------------------
def promote_held(ctx: ReleaseContext, run_id: str, *, line: str | None = None) -> RunRecord:
    """Promote a HELD run by hand: the release's own last step on its kept deployment.

    Its deployment (left at 0 % by ``TUNELOOP_PROMOTION=manual``) takes 100 % of the line's
    endpoint, the previous deployment is deleted and the previous live run RETIRED. A run
    whose deployment was deleted when it was held (by the exam, a failed smoke test) has it
    deployed again from its registered model version: NotPromotableError says so while it is
    being created, and the same command promotes it once it is ready. A PROMOTED run is
    returned as it is, and a promotion cut short resumes from what it recorded. Raises
    NotPromotableError for a run in another state, held before it had a model or deployment,
    a deployment not ready, or a line whose release is under way now.
    """
    run = ctx.ledger.get(line, run_id) if line else ctx.ledger.find(run_id)
    # Joins the run's trace (stored at ingest; shared.telemetry), from the CLI too.
    with telemetry.span(ctx.settings, "tuneloop.promote", run=run) as current:
        run = _promote_held(ctx, run)
        telemetry.mark(current, run)
        return run


def _promote_held(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    if run.state == RunState.PROMOTED:
        return run
    _check_promotable(ctx, run)
    token = uuid.uuid4().hex
    if not acquire_line(ctx.ledger, run.line, run.run_id, token, now=ctx.now()):
        raise NotPromotableError(
            f"line {run.line} is busy: another release is under way",
            hint="try again once `tuneloop status --line "
            f"{run.line}` shows no run between TRAINED and DEPLOYED",
        )
    done = False
    try:
        while True:
            run = reread(ctx, run)
            if run.state == RunState.PROMOTED:
                done = True
                return run
            _check_promotable(ctx, run)
            _redeploy_if_gone(ctx, run)
            try:
                run = _record_manual_promotion(ctx, run)
                run = promote(ctx, run)
            except LedgerConflictError:
                continue
            done = True
            return run
    finally:
        release_line(ctx.ledger, run.line, token, done=done)


def _check_promotable(ctx: ReleaseContext, run: RunRecord) -> None:
    """Raise NotPromotableError unless the run is HELD with a ready deployment."""
    where = f"run {run.run_id} on line {run.line}"
    status = f"tuneloop status --line {run.line}"
    if run.state != RunState.HELD:
        raise NotPromotableError(
            f"{where} is {run.state.value}, not HELD; only a held run is promoted by hand",
            hint=f"see `{status}`",
        )
    refuse_retracted(ctx, run)  # retracted data never goes live, not even by hand
    endpoint, deployment = run.release.endpoint, run.release.deployment
    held = f"held: {run.reason}" if run.reason else "held"
    if not endpoint or not deployment:
        raise NotPromotableError(
            f"{where} was {held} before it had a deployment",
            hint="fix the cause and submit the dataset again",
        )
    try:
        dep = ctx.platform.get_deployment(endpoint, deployment)
    except NotFoundError as exc:
        if run.release.model_id and run.release.model_name and run.release.model_version:
            return  # deleted when it was held: promote_held deploys it again
        raise NotPromotableError(
            f"{where}: deployment {deployment} no longer exists on endpoint {endpoint} ({held}) "
            "and the run has no registered model to deploy again",
            hint="submit the dataset again to release it",
        ) from exc
    if dep.provisioning_state != ProvisioningState.SUCCEEDED:
        raise NotPromotableError(
            f"{where}: deployment {deployment} on endpoint {endpoint} is "
            f"{dep.provisioning_state}, not Succeeded",
            hint="wait for it, or submit the dataset again if it failed",
        )


def _redeploy_if_gone(ctx: ReleaseContext, run: RunRecord) -> None:
    """Deploy a held run's model again at 0 % when its deployment was deleted; raise
    NotPromotableError until the deployment is ready (Azure takes minutes)."""
    endpoint, deployment = serving(run)
    try:
        ctx.platform.get_deployment(endpoint, deployment)
        return
    except NotFoundError:
        pass
    where = f"run {run.run_id} on line {run.line}"
    try:
        dep = ctx.platform.deploy(deployment_spec(ctx, run))
    except NotFoundError as exc:
        raise NotPromotableError(
            f"{where}: its deployment {deployment} cannot be created again: {exc}",
            hint="submit the dataset again to release it",
        ) from exc
    if dep.provisioning_state == ProvisioningState.SUCCEEDED:
        log.info("run %s: deployment %s deployed again for a promotion by hand", run.run_id,
                 deployment)
        return
    if dep.provisioning_state in (ProvisioningState.FAILED, ProvisioningState.CANCELED):
        raise NotPromotableError(
            f"{where}: deploying {deployment} again on {endpoint} ended "
            f"{dep.provisioning_state}: {dep.error or 'no detail'}",
            hint="see the deployment's logs; run the command again to retry",
        )
    raise NotPromotableError(
        f"{where}: its deployment {deployment} was deleted when it was held; it is being "
        f"deployed again on endpoint {endpoint} ({dep.provisioning_state})",
        hint=f"run `tuneloop promote {run.run_id}` again once it is ready (Azure takes minutes)",
    )


def _record_manual_promotion(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    """Record the live run and deployment being replaced, once, before traffic moves."""
    if run.release.promoting:
        return run
    live = live_run(ctx, run)
    promoting = replace(
        run.release, promoting=True, gate="promoted by hand", held_reason=run.reason,
        previous_run=live.run_id if live else None,
        previous_deployment=live.release.deployment if live else None,
    )
    return ctx.ledger.update(
        run, release=promoting, reason=None,
        note=f"promoting {run.release.deployment} by hand"
        + (f", replacing {live.run_id}" if live else ""),
    )
