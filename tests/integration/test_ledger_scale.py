"""Issue 13: every ledger operation touches what it needs, never the history.

The in-flight index stays in step with the runs across crashes between the two writes (fault
injection on the in-memory table and on Azurite), the reconciler's Table requests do not grow
with the history, tables written before the index are indexed once, claims are spread over
shards, and find / status --line / the duplicate check are point reads or one partition.
"""

from __future__ import annotations

import argparse
import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient, TableServiceClient

from cli.commands import status
from shared.errors import AlreadyExistsError, NotFoundError
from shared.leases import next_version
from shared.ledger import (
    CLAIMS_PARTITION,
    IN_FLIGHT,
    INDEX_GRACE,
    INDEX_PARTITION,
    OPEN_PARTITION,
    Ledger,
    RunState,
    active_table_name,
    claim_partition,
)
from shared.platform.port import JobInfo, JobStatus
from shared.release import ReleaseContext, reconcile
from tests.fakes.ledger import FakeLedger, InMemoryTable
from tests.fakes.storage import FakeStorage

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _index_rows(ledger: FakeLedger) -> set[str]:
    return {rk for (pk, rk) in ledger.active.rows if pk == INDEX_PARTITION and rk.startswith("a:")}


def _crash() -> Exception:
    return ServiceRequestError("connection reset (injected crash)")


# -- crashes between the run's write and its index row's ---------------------------------------
def test_a_crash_after_the_run_left_flight_leaves_a_row_the_next_read_removes() -> None:
    """Run written FAILED, index delete lost: the next in-flight read drops the row at once."""
    ledger = FakeLedger()
    rec = ledger.create("chat", "r1", RunState.SUBMITTED)
    ledger.active.fail_next(_crash(), method="delete_entity")
    ledger.advance(rec, RunState.FAILED, reason="job Failed")
    assert ledger.active.faults_fired == 1
    assert ledger.get("chat", "r1").state is RunState.FAILED
    assert _index_rows(ledger) == {"a:chat:r1"}  # the crash left the row behind
    assert ledger.in_flight() == []
    assert _index_rows(ledger) == set()  # repaired


def test_a_crash_before_the_run_entered_flight_never_hides_a_run_and_ages_out() -> None:
    """Index row written, run write lost: no run in flight is missing; the orphan row is kept
    while its writer may still be running and removed after the grace."""
    clock = Clock()
    ledger = FakeLedger(clock=clock)
    rec = ledger.create("chat", "r1", RunState.ACCEPTED)
    ledger.table.fail_next(_crash(), method="update_entity")
    with pytest.raises(Exception, match="injected crash"):
        ledger.advance(rec, RunState.SUBMITTED)
    assert ledger.table.faults_fired == 1
    assert ledger.get("chat", "r1").state is RunState.ACCEPTED
    assert ledger.in_flight() == []
    assert _index_rows(ledger) == {"a:chat:r1"}  # young: its writer may be mid-way
    clock.now += INDEX_GRACE + timedelta(seconds=1)
    assert ledger.in_flight() == []
    assert _index_rows(ledger) == set()


def test_a_retried_write_after_a_crash_is_listed_in_flight() -> None:
    """After the crash the retry advances the run; the reconciler then sees it."""
    ledger = FakeLedger()
    rec = ledger.create("chat", "r1", RunState.ACCEPTED)
    ledger.table.fail_next(_crash(), method="update_entity")
    with pytest.raises(Exception, match="injected crash"):
        ledger.advance(rec, RunState.SUBMITTED)
    ledger.advance(ledger.get("chat", "r1"), RunState.SUBMITTED)
    assert [r.run_id for r in ledger.list(states=IN_FLIGHT)] == ["r1"]


def test_a_crash_between_index_and_create_leaves_no_phantom_run() -> None:
    """Index row written, create lost: nothing is listed; the row ages out."""
    clock = Clock()
    ledger = FakeLedger(clock=clock)
    ledger.table.fail_next(_crash(), method="create_entity")
    with pytest.raises(Exception, match="injected crash"):
        ledger.create("chat", "r1", RunState.SUBMITTED)
    assert ledger.table.faults_fired == 1
    assert ledger.in_flight() == []
    clock.now += INDEX_GRACE + timedelta(seconds=1)
    ledger.in_flight()
    assert _index_rows(ledger) == set()


class _CrashingTable:
    """A real TableClient whose next ``delete_entity`` / ``update_entity`` raises."""

    def __init__(self, table: TableClient, fail: str) -> None:
        self._table = table
        self._fail: str | None = fail
        self.fired = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._table, name)
        if name != self._fail:
            return attr

        def crash(*args: Any, **kwargs: Any) -> Any:
            self._fail = None
            self.fired += 1
            raise _crash()

        return crash


