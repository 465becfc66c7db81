"""The embedded local platform for real: training, MLflow registry, endpoints, events, restart.

One job is trained per module (a minute or so on two cores) and shared by the tests that
inspect it; the endpoint tests share one endpoint with two deployments of its model.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.clients import Clients
from shared.errors import ConflictError, NotFoundError
from shared.finetune import Planner
from shared.platform.local import LocalPlatform
from shared.platform.port import (
    DeploymentSpec,
    FinetunePlan,
    JobInfo,
    ModelVersionInfo,
    Platform,
)
from shared.settings import LOCAL_WORKSPACE_ID, Settings
from shared.storage import BlobRef
from tests.isolation import isolated_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


def chat_dataset(n: int, seed: int) -> bytes:
    """A small learnable chat dataset: repeat a colour a given number of times."""
    rnd = random.Random(seed)
    lines = []
    for _ in range(n):
        color, times = rnd.choice(COLORS), rnd.randint(1, 6)
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "You answer tersely."},
                        {"role": "user", "content": f"Say {color} {times} times."},
                        {"role": "assistant", "content": " ".join([color] * times)},
                    ]
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def post(
    url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """POST JSON (or raw bytes) to a local URL: (status, parsed body, response headers)."""
    parts = urlsplit(url)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)
    try:
        conn.request("POST", parts.path, body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None, dict(resp.getheaders())
    finally:
        conn.close()


def listening(url: str) -> bool:
    """Whether something accepts connections at the URL's port."""
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((parts.hostname or "", parts.port or 80)) == 0


PAYLOAD = {
    "input_data": {
        "input_string": [[{"role": "user", "content": "Say red 3 times."}]],
        "parameters": {"temperature": 0.7, "top_p": 0.9, "do_sample": True, "max_new_tokens": 12},
    }
}


@dataclass
class Trained:
    platform: LocalPlatform
    settings: Settings
    clients: Clients
    plan: FinetunePlan
    job: JobInfo


