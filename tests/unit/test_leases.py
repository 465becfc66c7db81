"""Leases, claims and the version counter on the in-memory ledger: who may work, and when."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.errors import LedgerConflictError
from shared.leases import (
    LINE_LEASE_TTL,
    acquire_line,
    let_go,
    next_version,
    release_line,
    renew,
    stale_claims,
    take_claim,
)
from shared.ledger import Claim, RunState
from tests.fakes.ledger import FakeLedger

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)


class RacingLedger(FakeLedger):
    """Another worker writes the claim right after we read it, once (a lost race)."""

    def __init__(self, **rival_fields: Any) -> None:
        super().__init__()
        self.rival_fields = rival_fields
        self.raced = False

    def get_claim(self, key: str) -> Claim:
        claim = super().get_claim(key)
        if not self.raced:
            self.raced = True
            super().update_claim(claim, **self.rival_fields)
        return claim


def run_in_release(ledger: FakeLedger, run_id: str) -> None:
    ledger.create("chat", run_id, RunState.TRAINED)


# -- the line lease -------------------------------------------------------------------------
def line_held_by_a() -> FakeLedger:
    """Runs a and b in release on one line; a holds the line, no worker drives it now."""
    ledger = FakeLedger()
    run_in_release(ledger, "a")
    run_in_release(ledger, "b")
    assert acquire_line(ledger, "chat", "a", "w1", now=T0)
    release_line(ledger, "chat", "w1", done=False)
    return ledger


def test_a_run_in_release_keeps_the_line_until_its_release_ends() -> None:
    """While the holder's release is under way another run waits, even between workers."""
    ledger = line_held_by_a()
    assert not acquire_line(ledger, "chat", "b", "w2", now=T0)
    assert acquire_line(ledger, "chat", "a", "w3", now=T0)
    release_line(ledger, "chat", "w3", done=True)
    assert acquire_line(ledger, "chat", "b", "w4", now=T0)


def test_a_holder_whose_release_ended_no_longer_blocks_the_line() -> None:
    """A holder that moved on (PROMOTED, HELD) without releasing lets the next run in."""
    ledger = line_held_by_a()
    a = ledger.get("chat", "a")
    ledger.advance(a, RunState.HELD, reason="test")
    assert acquire_line(ledger, "chat", "b", "w2", now=T0)


def test_a_dead_workers_lock_expires_after_the_ttl() -> None:
    """A second worker on the same run waits while the first one's lock is live, not longer."""
    ledger = FakeLedger()
    run_in_release(ledger, "a")
    assert acquire_line(ledger, "chat", "a", "dead", now=T0)
    assert not acquire_line(ledger, "chat", "a", "w2", now=T0 + LINE_LEASE_TTL / 2)
    assert acquire_line(ledger, "chat", "a", "w2", now=T0 + LINE_LEASE_TTL + timedelta(seconds=1))


def test_releasing_with_another_workers_token_changes_nothing() -> None:
    """Only the worker that holds the lock gives it up."""
    ledger = FakeLedger()
    run_in_release(ledger, "a")
    assert acquire_line(ledger, "chat", "a", "w1", now=T0)
    release_line(ledger, "chat", "not-me", done=True)
    assert ledger.get_claim("release-chat").fields["worker"] == "w1"


def test_two_workers_racing_for_a_free_line_do_not_both_win() -> None:
    """A rival's write between our read and our write makes us read again and yield."""
    until = (T0 + LINE_LEASE_TTL).isoformat()
    ledger = RacingLedger(holder="a", worker="rival", worker_until=until)
    run_in_release(ledger, "a")
    ledger.claim("release-chat", holder="", worker="", worker_until="")
    assert not acquire_line(ledger, "chat", "a", "me", now=T0)
    assert ledger.raced
    assert ledger.get_claim("release-chat").fields["worker"] == "rival"


# -- work claims ----------------------------------------------------------------------------
def take(ledger: FakeLedger, now: datetime, attempt: str) -> Any:
    return take_claim(ledger, "k", now=now, lease=LEASE, attempt=attempt, kind="ingest")


def test_a_claim_is_new_then_busy_then_resumable_once_stale() -> None:
    """The first taker owns the claim; a live one turns others away; a stale one is taken over."""
    ledger = FakeLedger()
    first = take(ledger, T0, "a1")
    assert (first.status, first.ours) == ("new", True)
    assert take(ledger, T0 + LEASE / 2, "a2").status == "busy"
    resumed = take(ledger, T0 + LEASE + timedelta(seconds=1), "a3")
    assert (resumed.status, resumed.claim.fields["attempt"]) == ("resumed", "a3")
    with pytest.raises(LedgerConflictError):
        renew(ledger, first.claim, now=T0 + LEASE)  # the first taker lost it


def test_a_finished_claim_stays_done() -> None:
    """A claim marked done is never taken again, however old."""
    ledger = FakeLedger()
    renew(ledger, take(ledger, T0, "a1").claim, now=T0, done=True)
    assert take(ledger, T0 + LEASE * 10, "a2").status == "done"


def test_let_go_makes_a_claim_free_at_once() -> None:
    """A worker that lets go (a transient failure) lets a retry resume without waiting."""
    ledger = FakeLedger()
    let_go(ledger, take(ledger, T0, "a1").claim)
    assert take(ledger, T0, "a2").status == "resumed"


def test_two_takeovers_of_one_stale_claim_have_one_winner() -> None:
    """When a rival takes a stale claim over between our read and our write, we are busy."""
    ledger = RacingLedger(attempt="rival", heartbeat=(T0 + LEASE * 2).isoformat())
    take(ledger, T0, "a1")
    ledger.raced = False
    later = take(ledger, T0 + LEASE * 2, "me")
    assert ledger.raced
    assert later.status == "busy"
    assert ledger.get_claim("k").fields["attempt"] == "rival"


def test_stale_claims_lists_only_unfinished_stale_claims_of_the_kind() -> None:
    """The resume sweep sees dead workers' claims of its kind, nothing else."""
    ledger = FakeLedger()
    take_claim(ledger, "stale", now=T0, lease=LEASE, attempt="x", kind="ingest")
    take_claim(ledger, "fresh", now=T0 + LEASE, lease=LEASE, attempt="x", kind="ingest")
    done = take_claim(ledger, "done", now=T0, lease=LEASE, attempt="x", kind="ingest")
    renew(ledger, done.claim, now=T0, done=True)
    take_claim(ledger, "other", now=T0, lease=LEASE, attempt="x", kind="other")
    found = stale_claims(ledger, kind="ingest", now=T0 + LEASE + timedelta(seconds=1), lease=LEASE)
    assert [c.key for c in found] == ["stale"]


# -- the version counter --------------------------------------------------------------------
def test_versions_count_up_per_line() -> None:
    """Each line counts its own versions from 1."""
    ledger = FakeLedger()
    assert [next_version(ledger, "chat") for _ in range(3)] == ["1", "2", "3"]
    assert next_version(ledger, "Chat") == "1"


def test_concurrent_versions_are_never_reused() -> None:
    """Twenty concurrent callers get twenty different versions."""
    ledger = FakeLedger()
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: next_version(ledger, "chat"), range(20)))
    assert len(set(versions)) == 20
