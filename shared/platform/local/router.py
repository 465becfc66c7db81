"""An endpoint's front: ``python -m shared.platform.local.router <endpoint_dir> --parent-pid N``.

Listens on the endpoint's port and, like an Azure ML managed online endpoint:

- refuses ``POST /score`` without ``Authorization: Bearer <key>`` (401);
- routes by the traffic split (weighted choice among deployments with traffic > 0), or to
  the deployment named in the ``azureml-model-deployment`` header (even one at 0 %);
- counts every scoring request in ``requests.db`` for the sweeper;
- re-reads the endpoint's state on each request, so a traffic change applies at once, and
  retries another deployment if the chosen one went away mid-swap (no failed request).
"""

from __future__ import annotations

import argparse
import hmac
import http.client
import logging
import os
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.platform.local.counts import RequestCounts
from shared.platform.local.httpbase import BodyError, JsonHandler, Server, serve_until_stopped
from shared.platform.local.procs import watch_parent
from shared.platform.local.state import read_json

__all__ = ["choose_deployment", "main"]

log = logging.getLogger("shared.platform.local.router")

DEPLOYMENT_HEADER = "azureml-model-deployment"
FORWARD_TIMEOUT = 300.0


def choose_deployment(
    traffic: dict[str, int], available: set[str], rng: random.Random, *, exclude: set[str]
) -> str | None:
    """A weighted random pick among deployments with traffic > 0 that can be reached."""
    weighted = [
        (name, weight)
        for name, weight in sorted(traffic.items())
        if weight > 0 and name in available and name not in exclude
    ]
    if not weighted:
        return None
    names, weights = zip(*weighted, strict=True)
    chosen: str = rng.choices(names, weights=weights, k=1)[0]
    return chosen


def _state(endpoint_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    endpoint = read_json(endpoint_dir / "endpoint.json") or {}
    deployments: dict[str, dict[str, Any]] = {}
    folder = endpoint_dir / "deployments"
    if folder.is_dir():
        for path in folder.glob("*.json"):
            record = read_json(path)
            if isinstance(record, dict) and record.get("port"):
                deployments[str(record["name"])] = record
    return endpoint, deployments


def _forward(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=FORWARD_TIMEOUT)
    try:
        conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _handler(endpoint_dir: Path, counts: RequestCounts) -> type[JsonHandler]:
    rng = random.Random()  # noqa: S311 -- traffic split, not security
    name = endpoint_dir.name

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            if self.path in ("/", "/health", "/ready"):
                self.send_json(200, {"status": "alive", "endpoint": name})
            else:
                self.send_error_json(404, "NotFound", f"no route GET {self.path}")

        def do_POST(self) -> None:
            if self.path != "/score":
                self.send_error_json(404, "NotFound", f"no route POST {self.path}; use /score")
                return
            counts.add(name, datetime.now(UTC))
            endpoint, deployments = _state(endpoint_dir)
            if not self._authorized(str(endpoint.get("key", ""))):
                self.send_error_json(
                    401, "Unauthorized",
                    "missing or wrong key: send 'Authorization: Bearer <endpoint key>'",
                )
                return
            try:
                body = self.read_body()
            except BodyError as exc:
                self.send_error_json(exc.status, "BadRequest", str(exc))
                return
            target = self.headers.get(DEPLOYMENT_HEADER)
            if target:
                self._targeted(target, deployments, body)
            else:
                self._split(endpoint, deployments, body)

        def _authorized(self, key: str) -> bool:
            header = self.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            return bool(key) and scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), key.encode()
            )

        def _targeted(
            self, target: str, deployments: dict[str, dict[str, Any]], body: bytes
        ) -> None:
            record = deployments.get(target)
            if record is None:
                self.send_error_json(
                    404, "DeploymentNotFound",
                    f"deployment {target!r} does not exist on endpoint {name!r} "
                    f"(known: {sorted(deployments)})",
                )
                return
            try:
                status, data = _forward(int(record["port"]), body)
            except (OSError, http.client.HTTPException) as exc:
                self.send_error_json(502, "BadGateway", f"deployment {target!r} unreachable: {exc}")
                return
            self.send_raw(status, data, {DEPLOYMENT_HEADER: target})

        def _split(
            self, endpoint: dict[str, Any], deployments: dict[str, dict[str, Any]], body: bytes
        ) -> None:
            tried: set[str] = set()
            while True:
                traffic = {str(k): int(v) for k, v in (endpoint.get("traffic") or {}).items()}
                chosen = choose_deployment(traffic, set(deployments), rng, exclude=tried)
                if chosen is None:
                    self.send_error_json(
                        404 if not tried else 502, "NoValidDeployments",
                        "no deployment to route to: give one a positive traffic weight or "
                        f"target one with the {DEPLOYMENT_HEADER!r} header",
                    )
                    return
                try:
                    status, data = _forward(int(deployments[chosen]["port"]), body)
                except (OSError, http.client.HTTPException) as exc:
                    # The deployment went away mid-swap: re-read the state, try another one.
                    log.info("deployment %s unreachable (%s); rerouting", chosen, exc)
                    tried.add(chosen)
                    endpoint, deployments = _state(endpoint_dir)
                    continue
                self.send_raw(status, data, {DEPLOYMENT_HEADER: chosen})
                return

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shared.platform.local.router")
    parser.add_argument("endpoint_dir", type=Path)
    parser.add_argument("--counts", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    endpoint_dir: Path = args.endpoint_dir
    record = read_json(endpoint_dir / "endpoint.json")
    if not isinstance(record, dict):
        log.error("no endpoint state at %s", endpoint_dir)
        return 2
    counts = RequestCounts(args.counts)
    server = Server(("127.0.0.1", int(record["port"])), _handler(endpoint_dir, counts))
    if args.parent_pid:
        watch_parent(args.parent_pid, lambda: os._exit(3))
    log.info("endpoint %s listening on 127.0.0.1:%s", endpoint_dir.name, record["port"])
    serve_until_stopped(server)
    counts.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
