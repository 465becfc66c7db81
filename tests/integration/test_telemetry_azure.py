"""Tuneloop's telemetry through the real Azure Monitor path: ``configure_azure_monitor()`` as
shared/telemetry.py calls it, its exporters posting to a capture HTTP server on 127.0.0.1
that the connection string names as the ingestion (and live metrics) endpoint.

The run is tests/integration/azure_monitor_run.py in a subprocess (the distro sets the global
OpenTelemetry providers): one drop to promotion and one rejected drop on Azurite +
FakePlatform. What the exporters post (``/v2.1/track``, gzip'd JSON lines of envelopes) must
hold the run's spans with the tuneloop attributes in one operation (= trace) id, the metrics,
and no byte of the storage key or the instrumentation key.

Switches, looked up in the installed sources (azure-monitor-opentelemetry 1.8.10,
azure-monitor-opentelemetry-exporter 1.0.0b57):

- ``APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL=true``: no statsbeat (it posts to Microsoft's
  own fixed endpoint; exporter ``_constants.py``, ``statsbeat/_state.py::is_statsbeat_enabled``).
- ``APPLICATIONINSIGHTS_SDKSTATS_DISABLED=true``: no customer SDK stats
  (``statsbeat/customer/_utils.py::is_customer_sdkstats_enabled``).
- ``APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED=true``: no OneSettings fetch
  (``_configuration/_state.py::get_configuration_manager``).
- Live metrics has no variable: the distro turns it on (``_utils/configurations.py::
  _default_enable_live_metrics``, ``setdefault(..., True)``); the connection string's
  ``LiveEndpoint`` points it at the capture server too, so its pings are scanned as well.
- Offline storage (``storage_directory``, default ``<tempdir>/opentelemetry-python-<ikey>``,
  ``export/_base.py::_get_storage_directory``) is only written when a post fails; the
  subprocess's TMPDIR is the test's tmp_path, so nothing lands outside it.
- ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=otel``: the distro's default adds the Azure VM
  detector, which asks the instance metadata endpoint (169.254.169.254; not reachable here).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes  # as received (gzip'd for /v2.1/track)


class Capture(ThreadingHTTPServer):
    """Records every POST; answers /v2.1/track as the ingestion service does (all accepted)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: Capture

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append(Request(self.path, dict(self.headers.items()), body))
        if self.path.startswith("/v2.1/track"):
            items = len(_lines(body, self.headers.get("Content-Encoding")))
            answer = json.dumps({"itemsReceived": items, "itemsAccepted": items,
                                 "errors": []}).encode()
            self.send_response(200)
        else:  # live metrics ping/post: not subscribed, keep pinging
            answer = b""
            self.send_response(200)
            self.send_header("x-ms-qps-subscribed", "false")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _lines(body: bytes, encoding: str | None) -> list[dict[str, Any]]:
    raw = gzip.decompress(body) if encoding == "gzip" else body
    text = raw.decode("utf-8").strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def capture() -> Iterator[Capture]:
    server = Capture()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_run_leaves_through_the_azure_monitor_exporter_in_one_trace_without_secrets(
    azurite: str, capture: Capture, tmp_path: Path,
) -> None:
    """With APPLICATIONINSIGHTS_CONNECTION_STRING set, a run's spans (tuneloop.ingest with its
    children, job event, release, exam; line/run attributes; one operation id = the trace id
    stored on the run) and its metrics leave through the Azure Monitor exporter once
    telemetry.flush() returns; tuneloop's log lines go with them in the run's operation, the
    exporter's own HTTP logs do not (they looped); no byte posted holds the storage key."""
    ikey = str(uuid.uuid4())
    account_key = azurite.split("AccountKey=")[1].split(";")[0]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TUNELOOP_", "APPLICATIONINSIGHTS_", "OTEL_"))}
    env.update({
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (
            f"InstrumentationKey={ikey};IngestionEndpoint={capture.url};"
            f"LiveEndpoint={capture.url}"),
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",
        "TUNELOOP_STORAGE_CONNECTION_STRING": azurite,
        "AzureWebJobsStorage": azurite,
        "TMPDIR": str(tmp_path / "tmp"),
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    })
    (tmp_path / "tmp").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.azure_monitor_run", str(tmp_path / "home")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["mode"] == "azure"
    assert result["state"] == "PROMOTED"
    with capture.lock:
        requests = list(capture.requests)

    # No secret in any byte posted (raw and decompressed), nor the connection string's key.
    for request in requests:
        raw = request.body
        plain = gzip.decompress(raw) if request.headers.get("Content-Encoding") == "gzip" else raw
        for blob in (raw, plain, json.dumps(request.headers).encode(), request.path.encode()):
            assert account_key.encode() not in blob, request.path
    track = [r for r in requests if r.path.startswith("/v2.1/track")]
    assert track, [r.path for r in requests]
    envelopes = [e for r in track for e in _lines(r.body, r.headers.get("Content-Encoding"))]

    run_id = result["run"]
    trace_id = str(result["traceparent"]).split("-")[1]
    spans = [e for e in envelopes if e["data"]["baseType"] in ("RemoteDependencyData",
                                                              "RequestData")]
    ours = [e for e in spans
            if e["data"]["baseData"].get("properties", {}).get("tuneloop.run") == run_id]
    names = {e["data"]["baseData"]["name"] for e in ours}
    assert {"tuneloop.ingest", "tuneloop.job_event", "tuneloop.release",
            "tuneloop.exam"} <= names
    assert {e["tags"]["ai.operation.id"] for e in ours} == {trace_id}
    ingest = next(e for e in ours if e["data"]["baseData"]["name"] == "tuneloop.ingest")
    assert ingest["data"]["baseData"]["properties"]["tuneloop.line"] == "chat"
    in_trace = [e for e in spans if e["tags"]["ai.operation.id"] == trace_id]
    children = [e for e in in_trace
                if e["tags"].get("ai.operation.parentId") == ingest["data"]["baseData"]["id"]]
    assert children, "no child span of tuneloop.ingest was exported"

    metrics = {m["name"]: m for e in envelopes if e["data"]["baseType"] == "MetricData"
               for m in e["data"]["baseData"]["metrics"]}
    assert {"tuneloop.runs", "tuneloop.gate.decisions", "tuneloop.exam.score",
            "tuneloop.drop_to_promoted", "tuneloop.validation.errors"} <= set(metrics)
    for envelope in envelopes:
        assert envelope["iKey"] == ikey  # the key is in each envelope by design, nowhere else

    logs = [e for e in envelopes if e["data"]["baseType"] == "MessageData"]
    messages = [e["data"]["baseData"]["message"] for e in logs]
    submitted = [e for e in logs
                 if e["data"]["baseData"]["message"].startswith(f"ingest submitted run={run_id}")]
    assert [e["tags"]["ai.operation.id"] for e in submitted] == [trace_id]
    assert not [m for m in messages
                if m.startswith(("Transmission succeeded", "Request URL", "Response status"))]
    print(json.dumps({"requests": len(requests), "track": len(track),
                      "bytes": sum(len(r.body) for r in track), "envelopes": len(envelopes),
                      "spans": len(spans), "in_trace": len(in_trace)}))
