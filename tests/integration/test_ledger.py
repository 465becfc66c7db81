"""The ledger on Azurite: forward-only, ETag-guarded, claims are exclusive."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.clients import Clients
from shared.errors import AlreadyExistsError, LedgerConflictError, NotFoundError
from shared.ledger import InvalidTransitionError, RunState

pytestmark = pytest.mark.integration


def test_create_get_find_and_list(clients: Clients) -> None:
    """A created run can be read back by key, found by id and listed by line."""
    ledger = clients.ledger
    ledger.create("chat", "run-1", RunState.RECEIVED, blob="incoming/chat/a.jsonl", meta={"k": 1})
    rec = ledger.get("chat", "run-1")
    assert rec.state is RunState.RECEIVED
    assert rec.get("meta") == {"k": 1}
    assert ledger.find("run-1").line == "chat"
    assert [r.run_id for r in ledger.list(line="chat")] == ["run-1"]
    with pytest.raises(AlreadyExistsError):
        ledger.create("chat", "run-1", RunState.RECEIVED)
    with pytest.raises(NotFoundError):
        ledger.find("nope")


def test_advance_is_forward_only_and_records_the_timeline(clients: Clients) -> None:
    """States move forward; a backward move is refused; every move lands in the timeline."""
    ledger = clients.ledger
    rec = ledger.create("chat", "run-2", RunState.SUBMITTED)
    rec = ledger.advance(rec, RunState.TRAINING)
    rec = ledger.advance(rec, RunState.TRAINED, note="job completed")
    with pytest.raises(InvalidTransitionError):
        ledger.advance(rec, RunState.TRAINING)
    stored = ledger.get("chat", "run-2")
    assert [e["state"] for e in stored.timeline] == ["SUBMITTED", "TRAINING", "TRAINED"]


def test_stale_etag_is_a_conflict(clients: Clients) -> None:
    """Two writers from the same read: the second gets LedgerConflictError."""
    ledger = clients.ledger
    rec = ledger.create("chat", "run-3", RunState.SUBMITTED)
    ledger.advance(rec, RunState.TRAINING)
    with pytest.raises(LedgerConflictError):
        ledger.advance(rec, RunState.FAILED, reason="late")


def test_claims_are_exclusive_under_concurrency(clients: Clients) -> None:
    """Twenty concurrent claims of one key: exactly one wins."""
    ledger = clients.ledger
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: ledger.claim("blob-x", run="r"), range(20)))
    assert sum(r is not None for r in results) == 1
    assert ledger.get_claim("blob-x").fields["run"] == "r"
