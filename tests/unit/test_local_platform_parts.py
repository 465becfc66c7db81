"""The local platform's parts that need no child process: events, requests, routing, state."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.errors import NotFoundError
from shared.finetune import Planner, bundled_component, model_specific_defaults
from shared.platform.local import LocalPlatform, events
from shared.platform.local.chat import ScoringRequestError, parse_request
from shared.platform.local.counts import RequestCounts
from shared.platform.local.router import choose_deployment
from shared.platform.local.state import write_json
from shared.platform.local.train import hyperparameters
from shared.platform.port import EndpointInfo, Platform
from shared.settings import LOCAL_WORKSPACE_ID, Settings

# The keys of Azure ML's Event Grid samples (RunStatusChanged / RunCompleted).
EVENT_KEYS = {
    "topic", "subject", "eventType", "eventTime", "id", "data", "dataVersion", "metadataVersion",
}
DATA_KEYS = {"experimentId", "experimentName", "runId", "runType", "runTags", "runProperties"}


@pytest.fixture
def platform(tmp_path: Path) -> LocalPlatform:
    return LocalPlatform.from_settings(Settings(platform="local", home=tmp_path / "home"))


def _emit(home: Path, status: str, job: str = "tl-chat-abc-123") -> None:
    events.emit_job_event(
        home, job_name=job, experiment_name="tuneloop-chat", status=status,
        tags={"tuneloop_run": job, "tuneloop_line": "chat"}, properties={},
    )


def test_job_events_have_azure_ml_event_grid_shape() -> None:
    """A status change event has the sample's keys, the local topic and a matching subject."""
    event = events.job_event(
        events.RUN_STATUS_CHANGED, job_name="tl-chat-1", experiment_name="tuneloop-chat",
        status="Running", tags={"tuneloop_run": "tl-chat-1"}, properties={"a": "b"},
    )
    assert set(event) == EVENT_KEYS
    assert set(event["data"]) == DATA_KEYS | {"runStatus"}
    assert event["topic"] == LOCAL_WORKSPACE_ID
    assert event["eventType"] == "Microsoft.MachineLearningServices.RunStatusChanged"
    assert event["subject"] == f"experiments/{event['data']['experimentId']}/runs/tl-chat-1"
    assert event["eventTime"].endswith("Z")
    assert event["data"]["runStatus"] == "Running"
    completed = events.job_event(
        events.RUN_COMPLETED, job_name="tl-chat-1", experiment_name="tuneloop-chat",
        status="Completed", tags={}, properties={},
    )
    assert set(completed["data"]) == DATA_KEYS  # RunCompleted carries no runStatus


def test_job_events_parse_as_trusted_job_events(tmp_path: Path) -> None:
    """The app's event parser accepts every emitted event as a job event of the local topic."""
    from shared.events import JobEvent, parse_job_event

    _emit(tmp_path, "Running")
    _emit(tmp_path, "Completed")
    parsed = [
        parse_job_event(e, trusted_topic=LOCAL_WORKSPACE_ID)
        for e in events.pending_events(tmp_path)
    ]
    assert all(isinstance(p, JobEvent) for p in parsed)
    assert [(p.run_id, p.status, p.line) for p in parsed if isinstance(p, JobEvent)] == [
        ("tl-chat-abc-123", "Running", "chat"),
        ("tl-chat-abc-123", "Completed", "chat"),
        ("tl-chat-abc-123", "Completed", "chat"),
    ]


def test_outbox_is_oldest_first_deduplicated_and_acknowledged(tmp_path: Path) -> None:
    """Emitting a change twice stores it once; ack removes it for good; order is emission order."""
    _emit(tmp_path, "Running")
    _emit(tmp_path, "Running")
    _emit(tmp_path, "Completed")
    pending = events.pending_events(tmp_path)
    assert [(e["eventType"].rsplit(".", 1)[1], e["data"].get("runStatus")) for e in pending] == [
        ("RunStatusChanged", "Running"),
        ("RunStatusChanged", "Completed"),
        ("RunCompleted", None),
    ]
    events.ack_event(tmp_path, pending[0]["id"])
    _emit(tmp_path, "Running")  # a late duplicate after delivery is not delivered again
    assert [e["id"] for e in events.pending_events(tmp_path)] == [e["id"] for e in pending[1:]]
    events.ack_event(tmp_path, "not-an-event")


