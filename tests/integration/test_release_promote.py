"""Promoting a HELD run by hand (`tuneloop promote`) on Azurite + FakePlatform."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import pytest

from cli.main import build_parser
from shared.clients import Clients
from shared.errors import NotFoundError, NotPromotableError, PlatformError
from shared.events import JobEvent
from shared.ledger import IN_RELEASE, RunRecord, RunState
from shared.release import ReleaseContext, handle_job_event, promote_held, reconcile
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform
from tests.integration.conftest import with_settings

pytestmark = pytest.mark.integration

LINE = "chat"
RUN1 = "tl-chat-000000000001-aaaaaaaa"
RUN2 = "tl-chat-000000000002-bbbbbbbb"
RUN3 = "tl-chat-000000000003-cccccccc"


def release(
    ctx: ReleaseContext, fake: FakePlatform, run_id: str, *, eval_loss: float = 0.5
) -> RunRecord:
    """Seed a SUBMITTED run with a completed job and validation examples, then release it."""
    name = f"batch-{run_id[-4:]}"
    ctx.ledger.create(
        LINE, run_id, RunState.SUBMITTED, name=name, blob=f"incoming/{LINE}/{name}.jsonl",
        dataset_sha256="ab" * 32,
    )
    fake.set_job(run_id, "Completed", metrics={"eval_loss": eval_loss, "train_loss": 0.7},
                 tags={"tuneloop_run": run_id})
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": "a"}]} for i in range(3)]
    ctx.storage.write_bytes(
        BlobRef(ctx.settings.prepared_container, f"{run_id}/validation.jsonl"),
        "\n".join(json.dumps(r) for r in rows).encode(),
    )
    handle_job_event(ctx, JobEvent(
        event_id=f"evt-{run_id}", event_type="RunCompleted", run_id=run_id,
        status="Completed", tags={"tuneloop_line": LINE},
    ))
    for _ in range(10):
        if not ctx.ledger.list(states=IN_RELEASE):
            break
        reconcile(ctx)
    return ctx.ledger.get(LINE, run_id)


def the_endpoint(fake: FakePlatform) -> str:
    """The line's one endpoint (its name carries the workspace/home key: shared.naming)."""
    (name,) = fake.endpoints
    return name


def traffic(fake: FakePlatform) -> Mapping[str, int]:
    return {k: v for k, v in fake.endpoints[the_endpoint(fake)].info.traffic.items() if v}


