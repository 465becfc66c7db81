"""Benchmark a burst of drops through the real functions, and check what must hold at scale.

    python bench/burst.py                      # 500 drops over 50 lines, 8 delivery workers
    python bench/burst.py --drops 40 --lines 5 # small (the test suite runs this size)

What runs for real: the function objects ``function_app`` registers (``ingest_dataset``,
``on_job_event``, ``reconcile_runs``), called the way the devhost delivers them (BlobCreated
events with real ``BlobClient`` bindings, job events as ``func.EventGridEvent``), on an
in-memory Azurite. The platform is :class:`BurstPlatform`: the contract-tested
``tests/fakes/platform.FakePlatform`` whose jobs complete the moment they are submitted and
emit Azure ML's job events (RunStatusChanged Running/Completed, RunCompleted).

Phases:

1. drop: ``--drops`` datasets uploaded at once over ``--lines`` lines: new content, the same
   content again under another name (a duplicate), the same content on another line (a new
   run there), and invalid files (quarantined);
2. ingest: one BlobCreated per blob version, plus ``--redeliver`` of them again (Event Grid
   delivers at least once), shuffled and delivered by ``--workers`` threads at once;
3. release: job events delivered and the reconciler fired until no run is in flight, while
   ``--hold-back`` of the runs' job events are held back, so the reconciler's polling
   advances those runs;
4. late: the held-back events (now late: the reconciler advanced their runs), a share of all
   job events again, and a RunStatusChanged Running + RunCompleted for every RETIRED run,
   shuffled (out of order), plus a share of BlobCreated events again; then one reconcile.
   None of this may change anything: every ledger row and claim keeps its ETag and the
   platform sees no write (``late_violations``).

Then the invariants: exactly one run per distinct (line, content, plan); every invalid file
quarantined with a verified copy (sha256 of the copy = the file's) and gone from incoming;
every duplicate recorded as DUPLICATE of that run; every drop has its one outcome, every
claim is done, nothing dead-lettered, every run released (one PROMOTED per line, the rest
RETIRED: ``TUNELOOP_PROMOTION=auto``).

Requests are counted per phase and service with the storage SDK's ``raw_request_hook``, which
both SDKs call once per attempt after their retry policy (azure-storage-blob
``_shared/base_client.py``: ``StorageRequestHook`` after ``config.retry_policy``;
azure-data-tables ``_base_client.py``: ``CustomHookPolicy`` after ``TablesRetryPolicy``), so
a count is what the account bills as transactions. The checks read through separate,
uncounted clients.

The last line printed is ``burst: `` and a JSON object (``drops``, ``runs``, ``duplicates``,
``rejected``, ``lost``, ``drops_per_s``, the requests per drop, the violations). Exit 1 when
any invariant is violated.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from functions.devhost import DevHost, blob_created_event  # noqa: E402
from shared.clients import Clients  # noqa: E402
from shared.ledger import RunRecord, RunState, active_table_name  # noqa: E402
from shared.platform.local.events import (  # noqa: E402
    RUN_COMPLETED,
    RUN_STATUS_CHANGED,
    job_event,
)
from shared.platform.port import FinetunePlan, JobInfo  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.storage import BlobRef  # noqa: E402
from tests.fakes.platform import FakePlatform  # noqa: E402
from tests.isolation import isolated_settings  # noqa: E402

log = logging.getLogger("bench.burst")

# Platform calls that change something; a late event must cause none of them.
MUTATING = (
    "submit_finetune", "register_model", "ensure_endpoint", "deploy", "set_traffic",
    "delete_deployment", "delete_endpoint",
)
IN_FLIGHT = (
    RunState.RECEIVED, RunState.ACCEPTED, RunState.SUBMITTED, RunState.TRAINING,
    RunState.TRAINED, RunState.REGISTERED, RunState.DEPLOYING, RunState.DEPLOYED,
)
EXAMPLES = 12  # per dataset; the bench's settings ask for at least 10


# -- the drops --------------------------------------------------------------------------------
def dataset(topic: str, n: int = EXAMPLES) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"{topic}: question {i}?"},
                      {"role": "assistant", "content": f"{topic}: answer {i}."}]}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def invalid_dataset(topic: str) -> bytes:
    """Valid rows, then a line that is not JSON and a row with an unknown role."""
    bad_role = {"messages": [{"role": "wizard", "content": topic},
                             {"role": "assistant", "content": "?"}]}
    return dataset(topic) + b"{not json\n" + (json.dumps(bad_role) + "\n").encode()


@dataclass(frozen=True)
class Drop:
    line: str
    name: str
    data: bytes
    # new | duplicate (same line, same content) | copy (another line's content) | invalid
    kind: str

    @property
    def blob(self) -> str:
        return f"{self.line}/{self.name}.jsonl"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def make_drops(drops: int, lines: int, seed: int) -> list[Drop]:
    """``drops`` files over ``lines`` lines: ~15 % invalid, ~25 % duplicates, ~5 % copies."""
    rng = random.Random(seed)
    names = [f"line-{i:02d}" for i in range(lines)]
    contents: dict[str, list[bytes]] = defaultdict(list)
    out = []
    for i in range(drops):
        line = names[i % lines]
        name = f"drop-{i:04d}"
        r = rng.random()
        others = [c for other in names if other != line for c in contents[other]
                  if c not in contents[line]]
        if r < 0.15:
            out.append(Drop(line, name, invalid_dataset(f"{line} bad {i}"), "invalid"))
        elif r < 0.40 and contents[line]:
            out.append(Drop(line, name, rng.choice(contents[line]), "duplicate"))
        elif r < 0.45 and others:
            data = rng.choice(others)
            contents[line].append(data)
            out.append(Drop(line, name, data, "copy"))
        else:
            data = dataset(f"{line} topic {i}")
            contents[line].append(data)
            out.append(Drop(line, name, data, "new"))
    return out


# -- counting ---------------------------------------------------------------------------------
class RequestCounter:
    """A ``raw_request_hook``: counts requests per (phase, service); the phase is per thread."""

    def __init__(self, table_endpoint: str) -> None:
        self._table = urlsplit(table_endpoint).netloc
        self._local = threading.local()
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.detail: dict[str, Counter[str]] = defaultdict(Counter)  # cost:* phases only

    def __call__(self, request: Any) -> None:
        url = urlsplit(request.http_request.url)
        service = "table" if url.netloc == self._table else "blob"
        phase = getattr(self._local, "phase", "other")
        with self._lock:
            self.counts[(phase, service)] += 1
            if phase.startswith("cost:"):
                self.detail[phase][describe(service, request.http_request.method, url)] += 1

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        before = getattr(self._local, "phase", "other")
        self._local.phase = name
        try:
            yield
        finally:
            self._local.phase = before

    def of(self, phase: str) -> dict[str, int]:
        return {s: self.counts[(phase, s)] for s in ("table", "blob")}


def describe(service: str, method: str, url: Any) -> str:
    """``table GET point _claims`` / ``blob PUT reports comp=block``: what a request is."""
    path = unquote(url.path)
    if service == "table":
        partition = re.search(r"PartitionKey='([^']*)'", path + url.query)
        kind = "point" if "RowKey=" in path else ("query" if method == "GET" else "insert")
        where = partition.group(1) if partition else ""
        where = re.sub(r"-[0-9a-f]+$", "", where) if where.startswith("_") else (
            "line" if where else "")
        return f"table {method} {kind} {where}".rstrip()
    container = path.strip("/").split("/")[1] if path.count("/") >= 2 else ""
    comp = parse_qs(url.query).get("comp", [""])[0]
    return f"blob {method} {container.split('-')[0]} {comp}".rstrip()


def table_endpoint(connection_string: str) -> str:
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    return parts["TableEndpoint"]


# -- the platform -----------------------------------------------------------------------------
class BurstPlatform(FakePlatform):
    """FakePlatform whose jobs complete when submitted, emitting Azure ML's job events into
    the outbox the devhost drains; ``hold_back`` of the runs' events are kept aside."""

    def __init__(self, *, hold_back: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.hold_back = hold_back
        self.rng = random.Random(seed)
        self.outbox: list[dict[str, Any]] = []
        self.emitted: dict[str, list[dict[str, Any]]] = {}  # run id -> its events, in order
        self.held_back: list[dict[str, Any]] = []
        self.losses: dict[str, float] = {}

    def submit_finetune(self, plan: FinetunePlan) -> JobInfo:
        with self._lock:
            new = plan.run_id not in self.jobs
            job = super().submit_finetune(plan)
            if new:
                # Each later job on a line is a little better, as a line that learns would be.
                loss = round(0.9 - 0.001 * len(self.jobs), 4)
                self.losses[plan.run_id] = loss
                self.complete(plan.run_id, {"eval_loss": loss, "train_loss": loss + 0.1})
                events = [
                    self.job_event(plan, RUN_STATUS_CHANGED, "Running"),
                    self.job_event(plan, RUN_STATUS_CHANGED, "Completed"),
                    self.job_event(plan, RUN_COMPLETED, "Completed"),
                ]
                self.emitted[plan.run_id] = events
                held = self.rng.random() < self.hold_back
                (self.held_back if held else self.outbox).extend(events)
            return job

    @staticmethod
    def job_event(plan: FinetunePlan, event_type: str, status: str) -> dict[str, Any]:
        return job_event(
            event_type, job_name=plan.run_id, experiment_name=plan.experiment_name,
            status=status, tags=dict(plan.tags), properties={},
        )

    # -- what the devhost drives (HostedPlatform) ----------------------------------------
    def pending_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.outbox)

    def ack_event(self, event_id: str) -> None:
        with self._lock:
            for i, event in enumerate(self.outbox):
                if event["id"] == event_id:
                    del self.outbox[i]
                    return

    def restore(self) -> list[str]:
        return []

    def lost_jobs(self) -> list[Any]:
        return []

    def settle_lost(self, name: str, note: str) -> None:
        raise AssertionError(f"no job is ever lost here, yet {name} was settled: {note}")

    def close(self) -> None:
        pass