def test_parse_request_accepts_the_azure_contract() -> None:
    """input_string with conversations and known parameters parses; a flat list is one chat."""
    convs, params = parse_request(
        {"input_data": {"input_string": [[{"role": "user", "content": "hi"}]],
                        "parameters": {"temperature": 0.5, "top_p": 1, "do_sample": True,
                                       "max_new_tokens": 8}}}
    )
    assert convs == [[{"role": "user", "content": "hi"}]]
    assert params["max_new_tokens"] == 8
    flat, _ = parse_request({"input_data": {"input_string": [{"role": "user", "content": "x"}]}})
    assert flat == [[{"role": "user", "content": "x"}]]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "JSON object"),
        ({"inputs": 1}, "input_data"),
        ({"input_data": {"input_string": []}}, "non-empty list"),
        ({"input_data": {"input_string": [[{"role": "bot", "content": "x"}]]}}, "role"),
        ({"input_data": {"input_string": [[{"role": "user", "content": 3}]]}}, "content"),
        ({"input_data": {"input_string": [[{"role": "assistant", "content": "x"}]]}}, "end with"),
        ({"input_data": {"input_string": [[{"role": "user", "content": "x"}]],
                         "parameters": {"max_new_tokens": 0}}}, "max_new_tokens"),
        ({"input_data": {"input_string": [[{"role": "user", "content": "x"}]],
                         "parameters": {"temprature": 1}}}, "unknown parameter"),
        ({"input_data": {"input_string": [[{"role": "user", "content": "x"}]],
                         "parameters": {"do_sample": "yes"}}}, "wrong type"),
    ],
)
def test_parse_request_names_what_is_wrong(body: object, fragment: str) -> None:
    """Each malformed request raises ScoringRequestError naming the field at fault."""
    with pytest.raises(ScoringRequestError, match=fragment):
        parse_request(body)


def test_choose_deployment_follows_positive_weights() -> None:
    """Only deployments with traffic > 0 that exist and were not tried are chosen."""
    rng = random.Random(3)
    traffic = {"blue": 90, "green": 10, "grey": 0}
    picks = [choose_deployment(traffic, {"blue", "green", "grey"}, rng, exclude=set())
             for _ in range(1000)]
    assert set(picks) == {"blue", "green"}
    assert 0.8 < picks.count("blue") / len(picks) < 0.97
    assert choose_deployment(traffic, {"blue", "green"}, rng, exclude={"blue"}) == "green"
    assert choose_deployment(traffic, {"grey"}, rng, exclude=set()) is None
    assert choose_deployment({}, {"blue"}, rng, exclude=set()) is None


def test_request_counts_sum_a_window_to_the_second(tmp_path: Path) -> None:
    """Counts inside [start, end] are summed per endpoint; others are outside; forget clears."""
    counts = RequestCounts(tmp_path / "requests.db")
    t0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    for offset in (0, 1, 1, 59, 61):
        counts.add("tl-a", t0 + timedelta(seconds=offset))
    counts.add("tl-b", t0, n=3)
    start, end = t0 + timedelta(seconds=1), t0 + timedelta(seconds=60)
    got = counts.total(["tl-a", "tl-b", "tl-c"], start, end)
    assert got == {"tl-a": 3, "tl-b": 0, "tl-c": 0}
    counts.forget("tl-a")
    assert counts.total(["tl-a"], t0, t0 + timedelta(hours=1)) == {"tl-a": 0}
    counts.close()


