"""`tuneloop retract` on Azurite + FakePlatform: the drop leaves the line's corpus, its stored
copies are deleted, the models trained on it are tagged, the line retrains without it through
the same gate (once), an in-flight run that trains on it is HELD before promotion, and
`status --json` shows what each run trains on."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from cli.commands import retract as retract_command
from cli.commands import status as status_command
from cli.main import main
from shared.clients import Clients
from shared.corpus import retracted, retractions
from shared.errors import NotPromotableError
from shared.ledger import LedgerPort, RunRecord, RunState
from shared.naming import LINE_TAG, line_key, model_name
from shared.platform.port import FinetunePlan, Platform
from shared.release import ReleaseContext, promote_held
from shared.retract import RETRACTED_TAG, Retraction
from shared.settings import Settings, load_settings
from shared.storage import BlobRef, Storage
from tests.fakes.platform import FakePlatform
from tests.integration.conftest import with_settings
from tests.integration.test_ingest import valid_dataset
from tests.integration.test_release import finish

pytestmark = pytest.mark.integration

LINE = "support"


@dataclass(frozen=True)
class Seeded:
    """A line with two versions: v1 trained on drop 1 (RETIRED), v2 on drops 1 + 2 (live)."""

    d1: dict[str, Any]
    d2: dict[str, Any]
    r1: str
    r2: str


def _drop(storage: Storage, settings: Settings, name: str, start: int) -> dict[str, Any]:
    """Drop ``name`` into incoming and store its per-drop sides (8 train, 2 eval examples)."""
    data = valid_dataset(10, start=start)
    sha = hashlib.sha256(data).hexdigest()
    storage.write_bytes(BlobRef(settings.incoming_container, f"{LINE}/{name}.jsonl"), data)
    lines = data.splitlines(keepends=True)
    side = f"_drops/{line_key(LINE)}/{sha}"
    storage.write_bytes(BlobRef(settings.prepared_container, f"{side}/train.jsonl"),
                        b"".join(lines[:8]))
    storage.write_bytes(BlobRef(settings.prepared_container, f"{side}/eval.jsonl"),
                        b"".join(lines[8:]))
    return {"name": name, "sha256": sha, "train_examples": 8, "eval_examples": 2}


def _run(
    ledger: LedgerPort, storage: Storage, platform: Platform, settings: Settings, run_id: str,
    state: RunState, drops: list[dict[str, Any]], *, version: str | None = None,
    promoted: bool = False,
) -> RunRecord:
    """A run as ingest and the release leave it, its prepared files and registered model."""
    new = drops[-1]
    blob = f"{settings.incoming_container}/{LINE}/{new['name']}.jsonl"
    etag = storage.properties(BlobRef(settings.incoming_container, f"{LINE}/{new['name']}.jsonl"))
    release: dict[str, Any] = {}
    if version:
        platform.register_model(model_name(LINE), version, job_name=run_id,
                                tags={LINE_TAG: LINE})
        release = {"model_name": model_name(LINE), "model_version": version,
                   "model_id": f"azureml:{model_name(LINE)}:{version}"}
    if promoted:
        release["promoted_at"] = datetime.now(UTC).isoformat()
    for leaf in ("train", "validation"):
        storage.write_bytes(BlobRef(settings.prepared_container, f"{run_id}/{leaf}.jsonl"), b"{}\n")
    data = {
        "mode": "cumulative", "start": "base", "start_model": "local:tiny",
        "drops": [{**d, "run_id": run_id} for d in drops],
        "train_examples": 8 * len(drops), "eval_examples": 2 * len(drops),
    }
    return ledger.create(
        LINE, run_id, state, name=new["name"], blob=blob, etag=str(etag["etag"]),
        dataset_sha256=new["sha256"], data=data,
        train_blob=f"{settings.prepared_container}/{run_id}/train.jsonl",
        validation_blob=f"{settings.prepared_container}/{run_id}/validation.jsonl",
        **release,
    )


def seed(ledger: LedgerPort, storage: Storage, platform: Platform, settings: Settings) -> Seeded:
    d1 = _drop(storage, settings, "support-1", 0)
    d2 = _drop(storage, settings, "support-2", 100)
    r1 = _run(ledger, storage, platform, settings, "tl-support-r1", RunState.RETIRED, [d1],
              version="1")
    r2 = _run(ledger, storage, platform, settings, "tl-support-r2", RunState.PROMOTED, [d1, d2],
              version="2", promoted=True)
    return Seeded(d1, d2, r1.run_id, r2.run_id)


def retraction(clients: Clients, fake: FakePlatform) -> Retraction:
    """The retraction ``tuneloop retract`` wires (the real planner), on the fake platform."""
    clients.use_platform(fake)
    return Retraction.from_clients(clients)


def blobs(clients: Clients, container: str) -> set[str]:
    return set(clients.storage.list_names(container))


# --- the whole retraction -------------------------------------------------------------------


def test_retract_deletes_copies_tags_models_and_retrains_without_it(
    clients: Clients, fake: FakePlatform
) -> None:
    """Retracting drop 2: recorded; its incoming blob, drop sides and the prepared files of the
    run trained on it are gone (drop 1's stay); v2 is tagged (v1 is not); a retrain on drop 1
    alone is SUBMITTED, its train file built from drop 1's train side."""
    s = seed(clients.ledger, clients.storage, fake, clients.settings)
    st = clients.settings
    result = retraction(clients, fake).retract(LINE, "support-2", by="test", reason="bad facts")

    assert s.d2["sha256"] in retracted(clients.ledger, LINE)
    assert result.drop.sha256 == s.d2["sha256"]
    side2 = f"_drops/{line_key(LINE)}/{s.d2['sha256']}"
    side1 = f"_drops/{line_key(LINE)}/{s.d1['sha256']}"
    assert blobs(clients, st.incoming_container) == {f"{LINE}/support-1.jsonl"}
    prepared = blobs(clients, st.prepared_container)
    assert not {n for n in prepared if n.startswith((side2, f"{s.r2}/"))}
    assert {f"{side1}/train.jsonl", f"{side1}/eval.jsonl", f"{s.r1}/train.jsonl"} <= prepared

    assert fake.models[(model_name(LINE), "2")].tags[RETRACTED_TAG] == s.d2["sha256"]
    assert RETRACTED_TAG not in fake.models[(model_name(LINE), "1")].tags
    assert result.tagged == [f"{model_name(LINE)}:2"]

    assert result.retrain is not None
    assert result.retrain_created
    retrain = clients.ledger.get(LINE, result.retrain.run_id)
    assert retrain.state == RunState.SUBMITTED
    assert [d["sha256"] for d in retrain.get("data")["drops"]] == [s.d1["sha256"]]
    assert retrain.get("retrain") == {"of": s.r2, "without": [s.d2["sha256"]]}
    assert list(fake.jobs) == [retrain.run_id]
    plan: FinetunePlan = fake.plans[retrain.run_id]
    train = clients.storage.read_chunks(BlobRef(st.prepared_container, plan.train_blob))
    wanted = clients.storage.read_chunks(BlobRef(st.prepared_container, f"{side1}/train.jsonl"))
    assert sorted(b"".join(train).splitlines()) == sorted(b"".join(wanted).splitlines())
    assert "retracted support-2" in result.summary()[0]


def test_retracting_again_is_a_no_op_that_says_so(clients: Clients, fake: FakePlatform) -> None:
    """A second retract (by sha256 this time) finds everything done: no new run, no second
    job, nothing deleted or tagged, and it says so."""
    s = seed(clients.ledger, clients.storage, fake, clients.settings)
    first = retraction(clients, fake).retract(LINE, "support-2")
    again = retraction(clients, fake).retract(LINE, s.d2["sha256"])
    assert again.already
    assert again.nothing_done
    assert again.summary()[0].endswith("was already retracted; nothing left to do")
    assert again.retrain is not None
    assert first.retrain is not None
    assert again.retrain.run_id == first.retrain.run_id
    assert fake.calls["submit_finetune"] == 1
    assert len(clients.ledger.list(line=LINE)) == 3  # r1, r2 and one retrain


def test_the_cli_prints_json_and_status_shows_what_each_run_trains_on(
    clients: Clients, fake: FakePlatform
) -> None:
    """`tuneloop retract --json` reports the drop and the retrain; `status --json` then lists
    each run's state, exam (null: not examined) and data drops."""
    s = seed(clients.ledger, clients.storage, fake, clients.settings)
    clients.use_platform(fake)
    out = io.StringIO()
    args = argparse.Namespace(dataset=s.d2["sha256"][:12], line=LINE, reason=None, json=True)
    assert retract_command.run(args, clients=clients, out=out) == 0
    done = json.loads(out.getvalue())
    assert done["dataset"] == {"name": "support-2", "sha256": s.d2["sha256"]}
    assert done["retrain"]["state"] == "SUBMITTED"

    out = io.StringIO()
    args = argparse.Namespace(line=LINE, json=True)
    assert status_command.run(args, clients=clients, out=out) == 0
    runs = {r["run_id"]: r for r in json.loads(out.getvalue())}
    retrain = runs[done["retrain"]["run_id"]]
    assert retrain["state"] == "SUBMITTED"
    assert retrain["exam"] is None
    assert [(d["name"], d["sha256"], d["train_examples"]) for d in retrain["data"]["drops"]] == [
        ("support-1", s.d1["sha256"], 8)
    ]
    assert [d["name"] for d in runs[s.r2]["data"]["drops"]] == ["support-1", "support-2"]
    for run in runs.values():
        assert {"state", "exam", "data"} <= set(run)
        assert {"drops", "train_examples", "eval_examples", "start_model"} <= set(run["data"])


def test_an_unknown_dataset_is_one_line_exit_1(
    clients: Clients, fake: FakePlatform, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name no run of the line knows: one line naming the line's datasets, exit 1."""
    seed(clients.ledger, clients.storage, fake, clients.settings)
    args = argparse.Namespace(dataset="support-9", line=LINE, reason=None, json=False)
    assert retract_command.run(args, clients=clients, out=io.StringIO()) == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("tuneloop retract: not_found: line support has no dataset")
    assert "support-1, support-2" in lines[0]


def test_a_line_left_without_data_is_recorded_tagged_and_said(
    clients: Clients, fake: FakePlatform
) -> None:
    """Retracting the only drop of the live model: no run; the retraction is recorded, the
    live model tagged, and the result says the line has no data left."""
    st = clients.settings
    d1 = _drop(clients.storage, st, "support-1", 0)
    _run(clients.ledger, clients.storage, fake, st, "tl-support-r1", RunState.PROMOTED, [d1],
         version="1", promoted=True)
    result = retraction(clients, fake).retract(LINE, "support-1")
    assert result.no_data
    assert result.retrain is None
    assert not fake.jobs
    assert d1["sha256"] in retracted(clients.ledger, LINE)
    assert fake.models[(model_name(LINE), "1")].tags[RETRACTED_TAG] == d1["sha256"]
    assert any("has no data left: no retrain" in line for line in result.summary())


# --- an in-flight run that trains on it -----------------------------------------------------


def test_an_in_flight_run_on_retracted_data_is_held_before_promotion(
    ctx: ReleaseContext, clients: Clients, fake: FakePlatform
) -> None:
    """A run training on drops 1 + 3 when drop 3 is retracted keeps its files while it trains,
    is HELD at the DEPLOYED step (deployment deleted, model tagged), `tuneloop promote` refuses
    it, and a second retract then deletes its files."""
    ctx = with_settings(ctx, promotion="auto")
    st = clients.settings
    d1 = _drop(clients.storage, st, "support-1", 0)
    live = _run(clients.ledger, clients.storage, fake, st, "tl-support-r1", RunState.PROMOTED,
                [d1], version="1", promoted=True)
    d3 = _drop(clients.storage, st, "support-3", 200)
    new = _run(clients.ledger, clients.storage, fake, st, "tl-support-r3", RunState.SUBMITTED,
               [d1, d3])
    fake.complete(new.run_id)

    first = retraction(clients, fake).retract(LINE, "support-3")
    assert first.retrain is None  # the live run never trained on it
    assert any(new.run_id in k for k in first.kept)
    assert clients.storage.exists(BlobRef(st.prepared_container, f"{new.run_id}/train.jsonl"))

    finish(ctx)
    held = clients.ledger.get(LINE, new.run_id)
    assert held.state == RunState.HELD
    assert "retracted data in its corpus: support-3" in (held.reason or "")
    endpoint, deployment = held.release.endpoint, held.release.deployment
    assert endpoint is not None
    assert deployment not in fake.endpoints[endpoint].deployments
    assert clients.ledger.get(LINE, live.run_id).state == RunState.PROMOTED
    version = held.release.model_version
    assert fake.models[(model_name(LINE), str(version))].tags[RETRACTED_TAG] == d3["sha256"]

    with pytest.raises(NotPromotableError, match="trained on retracted data: support-3"):
        promote_held(ctx, new.run_id)  # not by hand either (it would deploy it again)
    assert deployment not in fake.endpoints[endpoint].deployments

    again = retraction(clients, fake).retract(LINE, "support-3")
    assert again.already
    assert f"{st.prepared_container}/{new.run_id}/train.jsonl" in again.deleted
    assert not again.nothing_done


def test_a_run_without_retracted_data_is_not_held(
    ctx: ReleaseContext, clients: Clients, fake: FakePlatform
) -> None:
    """The check holds only runs whose corpus has a retracted drop: drop 1's run is promoted
    while another drop of the line is retracted."""
    ctx = with_settings(ctx, promotion="auto")
    st = clients.settings
    d1 = _drop(clients.storage, st, "support-1", 0)
    d2 = _drop(clients.storage, st, "support-2", 100)
    _run(clients.ledger, clients.storage, fake, st, "tl-support-r2", RunState.REJECTED, [d2])
    new = _run(clients.ledger, clients.storage, fake, st, "tl-support-r1", RunState.SUBMITTED,
               [d1])
    retraction(clients, fake).retract(LINE, "support-2")
    fake.complete(new.run_id)
    finish(ctx)
    assert clients.ledger.get(LINE, new.run_id).state == RunState.PROMOTED


def test_tuneloop_retract_through_main_finds_storage_like_the_other_commands(
    clients: Clients, fake: FakePlatform, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tuneloop retract --line L NAME` (cli.main, settings from the environment) retracts and
    prints what it did; the same again says there is nothing left to do."""
    s = seed(clients.ledger, clients.storage, fake, clients.settings)
    st = clients.settings
    for name, value in {
        "TUNELOOP_STORAGE_CONNECTION_STRING": st.storage_connection_string,
        "TUNELOOP_HOME": str(st.home), "TUNELOOP_LEDGER_TABLE": st.ledger_table,
        "TUNELOOP_INCOMING_CONTAINER": st.incoming_container,
        "TUNELOOP_PREPARED_CONTAINER": st.prepared_container,
        "TUNELOOP_REPORTS_CONTAINER": st.reports_container,
        "TUNELOOP_REJECTED_CONTAINER": st.rejected_container, "TUNELOOP_PLATFORM": "local",
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(Clients, "platform", property(lambda self: fake))
    load_settings.cache_clear()
    try:
        assert main(["retract", "--line", LINE, "support-2", "--reason", "wrong facts"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"retracted support-2 ({s.d2['sha256'][:12]}) on line {LINE}"
        assert any(line.startswith("retrain started: run ") for line in out)
        assert main(["retract", "--line", LINE, "support-2"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].endswith("was already retracted; nothing left to do")
    finally:
        load_settings.cache_clear()
    (entry,) = retractions(clients.ledger, LINE)
    assert entry["reason"] == "wrong facts"
    assert entry["name"] == "support-2"


def test_status_of_a_line_lists_its_retractions(clients: Clients, fake: FakePlatform) -> None:
    """`tuneloop status --line L` ends with the line's retracted drops: who, when and why."""
    s = seed(clients.ledger, clients.storage, fake, clients.settings)
    retraction(clients, fake).retract(LINE, "support-2", by="ana", reason="wrong prices")
    out = io.StringIO()
    args = argparse.Namespace(line=LINE, json=False)
    assert status_command.run(args, clients=clients, out=out) == 0
    last = out.getvalue().splitlines()[-1]
    assert last.startswith(f"retracted: support-2 ({s.d2['sha256'][:12]}) by ana at ")
    assert last.endswith(": wrong prices")
