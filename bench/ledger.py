"""Benchmark the ledger's access paths against history size, on Azurite.

    python bench/ledger.py                        # 1,000 / 10,000 / 50,000 historical runs
    python bench/ledger.py --sizes 1000,5000 --repeat 7

Per size, a fresh ledger table on an in-memory Azurite holds N finished runs over 500 lines
(seeded with entity group transactions, one partition at a time), their run-directory rows
and ingest claims, and 10 runs in flight (their index rows and the open claims' rows in the
ledger's active table, as ``Ledger`` writes them). It then measures, with the real ``Ledger`` on a
``TableClient`` whose ``raw_request_hook`` counts every HTTP request (retries included):

* one reconcile pass (``shared.release.reconcile``; the platform answers "Running" for the
  10 jobs in flight, so each pass does the same work);
* one ingest duplicate check (what ``Ingest._create_or_get`` does for content already
  ingested: directory upsert, create → 409, get);
* one ``tuneloop status --line L --json`` (cli/commands/status.py) for a line with N/500 runs;
* the stale-claims sweep the reconciler timer also runs (``list_claims(kind="ingest",
  done=False)``, what ``shared.leases.stale_claims`` reads) over N finished claims and 5 open
  ones;
* for comparison, the two alternatives the index replaced: the previous reconcile's read
  (the whole table listed, twice) and one server-side state filter across partitions.

All sizes are seeded first, then timed round-robin (``--repeat`` rounds; wall = median), so
that the load of a shared machine falls on every size alike; a warm-up on a small table comes
first (Azurite's JIT would otherwise bill the first size). The last line is
``reconcile requests by history size: {"<size>": <requests>, ...}``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from azure.core.exceptions import ServiceResponseError  # noqa: E402
from azure.data.tables import TableClient, TableServiceClient  # noqa: E402

from shared.errors import AlreadyExistsError  # noqa: E402
from shared.ingest import LEASE  # noqa: E402
from shared.leases import claim_status  # noqa: E402
from shared.ledger import (  # noqa: E402
    IN_FLIGHT,
    Ledger,
    RunState,
    claim_partition,
    directory_partition,
)
from shared.platform.port import JobInfo, JobStatus  # noqa: E402
from shared.release import ReleaseContext, reconcile  # noqa: E402
from shared.settings import Settings  # noqa: E402

LINES = 500
IN_FLIGHT_RUNS = 10
OPEN_CLAIMS = 5


class RequestCounter:
    """A ``raw_request_hook``: counts the HTTP requests a TableClient sends."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, request: Any) -> None:
        self.n += 1


class RunningJobs:
    """The platform of a reconcile pass over TRAINING runs: every job is still running."""

    def get_job(self, name: str) -> JobInfo:
        return JobInfo(name=name, status=JobStatus.RUNNING)