def test_hyperparameters_read_the_component_input_names() -> None:
    """Component inputs (strings for enums) map onto the trainer's settings."""
    hp = hyperparameters(
        {"num_train_epochs": 2, "learning_rate": 0.001, "lr_scheduler_type": "cosine",
         "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "apply_lora": "true",
         "merge_lora_weights": "false", "max_seq_length": 128, "seed": 7,
         "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "warmup_steps": 3}
    )
    assert (hp.epochs, hp.learning_rate, hp.scheduler) == (2, 0.001, "cosine")
    assert (hp.lora_r, hp.lora_alpha, hp.lora_dropout) == (4, 8, 0.1)
    assert hp.apply_lora is True
    assert hp.merge_lora is False
    assert (hp.max_seq_length, hp.seed, hp.batch_size, hp.grad_accum) == (128, 7, 4, 2)
    assert hp.warmup_steps == 3
    assert hyperparameters({"max_seq_length": -1}).max_seq_length == 512
    assert hyperparameters({"precision": "16"}).half_precision is True
    assert hyperparameters({}).half_precision is False


def test_platform_satisfies_the_port(platform: LocalPlatform) -> None:
    """LocalPlatform is a Platform of kind 'local'."""
    assert isinstance(platform, Platform)
    assert platform.kind == "local"


def test_base_model_carries_defaults_the_planner_can_use(platform: LocalPlatform) -> None:
    """The tiny model's model_specific_defaults parse and are all inputs of the component."""
    model = platform.get_base_model("Phi-3-mini-4k-instruct")
    defaults = model_specific_defaults(model)
    assert float(defaults["learning_rate"]) > 1e-4
    assert set(defaults) <= set(bundled_component().inputs)
    assert model.properties["requested_model"] == "Phi-3-mini-4k-instruct"


def test_planner_plans_against_the_local_platform(platform: LocalPlatform) -> None:
    """The real planner accepts the local base model, component and compute."""
    plan = Planner(platform.settings, platform).plan(
        line="chat", dataset_sha256=hashlib.sha256(b"x").hexdigest()
    )
    assert plan.parameters["learning_rate"] == pytest.approx(0.005)
    assert plan.parameters["apply_lora"] == "true"
    assert plan.compute == "local"


def test_compute_and_component(platform: LocalPlatform) -> None:
    """get_compute describes this machine; get_component refuses an unknown component."""
    compute = platform.get_compute("anything")
    assert compute.name == "local"
    assert compute.provisioning_state == "Succeeded"
    assert platform.get_component("chat_completion_pipeline").name == "chat_completion_pipeline"
    with pytest.raises(NotFoundError):
        platform.get_component("something_else")


def test_missing_things_raise_not_found_and_deletes_succeed(platform: LocalPlatform) -> None:
    """get_* raise NotFoundError for unknown names; delete_* of unknown names succeed."""
    for call in (
        lambda: platform.get_job("tl-none"),
        lambda: platform.get_endpoint("tl-none"),
        lambda: platform.get_deployment("tl-none", "blue"),
        lambda: platform.endpoint_key("tl-none"),
    ):
        with pytest.raises(NotFoundError):
            call()
    platform.delete_endpoint("tl-none")
    platform.delete_deployment("tl-none", "blue")
    assert platform.list_endpoints() == []
    ghost = EndpointInfo("tl-none", "id", {}, None, None, "Succeeded", {})
    assert platform.endpoint_requests([ghost], timedelta(hours=1), now=datetime.now(UTC)) == {}


def test_a_job_whose_process_died_is_failed_with_a_reason(platform: LocalPlatform) -> None:
    """A job left Running by a dead trainer is reported Failed, with one Failed event."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job_dir = platform.paths.job("tl-chat-dead")
    write_json(job_dir / "job.json", {
        "name": "tl-chat-dead", "pid": dead.pid,
        "plan": {"run_id": "tl-chat-dead", "experiment_name": "tuneloop-chat",
                 "tags": {"tuneloop_run": "tl-chat-dead"}},
    })
    write_json(job_dir / "status.json", {"status": "Running"})
    (job_dir / "process.log").write_text("Killed\n")
    job = platform.get_job("tl-chat-dead")
    assert job.status == "Failed"
    assert job.error is not None
    assert "ended without reporting" in job.error
    assert "Killed" in job.error
    platform.get_job("tl-chat-dead")
    failed = [e for e in platform.pending_events() if e["data"]["runId"] == "tl-chat-dead"]
    assert [e["data"]["runStatus"] for e in failed] == ["Failed"]
    assert json.loads((job_dir / "status.json").read_text())["status"] == "Failed"
    assert platform.restore() == []  # already reported: nothing new to say


def test_unreadable_request_counts_raise_unknown_traffic(platform: LocalPlatform) -> None:
    """When the counts store cannot be read the sweeper gets UnknownTrafficError, never 0."""
    from shared.errors import UnknownTrafficError

    write_json(platform.paths.endpoint("tl-known") / "endpoint.json",
               {"name": "tl-known", "key": "k", "port": 1, "state": "Succeeded", "traffic": {}})
    platform.paths.requests_db.mkdir(parents=True)  # a directory where the database should be
    known = EndpointInfo("tl-known", "id", {}, None, None, "Succeeded", {})
    with pytest.raises(UnknownTrafficError):
        platform.endpoint_requests([known], timedelta(hours=1), now=datetime.now(UTC))


def test_invalid_names_are_refused_before_anything_starts(platform: LocalPlatform) -> None:
    """Endpoint names follow Azure's rule (3-32, letter first); nothing is created otherwise."""
    from shared.errors import PlatformError

    for bad in ("1abc", "ab", "a" * 33, "has_underscore", "../escape"):
        with pytest.raises(PlatformError):
            platform.ensure_endpoint(bad, tags={})
    assert platform.list_endpoints() == []