def test_manually_held_run_is_promoted(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """A run held by promotion=manual takes 100 % and ends PROMOTED; its hold reason is kept."""
    held = release(with_settings(ctx, promotion="manual"), fake, RUN1)
    assert held.state is RunState.HELD
    rec = promote_held(ctx, RUN1, line=LINE)
    assert rec.state is RunState.PROMOTED
    assert traffic(fake) == {"v01": 100}
    assert rec.reason is None
    assert "manual" in str(rec.get("held_reason"))
    assert rec.get("scoring_uri") == f"https://{the_endpoint(fake)}.fake/score"
    assert [e["state"] for e in rec.timeline][-3:] == ["HELD", "HELD", "PROMOTED"]
    report = ctx.storage.read_json(
        BlobRef(ctx.settings.reports_container, f"{LINE}/{rec.get('name')}/run.json")
    )
    assert report["state"] == "PROMOTED"


def test_promotion_replaces_the_live_run(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """The held run's deployment takes all traffic, the live one's is deleted, it is RETIRED."""
    assert release(ctx, fake, RUN1).state is RunState.PROMOTED
    assert release(with_settings(ctx, promotion="manual"), fake, RUN2).state is RunState.HELD
    assert traffic(fake) == {"v01": 100}
    rec = promote_held(ctx, RUN2)  # the line is found from the run id
    assert rec.state is RunState.PROMOTED
    assert traffic(fake) == {"v02": 100}
    assert set(fake.endpoints[the_endpoint(fake)].deployments) == {"v02"}
    old = ctx.ledger.get(LINE, RUN1)
    assert old.state is RunState.RETIRED
    assert old.reason == f"superseded by {RUN2}"
    assert rec.get("previous_run") == RUN1


def test_promoting_twice_changes_nothing(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """A second promote of a PROMOTED run returns it without a platform call or ledger write."""
    release(with_settings(ctx, promotion="manual"), fake, RUN1)
    first = promote_held(ctx, RUN1, line=LINE)
    calls = dict(fake.calls)
    second = promote_held(ctx, RUN1, line=LINE)
    assert (second.state, second.etag, second.timeline) == (first.state, first.etag,
                                                            first.timeline)
    assert dict(fake.calls) == calls


def test_interrupted_promotion_resumes(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """A failure after traffic moved leaves the run HELD; promoting again finishes the job."""
    release(ctx, fake, RUN1)
    release(with_settings(ctx, promotion="manual"), fake, RUN2)
    fake.fail_once("delete_deployment", PlatformError("endpoint busy"))
    with pytest.raises(PlatformError, match="endpoint busy"):
        promote_held(ctx, RUN2, line=LINE)
    fake.assert_faults_fired()
    mid = ctx.ledger.get(LINE, RUN2)
    assert mid.state is RunState.HELD
    assert (mid.get("promoting"), mid.get("previous_run")) == (True, RUN1)
    assert traffic(fake) == {"v02": 100}
    rec = promote_held(ctx, RUN2, line=LINE)
    assert rec.state is RunState.PROMOTED
    assert set(fake.endpoints[the_endpoint(fake)].deployments) == {"v02"}
    assert ctx.ledger.get(LINE, RUN1).state is RunState.RETIRED


def test_run_not_held_is_refused(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """Only a HELD run is promoted by hand; others are refused naming their state."""
    release(ctx, fake, RUN1)
    ctx.ledger.create(LINE, RUN2, RunState.SUBMITTED, name="batch-2")
    with pytest.raises(NotPromotableError, match=r"is SUBMITTED, not HELD") as info:
        promote_held(ctx, RUN2, line=LINE)
    assert info.value.code == "not_promotable"
    assert ctx.ledger.get(LINE, RUN2).state is RunState.SUBMITTED
    with pytest.raises(NotFoundError):
        promote_held(ctx, "tl-chat-never-seen", line=LINE)


def test_held_run_whose_deployment_is_gone_is_deployed_again(
    ctx: ReleaseContext, fake: FakePlatform
) -> None:
    """The exam's hold deleted the deployment: `promote` deploys it again and says to come
    back while it is created (the live run keeps serving), then promotes it."""
    fake.answers["v01"] = "a"
    release(ctx, fake, RUN1)
    fake.answers["v02"] = "nothing like the reference"
    assert release(ctx, fake, RUN2).state is RunState.HELD
    with pytest.raises(NotPromotableError, match="v02 was deleted when it was held"):
        promote_held(ctx, RUN2, line=LINE)
    assert traffic(fake) == {"v01": 100}
    assert ctx.ledger.get(LINE, RUN2).state is RunState.HELD
    assert promote_held(ctx, RUN2, line=LINE).state is RunState.PROMOTED
    assert traffic(fake) == {"v02": 100}
    assert ctx.ledger.get(LINE, RUN1).state is RunState.RETIRED


def test_line_with_a_release_under_way_is_refused(ctx: ReleaseContext, fake: FakePlatform) -> None:
    """While another run of the line is mid-release, promotion waits (refused, retry later)."""
    release(with_settings(ctx, promotion="manual"), fake, RUN1)
    fake.polls_to_provision = 100  # RUN3's deployment stays Creating
    assert release(ctx, fake, RUN3).state is RunState.DEPLOYING
    with pytest.raises(NotPromotableError, match="busy"):
        promote_held(ctx, RUN1, line=LINE)
    assert ctx.ledger.get(LINE, RUN1).state is RunState.HELD


def test_cli_promote_prints_where_the_run_serves(
    ctx: ReleaseContext, fake: FakePlatform, clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tuneloop promote RUN_ID` exits 0 with one line; a refusal exits 1 with code and hint."""
    release(with_settings(ctx, promotion="manual"), fake, RUN1)
    args = build_parser().parse_args(["promote", RUN1, "--line", LINE])
    out = io.StringIO()
    assert args._module.run(args, clients=clients, out=out) == 0
    assert out.getvalue() == (
        f"{RUN1} PROMOTED: v01 takes 100 % of {the_endpoint(fake)} "
        f"(https://{the_endpoint(fake)}.fake/score)\n"
    )
    ctx.ledger.create(LINE, RUN2, RunState.TRAINING, name="batch-2")
    args = build_parser().parse_args(["promote", RUN2, "--json"])
    assert args._module.run(args, clients=clients, out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert f"tuneloop promote: not_promotable: run {RUN2} on line {LINE} is TRAINING" in err
    assert "tuneloop status --line chat" in err