class NoStorage:
    """run.json writes never happen in these passes (no run changes state)."""

    def write_json(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover
        raise AssertionError("a benchmark pass changed a run")


def _line(n: int) -> str:
    return f"line{n:03d}"


def seed(table: TableClient, history: int) -> None:
    """``history`` finished runs over LINES lines + their directory rows and claims, batched
    (<= 100 entities of one partition per transaction), then the runs in flight."""
    partitions: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    def add(row: dict[str, Any]) -> None:  # upserts: a batch retried after a reset is a no-op
        partitions.setdefault(row["PartitionKey"], []).append(("upsert", row))

    for i in range(history):
        line = _line(i % LINES)
        run_id = f"tl-{line}-{i:06d}-abcdef12"
        created = f"2025-06-01T00:00:00.{i:06d}+00:00"
        timeline = json.dumps([{"at": created, "state": "RETIRED"}])
        add({"PartitionKey": line, "RowKey": run_id, "state": RunState.RETIRED.value,
             "created": created, "updated": created, "timeline": timeline,
             "blob": f"incoming/{line}/d{i}.jsonl", "model_version": str(i // LINES + 1)})
        add({"PartitionKey": directory_partition(run_id), "RowKey": run_id, "line": line})
        key = f"{i:064x}"
        add({"PartitionKey": claim_partition(key), "RowKey": key, "kind": "ingest",
             "done": True, "run_id": run_id, "state": "SUBMITTED", "line": line})
    batches = [
        ops[i : i + 100] for ops in partitions.values() for i in range(0, len(ops), 100)
    ]
    def submit(batch: list[tuple[str, dict[str, Any]]]) -> None:
        for attempt in range(5):
            try:
                table.submit_transaction(batch)
                return
            except ServiceResponseError:  # Azurite drops a connection under load now and then
                if attempt == 4:
                    raise
                time.sleep(1 + attempt)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(submit, batches))
    ledger = Ledger(table)
    for i in range(IN_FLIGHT_RUNS):
        ledger.create(_line(i * 7 % LINES), f"tl-live-{i:02d}", RunState.TRAINING)
    for i in range(OPEN_CLAIMS):  # deliveries being ingested now (fresh heartbeats)
        beat = datetime.now(UTC).isoformat()
        ledger.claim(f"open-{i}", kind="ingest", done=False, heartbeat=beat)


Op = Callable[[], object]


def operations(conn: str, name: str) -> tuple[RequestCounter, dict[str, tuple[Op, int]]]:
    """The operations measured on table ``name`` (each with how many times to time it: the
    full-table alternatives once, they take seconds), and the counter of their requests."""
    from cli.commands import status

    counter = RequestCounter()
    table = TableClient.from_connection_string(conn, table_name=name, raw_request_hook=counter)
    ledger = Ledger(table)
    ctx = ReleaseContext(Settings(), ledger, RunningJobs(), NoStorage())  # type: ignore[arg-type]
    reconcile(ctx)  # warm: the schema marker is read once per ledger instance (per host)

    def one_reconcile() -> None:
        summary = reconcile(ctx)
        assert summary.polled == IN_FLIGHT_RUNS, summary

    existing_line, existing = _line(1), f"tl-{_line(1)}-{1:06d}-abcdef12"

    def duplicate_check() -> None:  # what Ingest._create_or_get does for known content
        try:
            ledger.create(existing_line, existing, RunState.RECEIVED)
            raise AssertionError("the duplicate was created")
        except AlreadyExistsError:
            ledger.get(existing_line, existing)

    def status_line() -> None:
        args = argparse.Namespace(line=_line(3), json=True)
        clients = argparse.Namespace(ledger=ledger)
        assert status.run(args, clients=clients, out=io.StringIO()) == 0  # type: ignore[arg-type]

    def stale_sweep() -> None:  # the reconciler timer's other read (Ingest.resume_stale)
        open_now = ledger.list_claims(kind="ingest", done=False)
        assert len(open_now) == OPEN_CLAIMS, len(open_now)
        # which of them are stale is decided in memory (none is: fresh heartbeats)
        assert not [c for c in open_now if claim_status(c.fields, now=datetime.now(UTC),
                                                        lease=LEASE) == "stale"]

    def old_reconcile_read() -> None:  # what the reconciler read before: two full lists
        for _ in range(2):
            list(table.query_entities("PartitionKey ne '_claims'"))

    states = " or ".join(f"state eq '{s.value}'" for s in sorted(IN_FLIGHT))

    def server_filter() -> None:  # the alternative: a state filter, served by a scan
        list(table.query_entities(f"PartitionKey lt '_' and ({states})"))

    return counter, {
        "reconcile": (one_reconcile, 0),
        "duplicate check": (duplicate_check, 0),
        "status --line": (status_line, 0),
        "stale-claims sweep": (stale_sweep, 0),
        "find (run id)": (lambda: ledger.find(existing), 0),
        "old: 2 full lists": (old_reconcile_read, 1),
        "alt: state filter": (server_filter, 1),
    }


def make_table(conn: str, history: int) -> str:
    service = TableServiceClient.from_connection_string(conn)
    name = f"bench{uuid.uuid4().hex[:10]}"
    started = time.perf_counter()
    Ledger(service.get_table_client(name)).ensure_table()  # + its active table, marked
    seed(service.get_table_client(name), history)
    print(f"seeded {history} runs over {LINES} lines, {IN_FLIGHT_RUNS} in flight, "
          f"{OPEN_CLAIMS} open claims in {time.perf_counter() - started:.1f} s", flush=True)
    return name


def run(conn: str, sizes: list[int], repeat: int) -> dict[int, dict[str, tuple[int, float]]]:
    """Time every operation on every size, round-robin (size after size, ``repeat`` rounds),
    so that the load of a shared machine falls on all sizes alike; medians per size. The
    operations marked to run once (the full-table alternatives) come last."""
    tables = {size: operations(conn, make_table(conn, size)) for size in sizes}
    counts: dict[tuple[int, str], set[int]] = {}
    walls: dict[tuple[int, str], list[float]] = {}
    # The timed rounds first; the full-table alternatives once each at the end (at 50,000
    # runs they take minutes and swell Azurite's heap, which would bill the rounds after).
    plan = [(size, op, action) for _ in range(repeat) for size, (_, ops) in tables.items()
            for op, (action, times) in ops.items() if not times]
    plan += [(size, op, action) for size, (_, ops) in tables.items()
             for op, (action, times) in ops.items() if times]
    for size, op, action in plan:
        counter = tables[size][0]
        before = counter.n
        start = time.perf_counter()
        action()
        walls.setdefault((size, op), []).append(time.perf_counter() - start)
        counts.setdefault((size, op), set()).add(counter.n - before)
    out: dict[int, dict[str, tuple[int, float]]] = {}
    for (size, op), seen in counts.items():
        if len(seen) != 1:
            print(f"warning: {op} at {size} sent varying request counts {sorted(seen)}")
        out.setdefault(size, {})[op] = (max(seen), statistics.median(walls[(size, op)]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    from shared.platform.local.azurite import start_azurite

    server = start_azurite()
    try:
        # Warm Azurite (Node's JIT) and the SDK on a small table first.
        run(server.connection_string, [100], 3)
        results = run(server.connection_string, sizes, args.repeat)
    finally:
        server.stop()
    for size in sizes:
        print(f"history {size} runs:")
        for op, (requests, wall) in results[size].items():
            print(f"  {op:<20} {requests:>5} requests  {wall * 1000:9.1f} ms")
    small, large = sizes[0], sizes[-1]
    print(f"\nratio {large}/{small} runs (requests, wall; medians of {args.repeat} rounds):")
    for op in results[small]:
        (r0, w0), (r1, w1) = results[small][op], results[large][op]
        print(f"  {op:<20} requests x{r1 / r0:.2f}  wall x{w1 / w0:.2f}")
    flat = {str(s): results[s]["reconcile"][0] for s in sizes}
    print(f"reconcile requests by history size: {json.dumps(flat)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
