"""Start from live (issue 11 §2): the plan names the model training starts from, and the
fingerprint (so the run id) covers it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import PlanError
from shared.finetune import Planner, bundled_base_model, bundled_component, plan_finetune
from shared.platform.port import ComputeInfo, FinetunePlan, ModelVersionInfo
from shared.settings import Settings
from tests.fakes.platform import FakePlatform

SHA = "0123456789abcdef" * 4
A100 = ComputeInfo("gpu-a100", "Standard_NC24ads_A100_v4", "Succeeded", gpus_per_node=1)
LIVE = ModelVersionInfo("tl-support", "3", "azureml:tl-support:3")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(platform="local", home=tmp_path)


def _plan(settings: Settings, start: ModelVersionInfo | None) -> FinetunePlan:
    return plan_finetune(
        settings,
        line="support",
        dataset_sha256=SHA,
        base_model=bundled_base_model(),
        component=bundled_component(),
        data_container="prepared",
        compute=A100,
        start_model=start,
    )


def test_a_plan_from_the_base_model_has_no_start_model(settings: Settings) -> None:
    """Without a start model the plan starts from the base model (start_model None)."""
    assert _plan(settings, None).start_model is None


def test_the_plan_carries_its_start_model(settings: Settings) -> None:
    """A start model given to the planner is the plan's start_model."""
    assert _plan(settings, LIVE).start_model == LIVE


def test_the_fingerprint_and_run_id_cover_the_start_model(settings: Settings) -> None:
    """The same data and parameters from another start model is another job."""
    base, live = _plan(settings, None), _plan(settings, LIVE)
    other = _plan(settings, ModelVersionInfo("tl-support", "4", "azureml:tl-support:4"))
    assert len({base.fingerprint, live.fingerprint, other.fingerprint}) == 3
    assert len({base.run_id, live.run_id, other.run_id}) == 3
    assert _plan(settings, LIVE).run_id == live.run_id  # still deterministic


def test_the_planner_passes_the_start_model_through(settings: Settings) -> None:
    """Planner.plan(start_model=...) plans from it."""
    platform = FakePlatform()
    plan = Planner(settings, platform).plan(
        line="support", dataset_sha256=SHA, compute=A100, start_model=LIVE
    )
    assert plan.start_model == LIVE


def test_unmerged_lora_is_refused_with_a_start_model(settings: Settings) -> None:
    """merge_lora_weights=false with a start model is a PlanError: the output would be an
    adapter, not a model the next version can start from."""
    with pytest.raises(PlanError, match="merge_lora_weights"):
        plan_finetune(
            settings,
            line="support",
            dataset_sha256=SHA,
            base_model=bundled_base_model(),
            component=bundled_component(),
            data_container="prepared",
            compute=A100,
            cli_overrides={"merge_lora_weights": "false"},
            start_model=LIVE,
        )


def test_the_plan_document_names_the_start_model(settings: Settings) -> None:
    """`tuneloop plan` names where training starts: the base model's id, or the version's."""
    from cli.commands.plan import plan_document

    assert plan_document(_plan(settings, None), None)["start_model"] == (
        bundled_base_model().id
    )
    assert plan_document(_plan(settings, LIVE), None)["start_model"] == LIVE.id


def test_the_offline_job_continues_from_the_start_model(settings: Settings) -> None:
    """The job `tuneloop plan` prints takes the start model as mlflow_model_path (the SDK's
    azureml:<name>:<version> form) with merge_lora_weights "true"."""
    from shared.finetune import BUNDLED_COMPONENT_SPEC
    from shared.platform.azureml._jobs import job_to_dict

    job = job_to_dict(_plan(settings, LIVE), BUNDLED_COMPONENT_SPEC, datastore="ds")
    inputs = job["jobs"]["chat_completion_pipeline"]["inputs"]
    assert inputs["mlflow_model_path"]["path"] == "azureml:tl-support:3"
    assert inputs["merge_lora_weights"] == "true"


def test_the_text_plan_has_a_start_model_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text plan prints a start_model line (the base model when starting from it)."""
    from cli.main import main
    from tests.fixtures.chats import write_chats

    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path))
    data = write_chats(tmp_path / "d.jsonl", 40)
    argv = ["plan", str(data), "--line", "support", "--compute-size",
            "Standard_NC24ads_A100_v4", "--gpus-per-node", "1"]  # fmt: skip
    assert main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("start_model "))
    assert line.split(None, 1)[1] == bundled_base_model().id


def test_a_local_jobs_recorded_plan_keeps_its_start_model(settings: Settings) -> None:
    """The local platform's job record (job.json) reads back the same plan, start model
    included (lost jobs are replanned from it)."""
    import json

    from shared.platform.local.platform import _plan_from_json, _plan_to_json

    plan = _plan(settings, LIVE)
    back = _plan_from_json(json.loads(json.dumps(_plan_to_json(plan))))
    assert back.start_model == LIVE
    assert back.run_id == plan.run_id
    assert _plan_from_json(json.loads(json.dumps(_plan_to_json(_plan(settings, None))))) \
        .start_model is None