@pytest.fixture
def table(azurite: str) -> Iterator[TableClient]:
    """A new ledger table and its active table (``Ledger.ensure_table``)."""
    service = TableServiceClient.from_connection_string(azurite)
    name = f"scale{uuid.uuid4().hex[:8]}"
    Ledger(service.get_table_client(name)).ensure_table()
    yield service.get_table_client(name)
    service.delete_table(name)
    service.delete_table(active_table_name(name))


@pytest.fixture
def active(azurite: str, table: TableClient) -> TableClient:
    """The active table of ``table`` (in-flight index, open claims)."""
    return TableClient.from_connection_string(
        azurite, table_name=active_table_name(table.table_name)
    )


def _index_keys(active: TableClient) -> set[str]:
    return {e["RowKey"] for e in active.query_entities(f"PartitionKey eq '{INDEX_PARTITION}'")}


def test_on_azurite_a_crash_after_leaving_flight_is_repaired_by_the_next_reconcile(
    table: TableClient, active: TableClient
) -> None:
    """Azurite: the run moved to FAILED, the index delete (active table) crashed; reconcile
    removes the row."""
    rec = Ledger(table).create("chat", "r1", RunState.TRAINING)
    crashing = _CrashingTable(active, "delete_entity")
    Ledger(table, active=crashing).advance(  # type: ignore[arg-type]
        rec, RunState.FAILED, reason="job Failed"
    )
    assert crashing.fired == 1
    assert Ledger(table).get("chat", "r1").state is RunState.FAILED
    assert "a:chat:r1" in _index_keys(active)
    summary = reconcile(_context(Ledger(table), {}))
    assert summary.polled == 0
    assert "a:chat:r1" not in _index_keys(active)


def test_on_azurite_a_crash_before_entering_flight_keeps_every_run_in_flight_listed(
    table: TableClient,
) -> None:
    """Azurite: the run write after the index row crashed; every run in flight is listed."""
    ledger = Ledger(table)
    ledger.create("chat", "r0", RunState.SUBMITTED)
    rec = ledger.create("chat", "r1", RunState.ACCEPTED)
    crashing = _CrashingTable(table, "update_entity")
    with pytest.raises(Exception, match="injected crash"):
        Ledger(crashing).advance(rec, RunState.SUBMITTED)  # type: ignore[arg-type]
    assert crashing.fired == 1
    assert [r.run_id for r in ledger.in_flight()] == ["r0"]
    ledger.advance(ledger.get("chat", "r1"), RunState.SUBMITTED)
    assert [r.run_id for r in ledger.in_flight()] == ["r0", "r1"]


# -- the reconciler reads what is in flight only -----------------------------------------------
class _Jobs:
    """The one platform call a reconcile pass of TRAINING runs makes: get_job."""

    def __init__(self, statuses: dict[str, JobStatus]) -> None:
        self.statuses = statuses

    def get_job(self, name: str) -> JobInfo:
        return JobInfo(name=name, status=self.statuses.get(name, JobStatus.RUNNING))


def _context(ledger: Ledger, statuses: dict[str, JobStatus]) -> ReleaseContext:
    from shared.settings import Settings

    settings = Settings()
    return ReleaseContext(
        settings, ledger, _Jobs(statuses), FakeStorage(settings),  # type: ignore[arg-type]
    )


def _seed(table: TableClient, history: int, lines: int, in_flight: int) -> None:
    """``history`` finished runs over ``lines`` lines (batched per line) + runs in flight."""
    per_line = history // lines
    for n in range(lines):
        line = f"line{n:03d}"
        rows = [
            ("create", {"PartitionKey": line, "RowKey": f"tl-{line}-{i:05d}",
                        "state": "RETIRED", "timeline": "[]", "created": f"2025-{i:05d}"})
            for i in range(per_line)
        ]
        for i in range(0, len(rows), 100):
            table.submit_transaction(rows[i : i + 100])
    ledger = Ledger(table)
    for i in range(in_flight):
        ledger.create(f"line{i:03d}", f"tl-live-{i}", RunState.TRAINING)


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, request: Any) -> None:
        self.n += 1


def _counting(table: TableClient, azurite: str) -> tuple[TableClient, _Counter]:
    counter = _Counter()
    client = TableClient.from_connection_string(
        azurite, table_name=table.table_name, raw_request_hook=counter
    )
    return client, counter


