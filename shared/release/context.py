"""What every part of the release shares: its ports, and the ledger moves each step records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared import reports
from shared.errors import NotFoundError
from shared.ledger import LedgerPort, ReleaseRecord, RunRecord, RunState
from shared.naming import LINE_TAG, RUN_TAG
from shared.platform.port import DeploymentSpec, ModelVersionInfo, Platform
from shared.settings import Settings
from shared.storage import Storage

if TYPE_CHECKING:
    from shared.clients import Clients

__all__ = [
    "ReleaseContext", "advance", "deployment_spec", "hold", "recorded", "reread", "serving",
    "write_run_report",
]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReleaseContext:
    """What the release needs: settings, ledger, platform and blob storage (all injectable)."""

    settings: Settings
    ledger: LedgerPort
    platform: Platform
    storage: Storage
    now: Callable[[], datetime] = _utcnow

    @classmethod
    def from_clients(cls, clients: Clients) -> ReleaseContext:
        return cls(clients.settings, clients.ledger, clients.platform, clients.storage)


def write_run_report(ctx: ReleaseContext, run: RunRecord) -> None:
    """Rewrite the run's ``run.json`` (the ingest side owns its place and shape)."""
    reports.write_run_report(ctx.storage, ctx.settings, run)


def advance(
    ctx: ReleaseContext, run: RunRecord, state: RunState, *,
    release: ReleaseRecord | None = None, **kwargs: Any,
) -> RunRecord:
    """Advance (ETag-guarded) with ``release`` (default: as recorded), reset the step failure
    count, and rewrite run.json."""
    fresh_step = replace(run.release if release is None else release, failures=0, last_error=None)
    out = ctx.ledger.advance(run, state, release=fresh_step, **kwargs)
    write_run_report(ctx, out)
    return out


def recorded(run: RunRecord, value: str | None, what: str) -> str:
    """A name an earlier step recorded on the run (``run.release.<what>``); the steps record
    them before they move on, so only a row edited by hand lacks one. Missing, it fails the
    step like a platform refusal would (NotFoundError): the run is HELD after a few tries."""
    if not value:
        raise NotFoundError(
            f"run {run.run_id} on line {run.line} is {run.state.value} but has no {what} "
            "recorded in the ledger",
            hint="its ledger row was changed by hand; submit the dataset again",
        )
    return value


def serving(run: RunRecord) -> tuple[str, str]:
    """The run's endpoint and deployment, recorded with its model version (on TRAINED)."""
    r = run.release
    return recorded(run, r.endpoint, "endpoint"), recorded(run, r.deployment, "deployment")


def deployment_spec(ctx: ReleaseContext, run: RunRecord) -> DeploymentSpec:
    """The run's deployment at 0 % (DEPLOYING; ``tuneloop promote`` redeploys a held run's)."""
    endpoint, deployment = serving(run)
    model = ModelVersionInfo(
        name=recorded(run, run.release.model_name, "model_name"),
        version=recorded(run, run.release.model_version, "model_version"),
        id=recorded(run, run.release.model_id, "model_id"),
    )
    s = ctx.settings
    return DeploymentSpec(
        endpoint=endpoint, name=deployment, model=model,
        instance_type=s.inference_instance_type, instance_count=s.inference_instance_count,
        tags={RUN_TAG: run.run_id, LINE_TAG: run.line},
    )


def reread(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    return ctx.ledger.get(run.line, run.run_id)


def hold(ctx: ReleaseContext, run: RunRecord, reason: str) -> RunRecord:
    log.warning("run %s line %s HELD: %s", run.run_id, run.line, reason)
    return advance(ctx, run, RunState.HELD, reason=reason)
