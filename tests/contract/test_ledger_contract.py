"""The ledger contract: the ledger on Azurite and the in-memory fake behave the same.

ETag conflicts, forward-only moves, exclusive claims, not-found reads, listing order and
the round trip of stored fields.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.clients import Clients
from shared.errors import (
    AlreadyExistsError,
    InvalidTransitionError,
    LedgerConflictError,
    NotFoundError,
)
from shared.ledger import IN_FLIGHT, Ledger, LedgerPort, RunState
from shared.settings import Settings
from tests.fakes.ledger import FakeLedger


@pytest.fixture(params=["azurite", "fake"])
def ledger(request: pytest.FixtureRequest) -> Iterator[LedgerPort]:
    """The real ledger on the session's Azurite (a fresh table) or the in-memory fake."""
    if request.param == "fake":
        yield FakeLedger()
        return
    azurite: str = request.getfixturevalue("azurite")
    settings = Settings(
        storage_connection_string=azurite, ledger_table=f"contract{uuid.uuid4().hex[:8]}"
    )
    with Clients(settings) as clients:
        real: Ledger = clients.ledger
        yield real


def test_a_created_run_reads_back_with_its_fields(ledger: LedgerPort) -> None:
    """create → get returns the state, the fields (JSON values too) and a timeline entry."""
    ledger.create("chat", "r1", RunState.RECEIVED, note="dropped", blob="a.jsonl",
                  meta={"k": [1, 2]}, examples=12, valid=True, skipped=None)
    rec = ledger.get("chat", "r1")
    assert (rec.line, rec.run_id, rec.state) == ("chat", "r1", RunState.RECEIVED)
    assert rec.get("blob") == "a.jsonl"
    assert rec.get("meta") == {"k": [1, 2]}
    assert rec.get("examples") == 12
    assert rec.get("valid") is True
    assert "skipped" not in rec.fields  # None is not stored
    assert [(e["state"], e.get("note")) for e in rec.timeline] == [("RECEIVED", "dropped")]
    assert rec.etag


def test_creating_an_existing_run_raises_already_exists(ledger: LedgerPort) -> None:
    """A second create of the same (line, run) is AlreadyExistsError; the first is kept."""
    ledger.create("chat", "r1", RunState.RECEIVED, blob="first")
    with pytest.raises(AlreadyExistsError):
        ledger.create("chat", "r1", RunState.ACCEPTED, blob="second")
    assert ledger.get("chat", "r1").get("blob") == "first"


def test_missing_runs_and_claims_raise_not_found(ledger: LedgerPort) -> None:
    """get, find and get_claim of something never written raise NotFoundError."""
    with pytest.raises(NotFoundError):
        ledger.get("chat", "nope")
    with pytest.raises(NotFoundError):
        ledger.find("nope")
    with pytest.raises(NotFoundError):
        ledger.get_claim("nope")


def test_find_looks_on_every_line_but_never_in_claims(ledger: LedgerPort) -> None:
    """find(run_id) finds a run on any line; a claim with that key is not a run."""
    ledger.claim("r9", holder="x")
    with pytest.raises(NotFoundError):
        ledger.find("r9")
    ledger.create("faq", "r9", RunState.SUBMITTED)
    assert ledger.find("r9").line == "faq"


def test_moves_are_forward_only(ledger: LedgerPort) -> None:
    """A run moves forward; backwards or out of a terminal state is InvalidTransitionError."""
    rec = ledger.create("chat", "r1", RunState.SUBMITTED)
    rec = ledger.advance(rec, RunState.TRAINED, note="job completed")
    with pytest.raises(InvalidTransitionError):
        ledger.advance(rec, RunState.TRAINING)
    rec = ledger.advance(rec, RunState.FAILED, reason="broke")
    with pytest.raises(InvalidTransitionError):
        ledger.advance(rec, RunState.PROMOTED)
    stored = ledger.get("chat", "r1")
    assert stored.state is RunState.FAILED
    assert stored.reason == "broke"
    assert [e["state"] for e in stored.timeline] == ["SUBMITTED", "TRAINED", "FAILED"]


def test_a_stale_etag_is_a_conflict_for_advance_and_update(ledger: LedgerPort) -> None:
    """Two writers from one read: the second advance or update gets LedgerConflictError."""
    rec = ledger.create("chat", "r1", RunState.SUBMITTED)
    fresh = ledger.update(rec, note="noted", step="x")
    with pytest.raises(LedgerConflictError):
        ledger.advance(rec, RunState.TRAINING)
    with pytest.raises(LedgerConflictError):
        ledger.update(rec, step="y")
    moved = ledger.advance(fresh, RunState.TRAINING)
    assert moved.etag != fresh.etag
    assert ledger.get("chat", "r1").get("step") == "x"