@pytest.mark.parametrize("history", [100, 1000])
def test_reconcile_requests_do_not_grow_with_history(
    azurite: str, table: TableClient, history: int
) -> None:
    """Azurite: one reconcile pass over 4 runs in flight costs the same requests at 100 and
    1,000 historical runs: the index query, one read per run in flight."""
    _seed(table, history, 20, 4)
    client, counter = _counting(table, azurite)
    ledger = Ledger(client)
    ledger._is_indexed()  # the marker, read once per ledger instance
    counter.n = 0
    summary = reconcile(_context(ledger, {}))
    assert summary.polled == 4
    assert counter.n == 1 + 4


def test_reconcile_moves_runs_found_through_the_index() -> None:
    """A job that completed is marked TRAINED; one that failed FAILED and leaves the index."""
    ledger = FakeLedger()
    ledger.create("chat", "r1", RunState.SUBMITTED)
    ledger.create("faq", "r2", RunState.TRAINING)
    for i in range(50):
        ledger.create("chat", f"old{i}", RunState.REJECTED)
    summary = reconcile(_context(ledger, {"r2": JobStatus.FAILED}))
    assert summary.polled == 2
    assert ledger.get("faq", "r2").state is RunState.FAILED
    assert ledger.get("chat", "r1").state is RunState.TRAINING
    assert _index_rows(ledger) == {"a:chat:r1"}
    assert ledger.table.calls["list_entities"] == 0  # no full scan


# -- upgrade: a table written before the index -------------------------------------------------
def _legacy_table() -> InMemoryTable:
    """Rows as the previous version wrote them: runs, claims in ``_claims``, no index."""
    table = InMemoryTable()
    table.create_table()
    for pk, rk, state in [("chat", "r1", "SUBMITTED"), ("chat", "r0", "RETIRED"),
                          ("faq", "r2", "DEPLOYING"), ("faq", "in-x", "REJECTED")]:
        table.create_entity({"PartitionKey": pk, "RowKey": rk, "state": state,
                             "timeline": "[]", "created": rk})
    table.create_entity({"PartitionKey": CLAIMS_PARTITION, "RowKey": "version-chat", "last": 5})
    table.create_entity({"PartitionKey": CLAIMS_PARTITION, "RowKey": "k1", "kind": "ingest",
                         "done": False, "heartbeat": "1970-01-01T00:00:00+00:00"})
    return table


def test_an_old_table_is_readable_before_and_indexed_once_by_the_first_reconcile() -> None:
    """Old rows: find, claims and the version counter work before the index exists; the first
    in-flight read scans once, then no more scans and the old layout is no longer read."""
    table, active = _legacy_table(), InMemoryTable("runsactive")
    ledger = Ledger(table, active=active)  # type: ignore[arg-type]
    assert ledger.find("r0").line == "chat"  # fallback scan
    assert ledger.claim("k1", kind="ingest") is None  # the old claim still counts
    assert [c.key for c in ledger.list_claims(kind="ingest", done=False)] == ["k1"]
    assert next_version(ledger, "chat") == "6"
    scans = table.calls["list_entities"]
    assert sorted(r.run_id for r in ledger.list(states=IN_FLIGHT)) == ["r1", "r2"]
    assert table.calls["list_entities"] == scans + 1
    again = Ledger(table, active=active)  # type: ignore[arg-type]  # after the upgrade
    assert sorted(r.run_id for r in again.in_flight()) == ["r1", "r2"]
    assert again.find("r0").line == "chat"
    assert next_version(again, "chat") == "7"
    assert [c.key for c in again.list_claims(kind="ingest", done=False)] == ["k1"]
    assert (OPEN_PARTITION, "k1") in active.rows  # indexed as open, in the active table
    assert {pk for (pk, _) in active.rows} == {INDEX_PARTITION, OPEN_PARTITION}
    assert [rk for (pk, rk) in table.rows if pk in (INDEX_PARTITION, OPEN_PARTITION)] == [
        "schema"
    ]
    assert table.calls["list_entities"] == scans + 1
    queried = table.calls["query_entities"]
    with pytest.raises(NotFoundError):
        again.find("nope")
    assert table.calls["query_entities"] == queried  # a miss is a point read, not a scan


