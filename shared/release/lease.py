"""The line lease: one release at a time per line, one worker driving it at a time.

A lease entity in the ledger's claims partition names the run that owns the line's endpoint
(``holder``) and the one worker driving it now (``worker``, with an expiry so a crashed worker
never blocks the line).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from shared.errors import LedgerConflictError, NotFoundError, TransientError
from shared.ledger import IN_RELEASE, RunRecord
from shared.release.context import ReleaseContext

__all__ = ["LEASE_TTL", "acquire", "release"]

log = logging.getLogger(__name__)

LEASE_TTL = timedelta(minutes=10)  # longer than any one invocation may run


def acquire(ctx: ReleaseContext, run: RunRecord, token: str) -> bool:
    """Take the line's lease for ``run`` and this worker; False if another run or worker has it."""
    key = _lease_key(run.line)
    until = (ctx.now() + LEASE_TTL).isoformat()
    for _ in range(3):
        try:
            claim = ctx.ledger.get_claim(key)
        except NotFoundError:
            if ctx.ledger.claim(key, holder=run.run_id, worker=token, worker_until=until):
                return True
            continue
        holder = str(claim.fields.get("holder") or "")
        if holder and holder != run.run_id and _holder_active(ctx, run.line, holder):
            log.info("line %s: release of %s waits for %s", run.line, run.run_id, holder)
            return False
        busy_until = _parse_time(claim.fields.get("worker_until"))
        if claim.fields.get("worker") and busy_until and busy_until > ctx.now():
            log.info("line %s: run %s is being advanced by another worker", run.line, holder)
            return False
        try:
            ctx.ledger.update_claim(claim, holder=run.run_id, worker=token, worker_until=until)
            return True
        except LedgerConflictError:
            continue
    return False


def release(ctx: ReleaseContext, line: str, token: str, *, done: bool) -> None:
    try:
        claim = ctx.ledger.get_claim(_lease_key(line))
        if claim.fields.get("worker") != token:
            return
        holder = "" if done else claim.fields.get("holder", "")
        ctx.ledger.update_claim(claim, holder=holder, worker="", worker_until="")
    except (LedgerConflictError, NotFoundError, TransientError) as exc:
        # The worker lock expires on its own; nothing is lost.
        log.warning("line %s: could not release the lease (%s); it expires by itself", line, exc)


def _lease_key(line: str) -> str:
    return f"release-{line}"


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _holder_active(ctx: ReleaseContext, line: str, holder: str) -> bool:
    try:
        return ctx.ledger.get(line, holder).state in IN_RELEASE
    except NotFoundError:
        return False
