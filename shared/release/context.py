"""What every part of the release shares: its ports, and the ledger moves each step records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared import reports
from shared.ledger import Ledger, RunRecord, RunState
from shared.platform.port import Platform
from shared.settings import Settings
from shared.storage import Storage

if TYPE_CHECKING:
    from shared.clients import Clients

__all__ = ["ReleaseContext", "advance", "hold", "reread", "write_run_report"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReleaseContext:
    """What the release needs: settings, ledger, platform and blob storage (all injectable)."""

    settings: Settings
    ledger: Ledger
    platform: Platform
    storage: Storage
    now: Callable[[], datetime] = _utcnow

    @classmethod
    def from_clients(cls, clients: Clients) -> ReleaseContext:
        return cls(clients.settings, clients.ledger, clients.platform, clients.storage)


def write_run_report(ctx: ReleaseContext, run: RunRecord) -> None:
    """Rewrite the run's ``run.json`` (the ingest side owns its place and shape)."""
    reports.write_run_report(ctx.storage, ctx.settings, run)


def advance(ctx: ReleaseContext, run: RunRecord, state: RunState, **kwargs: Any) -> RunRecord:
    """Advance (ETag-guarded), reset the step failure count, and rewrite run.json."""
    out = ctx.ledger.advance(run, state, failures=None, last_error=None, **kwargs)
    write_run_report(ctx, out)
    return out


def reread(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    return ctx.ledger.get(run.line, run.run_id)


def hold(ctx: ReleaseContext, run: RunRecord, reason: str) -> RunRecord:
    log.warning("run %s line %s HELD: %s", run.run_id, run.line, reason)
    return advance(ctx, run, RunState.HELD, reason=reason)