# -- claims are spread; lookups are point reads ------------------------------------------------
def test_claims_of_a_burst_spread_over_the_shards() -> None:
    """200 drops' claims land in at least 12 of the 16 claim partitions, none in _claims."""
    ledger = FakeLedger()
    for i in range(200):
        assert ledger.claim(f"drop-{i}", kind="ingest", done=False) is not None
    partitions = {pk for (pk, _) in ledger.table.rows if pk.startswith("_claims")}
    assert CLAIMS_PARTITION not in partitions
    assert len(partitions) >= 12
    assert {claim_partition(f"drop-{i}") for i in range(200)} == partitions
    assert len(ledger.list_claims(kind="ingest", done=False)) == 200


def _calls(table: InMemoryTable, action: Callable[[], object]) -> dict[str, int]:
    before = dict(table.calls)
    action()
    return {k: v - before.get(k, 0) for k, v in table.calls.items() if v != before.get(k, 0)}


def _both(ledger: FakeLedger, action: Callable[[], object]) -> dict[str, dict[str, int]]:
    """The calls ``action`` makes on the ledger table and on the active table."""
    out: dict[str, dict[str, int]] = {}
    before = {"table": dict(ledger.table.calls), "active": dict(ledger.active.calls)}
    action()
    for name, table in (("table", ledger.table), ("active", ledger.active)):
        was = before[name]
        out[name] = {k: v - was.get(k, 0) for k, v in table.calls.items() if v != was.get(k, 0)}
    return out


def test_find_status_line_and_duplicate_check_touch_only_their_rows() -> None:
    """find: two point reads; status --line: one partition query; the duplicate check
    (create → exists → get): point operations only."""
    ledger = FakeLedger()
    for i in range(30):
        ledger.create(f"line{i % 3}", f"r{i}", RunState.RETIRED)
    assert _calls(ledger.table, lambda: ledger.find("r7")) == {"get_entity": 2}

    out = io.StringIO()
    clients = argparse.Namespace(ledger=ledger)
    args = argparse.Namespace(line="line1", json=True)
    assert _calls(
        ledger.table, lambda: status.run(args, clients=clients, out=out)  # type: ignore[arg-type]
    ) == {"query_entities": 1}
    assert out.getvalue().count('"run_id"') == 10

    def duplicate_check() -> None:
        with pytest.raises(AlreadyExistsError):
            ledger.create("line1", "r1", RunState.RECEIVED)
        ledger.get("line1", "r1")

    assert _calls(ledger.table, duplicate_check) == {
        "upsert_entity": 1, "create_entity": 1, "get_entity": 1,
    }


# -- the stale-claims sweep reads the open claims only -------------------------------------------
def _open_rows(ledger: FakeLedger) -> set[str]:
    return {rk for (pk, rk) in ledger.active.rows if pk == OPEN_PARTITION}


def test_the_stale_claims_sweep_reads_open_claims_not_the_claim_history() -> None:
    """200 finished claims and 2 open ones: the sweep is one query of the active table and two
    point reads of the ledger table."""
    ledger = FakeLedger()
    for i in range(200):
        claim = ledger.claim(f"old-{i}", kind="ingest", done=False)
        assert claim is not None
        ledger.update_claim(claim, done=True)
    ledger.claim("open-a", kind="ingest", done=False)
    ledger.claim("open-b", kind="other", done=False)
    assert _open_rows(ledger) == {"open-a", "open-b"}
    calls = _both(ledger, lambda: ledger.list_claims(kind="ingest", done=False))
    assert calls == {"table": {"get_entity": 2}, "active": {"query_entities": 1}}
    assert [c.key for c in ledger.list_claims(kind="ingest", done=False)] == ["open-a"]


def test_a_crash_between_a_claims_done_and_its_open_row_is_repaired_by_the_sweep() -> None:
    """Claim written done, open-row delete lost: the next sweep removes the row at once."""
    ledger = FakeLedger()
    claim = ledger.claim("k", kind="ingest", done=False)
    assert claim is not None
    ledger.active.fail_next(_crash(), method="delete_entity")
    ledger.update_claim(claim, done=True)
    assert ledger.active.faults_fired == 1
    assert ledger.get_claim("k").fields["done"] is True
    assert _open_rows(ledger) == {"k"}
    assert ledger.list_claims(kind="ingest", done=False) == []
    assert _open_rows(ledger) == set()


def test_a_crash_between_the_open_row_and_the_claim_ages_out() -> None:
    """Open row written, claim insert lost: kept during the grace, then removed."""
    clock = Clock()
    ledger = FakeLedger(clock=clock)
    ledger.table.fail_next(_crash(), method="create_entity")
    with pytest.raises(Exception, match="injected crash"):
        ledger.claim("k", kind="ingest", done=False)
    assert ledger.table.faults_fired == 1
    assert ledger.list_claims(kind="ingest", done=False) == []
    assert _open_rows(ledger) == {"k"}
    clock.now += INDEX_GRACE + timedelta(seconds=1)
    ledger.list_claims(kind="ingest", done=False)
    assert _open_rows(ledger) == set()


