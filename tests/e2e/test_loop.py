"""The whole loop on the embedded local platform, driven through the devhost, all real.

A dataset dropped into Azurite is validated, trained (LoRA on the tiny model), registered in
MLflow, deployed, smoke-tested and promoted; the endpoint answers with its key only and
survives malformed requests; a second dataset on the same line replaces the deployment
blue/green while a client keeps calling it. One devhost and one trained line are shared by
the tests of this module; no test depends on another having run (the sweeper, which ends a
line, has its own module: ``test_sweep.py``).
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cli.commands.demo import DEMO_DATASET, variant
from shared.ledger import RunState
from shared.storage import BlobRef
from tests.e2e.conftest import Loop, running_loop
from tests.polling import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LINE = "support"
MAIN_LINE = [
    RunState.RECEIVED, RunState.ACCEPTED, RunState.SUBMITTED, RunState.TRAINED,
    RunState.REGISTERED, RunState.DEPLOYING, RunState.DEPLOYED, RunState.PROMOTED,
]
RELEASING = {RunState.TRAINED, RunState.REGISTERED, RunState.DEPLOYING, RunState.DEPLOYED}
CHAT = {
    "input_data": {
        "input_string": [[{"role": "user", "content": "I forgot my password."}]],
        "parameters": {"do_sample": False, "max_new_tokens": 6},
    }
}


def post(
    url: str, body: bytes | Any, key: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    """POST to a local URL: (status, parsed JSON body, headers)."""
    parts = urlsplit(url)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)
    try:
        conn.request("POST", parts.path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None, dict(resp.getheaders())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def loop(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """A devhost on per-module containers and home; the first dataset dropped and promoted."""
    with running_loop(azurite, tmp_path_factory.mktemp("e2e") / "home", LINE) as started:
        yield started


# -- the first dataset, through to a live endpoint ------------------------------------------
def test_a_dropped_dataset_goes_through_every_stage_to_promoted(loop: Loop) -> None:
    """The run's timeline passes every stage in order and its validation report is valid."""
    assert loop.first is not None
    states = [RunState(e["state"]) for e in loop.first.timeline]
    assert [s for s in MAIN_LINE if s in states] == MAIN_LINE
    assert [s for s in states if s in MAIN_LINE] == sorted(
        (s for s in states if s in MAIN_LINE), key=MAIN_LINE.index)
    prefix = loop.first.get("report_prefix")
    report = loop.clients.storage.read_json(
        BlobRef(loop.settings.reports_container, f"{prefix}/validation.json"))
    assert report["valid"] is True
    assert report["split"]["train_examples"] > 0


def test_training_lowered_the_loss(loop: Loop) -> None:
    """The first logged train loss of the job is clearly above the last one."""
    assert loop.first is not None
    lines = loop.platform.job_log(loop.first.run_id).read_text().splitlines()
    losses = [float(e["loss"]) for e in map(json.loads, lines) if "step" in e]
    assert len(losses) >= 10
    assert losses[-1] < losses[0] - 1.0


def test_the_model_is_registered_in_mlflow_with_lineage_tags(loop: Loop) -> None:
    """MLflow's registry holds the line's model version tagged with its run, job and dataset."""
    from shared.platform.local import registry

    assert loop.first is not None
    mlflow = registry.client(Path(loop.settings.home))
    with registry.quiet():
        versions = mlflow.search_model_versions(f"name = '{loop.first.get('model_name')}'")
    # The first run's version (the blue/green test may have registered the next one).
    (version,) = [v for v in versions
                  if v.tags.get("tuneloop_version") == str(loop.first.get("model_version"))]
    assert version.tags["tuneloop_run"] == loop.first.run_id
    assert version.tags["tuneloop_job"] == loop.first.run_id
    assert version.tags["tuneloop_line"] == LINE
    assert version.tags["tuneloop_dataset"] == loop.first.get("dataset_sha256")
    assert version.run_id  # the training job's MLflow run


def test_the_endpoint_answers_with_its_key_and_refuses_without(loop: Loop) -> None:
    """/score with the bearer key answers text; no key or a wrong key gets 401."""
    assert loop.first is not None
    url, key = loop.scoring(loop.first)
    status, body, headers = post(url, CHAT, key)
    assert status == 200
    assert isinstance(body["output"], str)
    # The line's live deployment answers (the first run's, or the one that replaced it).
    (live,) = loop.clients.ledger.list(line=LINE, states=[RunState.PROMOTED])
    assert headers["azureml-model-deployment"] == live.get("deployment")
    assert post(url, CHAT)[0] == 401
    assert post(url, CHAT, "not-the-key")[0] == 401


def test_malformed_requests_get_a_clear_400_and_the_server_keeps_serving(loop: Loop) -> None:
    """Broken JSON and a wrong shape get 400 with a message naming the problem; then 200."""
    assert loop.first is not None
    url, key = loop.scoring(loop.first)
    status, body, _ = post(url, b'{"input_data": ', key)
    assert status == 400
    assert "not valid JSON" in body["error"]["message"]
    status, body, _ = post(url, {"inputs": "hello"}, key)
    assert status == 400
    assert "input_data" in body["error"]["message"]
    status, body, _ = post(url, {"input_data": {"input_string": [[{"role": "user"}]]}}, key)
    assert status == 400
    assert post(url, CHAT, key)[0] == 200


# -- the second dataset: blue/green ----------------------------------------------------------
class Hammer:
    """Calls /score in a loop from a thread; records each status and serving deployment."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.results: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _, headers = post(self.url, CHAT, self.key)
                self.results.append((status, headers.get("azureml-model-deployment", "")))
            except OSError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.2)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=180)


def test_a_second_dataset_replaces_the_deployment_with_no_failed_request(loop: Loop) -> None:
    """While a client calls the endpoint, the new version goes live and the old one is retired
    without a single failed request; both deployments served some of the calls."""
    assert loop.first is not None
    url, key = loop.scoring(loop.first)
    loop.drop("second", variant(DEMO_DATASET.read_bytes(), 1))
    # Calls start once the new model is trained (before its deployment exists), so they
    # span deploy, smoke test, traffic switch and the old deployment's deletion.
    wait_until(lambda: (r := loop.run_of("second")) is not None and r.state in RELEASING,
             timeout=900, what="the second run trained")
    with Hammer(url, key) as hammer:
        second = loop.wait_promoted("second")
        wait_until(lambda: any(d == second.get("deployment") for _, d in hammer.results[-3:]),
                 timeout=120, what="the new deployment serving")
    failures = [r for r in hammer.results if r[0] != 200]
    assert hammer.errors == []
    assert failures == []
    served = {d for _, d in hammer.results}
    assert served == {loop.first.get("deployment"), second.get("deployment")}
    assert second.get("endpoint") == loop.first.get("endpoint")
    ep = loop.platform.get_endpoint(str(second.get("endpoint")))
    assert ep.traffic == {str(second.get("deployment")): 100}
    first = loop.clients.ledger.get(LINE, loop.first.run_id)
    assert first.state == RunState.RETIRED
    assert second.run_id in (first.reason or "")
