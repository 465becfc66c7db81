"""The plan meets the real SDK offline: the component and model come from fixture specs, the
job is built with the ``@pipeline`` DSL and validated by azure-ai-ml; ``tuneloop plan`` prints it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from shared.errors import PlanError
from shared.finetune import (
    BUNDLED_COMPONENT_SPEC,
    BUNDLED_MODEL_SPEC,
    load_model_spec,
    plan_finetune,
)
from shared.platform.port import ComponentInterface, ComputeInfo, FinetunePlan
from shared.settings import Settings
from tests.fixtures.chats import write_chats

SHA = "89abcdef01234567" * 4
A100 = ComputeInfo("gpu-a100", "Standard_NC24ads_A100_v4", "Succeeded", gpus_per_node=1)
REGISTRY_ID = "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"


@pytest.fixture(scope="module")
def sdk_component() -> Any:
    """The component as the SDK loads it from the bundled spec (no network)."""
    from azure.ai.ml import load_component

    return load_component(source=str(BUNDLED_COMPONENT_SPEC))


@pytest.fixture(scope="module")
def interface(sdk_component: Any) -> ComponentInterface:
    from shared.platform.azureml._jobs import component_interface

    return component_interface(sdk_component)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(platform="local", home=tmp_path, datastore="tuneloopprepared")


def plan_with(
    settings: Settings,
    interface: ComponentInterface,
    *,
    compute: ComputeInfo = A100,
    cli: dict[str, Any] | None = None,
) -> FinetunePlan:
    return plan_finetune(
        settings,
        line="support",
        dataset_sha256=SHA,
        base_model=load_model_spec(BUNDLED_MODEL_SPEC),
        component=interface,
        data_container="prepared",
        compute=compute,
        cli_overrides=cli,
    )


def test_sdk_loaded_interface_matches_the_bundled_one(interface: ComponentInterface) -> None:
    """The SDK's reading of the spec and ours agree on every input's type, enum and optional."""
    from shared.finetune import bundled_component

    ours = bundled_component().inputs
    assert set(interface.inputs) == set(ours)
    for name, spec in interface.inputs.items():
        assert (spec.type, spec.enum, spec.optional) == (
            ours[name].type,
            ours[name].enum,
            ours[name].optional,
        ), name


def test_job_is_built_and_passes_sdk_validation(
    settings: Settings, interface: ComponentInterface, sdk_component: Any
) -> None:
    """The planned job, built with the DSL from the SDK component, passes the SDK's validation."""
    from shared.platform.azureml._jobs import build_pipeline_job, validate_job

    plan = plan_with(settings, interface)
    job = build_pipeline_job(plan, sdk_component, datastore=settings.datastore)
    validate_job(job)
    assert job.name == plan.run_id
    assert job.display_name == plan.display_name
    assert job.experiment_name == "tuneloop-support"
    assert job.settings is not None
    assert job.settings.force_rerun is True
    assert job.settings.continue_on_step_failure is False
    node = job.jobs["chat_completion_pipeline"]
    assert node.inputs["train_file_path"]._data.path == (
        f"azureml://datastores/tuneloopprepared/paths/{plan.run_id}/train.jsonl"
    )
    assert node.inputs["deepspeed_stage"]._data == "3"  # Phi-4's model_specific_defaults


def test_job_dict_is_what_would_be_submitted(
    settings: Settings, interface: ComponentInterface
) -> None:
    """The SDK dict form names the job by run id and refers to the registry component by id."""
    from shared.platform.azureml._jobs import job_to_dict

    plan = plan_with(settings, interface)
    data = job_to_dict(
        plan, BUNDLED_COMPONENT_SPEC, datastore="tuneloopprepared", component_id=REGISTRY_ID
    )
    assert data["name"] == plan.run_id
    assert data["type"] == "pipeline"
    assert data["tags"]["tuneloop_dataset"] == SHA
    assert data["settings"] == {"continue_on_step_failure": False, "force_rerun": True}
    node = data["jobs"]["chat_completion_pipeline"]
    assert node["component"] == REGISTRY_ID
    assert node["inputs"]["compute_finetune"] == "gpu-a100"
    assert node["inputs"]["mlflow_model_path"] == {
        "type": "mlflow_model",
        "path": "azureml://registries/azureml/models/Phi-4/versions/8",
    }
    json.dumps(data)  # plain data, printable as JSON