# -- the active table: index and open claims apart from the history ------------------------------
def test_the_index_and_open_claims_live_in_the_active_table_not_the_ledger_table() -> None:
    """Runs in flight and open claims write their rows to the active table; the ledger table
    holds runs, directory, claims and the schema marker only (its queries never scan them)."""
    ledger = FakeLedger()
    ledger.create("chat", "r1", RunState.SUBMITTED)
    ledger.claim("k", kind="ingest", done=False)
    assert set(ledger.active.rows) == {(INDEX_PARTITION, "a:chat:r1"), (OPEN_PARTITION, "k")}
    assert {pk for (pk, _) in ledger.table.rows} >= {"chat", INDEX_PARTITION}
    assert [rk for (pk, rk) in ledger.table.rows if pk == INDEX_PARTITION] == ["schema"]
    assert ledger.table.calls["query_entities"] == 0
    ledger.in_flight()
    ledger.list_claims(kind="ingest", done=False)
    assert ledger.table.calls["query_entities"] == 0  # both reads query the active table


def _schema2_table() -> InMemoryTable:
    """Rows as schema 2 wrote them: index and open-claim rows inside the ledger table."""
    table = InMemoryTable()
    table.create_table()
    table.create_entity({"PartitionKey": INDEX_PARTITION, "RowKey": "schema", "version": 2})
    for rk, state in [("r1", "TRAINING"), ("r0", "RETIRED")]:
        table.create_entity({"PartitionKey": "chat", "RowKey": rk, "state": state,
                             "timeline": "[]", "created": rk})
    table.create_entity({"PartitionKey": INDEX_PARTITION, "RowKey": "a:chat:r1",
                         "line": "chat", "run_id": "r1", "since": T0.isoformat()})
    table.create_entity({"PartitionKey": claim_partition("k1"), "RowKey": "k1",
                         "kind": "ingest", "done": False})
    table.create_entity({"PartitionKey": OPEN_PARTITION, "RowKey": "k1",
                         "since": T0.isoformat()})
    return table


@pytest.mark.parametrize("first", ["reconcile", "sweep"])
def test_a_schema_2_table_moves_its_active_rows_once_at_the_first_read(first: str) -> None:
    """Upgrade from schema 2: the first reader of the index or of the open claims moves the
    ``_index`` and ``_open`` rows to the active table (no full scan), marks schema 3 and removes
    them from the ledger table; nothing in flight or open is lost."""
    table = _schema2_table()
    ledger = FakeLedger(table)
    if first == "reconcile":
        assert [r.run_id for r in ledger.in_flight()] == ["r1"]
    else:
        assert [c.key for c in ledger.list_claims(kind="ingest", done=False)] == ["k1"]
    assert table.calls["list_entities"] == 0
    assert set(ledger.active.rows) == {(INDEX_PARTITION, "a:chat:r1"), (OPEN_PARTITION, "k1")}
    assert [rk for (pk, rk) in table.rows if pk in (INDEX_PARTITION, OPEN_PARTITION)] == [
        "schema"
    ]
    assert table.rows[(INDEX_PARTITION, "schema")][0]["version"] == 3
    again = FakeLedger(table, active=ledger.active)
    assert [r.run_id for r in again.in_flight()] == ["r1"]
    assert [c.key for c in again.list_claims(kind="ingest", done=False)] == ["k1"]
    assert table.calls["query_entities"] == 2  # the two partitions moved, once


def test_on_azurite_ensure_table_creates_both_tables_and_marks_the_new_schema(
    azurite: str,
) -> None:
    """Azurite: ensure_table creates the ledger table and ``<name>active``; a pass reads the
    index from the active table."""
    service = TableServiceClient.from_connection_string(azurite)
    name = f"scale{uuid.uuid4().hex[:8]}"
    ledger = Ledger(service.get_table_client(name))
    ledger.ensure_table()
    ledger.ensure_table()  # again: both exist, nothing changes
    names = {t.name for t in service.list_tables()}
    assert {name, active_table_name(name)} <= names
    ledger.create("chat", "r1", RunState.TRAINING)
    active = service.get_table_client(active_table_name(name))
    assert _index_keys(active) == {"a:chat:r1"}
    assert [r.run_id for r in Ledger(service.get_table_client(name)).in_flight()] == ["r1"]
    service.delete_table(name)
    service.delete_table(active_table_name(name))