# -- the host ---------------------------------------------------------------------------------
@dataclass
class BurstHost(DevHost):
    """The devhost, delivering a list of BlobCreated events from several threads at once
    (the Functions host runs deliveries concurrently); each goes through the devhost's own
    delivery (retry with back-off, dead letter) to the registered ``ingest_dataset``."""

    def deliver_all(
        self, deliveries: list[tuple[str, dict[str, Any]]], *, workers: int,
        counter: RequestCounter,
    ) -> None:
        def one(numbered: tuple[int, tuple[str, dict[str, Any]]]) -> None:
            n, (phase, event) = numbered
            key = f"blob:{event['id']}#{n}"  # a redelivery is a delivery of its own
            with counter.phase(phase):
                binding = self._ingest_binding(event)
                while not self._deliver(key, "ingest_dataset", binding, about={"event": event}):
                    time.sleep(self.backoff)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, enumerate(deliveries)))

    def reconcile_once(self) -> None:
        try:
            self.fire("reconcile_runs")
        except Exception as exc:  # the host logs a failed timer run and fires it again later
            log.warning("reconcile_runs failed: %s: %s", type(exc).__name__, exc)

    def drain_events(self, platform: BurstPlatform, *, rounds: int = 50) -> None:
        for _ in range(rounds):
            if not platform.pending_events():
                return
            self.deliver_events()
            if platform.pending_events():
                time.sleep(self.backoff)


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Options:
    drops: int = 500
    lines: int = 50
    workers: int = 8
    redeliver: float = 0.2
    hold_back: float = 0.3
    late_share: float = 0.3
    seed: int = 7
    max_rounds: int = 200


