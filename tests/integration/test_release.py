"""The release on Azurite + FakePlatform: register → deploy → smoke → gate → promote, once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from shared.clients import Clients
from shared.errors import PlatformError, TransientError
from shared.events import JobEvent
from shared.ledger import IN_RELEASE, RunRecord, RunState
from shared.naming import endpoint_name, endpoint_scope
from shared.platform.port import BaseModelInfo, ProvisioningState
from shared.release import ReleaseContext, advance_release, handle_job_event, reconcile
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform
from tests.integration.conftest import with_settings

pytestmark = pytest.mark.integration

LINE = "chat"
RUN1 = "tl-chat-000000000001-aaaaaaaa"
RUN2 = "tl-chat-000000000002-bbbbbbbb"


def chat_endpoint(ctx: ReleaseContext) -> str:
    """The chat line's endpoint in this test's scope (names are per workspace or home)."""
    return endpoint_name("chat", endpoint_scope(ctx.settings))


def seed(
    ctx: ReleaseContext, fake: FakePlatform, run_id: str, *, eval_loss: float | None = 0.5,
    line: str = LINE, status: str = "Completed",
) -> RunRecord:
    """A run as the ingest side leaves it (SUBMITTED), its job, and its validation examples."""
    name = f"batch-{run_id[-4:]}"
    rec = ctx.ledger.create(
        line, run_id, RunState.SUBMITTED, name=name, blob=f"incoming/{line}/{name}.jsonl",
        dataset_sha256="ab" * 32,
    )
    metrics = {"eval_loss": eval_loss, "train_loss": 0.7} if eval_loss is not None else {}
    fake.set_job(run_id, status, metrics=metrics, tags={"tuneloop_run": run_id})
    examples = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(5)
    ]
    ctx.storage.write_bytes(
        BlobRef(ctx.settings.prepared_container, f"{run_id}/validation.jsonl"),
        "\n".join(json.dumps(e) for e in examples).encode(),
    )
    return rec


def completed(run_id: str, status: str = "Completed") -> JobEvent:
    return JobEvent(
        event_id=f"evt-{run_id}", event_type="RunCompleted", run_id=run_id, status=status,
        tags={"tuneloop_line": LINE},
    )


def finish(ctx: ReleaseContext, rounds: int = 10) -> None:
    """Run the reconciler until nothing is mid-release (deployments take a few polls)."""
    for _ in range(rounds):
        reconcile(ctx)
        if not ctx.ledger.list(states=IN_RELEASE):
            return


def get(ctx: ReleaseContext, run_id: str) -> RunRecord:
    return ctx.ledger.get(LINE, run_id)


def states(rec: RunRecord) -> list[str]:
    """The states the run moved through (notes recorded within a state are folded)."""
    out: list[str] = []
    for entry in rec.timeline:
        if not out or out[-1] != entry["state"]:
            out.append(entry["state"])
    return out


def traffic(fake: FakePlatform, endpoint: str) -> Mapping[str, int]:
    return {k: v for k, v in fake.endpoints[endpoint].info.traffic.items() if v}


def release_one(ctx: ReleaseContext, fake: FakePlatform, run_id: str, **kw: Any) -> RunRecord:
    seed(ctx, fake, run_id, **kw)
    handle_job_event(ctx, completed(run_id))
    finish(ctx)
    return get(ctx, run_id)


def test_completed_run_is_released_and_promoted(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """A completed job ends PROMOTED with version, deployment, endpoint, scoring URI and loss."""
    rec = release_one(ctx, fake, RUN1)
    assert rec.state is RunState.PROMOTED
    assert rec.get("model_version") == "1"
    assert rec.get("deployment") == "v01"
    assert rec.get("endpoint") == chat_endpoint(ctx)
    assert rec.get("scoring_uri") == f"https://{chat_endpoint(ctx)}.fake/score"
    assert rec.get("eval_loss") == 0.5
    assert states(rec) == [
        "SUBMITTED", "TRAINED", "REGISTERED", "DEPLOYING", "DEPLOYED", "PROMOTED"
    ]
    assert traffic(fake, chat_endpoint(ctx)) == {"v01": 100}
    model = fake.models[("tuneloop-chat", "1")]
    assert model.tags["tuneloop_run"] == RUN1
    assert model.tags["tuneloop_dataset"] == "ab" * 32
    assert model.tags["tuneloop_blob"].startswith("incoming/chat/")
    ep_tags = fake.endpoints[chat_endpoint(ctx)].info.tags
    assert ep_tags == {"tuneloop_managed": "true", "tuneloop_line": LINE}
    # The smoke test targeted the new deployment with validation prompts (no assistant answer).
    endpoint, deployment, payload = fake.invocations[0]
    assert (endpoint, deployment) == (chat_endpoint(ctx), "v01")
    assert payload["input_data"]["input_string"] == [[{"role": "user", "content": "q0"}]]
    smoke = fake.invocations[: ctx.settings.smoke_examples]
    assert all(i[2]["input_data"]["parameters"]["do_sample"] for i in smoke)
    # Then the exam: a first version answers its own 5 validation examples, greedily, alone.
    exam = fake.invocations[ctx.settings.smoke_examples:]
    assert len(exam) == 5
    assert {(e, d) for e, d, _ in exam} == {(chat_endpoint(ctx), "v01")}
    assert all(p["input_data"]["parameters"]["do_sample"] is False for _, _, p in exam)
    assert rec.release.exam is not None
    assert rec.release.exam["decision"] == "promote"
    report = ctx.storage.read_json(
        BlobRef(ctx.settings.reports_container, f"{LINE}/{rec.get('name')}/run.json")
    )
    assert report["state"] == "PROMOTED"
    assert report["timeline"][-1]["state"] == "PROMOTED"


def test_next_run_replaces_the_live_deployment(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """Blue/green: the second version takes all traffic, the first deployment is deleted and
    its run RETIRED with the reason."""
    release_one(ctx, fake, RUN1)
    rec = release_one(ctx, fake, RUN2, eval_loss=0.4)
    assert rec.state is RunState.PROMOTED
    assert rec.get("deployment") == "v02"
    assert traffic(fake, chat_endpoint(ctx)) == {"v02": 100}
    assert set(fake.endpoints[chat_endpoint(ctx)].deployments) == {"v02"}
    old = get(ctx, RUN1)
    assert old.state is RunState.RETIRED
    assert old.reason == f"superseded by {RUN2}"


STEP_FAULTS = [
    (method, exc)
    for method in ("get_job", "register_model", "ensure_endpoint", "get_endpoint",
                   "get_base_model", "deploy", "invoke", "set_traffic", "delete_deployment")
    for exc in (TransientError(f"{method} blipped"), PlatformError(f"{method} refused"))
    if not (method == "invoke" and type(exc) is PlatformError)  # that one is a smoke failure
]


@pytest.mark.parametrize(("method", "exc"), STEP_FAULTS, ids=lambda v: getattr(v, "code", v))
def test_each_step_failing_once_still_releases_exactly_once(
    ctx: ReleaseContext, fake: FakePlatform, method: str, exc: Exception
) -> None:
    """Whichever step raises once, redelivery and the reconciler finish the release once."""
    release_one(ctx, fake, RUN1)
    seed(ctx, fake, RUN2, eval_loss=0.4)
    fake.fail_once(method, exc)
    raised = 0
    for _ in range(3):  # Event Grid redelivers a failed delivery
        try:
            handle_job_event(ctx, completed(RUN2))
        except (TransientError, PlatformError):
            raised += 1
            continue
        break
    finish(ctx)
    assert fake.fired_count(method) == 1  # the step did fail once
    rec = get(ctx, RUN2)
    assert rec.state is RunState.PROMOTED, rec.reason
    assert states(rec).count("PROMOTED") == 1
    assert states(rec).count("REGISTERED") == 1
    assert sorted(v for (_, v) in fake.models) == ["1", "2"]
    assert set(fake.endpoints[chat_endpoint(ctx)].deployments) == {"v02"}
    assert traffic(fake, chat_endpoint(ctx)) == {"v02": 100}
    assert get(ctx, RUN1).state is RunState.RETIRED
    assert fake.calls[method] >= 1
    assert raised <= 1


def test_failed_smoke_test_holds_and_leaves_live_traffic(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """An empty answer: the new deployment is removed, the live one keeps 100 %, run HELD."""
    release_one(ctx, fake, RUN1)
    fake.answers["v02"] = ""
    rec = release_one(ctx, fake, RUN2)
    assert rec.state is RunState.HELD
    assert rec.reason is not None
    assert rec.reason.startswith("smoke test failed")
    assert traffic(fake, chat_endpoint(ctx)) == {"v01": 100}
    assert set(fake.endpoints[chat_endpoint(ctx)].deployments) == {"v01"}
    assert get(ctx, RUN1).state is RunState.PROMOTED


def test_smoke_test_exception_holds(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """A deployment that refuses the request (non-transient error) fails the smoke test."""
    seed(ctx, fake, RUN1)
    fake.fail_once("invoke", PlatformError("424 model failed to load"))
    handle_job_event(ctx, completed(RUN1))
    finish(ctx)
    fake.assert_faults_fired()
    rec = get(ctx, RUN1)
    assert rec.state is RunState.HELD
    assert "424 model failed to load" in (rec.reason or "")
    assert fake.endpoints[chat_endpoint(ctx)].deployments == {}


def test_deprecated_gate_mode_examines_and_holds_a_worse_model(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """promotion=gate (deprecated) is the exam: a candidate answering the live model's
    validation prompts worse is HELD whatever its eval_loss, and its deployment deleted."""
    gated = with_settings(ctx, promotion="gate", gate_tolerance=5.0)
    fake.answers["v01"] = "a"  # the seeded references are all "a"
    release_one(gated, fake, RUN1, eval_loss=0.5)
    fake.answers["v02"] = "something else entirely"
    rec = release_one(gated, fake, RUN2, eval_loss=0.1)
    assert rec.state is RunState.HELD
    assert "worse than the live model's 100.00" in (rec.reason or "")
    assert traffic(fake, chat_endpoint(ctx)) == {"v01": 100}
    assert "v02" not in fake.endpoints[chat_endpoint(ctx)].deployments


def test_exam_promotes_within_tolerance(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """promotion=exam: a score within the tolerance of the live one is promoted."""
    fake.answers["v01"] = "a"
    release_one(ctx, fake, RUN1)
    fake.answers["v02"] = "a"
    rec = release_one(with_settings(ctx, gate_tolerance=0.0), fake, RUN2, eval_loss=0.9)
    assert rec.state is RunState.PROMOTED
    assert rec.release.exam is not None
    assert rec.release.exam["champion_run"] == RUN1


def test_manual_promotion_holds_with_the_deployment_ready(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """promotion=manual: smoke-tested, then HELD at 0 % traffic for a person to promote."""
    manual = with_settings(ctx, promotion="manual")
    rec = release_one(manual, fake, RUN1)
    assert rec.state is RunState.HELD
    assert "manual" in (rec.reason or "")
    assert "v01" in fake.endpoints[chat_endpoint(ctx)].deployments
    assert traffic(fake, chat_endpoint(ctx)) == {}


class AllowListPlatform(FakePlatform):
    """A base model that states its inference allow-list in system metadata (Phi-3 style)."""

    def get_base_model(self, name: str, version_or_label: str = "latest") -> BaseModelInfo:
        super().get_base_model(name, version_or_label)
        return BaseModelInfo(
            id=f"azureml://registries/azureml/models/{name}/versions/15", name=name,
            version="15",
            system_metadata={
                "supportedComputes": {"inferenceComputes": ["Standard_NC24ads_A100_v4"]}
            },
        )


def test_instance_type_off_the_allow_list_holds_before_deploying(clients: Clients) -> None:
    """An inference SKU the base model does not allow is a clear HELD reason, no deployment."""
    fake = AllowListPlatform()
    clients.use_platform(fake)
    ctx = with_settings(
        ReleaseContext.from_clients(clients), inference_instance_type="Standard_D2s_v3"
    )
    rec = release_one(ctx, fake, RUN1)
    assert rec.state is RunState.HELD
    assert "Standard_D2s_v3 is not on the inference allow-list" in (rec.reason or "")
    assert fake.calls["deploy"] == 0


def test_allowed_instance_type_deploys(clients: Clients) -> None:
    """The allow-list check compares case-insensitively and lets a listed SKU through."""
    fake = AllowListPlatform()
    clients.use_platform(fake)
    ctx = with_settings(
        ReleaseContext.from_clients(clients), inference_instance_type="standard_nc24ads_a100_v4"
    )
    assert release_one(ctx, fake, RUN1).state is RunState.PROMOTED


def test_one_release_per_line_at_a_time(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """Two runs finishing together: the second waits for the line, then replaces the first."""
    seed(ctx, fake, RUN1, eval_loss=0.5)
    seed(ctx, fake, RUN2, eval_loss=0.4)
    handle_job_event(ctx, completed(RUN1))
    handle_job_event(ctx, completed(RUN2))
    assert get(ctx, RUN1).state is RunState.DEPLOYING
    assert get(ctx, RUN2).state is RunState.TRAINED  # waits: the line is RUN1's
    finish(ctx)
    assert get(ctx, RUN1).state is RunState.RETIRED
    assert get(ctx, RUN2).state is RunState.PROMOTED
    assert traffic(fake, chat_endpoint(ctx)) == {"v02": 100}


def test_failed_job_records_the_error_and_writes_the_report(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """Failed → FAILED with Azure ML's error message, in the ledger and in run.json."""
    rec = seed(ctx, fake, RUN1, status="Failed")
    fake.set_job(RUN1, "Failed", error="CUDA out of memory on node 0")
    out = handle_job_event(ctx, completed(RUN1, status="Failed"))
    assert out is not None
    assert out.state is RunState.FAILED
    assert out.reason == "job Failed: CUDA out of memory on node 0"
    report = ctx.storage.read_json(
        BlobRef(ctx.settings.reports_container, f"{LINE}/{rec.get('name')}/run.json")
    )
    assert report["state"] == "FAILED"
    assert report["reason"] == out.reason