@pytest.fixture(scope="module")
def trained(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A job planned by the real planner and trained to completion on a generated dataset."""
    settings = isolated_settings(azurite, tmp_path_factory.mktemp("local") / "home")
    clients = Clients(settings)
    clients.storage.ensure_containers(settings.prepared_container)
    platform = LocalPlatform.from_settings(settings, storage=clients.storage)
    train, validation = chat_dataset(64, seed=1), chat_dataset(12, seed=2)
    sha = hashlib.sha256(train + validation).hexdigest()
    plan = Planner(settings, platform).plan(line="colors", dataset_sha256=sha)
    container = plan.data_container
    clients.storage.write_bytes(BlobRef(container, plan.train_blob), train)
    clients.storage.write_bytes(BlobRef(container, plan.validation_blob), validation)
    platform.submit_finetune(plan)
    job = wait_until(lambda: (j := platform.get_job(plan.run_id)).terminal and j, timeout=600,
                     what="the training finished", every=0.5)
    try:
        yield Trained(platform, settings, clients, plan, job)
    finally:
        platform.close()


def test_local_platform_implements_the_port(trained: Trained) -> None:
    """LocalPlatform satisfies the Platform protocol and reports kind 'local'."""
    assert isinstance(trained.platform, Platform)
    assert trained.platform.kind == "local"


def test_training_completes_and_loss_goes_down(trained: Trained) -> None:
    """The job completes, reports losses and a model, and its loss ends below where it began."""
    job = trained.job
    assert job.status == "Completed", job.error
    assert job.outputs["trained_model"].startswith("models:/")
    assert {"train_loss", "eval_loss", "steps_per_second"} <= set(job.metrics)
    lines = [json.loads(x) for x in trained.platform.job_log(job.name).read_text().splitlines()]
    steps = [x for x in lines if "step" in x]
    assert len(steps) == int(job.metrics["steps"])
    assert steps[-1]["loss"] < steps[0]["loss"]
    evals = [x["eval_loss"] for x in steps if x.get("eval_loss") is not None]
    assert evals[-1] < evals[0]


def test_training_honours_the_plan_parameters(trained: Trained) -> None:
    """Epochs and batch size of the plan decide the number of steps; LoRA was applied."""
    params = trained.plan.parameters
    log_text = trained.platform.job_log(trained.job.name).read_text()
    lines = [json.loads(x) for x in log_text.splitlines()]
    start = lines[0]
    per_epoch = -(-64 // int(params["per_device_train_batch_size"]))
    per_epoch = -(-per_epoch // int(params.get("gradient_accumulation_steps", 1)))
    assert start["total_steps"] == per_epoch * int(params["num_train_epochs"])
    assert start["lora"] is True
    assert params["learning_rate"] == pytest.approx(0.005)  # the tiny model's own default


def test_submit_is_idempotent(trained: Trained) -> None:
    """Submitting the same plan again returns the existing job and starts nothing."""
    job_json = trained.platform.paths.job(trained.plan.run_id) / "job.json"
    before = job_json.read_text()
    again = trained.platform.submit_finetune(trained.plan)
    assert again.name == trained.plan.run_id
    assert again.status == "Completed"
    assert job_json.read_text() == before


def test_get_job_of_unknown_name_raises_not_found(trained: Trained) -> None:
    """get_job raises NotFoundError for a job that was never submitted."""
    with pytest.raises(NotFoundError):
        trained.platform.get_job("tl-nope-000000000000-00000000")


def test_mlflow_run_has_params_metrics_and_tags(trained: Trained) -> None:
    """The job is an MLflow run (experiment, name, tags) with per-step losses and params."""
    from shared.platform.local.registry import client, quiet

    mlc = client(trained.platform.home)
    with quiet():
        experiment = mlc.get_experiment_by_name(trained.plan.experiment_name)
        assert experiment is not None
        runs = mlc.search_runs(
            [experiment.experiment_id], f"attributes.run_name = '{trained.plan.run_id}'"
        )
        assert len(runs) == 1
        run = runs[0]
        history = mlc.get_metric_history(run.info.run_id, "train_loss")
        evals = mlc.get_metric_history(run.info.run_id, "eval_loss")
    assert run.data.tags["tuneloop_run"] == trained.plan.run_id
    assert run.data.tags["tuneloop_line"] == "colors"
    assert run.data.params["learning_rate"] == str(trained.plan.parameters["learning_rate"])
    assert len(history) == int(trained.job.metrics["steps"])
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    assert evals
    assert evals[-1].value < evals[0].value


def test_register_model_is_idempotent_with_lineage_tags(trained: Trained) -> None:
    """Registering name:version twice gives one MLflow version carrying the lineage tags."""
    p = trained.platform
    tags = {"tuneloop_run": trained.plan.run_id, "tuneloop_line": "colors"}
    first = p.register_model("tuneloop-colors-reg", "7", job_name=trained.plan.run_id, tags=tags)
    second = p.register_model("tuneloop-colors-reg", "7", job_name=trained.plan.run_id, tags=tags)
    assert first == second
    assert first.version == "7"
    assert first.tags["tuneloop_run"] == trained.plan.run_id
    assert first.tags["tuneloop_version"] == "7"
    assert p.get_model_version("tuneloop-colors-reg", "7") == first
    with pytest.raises(NotFoundError):
        p.get_model_version("tuneloop-colors-reg", "8")


def test_events_are_azure_ml_event_grid_events(trained: Trained) -> None:
    """Running, Completed and RunCompleted events sit in the outbox with Azure's schema."""
    p = trained.platform
    mine = [e for e in p.pending_events() if e["data"]["runId"] == trained.plan.run_id]
    kinds = [(e["eventType"].rsplit(".", 1)[1], e["data"].get("runStatus")) for e in mine]
    assert kinds == [
        ("RunStatusChanged", "Running"),
        ("RunStatusChanged", "Completed"),
        ("RunCompleted", None),
    ]
    for event in mine:
        assert event["topic"] == LOCAL_WORKSPACE_ID
        assert event["subject"] == (
            f"experiments/{event['data']['experimentId']}/runs/{trained.plan.run_id}"
        )
        assert event["data"]["experimentName"] == trained.plan.experiment_name
        assert event["data"]["runType"] == "azureml.PipelineRun"
        assert event["data"]["runTags"]["tuneloop_run"] == trained.plan.run_id
        assert event["data"]["runTags"]["tuneloop_line"] == "colors"
        assert event["data"]["runTags"]["tuneloop_dataset"] == trained.plan.dataset_sha256
        assert event["dataVersion"] == ""
        assert event["metadataVersion"] == "1"
        datetime.fromisoformat(event["eventTime"])
    p.ack_event(mine[0]["id"])
    p.ack_event(mine[0]["id"])  # acknowledging twice is fine
    left = [e["id"] for e in p.pending_events()]
    assert mine[0]["id"] not in left
    assert mine[1]["id"] in left


def test_a_job_that_cannot_read_its_data_fails_with_a_reason(trained: Trained) -> None:
    """A plan whose blobs do not exist ends Failed with the error and a Failed event."""
    p = trained.platform
    plan = replace(trained.plan, run_id=trained.plan.run_id[:-8] + "deadbeef",
                   train_blob="missing/train.jsonl")
    p.submit_finetune(plan)
    job = wait_until(lambda: (j := p.get_job(plan.run_id)).terminal and j, timeout=300,
                     what="the training finished", every=0.5)
    assert job.status == "Failed"
    assert job.error
    assert ("BlobNotFound" in job.error or "does not exist" in job.error)
    statuses = [
        e["data"].get("runStatus") for e in p.pending_events() if e["data"]["runId"] == plan.run_id
    ]
    assert statuses == ["Running", "Failed"]


# -- endpoints ------------------------------------------------------------------------------


@dataclass
class Served:
    trained: Trained
    endpoint: str
    model: ModelVersionInfo
    uri: str
    key: str

    @property
    def platform(self) -> LocalPlatform:
        return self.trained.platform

    def auth(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **extra}


@pytest.fixture(scope="module")
def served(trained: Trained) -> Served:
    """An endpoint with deployments blue (100 %) and green (0 %) of the trained model."""
    p = trained.platform
    model = p.register_model(
        "tuneloop-colors", "1", job_name=trained.plan.run_id,
        tags={"tuneloop_run": trained.plan.run_id},
    )
    ep = p.ensure_endpoint("tl-colors", tags={"tuneloop_managed": "true"})
    assert ep.provisioning_state in {"Creating", "Succeeded"}
    for name in ("blue", "green"):
        info = p.deploy(DeploymentSpec("tl-colors", name, model, "local"))
        assert info.provisioning_state in {"Creating", "Succeeded"}
    for name in ("blue", "green"):
        wait_until(lambda n=name: p.get_deployment("tl-colors", n).provisioning_state
                   == "Succeeded", timeout=180, what=f"deployment {name} Succeeded", every=0.5)
    wait_until(lambda: p.get_endpoint("tl-colors").provisioning_state == "Succeeded",
               timeout=60, what="endpoint Succeeded", every=0.5)
    p.set_traffic("tl-colors", {"blue": 100})
    ep = p.get_endpoint("tl-colors")
    assert ep.scoring_uri
    return Served(trained, "tl-colors", model, ep.scoring_uri, p.endpoint_key("tl-colors"))


def test_endpoint_is_listed_with_times_tags_and_traffic(served: Served) -> None:
    """list_endpoints reports the endpoint's state, traffic, tags, UTC times and scoring URI."""
    [ep] = [e for e in served.platform.list_endpoints() if e.name == served.endpoint]
    assert ep.provisioning_state == "Succeeded"
    assert ep.traffic == {"blue": 100}
    assert ep.tags == {"tuneloop_managed": "true"}
    assert ep.created is not None
    assert ep.created.tzinfo is not None
    assert ep.modified is not None
    assert ep.modified >= ep.created
    assert ep.scoring_uri == served.uri
    assert ep.scoring_uri.startswith("http://127.0.0.1:")


def test_score_needs_the_key(served: Served) -> None:
    """/score answers non-empty text with the key and 401 without it or with a wrong one."""
    status, body, headers = post(served.uri, PAYLOAD, served.auth())
    assert status == 200
    assert isinstance(body["output"], str)
    assert body["output"].strip()
    assert headers["azureml-model-deployment"] == "blue"
    assert post(served.uri, PAYLOAD)[0] == 401
    assert post(served.uri, PAYLOAD, {"Authorization": "Bearer wrong"})[0] == 401


def test_the_fine_tuned_model_learned_the_task(served: Served) -> None:
    """Greedy decoding of a training-style prompt answers with the right colour."""
    payload = {
        "input_data": {
            "input_string": [[
                {"role": "system", "content": "You answer tersely."},
                {"role": "user", "content": "Say blue 3 times."},
            ]],
            "parameters": {"do_sample": False, "max_new_tokens": 16},
        }
    }
    answer = served.platform.invoke(served.endpoint, payload)
    assert "blue" in answer["output"]


def test_invoke_targets_a_deployment_at_zero_traffic(served: Served) -> None:
    """The azureml-model-deployment header reaches green even though it takes 0 %."""
    target = served.auth(**{"azureml-model-deployment": "green"})
    status, body, headers = post(served.uri, PAYLOAD, target)
    assert status == 200
    assert body["output"].strip()
    assert headers["azureml-model-deployment"] == "green"
    answer = served.platform.invoke(served.endpoint, PAYLOAD, deployment="green")
    assert answer["output"].strip()
    with pytest.raises(NotFoundError):
        served.platform.invoke(served.endpoint, PAYLOAD, deployment="nope")


def test_an_exam_asks_each_deployment_each_prompt_once(served: Served) -> None:
    """The exam runner (shared.release.exam.ask) sends 50 prompts to blue and to green of a
    real local endpoint, greedily and header-targeted: 100 calls, every answer text, stored;
    asking again costs nothing (the answers are read back)."""
    from shared.release.context import ReleaseContext
    from shared.release.exam import Answers, ExamSet, answers_ref, ask, lowest, parse_example

    t = served.trained
    settings = t.settings.model_copy(update={"exam_max_new_tokens": 16})
    ctx = ReleaseContext(settings, t.clients.ledger, served.platform, t.clients.storage)
    t.clients.storage.ensure_containers(settings.reports_container)
    rows = [json.loads(line) for line in chat_dataset(200, seed=3).splitlines()]
    for i, row in enumerate(rows):  # two system prompts: more distinct prompts than 6 x 6
        row["messages"][0]["content"] = ("You answer tersely.", "Answer briefly.")[i % 2]
    questions = lowest([q for r in rows if (q := parse_example(r)) is not None], 50)
    exam = ExamSet.of(questions, "sample")
    assert len(exam.questions) == 50

    def books() -> tuple[Answers, Answers]:
        def load(d: str) -> Answers:
            return Answers.load(ctx, answers_ref(ctx, "colors", f"run-{d}", exam.digest), d)
        return load("blue"), load("green")

    blue, green = books()
    started = time.monotonic()
    calls = ask(ctx, served.endpoint, [(blue, exam.questions), (green, exam.questions)],
                tally=blue)
    print(f"exam of 50 examples on the local platform: {calls} calls, "
          f"{time.monotonic() - started:.1f} s (concurrency {settings.exam_concurrency})")
    assert calls == 100
    assert all(blue.answers[q.key].strip() for q in exam.questions)
    assert set(green.answers) == {q.key for q in exam.questions}
    blue, green = books()
    assert ask(ctx, served.endpoint, [(blue, exam.questions), (green, exam.questions)],
               tally=blue) == 0


def test_malformed_requests_get_a_clear_4xx_and_the_server_keeps_serving(served: Served) -> None:
    """Bad JSON, a missing input_data, bad messages and bad parameters get 400 with a message."""
    cases: list[Any] = [
        b"{not json",
        {"inputs": []},
        {"input_data": {"input_string": [[{"role": "robot", "content": "x"}]]}},
        {"input_data": {"input_string": [[{"role": "user", "content": "x"}]],
                        "parameters": {"max_new_tokens": "many"}}},
    ]
    for body in cases:
        for target in ("blue", "green"):
            status, answer, _ = post(
                served.uri, body, served.auth(**{"azureml-model-deployment": target})
            )
            assert status == 400, answer
            assert answer["error"]["message"]
    assert "role" in post(served.uri, cases[2], served.auth())[1]["error"]["message"]
    assert post(served.uri, PAYLOAD, served.auth())[0] == 200


def test_traffic_split_spreads_requests(served: Served) -> None:
    """A 50/50 split sends requests to both deployments."""
    p = served.platform
    p.set_traffic(served.endpoint, {"blue": 50, "green": 50})
    try:
        seen = {
            post(served.uri, PAYLOAD, served.auth())[2]["azureml-model-deployment"]
            for _ in range(24)
        }
    finally:
        p.set_traffic(served.endpoint, {"blue": 100})
    assert seen == {"blue", "green"}


def test_set_traffic_refuses_bad_splits_and_unknown_deployments(served: Served) -> None:
    """Splits must sum to 100 (or 0) over existing deployments."""
    p = served.platform
    with pytest.raises(NotFoundError):
        p.set_traffic(served.endpoint, {"purple": 100})
    with pytest.raises(Exception, match="sum to 100"):
        p.set_traffic(served.endpoint, {"blue": 60, "green": 60})
    with pytest.raises(ConflictError):
        p.delete_deployment(served.endpoint, "blue")  # still takes traffic
    assert p.get_endpoint(served.endpoint).traffic == {"blue": 100}


def test_request_counts_are_exact(served: Served) -> None:
    """endpoint_requests counts every scoring request in the window, and omits unknown ones."""
    p = served.platform
    ep = p.get_endpoint(served.endpoint)
    start = datetime.now(UTC)
    time.sleep(1.1)  # a clean one-second boundary: counts have one-second resolution
    for _ in range(5):
        post(served.uri, PAYLOAD, served.auth())
    post(served.uri, PAYLOAD)  # refused, but still a request to the endpoint
    now = datetime.now(UTC)
    window = now - start
    ghost = replace(ep, name="tl-ghost")
    assert p.endpoint_requests([ep, ghost], window - timedelta(seconds=1), now=now) == {
        served.endpoint: 6
    }
    assert p.endpoint_requests([ep], timedelta(hours=1), now=start - timedelta(hours=2)) == {
        served.endpoint: 0
    }


def test_blue_green_swap_fails_no_request(served: Served) -> None:
    """Requests keep succeeding while traffic moves to a new deployment and the old one goes."""
    p = served.platform
    p.deploy(DeploymentSpec(served.endpoint, "cyan", served.model, "local"))
    wait_until(lambda: p.get_deployment(served.endpoint, "cyan").provisioning_state
               == "Succeeded", timeout=180, what="deployment cyan Succeeded", every=0.5)
    failures: list[Any] = []
    served_by: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, body, headers = post(served.uri, PAYLOAD, served.auth())
            if status != 200:
                failures.append((status, body))
            else:
                served_by.append(headers["azureml-model-deployment"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    p.set_traffic(served.endpoint, {"cyan": 100})
    p.delete_deployment(served.endpoint, "blue")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert "cyan" in served_by
    assert "blue" in served_by
    with pytest.raises(NotFoundError):
        p.get_deployment(served.endpoint, "blue")
    p.delete_deployment(served.endpoint, "blue")  # already gone is success


def test_restore_after_restart_serves_again(served: Served) -> None:
    """After close() (devhost exit) a new platform on the same home restores the endpoint."""
    old = served.platform
    old.close()
    assert not listening(served.uri)
    fresh = LocalPlatform.from_settings(served.trained.settings)
    served.trained.platform = fresh
    assert fresh.restore() == []
    wait_until(lambda: fresh.get_endpoint(served.endpoint).provisioning_state == "Succeeded",
               timeout=60, what="restored endpoint Succeeded", every=0.5)
    for name in fresh.get_endpoint(served.endpoint).traffic:
        wait_until(lambda n=name: fresh.get_deployment(served.endpoint, n).provisioning_state
                   == "Succeeded", timeout=180, what=f"restored deployment {name} Succeeded",
                   every=0.5)
    assert fresh.get_endpoint(served.endpoint).scoring_uri == served.uri
    assert fresh.endpoint_key(served.endpoint) == served.key
    status, body, _ = post(served.uri, PAYLOAD, served.auth())
    assert status == 200
    assert body["output"].strip()
    assert fresh.get_job(served.trained.plan.run_id).status == "Completed"


def test_delete_endpoint_stops_it_and_is_idempotent(served: Served) -> None:
    """delete_endpoint removes the endpoint and its servers; deleting again succeeds."""
    p = served.trained.platform
    p.delete_endpoint(served.endpoint)
    p.delete_endpoint(served.endpoint)
    with pytest.raises(NotFoundError):
        p.get_endpoint(served.endpoint)
    assert served.endpoint not in [e.name for e in p.list_endpoints()]
    assert not listening(served.uri)
    assert not (Path(p.home) / "local" / "endpoints" / served.endpoint).exists()
