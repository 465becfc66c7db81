"""Who may do a piece of work now: leases, claims and counters in the ledger's claims partition.

Three mechanisms, each one entity in the partition and every write guarded by its ETag, so two
workers that race both read, one write wins and the other sees LedgerConflictError and decides
again:

* the **line lease** (``release-<line>``): one release at a time per line. ``holder`` names the
  run that owns the line's endpoint until its release ends; ``worker`` the one invocation
  driving it now, until ``worker_until`` (so a crashed worker never blocks the line);
* **work claims** (ingest: one per blob version): the first to insert the key does the work.
  The claim carries a heartbeat; a worker proves it still owns the claim by renewing it
  (ETag-fenced), and a claim whose heartbeat is older than the lease is stale: another worker
  may take it over;
* the **version counter** (``version-<line>``): the line's model versions, never reused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.errors import LedgerConflictError, NotFoundError, TransientError
from shared.ledger import IN_RELEASE, Claim, LedgerPort

__all__ = [
    "LINE_LEASE_TTL",
    "ClaimStatus",
    "TakenClaim",
    "acquire_line",
    "claim_status",
    "let_go",
    "next_version",
    "release_line",
    "renew",
    "stale_claims",
    "take_claim",
]

log = logging.getLogger(__name__)

LINE_LEASE_TTL = timedelta(minutes=10)  # longer than any one invocation may run
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- the line lease -------------------------------------------------------------------------
def acquire_line(
    ledger: LedgerPort, line: str, run_id: str, token: str, *, now: datetime
) -> bool:
    """Take the line's lease for ``run_id`` and the worker ``token``; False if another run
    (whose release is still under way) or another live worker has it."""
    key = _line_key(line)
    until = (now + LINE_LEASE_TTL).isoformat()
    for _ in range(3):
        try:
            claim = ledger.get_claim(key)
        except NotFoundError:
            if ledger.claim(key, holder=run_id, worker=token, worker_until=until):
                return True
            continue
        holder = str(claim.fields.get("holder") or "")
        if holder and holder != run_id and _holder_active(ledger, line, holder):
            log.info("line %s: release of %s waits for %s", line, run_id, holder)
            return False
        busy_until = _parse_time(claim.fields.get("worker_until"))
        if claim.fields.get("worker") and busy_until and busy_until > now:
            log.info("line %s: run %s is being advanced by another worker", line, holder)
            return False
        try:
            ledger.update_claim(claim, holder=run_id, worker=token, worker_until=until)
            return True
        except LedgerConflictError:
            continue
    return False


def release_line(ledger: LedgerPort, line: str, token: str, *, done: bool) -> None:
    """Give up the worker lock (and the line itself when the holder's release is ``done``)."""
    try:
        claim = ledger.get_claim(_line_key(line))
        if claim.fields.get("worker") != token:
            return
        holder = "" if done else claim.fields.get("holder", "")
        ledger.update_claim(claim, holder=holder, worker="", worker_until="")
    except (LedgerConflictError, NotFoundError, TransientError) as exc:
        # The worker lock expires on its own; nothing is lost.
        log.warning("line %s: could not release the lease (%s); it expires by itself", line, exc)


def _line_key(line: str) -> str:
    return f"release-{line}"


def _holder_active(ledger: LedgerPort, line: str, holder: str) -> bool:
    try:
        return ledger.get(line, holder).state in IN_RELEASE
    except NotFoundError:
        return False


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


# -- work claims ----------------------------------------------------------------------------
ClaimStatus = Literal["done", "busy", "stale"]


@dataclass(frozen=True)
class TakenClaim:
    """The outcome of :func:`take_claim`: ``new`` or ``resumed`` (a stale claim taken over),
    both ours to work on; ``done`` or ``busy``: someone else's (``claim`` as they left it)."""

    status: Literal["new", "resumed", "done", "busy"]
    claim: Claim

    @property
    def ours(self) -> bool:
        return self.status in ("new", "resumed")


def claim_status(fields: dict[str, Any], *, now: datetime, lease: timedelta) -> ClaimStatus:
    """Whether a claim is finished, held by a live worker, or abandoned (takeover allowed)."""
    if fields.get("done"):
        return "done"
    beat = fields.get("heartbeat") or fields.get("claimed")
    when = datetime.fromisoformat(beat) if isinstance(beat, str) else _EPOCH
    return "busy" if now - when < lease else "stale"


def take_claim(
    ledger: LedgerPort, key: str, *, now: datetime, lease: timedelta, attempt: str, **fields: Any
) -> TakenClaim:
    """Insert the claim ``key`` (with ``fields``), or take it over if its worker went stale.

    ``attempt`` names this worker in the claim, so a takeover always writes something new.
    """
    stamp = now.isoformat()
    claim = ledger.claim(key, attempt=attempt, heartbeat=stamp, done=False, **fields)
    if claim is not None:
        return TakenClaim("new", claim)
    try:
        existing = ledger.get_claim(key)
    except NotFoundError:  # pragma: no cover - claims are never deleted
        raise TransientError(f"claim {key} vanished") from None
    status = claim_status(existing.fields, now=now, lease=lease)
    if status != "stale":
        return TakenClaim(status, existing)
    try:
        taken = ledger.update_claim(existing, attempt=attempt, heartbeat=stamp)
    except LedgerConflictError:  # another worker took it over first
        return TakenClaim("busy", existing)
    return TakenClaim("resumed", taken)


def renew(ledger: LedgerPort, claim: Claim, *, now: datetime, **fields: Any) -> Claim:
    """Prove we still own ``claim`` and push its lease forward (with ``fields``); raises
    LedgerConflictError when another worker took it over."""
    return ledger.update_claim(claim, heartbeat=now.isoformat(), **fields)


def let_go(ledger: LedgerPort, claim: Claim) -> Claim:
    """Mark ``claim`` stale at once, so that a retry may take it over without waiting."""
    return ledger.update_claim(claim, heartbeat=_EPOCH.isoformat())


def stale_claims(
    ledger: LedgerPort, *, kind: str, now: datetime, lease: timedelta
) -> Sequence[Claim]:
    """The unfinished claims of ``kind`` whose worker died (heartbeat older than ``lease``)."""
    return [
        claim for claim in ledger.list_claims(kind=kind, done=False)
        if claim_status(claim.fields, now=now, lease=lease) == "stale"
    ]


# -- the version counter --------------------------------------------------------------------
def next_version(ledger: LedgerPort, line: str) -> str:
    """Next model version of the line from an ETag-guarded counter (gaps possible, never reuse)."""
    key = f"version-{line}"
    while True:
        try:
            claim = ledger.get_claim(key)
        except NotFoundError:
            if ledger.claim(key, last=1) is not None:
                return "1"
            continue
        last = int(claim.fields.get("last") or 0) + 1
        try:
            ledger.update_claim(claim, last=last)
            return str(last)
        except LedgerConflictError:
            continue