def snapshot(observer: Clients) -> dict[str, str | None]:
    """Every entity of the ledger table (runs, claims, leases) and of its active table (the
    in-flight index, open claims) by table, partition and row key, with its ETag: what any
    write would change."""
    ledger = observer.ledger_table
    tables = (ledger, observer.table_service.get_table_client(active_table_name(ledger.table_name)))
    return {
        f"{t.table_name}/{e['PartitionKey']}/{e['RowKey']}": e.metadata.get("etag")
        for t in tables
        for e in t.list_entities()
    }


CALIBRATION = "calibration"


def calibrate(host: BurstHost, observer: Clients, counter: RequestCounter) -> dict[str, Any]:
    """Storage requests of one delivery of each kind, one at a time on line ``calibration``:
    a new dataset, the same content under another name, an invalid file, and the new
    dataset's event delivered again."""
    incoming = host.settings.incoming_container
    data = dataset("calibration")
    kinds = [("new", "a", data), ("duplicate", "b", data),
             ("invalid", "c", invalid_dataset("calibration")), ("redundant", "a", None)]
    events: dict[str, dict[str, Any]] = {}
    for kind, name, content in kinds:
        blob = f"{CALIBRATION}/{name}.jsonl"
        if content is not None:
            observer.storage.write_bytes(BlobRef(incoming, blob), content)
            props = observer.storage.properties(BlobRef(incoming, blob))
            events[name] = blob_created_event(host.blob_endpoint, incoming, blob,
                                              str(props["etag"]), len(content))
        host.deliver_all([(f"cost:{kind}", copy.deepcopy(events[name]))], workers=1,
                         counter=counter)
    return {kind: counter.of(f"cost:{kind}") for kind, *_ in kinds}