def test_claims_are_exclusive_and_etag_guarded(ledger: LedgerPort) -> None:
    """One claim per key under concurrency; update_claim with a stale ETag conflicts."""
    with ThreadPoolExecutor(4) as pool:
        won = list(pool.map(lambda _: ledger.claim("k", kind="ingest", done=False), range(8)))
    assert sum(c is not None for c in won) == 1
    claim = next(c for c in won if c is not None)
    newer = ledger.update_claim(claim, step="validated")
    with pytest.raises(LedgerConflictError):
        ledger.update_claim(claim, step="stale")
    assert ledger.get_claim("k").fields["step"] == "validated"
    assert ledger.update_claim(newer, done=True).fields["done"] is True


def test_list_claims_filters_on_fields(ledger: LedgerPort) -> None:
    """list_claims(kind=..., done=False) returns the matching claims only."""
    ledger.claim("a", kind="ingest", done=False)
    ledger.claim("b", kind="ingest", done=True)
    ledger.claim("c", kind="lease", done=False)
    assert [c.key for c in ledger.list_claims(kind="ingest", done=False)] == ["a"]
    assert sorted(c.key for c in ledger.list_claims(kind="ingest")) == ["a", "b"]


def test_list_filters_by_line_and_state_oldest_first(ledger: LedgerPort) -> None:
    """list(line=, states=) returns runs (no claims), oldest first by creation time."""
    # Explicit creation times: two creates can fall in one millisecond.
    ledger.create("chat", "r-b", RunState.SUBMITTED, created="2026-01-01T00:00:01.000+00:00")
    ledger.create("chat", "r-a", RunState.RECEIVED, created="2026-01-01T00:00:02.000+00:00")
    ledger.create("faq", "r-c", RunState.SUBMITTED, created="2026-01-01T00:00:03.000+00:00")
    ledger.claim("r-claim", kind="ingest")
    assert [r.run_id for r in ledger.list(line="chat")] == ["r-b", "r-a"]
    assert [r.run_id for r in ledger.list(states=[RunState.SUBMITTED])] == ["r-b", "r-c"]
    assert {r.run_id for r in ledger.list()} == {"r-a", "r-b", "r-c"}


def test_runs_in_flight_are_listed_through_the_index_on_every_line(ledger: LedgerPort) -> None:
    """list(states=in flight) finds runs created or advanced into flight on any line, and no
    longer lists a run that left flight."""
    ledger.create("chat", "r1", RunState.SUBMITTED, created="2026-01-01T00:00:01.000+00:00")
    accepted = ledger.create("faq", "r2", RunState.ACCEPTED,
                             created="2026-01-01T00:00:02.000+00:00")
    ledger.create("faq", "r3", RunState.REJECTED)
    ledger.advance(accepted, RunState.SUBMITTED)
    assert [r.run_id for r in ledger.list(states=IN_FLIGHT)] == ["r1", "r2"]
    gone = ledger.advance(ledger.get("chat", "r1"), RunState.FAILED, reason="job Failed")
    assert gone.state is RunState.FAILED
    assert [r.run_id for r in ledger.list(states=IN_FLIGHT)] == ["r2"]
    assert [r.run_id for r in ledger.list(states=[RunState.SUBMITTED])] == ["r2"]


def test_find_finds_runs_in_any_state(ledger: LedgerPort) -> None:
    """find(run_id) finds a run that never had a job (RECEIVED, REJECTED) as well."""
    ledger.create("chat", "in-1", RunState.RECEIVED)
    ledger.create("faq", "in-2", RunState.REJECTED)
    assert ledger.find("in-1").line == "chat"
    assert ledger.find("in-2").state is RunState.REJECTED


def test_open_claims_are_listed_until_done(ledger: LedgerPort) -> None:
    """list_claims(done=False) lists a claim inserted open until it is marked done."""
    claim = ledger.claim("k", kind="ingest", done=False)
    assert claim is not None
    ledger.update_claim(claim, step="validated")  # still open
    assert [c.key for c in ledger.list_claims(kind="ingest", done=False)] == ["k"]
    ledger.update_claim(ledger.get_claim("k"), done=True)
    assert ledger.list_claims(kind="ingest", done=False) == []
    assert ledger.get_claim("k").fields["done"] is True


def test_ensure_table_again_keeps_runs_in_flight_and_open_claims(ledger: LedgerPort) -> None:
    """ensure_table on a ledger in use (both tables exist) changes nothing: the runs in flight
    and the open claims, kept in the active table, are still listed."""
    ledger.create("chat", "r1", RunState.SUBMITTED)
    assert ledger.claim("k", kind="ingest", done=False) is not None
    ledger.ensure_table()
    assert [r.run_id for r in ledger.list(states=IN_FLIGHT)] == ["r1"]
    assert [c.key for c in ledger.list_claims(kind="ingest", done=False)] == ["k"]
    assert {r.run_id for r in ledger.list()} == {"r1"}  # no index or claim row as a run