def test_reconciler_finds_runs_whose_events_never_came(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """No events at all: the reconciler asks Azure ML and takes the run to PROMOTED / FAILED."""
    seed(ctx, fake, RUN1)
    seed(ctx, fake, RUN2, status="Canceled")
    fake.set_job(RUN2, "Canceled", error="canceled by user")
    finish(ctx)
    assert get(ctx, RUN1).state is RunState.PROMOTED
    assert get(ctx, RUN2).state is RunState.FAILED
    assert get(ctx, RUN2).reason == "job Canceled: canceled by user"


def test_reconciler_marks_running_jobs_training(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """A SUBMITTED run whose job runs moves to TRAINING; nothing else happens."""
    seed(ctx, fake, RUN1, status="Running")
    reconcile(ctx)
    assert get(ctx, RUN1).state is RunState.TRAINING
    assert fake.calls["register_model"] == 0


def test_running_after_completed_does_not_move_back(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """A late Running event for a released run changes nothing."""
    release_one(ctx, fake, RUN1)
    before = get(ctx, RUN1)
    handle_job_event(ctx, completed(RUN1, status="Running"))
    after = get(ctx, RUN1)
    assert after.state is RunState.PROMOTED
    assert after.etag == before.etag


def test_deployment_waits_while_provisioning(clients: Clients) -> None:
    """Slow provisioning: each pass polls, records the wait once, and returns without blocking."""
    fake = FakePlatform(polls_to_provision=3)
    clients.use_platform(fake)
    ctx = ReleaseContext.from_clients(clients)
    seed(ctx, fake, RUN1)
    handle_job_event(ctx, completed(RUN1))
    started = get(ctx, RUN1)
    assert started.state is RunState.DEPLOYING
    for _ in range(2):
        advance_release(ctx, get(ctx, RUN1))
    rec = get(ctx, RUN1)
    assert rec.state is RunState.DEPLOYING
    assert rec.get("endpoint_state") == ProvisioningState.CREATING
    assert len(rec.timeline) == len(started.timeline)  # polling adds nothing while unchanged
    finish(ctx)
    assert get(ctx, RUN1).state is RunState.PROMOTED


def test_endpoint_deleted_mid_release_is_recreated(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """If the endpoint vanishes while the run waits in DEPLOYING, it is started again."""
    seed(ctx, fake, RUN1)
    handle_job_event(ctx, completed(RUN1))
    fake.endpoints.clear()
    finish(ctx)
    assert get(ctx, RUN1).state is RunState.PROMOTED


def test_a_step_failing_every_time_ends_held(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """A permanent refusal is not retried forever: after a few attempts the run is HELD."""
    seed(ctx, fake, RUN1)
    for _ in range(5):
        fake.fail_once("register_model", PlatformError("model name is reserved"))
    for _ in range(4):
        with contextlib.suppress(PlatformError):
            handle_job_event(ctx, completed(RUN1))
    rec = get(ctx, RUN1)
    assert fake.fired_count("register_model") == 3  # three refusals, then it gave up
    assert rec.state is RunState.HELD
    assert "TRAINED step failed 3 times: model name is reserved" in (rec.reason or "")



def test_ending_a_release_starts_the_next_waiting_run(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """When the line's release ends (here: HELD), the run waiting for the line starts at once."""
    seed(ctx, fake, RUN1)
    seed(ctx, fake, RUN2)
    handle_job_event(ctx, completed(RUN1))
    handle_job_event(ctx, completed(RUN2))
    assert get(ctx, RUN2).state is RunState.TRAINED
    fake.answers["v01"] = ""
    advance_release(ctx, get(ctx, RUN1))
    assert get(ctx, RUN1).state is RunState.HELD
    assert get(ctx, RUN2).state is RunState.DEPLOYING


def test_a_crashed_workers_lease_expires(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """A worker lock past its expiry (the worker died) does not block the line."""
    seed(ctx, fake, RUN1)
    ctx.ledger.claim(
        f"release-{LINE}", holder=RUN1, worker="dead-worker",
        worker_until=(ctx.now() - timedelta(minutes=1)).isoformat(),
    )
    handle_job_event(ctx, completed(RUN1))
    assert get(ctx, RUN1).state is RunState.DEPLOYING


def test_a_live_workers_lease_is_respected(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """While another worker drives the line's release, a second one changes nothing."""
    seed(ctx, fake, RUN1)
    ctx.ledger.claim(
        f"release-{LINE}", holder=RUN1, worker="busy-worker",
        worker_until=(ctx.now() + timedelta(minutes=5)).isoformat(),
    )
    handle_job_event(ctx, completed(RUN1))
    assert get(ctx, RUN1).state is RunState.TRAINED
    assert fake.calls["register_model"] == 0


def test_deploy_failing_every_time_holds_and_removes_the_deployment(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """A deployment step that keeps failing ends HELD without leaving a paid deployment behind."""
    seed(ctx, fake, RUN1)
    handle_job_event(ctx, completed(RUN1))  # endpoint + deployment started, waiting
    for _ in range(3):
        fake.fail_once("deploy", PlatformError("quota exceeded for Standard_NC6s_v3"))
        with contextlib.suppress(PlatformError):
            advance_release(ctx, get(ctx, RUN1))
    fake.assert_faults_fired()
    rec = get(ctx, RUN1)
    assert rec.state is RunState.HELD
    assert "quota exceeded" in (rec.reason or "")
    assert fake.endpoints[chat_endpoint(ctx)].deployments == {}
