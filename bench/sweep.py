"""Benchmark one sweep of 1,000 endpoints through the real Azure ML adapter.

    python bench/sweep.py                    # 1,000 endpoints, 50 ms per HTTP call
    python bench/sweep.py --endpoints 2000 --latency 0.08

azure-ai-ml and azure-monitor-querymetrics run for real over a FakeTransport that sleeps a
fixed latency per request and answers with realistic ARM / Azure Monitor bodies
(``tests/fixtures/azureml_sweep``). The ledger and the report live on an in-memory Azurite.
Two worlds: all endpoints in one region, and mostly one region with a few in another.
Metrics answers are full-size: RequestsPerMinute and ConnectionsActive at PT1M, one point per
minute of the 24 h idle window (1,440 per series; minutes without requests are bare
timestamps, as Azure Monitor returns them). Prints the ARM and metrics call counts, the
metrics bytes received, the wall time, the CPU time of the sweep split into the fake Azure's
(building and serialising its answers: the "server") and the rest (the adapter reading them),
and the RSS before and at its peak during the sweep, against a naive sweeper that GETs each
endpoint and queries its metrics one at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.clients import Clients  # noqa: E402
from shared.ledger import RunState  # noqa: E402
from shared.platform.azureml import AzureMLPlatform  # noqa: E402
from shared.platform.local.azurite import start_azurite  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.sweep import Action, run_sweep  # noqa: E402
from tests.fakes.transport import FakeTransport, Reply  # noqa: E402
from tests.fixtures.azureml_sweep import (  # noqa: E402
    RG,
    SUB,
    WS,
    FakeAzure,
    FakeEndpoint,
    StaticCredential,
    metric_entry,
)

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
MINUTES = 24 * 60  # PT1M points in the idle window


def _iso(value: datetime) -> str:
    """A query time as the metrics client sends it (NOW has no sub-second part)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def make_world(n: int, regions: dict[str, int], seed: int = 11) -> list[FakeEndpoint]:
    """``n`` managed endpoints spread over ``regions`` (name -> count); ~10 % idle."""
    rng = random.Random(seed)
    endpoints: list[FakeEndpoint] = []
    i = 0
    for region, count in regions.items():
        for _ in range(count):
            idle = rng.random() < 0.1
            age = timedelta(days=rng.uniform(2, 60))
            quiet = age - timedelta(hours=rng.uniform(0, 20)) if idle else timedelta(hours=2)
            endpoints.append(
                FakeEndpoint(
                    f"tl-line-{i:05d}",
                    created=NOW - age,
                    modified=NOW - max(quiet, timedelta(hours=1)),
                    location=region,
                    tags={"tuneloop_managed": "true", "tuneloop_line": f"line-{i:05d}"},
                    # Idle: no request sample in the window; busy: a request now and then.
                    requests=[None] * MINUTES if idle else [
                        float(rng.randint(1, 5)) if rng.random() < 0.05 else None
                        for _ in range(MINUTES)
                    ],
                    connections=[0.0] * MINUTES,
                )
            )
            i += 1
    assert len(endpoints) == n
    return endpoints


