"""Benchmark the ledger's access paths against history size, on Azurite.

    python bench/ledger.py                        # 1,000 / 10,000 / 50,000 historical runs
    python bench/ledger.py --sizes 1000,5000 --repeat 7

Per size, a fresh table on an in-memory Azurite holds N finished runs over 500 lines (seeded
with entity group transactions, one partition at a time), their run-directory rows and
ingest claims, and 10 runs in flight. It then measures, with the real ``Ledger`` on a
``TableClient`` whose ``raw_request_hook`` counts every HTTP request (retries included):

* one reconcile pass (``shared.release.reconcile``; the platform answers "Running" for the
  10 jobs in flight, so each pass does the same work);
* one ingest duplicate check (what ``Ingest._create_or_get`` does for content already
  ingested: directory upsert, create → 409, get);
* one ``tuneloop status --line L --json`` (cli/commands/status.py) for a line with N/500 runs;
* for comparison, the two alternatives the index replaced: the previous reconcile's read
  (the whole table listed, twice) and one server-side state filter across partitions.

Wall times are the median of ``--repeat`` runs, after a warm-up round on a small table that
is not reported (Azurite's JIT would otherwise bill the first size). The last line is
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from azure.data.tables import TableClient, TableServiceClient  # noqa: E402

from shared.errors import AlreadyExistsError  # noqa: E402
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

    def add(row: dict[str, Any]) -> None:
        partitions.setdefault(row["PartitionKey"], []).append(("create", row))

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
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(table.submit_transaction, batches))
    ledger = Ledger(table)
    for i in range(IN_FLIGHT_RUNS):
        ledger.create(_line(i * 7 % LINES), f"tl-live-{i:02d}", RunState.TRAINING)


def measure(
    counter: RequestCounter, action: Callable[[], object], repeat: int
) -> tuple[int, float]:
    """(requests of one call, median wall seconds over ``repeat`` calls)."""
    counts, walls = [], []
    for _ in range(repeat):
        before = counter.n
        start = time.perf_counter()
        action()
        walls.append(time.perf_counter() - start)
        counts.append(counter.n - before)
    if len(set(counts)) != 1:
        print(f"  warning: request counts varied between repeats: {counts}")
    return counts[0], statistics.median(walls)


def bench_size(conn: str, history: int, repeat: int) -> dict[str, tuple[int, float]]:
    from cli.commands import status

    service = TableServiceClient.from_connection_string(conn)
    name = f"bench{uuid.uuid4().hex[:10]}"
    service.create_table(name)
    try:
        started = time.perf_counter()
        Ledger(service.get_table_client(name))._mark_indexed()  # a table made by this version
        seed(service.get_table_client(name), history)
        print(f"  seeded {history} runs in {time.perf_counter() - started:.1f} s", flush=True)
        counter = RequestCounter()
        table = TableClient.from_connection_string(conn, table_name=name, raw_request_hook=counter)
        ledger = Ledger(table)
        settings = Settings()
        ctx = ReleaseContext(settings, ledger, RunningJobs(), NoStorage())  # type: ignore[arg-type]
        reconcile(ctx)  # warm: the schema marker is read once per ledger instance
        out: dict[str, tuple[int, float]] = {}

        def one_reconcile() -> None:
            summary = reconcile(ctx)
            assert summary.polled == IN_FLIGHT_RUNS, summary

        out["reconcile"] = measure(counter, one_reconcile, repeat)

        existing_line, existing = _line(1), f"tl-{_line(1)}-{1:06d}-abcdef12"

        def duplicate_check() -> None:
            try:
                ledger.create(existing_line, existing, RunState.RECEIVED)
                raise AssertionError("the duplicate was created")
            except AlreadyExistsError:
                ledger.get(existing_line, existing)

        out["duplicate check"] = measure(counter, duplicate_check, repeat)

        def status_line() -> None:
            args = argparse.Namespace(line=_line(3), json=True)
            buf = io.StringIO()
            assert status.run(args, clients=argparse.Namespace(ledger=ledger), out=buf) == 0  # type: ignore[arg-type]

        out["status --line"] = measure(counter, status_line, repeat)
        out["find (run id)"] = measure(counter, lambda: ledger.find(existing), repeat)

        def old_reconcile_read() -> None:  # what the reconciler did before: two full lists
            for _ in range(2):
                list(table.query_entities("PartitionKey ne '_claims'"))

        out["old: 2 full lists"] = measure(counter, old_reconcile_read, 1)
        states = " or ".join(f"state eq '{s.value}'" for s in sorted(IN_FLIGHT))

        def server_filter() -> None:  # the alternative: a state filter, served by a scan
            list(table.query_entities(f"PartitionKey lt '_' and ({states})"))

        out["alt: state filter"] = measure(counter, server_filter, 1)
        return out
    finally:
        service.delete_table(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    from shared.platform.local.azurite import start_azurite

    server = start_azurite()
    try:
        # Warm Azurite (Node's JIT) and the SDK on a small table first: otherwise the first
        # size measured pays for the warm-up and the ratio says nothing about history.
        bench_size(server.connection_string, 200, args.repeat)
        results = {}
        for size in sizes:
            print(f"history {size} runs over {LINES} lines, {IN_FLIGHT_RUNS} in flight")
            results[size] = bench_size(server.connection_string, size, args.repeat)
            for op, (requests, wall) in results[size].items():
                print(f"  {op:<20} {requests:>5} requests  {wall * 1000:9.1f} ms")
    finally:
        server.stop()
    small, large = sizes[0], sizes[-1]
    print(f"\nratio {large}/{small} runs (requests, wall):")
    for op in results[small]:
        (r0, w0), (r1, w1) = results[small][op], results[large][op]
        print(f"  {op:<20} requests x{r1 / r0:.2f}  wall x{w1 / w0:.2f}")
    flat = {str(s): results[s]["reconcile"][0] for s in sizes}
    print(f"reconcile requests by history size: {json.dumps(flat)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