@pytest.mark.parametrize(
    ("cli", "compute", "expected"),
    [
        (
            {"lora_rr": 16},
            A100,
            "lora_rr (command line) is not an input of chat_completion_pipeline",
        ),
        (
            {"precision": 8},
            A100,
            "input precision = 8 (command line) is not one of the allowed values: 32, 16",
        ),
        (
            {},
            ComputeInfo("gpu", "Standard_NC4as_T4_v3", "Succeeded", 1),
            "not in Phi-4's fine-tune allow-list",
        ),
    ],
    ids=["misspelled-input", "out-of-enum", "disallowed-size"],
)
def test_violations_against_the_sdk_component(
    settings: Settings,
    interface: ComponentInterface,
    cli: dict[str, Any],
    compute: ComputeInfo,
    expected: str,
) -> None:
    """Each violation, checked against the SDK's component, gives its own specific error."""
    with pytest.raises(PlanError) as excinfo:
        plan_with(settings, interface, cli=cli, compute=compute)
    assert len(excinfo.value.problems) == 1
    assert expected in excinfo.value.problems[0]


def test_sdk_refusal_of_an_unknown_input_is_a_plan_error(
    settings: Settings, interface: ComponentInterface, sdk_component: Any
) -> None:
    """A plan that slipped an undeclared input past the planner is stopped by the SDK build."""
    from shared.platform.azureml._jobs import build_pipeline_job

    plan = plan_with(settings, interface)
    forged = dataclasses.replace(plan, parameters={**plan.parameters, "num_train_epoch": 2})
    with pytest.raises(PlanError, match="unexpected keyword argument 'num_train_epoch'"):
        build_pipeline_job(forged, sdk_component, datastore="ds")


# --- tuneloop plan -------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_chats(tmp_path / "chats.jsonl")


def test_plan_command_prints_plan_and_job_as_json(
    dataset: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tuneloop plan --json` exits 0 with the plan, its warnings and the job dict, offline."""
    from cli.main import main

    code = main(
        [
            "plan", str(dataset), "--line", "support",
            "--compute-size", "Standard_NC24ads_A100_v4", "--gpus-per-node", "1",
            "--set", "num_train_epochs=2", "--json",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    sha = hashlib.sha256(dataset.read_bytes()).hexdigest()
    assert doc["dataset_sha256"] == sha
    assert doc["run_id"].startswith(f"tl-support-{sha[:12]}-")
    assert doc["parameters"]["num_train_epochs"] == 2
    assert doc["parameters"]["instance_type_finetune"] == "Standard_NC24ads_A100_v4"
    assert any("Phi-4 8 is a preview model" in w for w in doc["warnings"])
    assert doc["job"]["name"] == doc["run_id"]
    assert doc["job"]["jobs"]["chat_completion_pipeline"]["component"] == REGISTRY_ID


def test_plan_command_hash_matches_the_validator(dataset: Path) -> None:
    """The CLI's streamed sha256 is the validator's dataset identity (same run id as ingest)."""
    from cli.commands.plan import dataset_sha256
    from shared.dataset import ValidationConfig, validate_path

    report = validate_path(dataset, config=ValidationConfig())
    assert dataset_sha256(dataset) == report.dataset.sha256


def test_plan_command_violations_exit_2_one_line_each(
    dataset: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A disallowed size, an enum and a type violation exit 2 with one clear line per problem."""
    from cli.main import main

    code = main(
        [
            "plan", str(dataset), "--line", "support",
            "--compute-size", "Standard_NC4as_T4_v3", "--gpus-per-node", "1",
            "--set", "deepspeed_stage=4", "--set", "num_train_epochs=two",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    errors = [e for e in captured.err.splitlines() if e.startswith("tuneloop plan: plan_error:")]
    assert len(errors) == 3
    assert any("allow-list" in e for e in errors)
    assert any("deepspeed_stage = '4'" in e and "2, 3" in e for e in errors)
    assert any("num_train_epochs = 'two'" in e and "not an integer" in e for e in errors)


def test_plan_command_uses_given_specs(
    dataset: Path, clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--model-spec swaps the base model: a model with no allow-list accepts any GPU size."""
    from cli.main import main

    spec = tmp_path / "model.yaml"
    spec.write_text(
        "name: my-model\nversion: 2\ntags:\n  model_specific_defaults: \"{'seed': 3}\"\n"
    )
    code = main(
        [
            "plan", str(dataset), "--line", "support", "--model-spec", str(spec),
            "--component-spec", str(BUNDLED_COMPONENT_SPEC),
            "--compute-size", "Standard_NC4as_T4_v3", "--gpus-per-node", "1", "--json",
        ]
    )  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["base_model"] == "azureml://registries/azureml/models/my-model/versions/2"
    assert doc["parameters"]["seed"] == 3


def test_plan_command_missing_dataset_exits_2(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing dataset is one error line naming it, exit 2 (as `tuneloop validate`)."""
    from cli.main import main

    missing = tmp_path / "nope.jsonl"
    assert main(["plan", str(missing), "--line", "support"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuneloop plan: dataset_unreadable: ")
    assert str(missing) in err
    assert len(err.splitlines()) == 1