def run_burst(
    connection_string: str, home: Path, opts: Options,
    functions: Mapping[str, Callable[..., Any]] | None = None,
) -> dict[str, Any]:
    """The whole burst on the Azurite at ``connection_string``; ``functions`` replaces
    registered functions by name (the tests break one to see the checks catch it)."""
    settings = isolated_settings(
        connection_string, home, table="burst", min_examples=10, promotion="auto"
    )
    counter = RequestCounter(table_endpoint(connection_string))
    platform = BurstPlatform(hold_back=opts.hold_back, seed=opts.seed)
    host = BurstHost(
        settings, platform=platform, run_timers=False, backoff=0.05, max_backoff=1.0,
        sdk_options={"raw_request_hook": counter}, functions=dict(functions or {}),
    )
    observer = Clients(settings)  # uncounted: uploads and checks
    rng = random.Random(opts.seed)
    drops = make_drops(opts.drops, opts.lines, opts.seed)
    violations: list[str] = []
    host.start()
    try:
        # 0. what one delivery of each kind costs, alone (line "calibration", not checked)
        cost = calibrate(host, observer, counter)

        # 1. drop everything at once
        incoming = settings.incoming_container
        t0 = time.perf_counter()
        for d in drops:
            observer.storage.write_bytes(BlobRef(incoming, d.blob), d.data)
        upload_s = time.perf_counter() - t0
        listed = observer.blob_service.get_container_client(incoming).list_blobs()
        events = {
            b.name: blob_created_event(host.blob_endpoint, incoming, b.name, str(b.etag),
                                       int(b.size or 0))
            for b in listed
        }
        # 2. ingest: every event once, a share again, shuffled, from several threads at once
        again = rng.sample(sorted(events), round(len(events) * opts.redeliver))
        deliveries = [("ingest", e) for e in events.values()]
        deliveries += [("redelivery", copy.deepcopy(events[name])) for name in again]
        rng.shuffle(deliveries)
        t0 = time.perf_counter()
        host.deliver_all(deliveries, workers=opts.workers, counter=counter)
        ingest_s = time.perf_counter() - t0

        # 3. release: events (some held back) and the reconciler until nothing is in flight
        t0 = time.perf_counter()
        rounds = 0
        with counter.phase("release"):
            while rounds < opts.max_rounds:
                rounds += 1
                host.drain_events(platform)
                host.reconcile_once()
                host.drain_events(platform)
                if not observer.ledger.list(states=IN_FLIGHT) and not platform.outbox:
                    break
        release_s = time.perf_counter() - t0
        in_flight = observer.ledger.list(states=IN_FLIGHT)
        if in_flight:
            violations.append(
                f"{len(in_flight)} runs still in flight after {rounds} rounds: "
                + ", ".join(f"{r.run_id} {r.state.value}" for r in in_flight[:5])
            )

        # One reconcile pass over the settled ledger: what the timer costs at this history.
        with counter.phase("reconcile"):
            host.reconcile_once()

        # 4. late and out of order: none of it may change anything
        before = snapshot(observer)
        writes_before = {m: platform.calls[m] for m in MUTATING}
        retired = [r for r in observer.ledger.list() if r.state == RunState.RETIRED]
        late_events = list(platform.held_back)
        every = [e for evs in platform.emitted.values() for e in evs]
        late_events += rng.sample(every, round(len(every) * opts.late_share))
        for run in retired:
            running, _, completed = platform.emitted[run.run_id]
            late_events += [copy.deepcopy(completed), copy.deepcopy(running)]
        rng.shuffle(late_events)
        late_blobs = rng.sample(sorted(events), round(len(events) * opts.late_share))
        with counter.phase("late_events"):
            with platform._lock:
                platform.outbox.extend(late_events)
            host.drain_events(platform)
        host.deliver_all([("late_blobs", copy.deepcopy(events[n])) for n in late_blobs],
                         workers=opts.workers, counter=counter)
        with counter.phase("late_events"):
            host.reconcile_once()
        after = snapshot(observer)
        late_violations = [
            f"late delivery changed {key}" for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)
        ]
        late_violations += [
            f"late delivery called {m} {platform.calls[m] - n} times"
            for m, n in writes_before.items() if platform.calls[m] != n
        ]
        if platform.outbox:
            late_violations.append(f"{len(platform.outbox)} late events never delivered")
        violations += late_violations

        # 5. the invariants
        found = check(observer, settings, drops, platform, host, violations)
    finally:
        host.stop()
        observer.close()

    n = len(drops)
    # Per drop: every request of the ingest phase (first deliveries and the redelivered share
    # racing them) over the drops; a redundant delivery's own cost is the late phase's.
    ingest = {s: counter.of("ingest")[s] + counter.of("redelivery")[s] for s in ("table", "blob")}
    release = counter.of("release")
    runs = found["runs"]
    return {
        "drops": n,
        "lines": opts.lines,
        "workers": opts.workers,
        "runs": runs,
        "duplicates": found["duplicates"],
        "rejected": found["rejected"],
        "lost": found["lost"],
        "expected": found["expected"],
        "drops_per_s": round(n / ingest_s, 1),
        "ingest_s": round(ingest_s, 2),
        "upload_s": round(upload_s, 2),
        "release_s": round(release_s, 2),
        "release_rounds": rounds,
        "table_requests_per_drop": round(ingest["table"] / n, 1),
        "blob_requests_per_drop": round(ingest["blob"] / n, 1),
        "redeliveries": len(again),
        "table_requests_per_redundant_delivery": round(
            counter.of("late_blobs")["table"] / max(len(late_blobs), 1), 1),
        "blob_requests_per_redundant_delivery": round(
            counter.of("late_blobs")["blob"] / max(len(late_blobs), 1), 1),
        "table_requests_per_run_released": round(release["table"] / max(runs, 1), 1),
        "blob_requests_per_run_released": round(release["blob"] / max(runs, 1), 1),
        "reconcile_requests_settled": counter.of("reconcile"),
        "held_back_runs": len(platform.held_back) // 3,  # advanced by the reconciler alone
        "late_events": len(late_events),
        "late_blob_events": len(late_blobs),
        "retired_runs_hit_late": len(retired),
        "late_requests": {"events": counter.of("late_events"), "blobs": counter.of("late_blobs")},
        "cost_per_outcome": cost,
        "late_violations": len(late_violations),
        "cost_detail": {k[len("cost:"):]: dict(sorted(v.items()))
                        for k, v in counter.detail.items()},
        "violations": violations,
    }


