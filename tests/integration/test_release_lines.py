"""Lines that differ only in case or punctuation release side by side, never into each other."""

from __future__ import annotations

import contextlib
import json

import pytest

from shared.errors import PlatformError
from shared.events import JobEvent
from shared.ledger import IN_RELEASE, RunRecord, RunState
from shared.naming import (
    LINE_TAG,
    MANAGED_TAG,
    RUN_TAG,
    endpoint_name,
    endpoint_scope,
    model_name,
)
from shared.platform.port import DeploymentSpec, JobStatus, ModelVersionInfo
from shared.release import ReleaseContext, handle_job_event, reconcile
from shared.release.steps import MAX_STEP_FAILURES
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform

pytestmark = pytest.mark.integration


def seed(ctx: ReleaseContext, fake: FakePlatform, line: str, run_id: str) -> JobEvent:
    """Seed a completed run of ``line`` (ledger, job, validation examples); its job event."""
    ctx.ledger.create(line, run_id, RunState.SUBMITTED, name=f"batch-{run_id[-4:]}",
                      blob=f"incoming/{line}/batch.jsonl", dataset_sha256="ab" * 32)
    fake.set_job(run_id, "Completed", metrics={"eval_loss": 0.5}, tags={RUN_TAG: run_id})
    example = {"messages": [{"role": "user", "content": "q"},
                            {"role": "assistant", "content": "a"}]}
    ctx.storage.write_bytes(BlobRef(ctx.settings.prepared_container, f"{run_id}/validation.jsonl"),
                            json.dumps(example).encode())
    return JobEvent(event_id=f"evt-{run_id}", event_type="RunCompleted", run_id=run_id,
                    status=JobStatus.COMPLETED, tags={LINE_TAG: line})


def release(ctx: ReleaseContext, fake: FakePlatform, line: str, run_id: str) -> RunRecord:
    """Seed a completed run of ``line`` and release it."""
    event = seed(ctx, fake, line, run_id)
    for _ in range(10):  # deliveries, redelivered while a step raises, then the reconciler
        with contextlib.suppress(PlatformError):
            handle_job_event(ctx, event)
            reconcile(ctx)
        if not ctx.ledger.list(states=IN_RELEASE):
            break
    return ctx.ledger.get(line, run_id)


def test_support_and_capital_support_get_their_own_endpoint_and_model(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """Two lines a slug would confuse each get their own endpoint and model; the second
    release leaves the first line's live deployment alone."""
    lower = release(ctx, fake, "support", "tl-support-000000000001-aaaaaaaa")
    upper = release(ctx, fake, "Support", "tl-support--x-000000000001-bbbbbbbb")
    assert lower.state is RunState.PROMOTED, lower.reason
    assert upper.state is RunState.PROMOTED, upper.reason
    scope = endpoint_scope(ctx.settings)
    assert lower.get("endpoint") == endpoint_name("support", scope)
    assert str(lower.get("endpoint")).startswith("tl-support-")
    assert upper.get("endpoint") == endpoint_name("Support", scope) != lower.get("endpoint")
    assert lower.get("model_name") != upper.get("model_name")
    assert {name for name, _ in fake.models} == {model_name("support"), model_name("Support")}
    for line, rec in (("support", lower), ("Support", upper)):
        endpoint = fake.endpoints[str(rec.get("endpoint"))].info
        assert endpoint.tags[LINE_TAG] == line
        assert {k: v for k, v in endpoint.traffic.items() if v} == {str(rec.get("deployment")): 100}


def test_a_release_never_reuses_an_endpoint_another_line_owns(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """If the line's endpoint name is already claimed by another line's tag, the release is
    refused with the reason and the other line's endpoint is untouched."""
    squatted = endpoint_name("support", endpoint_scope(ctx.settings))
    fake.ensure_endpoint(squatted, tags={MANAGED_TAG: "true", LINE_TAG: "other"})
    rec = release(ctx, fake, "support", "tl-support-000000000001-aaaaaaaa")
    assert rec.state is RunState.HELD
    assert "belongs to line 'other'" in (rec.reason or ""), rec.reason
    assert fake.endpoints[squatted].deployments == {}
    assert fake.endpoints[squatted].info.tags[LINE_TAG] == "other"


def test_a_name_another_line_owns_holds_the_run_at_the_first_refusal(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """The ownership refusal is permanent: the first refused step holds the run with the
    refusal as its reason (no retries), and the delivery itself does not fail."""
    squatted = endpoint_name("support", endpoint_scope(ctx.settings))
    fake.ensure_endpoint(squatted, tags={MANAGED_TAG: "true", LINE_TAG: "other"})
    tried = fake.calls["ensure_endpoint"]
    run_id = "tl-support-000000000001-aaaaaaaa"
    handle_job_event(ctx, seed(ctx, fake, "support", run_id))
    rec = ctx.ledger.get("support", run_id)
    assert rec.state is RunState.HELD, rec.reason
    assert (rec.reason or "").startswith("REGISTERED step refused: "), rec.reason
    assert "belongs to line 'other'" in (rec.reason or ""), rec.reason
    assert fake.calls["ensure_endpoint"] - tried == 1
    assert fake.endpoints[squatted].info.tags[LINE_TAG] == "other"


def test_a_deploy_refused_by_ownership_deletes_nothing_on_the_other_lines_endpoint(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """When the line's endpoint has been taken over by another line while the run waits in
    DEPLOYING, the run is HELD and the other line's deployment of the same name is left alone
    (the held run's clean-up must not delete on an endpoint it does not own)."""
    run_id = "tl-support-000000000001-aaaaaaaa"
    handle_job_event(ctx, seed(ctx, fake, "support", run_id))
    waiting = ctx.ledger.get("support", run_id)
    assert waiting.state is RunState.DEPLOYING, waiting.reason
    endpoint, deployment = str(waiting.release.endpoint), str(waiting.release.deployment)
    # The endpoint went (swept) and another line whose names collide created it again, with
    # its own deployment of the same name, still at 0 % (mid-release).
    del fake.endpoints[endpoint]
    other = {MANAGED_TAG: "true", LINE_TAG: "other"}
    fake.ensure_endpoint(endpoint, tags=other)
    theirs = ModelVersionInfo(name="other-model", version="1", id="other-model:1",
                              tags={LINE_TAG: "other"})
    fake.deploy(DeploymentSpec(endpoint=endpoint, name=deployment, model=theirs,
                               instance_type="Standard_DS3_v2", tags={LINE_TAG: "other"}))
    for _ in range(MAX_STEP_FAILURES + 1):
        with contextlib.suppress(PlatformError):
            reconcile(ctx)
    rec = ctx.ledger.get("support", run_id)
    assert rec.state is RunState.HELD, rec.reason
    assert "belongs to line 'other'" in (rec.reason or ""), rec.reason
    assert fake.endpoints[endpoint].deployments[deployment].model_id == "other-model:1"
    assert fake.calls["delete_deployment"] == 0
