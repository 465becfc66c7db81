"""Benchmark ``/score`` of a local deployment under concurrent clients.

    python bench/score.py                       # 20 clients x 10 requests, 16 new tokens
    python bench/score.py --clients 20 --requests 20 --max-new-tokens 32

Registers the tiny built-in model (same architecture and size as a fine-tuned one) in the
local MLflow registry, creates an endpoint with one deployment through ``LocalPlatform``,
waits for readiness, then has N client threads POST chat requests through the endpoint's
router (key, traffic split, counting: the full path). Prints latency p50/p95/max,
throughput, and the single-client latency as the baseline the concurrent figures compare to.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.platform.local import LocalPlatform  # noqa: E402
from shared.platform.port import DeploymentSpec  # noqa: E402
from shared.settings import Settings  # noqa: E402


def register_tiny_model(platform: LocalPlatform) -> Any:
    """Log the tiny base model as the MLflow chat model a fine-tune produces; register it."""
    import mlflow

    from shared.platform.local import registry
    from shared.platform.local.tinymodel import ensure_tiny_model

    home = platform.home
    model_dir = ensure_tiny_model(home)
    registry.configure_mlflow(home)
    experiment = registry.ensure_experiment(home, "bench")
    with registry.quiet(), mlflow.start_run(experiment_id=experiment, run_name="bench") as run:
        uri = registry.log_chat_model(model_dir)
        run_id = run.info.run_id
    with registry.quiet():
        mv = registry.register(home, "bench-model", "1", model_uri=uri, run_id=run_id, tags={})
    return platform._model_version_info("bench-model", "1", mv)


def wait(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise SystemExit("timed out waiting for the deployment")


def one_request(host: str, port: int, key: str, body: bytes) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=300)
    try:
        conn.request("POST", "/score", body=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}",
        })
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or not json.loads(data)["output"].strip():
        raise RuntimeError(f"bad answer {resp.status}: {data[:200]!r}")
    return time.perf_counter() - start


def run_clients(
    uri: str, key: str, body: bytes, clients: int, requests: int
) -> tuple[list[float], float]:
    parts = urlsplit(uri)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        barrier.wait()
        for _ in range(requests):
            try:
                took = one_request(host, port, key, body)
            except Exception as exc:
                with lock:
                    errors.append(str(exc))
                continue
            with lock:
                latencies.append(took)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    return latencies, wall


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--home", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        platform = LocalPlatform.from_settings(Settings(platform="local", home=home))
        try:
            t0 = time.perf_counter()
            model = register_tiny_model(platform)
            platform.ensure_endpoint("tl-bench", tags={})
            platform.deploy(DeploymentSpec("tl-bench", "blue", model, "local"))
            wait(lambda: platform.get_deployment("tl-bench", "blue").provisioning_state
                 == "Succeeded", 300)
            wait(lambda: platform.get_endpoint("tl-bench").provisioning_state == "Succeeded", 60)
            platform.set_traffic("tl-bench", {"blue": 100})
            ready = time.perf_counter() - t0
            uri = platform.get_endpoint("tl-bench").scoring_uri or ""
            key = platform.endpoint_key("tl-bench")
            body = json.dumps({"input_data": {
                "input_string": [[{"role": "user", "content": "Say red 3 times."}]],
                "parameters": {"temperature": 0.7, "top_p": 0.9, "do_sample": True,
                               "max_new_tokens": args.max_new_tokens},
            }}).encode()
            run_clients(uri, key, body, 1, 3)  # warm up
            single, _ = run_clients(uri, key, body, 1, max(5, args.requests))
            many, wall = run_clients(uri, key, body, args.clients, args.requests)
        finally:
            platform.close()

    base = statistics.median(single)
    print(f"deployment ready in {ready:.1f}s (register + endpoint + model load)")
    print(f"1 client : p50 {base * 1000:7.1f} ms  p95 {pct(single, 0.95) * 1000:7.1f} ms")
    print(
        f"{args.clients} clients: p50 {pct(many, 0.5) * 1000:7.1f} ms  "
        f"p95 {pct(many, 0.95) * 1000:7.1f} ms  max {max(many) * 1000:7.1f} ms  "
        f"({len(many)} requests, {len(many) / wall:.1f} req/s)"
    )
    print(f"p50 under load / single-client p50: {pct(many, 0.5) / base:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