def check(
    observer: Clients, settings: Settings, drops: list[Drop], platform: BurstPlatform,
    host: DevHost, violations: list[str],
) -> dict[str, Any]:
    """Check the invariants on what the ledger and storage hold; append what is violated."""
    incoming, rejected_c = settings.incoming_container, settings.rejected_container
    records = [r for r in observer.ledger.list() if r.line != CALIBRATION]
    by_blob: dict[str, list[RunRecord]] = defaultdict(list)
    for rec in records:
        by_blob[str(rec.get("blob"))].append(rec)
    runs = [r for r in records if r.get("fingerprint")
            and r.state not in (RunState.DUPLICATE, RunState.REJECTED)]
    groups: dict[tuple[str, str], list[Drop]] = defaultdict(list)
    for d in drops:
        if d.kind != "invalid":
            groups[(d.line, d.sha256)].append(d)

    # Exactly one run per distinct (line, content, plan).
    per_key = Counter((r.line, str(r.get("dataset_sha256")), str(r.get("fingerprint")))
                      for r in runs)
    for key, count in per_key.items():
        if count != 1:
            violations.append(f"{count} runs for line {key[0]} content {key[1][:12]}")
    run_of = {(r.line, str(r.get("dataset_sha256"))): r for r in runs}
    for key in groups.keys() - run_of.keys():
        violations.append(f"no run for line {key[0]} content {key[1][:12]}")
    for key in run_of.keys() - groups.keys():
        violations.append(f"a run nobody dropped: line {key[0]} content {key[1][:12]}")
    jobs = sum(1 for plan in platform.plans.values() if plan.line != CALIBRATION)
    if jobs != len(groups):
        violations.append(f"{jobs} jobs submitted for {len(groups)} distinct runs")

    # Every duplicate recorded: the group's files are its run's and DUPLICATE records of it.
    duplicates = [r for r in records if r.state == RunState.DUPLICATE]
    dup_of: dict[str, list[RunRecord]] = defaultdict(list)
    for r in duplicates:
        dup_of[str(r.get("duplicate_of"))].append(r)
    for key, group in groups.items():
        run = run_of.get(key)
        if run is None:
            continue
        recorded = sorted([str(run.get("blob"))] + [str(r.get("blob")) for r in dup_of[run.run_id]])
        dropped = sorted(f"{incoming}/{d.blob}" for d in group)
        if recorded != dropped:
            violations.append(f"run {run.run_id}: files {dropped} recorded as {recorded}")

    # Every invalid file quarantined with a verified copy, and gone from incoming.
    rejected = [r for r in records if r.state == RunState.REJECTED]
    for d in drops:
        if d.kind != "invalid":
            continue
        recs = [r for r in by_blob[f"{incoming}/{d.blob}"] if r.state == RunState.REJECTED]
        target = BlobRef(rejected_c, d.blob)
        if len(recs) != 1 or recs[0].get("quarantined") != str(target):
            violations.append(f"{d.blob}: {len(recs)} REJECTED records, quarantine not recorded")
        try:
            copy_sha = hashlib.sha256(b"".join(observer.storage.read_chunks(target))).hexdigest()
        except Exception as exc:
            violations.append(f"{d.blob}: no quarantine copy ({type(exc).__name__})")
        else:
            if copy_sha != d.sha256:
                violations.append(f"{d.blob}: quarantine copy differs from the file")
        if observer.storage.exists(BlobRef(incoming, d.blob)):
            violations.append(f"{d.blob}: invalid file still in incoming")

    # Nothing lost: one outcome per drop, every claim done, no dead letter, every run
    # released (one PROMOTED per line, the rest RETIRED).
    lost = 0
    for d in drops:
        outcomes = by_blob[f"{incoming}/{d.blob}"]
        if len(outcomes) != 1:
            lost += 1
            violations.append(f"{d.blob}: {len(outcomes)} outcomes "
                              f"({', '.join(r.state.value for r in outcomes)})")
        elif outcomes[0].state not in (RunState.PROMOTED, RunState.RETIRED, RunState.DUPLICATE,
                                       RunState.REJECTED):
            lost += 1
            violations.append(f"{d.blob}: ended {outcomes[0].state.value}")
    open_claims = [c.key for c in observer.ledger.list_claims(kind="ingest", done=False)]
    if open_claims:
        violations.append(f"{len(open_claims)} ingest claims not done")
    if host.dead_letters:
        violations.append(f"{len(host.dead_letters)} deliveries dead-lettered: "
                          f"{host.dead_letters[0]['last_error']}")
    promoted = Counter(r.line for r in runs if r.state == RunState.PROMOTED)
    for line in {d.line for d in drops if d.kind != "invalid"}:
        if promoted[line] != 1:
            violations.append(f"line {line}: {promoted[line]} PROMOTED runs")
    return {
        "runs": len(runs),
        "duplicates": len(duplicates),
        "rejected": len(rejected),
        "lost": lost,
        "expected": {
            "runs": len(groups),
            "duplicates": sum(len(g) - 1 for g in groups.values()),
            "rejected": sum(1 for d in drops if d.kind == "invalid"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drops", type=int, default=Options.drops)
    parser.add_argument("--lines", type=int, default=Options.lines)
    parser.add_argument("--workers", type=int, default=Options.workers,
                        help="deliveries at once (the Functions host runs them concurrently)")
    parser.add_argument("--redeliver", type=float, default=Options.redeliver,
                        help="share of BlobCreated events delivered twice")
    parser.add_argument("--hold-back", type=float, default=Options.hold_back,
                        help="share of runs whose job events arrive only after the reconciler")
    parser.add_argument("--late-share", type=float, default=Options.late_share,
                        help="share of job and blob events delivered again at the end")
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--azurite", help="connection string of a running Azurite "
                        "(default: start an in-memory one)")
    args = parser.parse_args(argv)
    if args.drops < 1 or args.lines < 1 or args.workers < 1 or args.lines > args.drops:
        parser.error("--drops, --lines and --workers must be at least 1, lines <= drops")
    opts = Options(drops=args.drops, lines=args.lines, workers=args.workers,
                   redeliver=args.redeliver, hold_back=args.hold_back,
                   late_share=args.late_share, seed=args.seed)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    server = None
    conn = args.azurite
    if not conn:
        from shared.platform.local.azurite import start_azurite

        server = start_azurite()
        conn = server.connection_string
    try:
        with tempfile.TemporaryDirectory(prefix="tuneloop-burst-") as home:
            t0 = time.perf_counter()
            result = run_burst(conn, Path(home), opts)
            result["wall_s"] = round(time.perf_counter() - t0, 1)
    finally:
        if server is not None:
            server.stop()
    for v in result["violations"][:20]:
        print(f"VIOLATION {v}")
    print(
        f"{result['drops']} drops over {result['lines']} lines, {result['workers']} workers: "
        f"{result['drops_per_s']} drops/s ingest ({result['ingest_s']} s), "
        f"{result['table_requests_per_drop']} Table + {result['blob_requests_per_drop']} blob "
        f"requests per drop; release of {result['runs']} runs {result['release_s']} s in "
        f"{result['release_rounds']} rounds; late events {result['late_events']}, "
        f"late violations {result['late_violations']}"
    )
    for kind, detail in result.pop("cost_detail").items():
        print(f"one {kind} delivery: " + ", ".join(f"{k} ×{n}" for k, n in detail.items()))
    summary = {**result, "violations": len(result["violations"])}
    print("burst: " + json.dumps(summary, sort_keys=True))
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