def _rss_mib() -> float:
    """This process's resident set now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The largest RSS seen while the block runs (sampled every 5 ms in a thread)."""

    def __enter__(self) -> PeakRss:
        self.before = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def run_once(
    label: str, world: list[FakeEndpoint], *, latency: float, page_size: int, azurite: str
) -> None:
    transport = FakeTransport(latency=latency)
    azure = FakeAzure(world, transport=transport, page_size=page_size)
    received: list[int] = []
    server_cpu: list[float] = []
    # Each endpoint's entry of the answer, rendered once before the clock starts: building and
    # serialising 1,440 points × 2 metrics per endpoint costs the fake Azure more CPU than the
    # sweeper's reading of it, and on this shared box would drown the client's cost. Requests
    # for another window (or another shape) are answered by FakeAzure as usual.
    start, end = _iso(NOW - DAY), _iso(NOW)
    names = ["RequestsPerMinute", "ConnectionsActive"]
    rendered = {
        ep.id.lower(): json.dumps(metric_entry(ep, start, end, "PT1M", names)).encode()
        for ep in world if ep.requests is not None
    }

    def measured(req):  # type: ignore[no-untyped-def]
        began = time.thread_time()
        query = {k: v[0] for k, v in parse_qs(urlparse(req.url).query).items()}
        ids = [rid.lower() for rid in req.json()["resourceids"]]
        if (query.get("starttime"), query.get("endtime"), query.get("interval"),
                query.get("metricnames")) == (start, end, "PT1M", ",".join(names)) and all(
                rid in rendered for rid in ids):
            data = b'{"values": [' + b", ".join(rendered[rid] for rid in ids) + b"]}"
            reply = Reply(200, data, {"Content-Type": "application/json"})
        else:
            reply = azure._metrics(req)
            data = json.dumps(reply.body).encode()
        server_cpu.append(time.thread_time() - began)
        received.append(len(data))
        return reply

    transport.add("POST", r"metrics:getBatch", measured)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        storage_connection_string=azurite,
        reports_container=f"reports-{tag}",
        ledger_table=f"bench{tag}",
        subscription_id=SUB, resource_group=RG, workspace_name=WS, platform="azureml",
        idle_after=DAY, sweep_max_deletions=5,
    )
    clients = Clients(settings)
    clients.storage.ensure_containers(settings.reports_container)
    for ep in world[:20]:  # a few lines with a live run to retire
        clients.ledger.create(ep.tags["tuneloop_line"], f"run-{ep.name}", RunState.PROMOTED)
    platform = AzureMLPlatform(settings, credential=StaticCredential(), transport=transport)

    with PeakRss() as rss:
        started, cpu_started = time.perf_counter(), time.process_time()
        report = run_sweep(
            platform=platform, ledger=clients.ledger, storage=clients.storage,
            settings=settings, now=NOW,
        )
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started

    lists = len(azure.list_calls())
    gets = len(azure.endpoint_gets())
    metrics = azure.metrics_calls()
    deletes = len(azure.delete_calls())
    regions = {ep.location for ep in world}
    batch_sizes = sorted({len(c.json()["resourceids"]) for c in metrics})
    naive_calls = 1 + len(world) + len(world) + deletes
    ours = lists + gets + len(metrics) + deletes
    summary = report.summary()
    idle = sum(1 for d in report.decisions if d.action is not Action.KEEP)
    print(f"\n== {label}: {len(world)} endpoints in {len(regions)} region(s), "
          f"{latency * 1000:.0f} ms per call, ARM page size {page_size}")
    print(f"ARM list calls (one pass, paged): {lists}")
    print(f"ARM per-endpoint GETs:            {gets}")
    print(f"ARM DELETE calls:                 {deletes}")
    print(f"metrics:getBatch calls:           {len(metrics)}  (batch sizes {batch_sizes})")
    print(f"metrics bytes received:           {sum(received) / 1e6:.1f} MB "
          f"(largest answer {max(received, default=0) / 1e6:.1f} MB)")
    print(f"total HTTP calls in the sweep:    {ours}")
    print(f"decisions: {summary}  (idle found: {idle})")
    print(f"wall time:                        {wall:.2f} s")
    print(f"CPU time (this process):          {cpu:.2f} s = fake Azure {sum(server_cpu):.2f} s "
          f"+ sweeper/SDK {cpu - sum(server_cpu):.2f} s")
    print(f"RSS during the sweep:             {rss.before:.0f} MiB before (the fake's "
          f"pre-rendered answers included), peak {rss.peak:.0f} MiB "
          f"(+{rss.peak - rss.before:.0f} MiB)")
    print(f"naive sweeper (GET + metrics per endpoint): {naive_calls} calls, "
          f"≈ {naive_calls * latency:.1f} s of latency alone → {naive_calls / ours:.0f}× our calls")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per HTTP call")
    parser.add_argument("--page-size", type=int, default=100, help="ARM list page size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore", module="marshmallow")  # azure-ai-ml import noise

    n = args.endpoints
    few = max(1, n // 50)
    server = start_azurite()
    try:
        run_once("one region", make_world(n, {"eastus": n}), latency=args.latency,
                 page_size=args.page_size, azurite=server.connection_string)
        run_once("two regions", make_world(n, {"eastus": n - few, "westeurope": few}),
                 latency=args.latency, page_size=args.page_size,
                 azurite=server.connection_string)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
