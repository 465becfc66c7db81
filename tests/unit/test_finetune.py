"""The fine-tune planner: parameter merge and coercion, compute checks, deterministic names."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.errors import NotFoundError, PlanError
from shared.finetune import (
    OWNED_INPUTS,
    TUNELOOP_DEFAULTS,
    Planner,
    bundled_base_model,
    bundled_component,
    finetune_allow_list,
    load_component_spec,
    load_model_spec,
    model_specific_defaults,
    plan_finetune,
)
from shared.platform.port import BaseModelInfo, ComputeInfo, FinetunePlan
from shared.settings import Settings
from tests.fakes.platform import FakePlatform

SHA = "0123456789abcdef" * 4
A100 = ComputeInfo("gpu-a100", "Standard_NC24ads_A100_v4", "Succeeded", gpus_per_node=1)


@pytest.fixture
def plain_settings(tmp_path: Path) -> Settings:
    return Settings(platform="local", home=tmp_path)


def make_plan(
    settings: Settings,
    *,
    base_model: BaseModelInfo | None = None,
    compute: ComputeInfo | None = A100,
    cli: dict[str, Any] | None = None,
    line: str = "support",
    sha: str = SHA,
) -> FinetunePlan:
    return plan_finetune(
        settings,
        line=line,
        dataset_sha256=sha,
        base_model=base_model or bundled_base_model(),
        component=bundled_component(),
        data_container="prepared",
        compute=compute,
        cli_overrides=cli,
    )


def model_with(**changes: Any) -> BaseModelInfo:
    return dataclasses.replace(bundled_base_model(), **changes)


def problems_of(excinfo: pytest.ExceptionInfo[PlanError]) -> list[str]:
    return excinfo.value.problems


# --- bundled facts -------------------------------------------------------------------


def test_bundled_component_declares_all_69_inputs() -> None:
    """The bundled chat_completion_pipeline 0.0.82 keeps every input of the real spec."""
    component = bundled_component()
    assert (component.name, component.version) == ("chat_completion_pipeline", "0.0.82")
    assert len(component.inputs) == 69
    assert component.inputs["deepspeed_stage"].enum == ("2", "3")
    assert component.inputs["precision"].enum == ("32", "16")
    assert component.inputs["num_train_epochs"].min_value == 1
    assert (
        component.id
        == "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"
    )


def test_tuneloop_defaults_are_all_declared_inputs() -> None:
    """Every notebook default names a real input, so none is silently dropped."""
    assert set(TUNELOOP_DEFAULTS) <= set(bundled_component().inputs)


def test_bundled_model_has_defaults_and_allow_list() -> None:
    """The bundled default (Phi-4 v8) carries model_specific_defaults and the fine-tune SKUs."""
    model = bundled_base_model()
    assert model.id == "azureml://registries/azureml/models/Phi-4/versions/8"
    assert model_specific_defaults(model)["deepspeed_stage"] == 3
    assert finetune_allow_list(model) == [
        "Standard_NC24ads_A100_v4",
        "Standard_NC48ads_A100_v4",
        "Standard_NC96ads_A100_v4",
        "Standard_ND96asr_v4",
        "Standard_ND96amsr_A100_v4",
        "Standard_NC40ads_H100_v5",
        "Standard_NC80adis_H100_v5",
        "Standard_ND96isr_H100_v5",
    ]


# --- merge and coercion --------------------------------------------------------------


def test_merge_order_and_coercion_to_declared_types(plain_settings: Settings) -> None:
    """Model defaults beat tuneloop's; ints become the string enums the component declares."""
    plan = make_plan(plain_settings)
    p = plan.parameters
    assert p["num_train_epochs"] == 1  # Phi-4's default beats the notebook's 3
    assert p["deepspeed_stage"] == "3"  # int 3 -> string enum "3"
    assert p["precision"] == "16"  # int 16 -> string enum "16"
    assert p["learning_rate"] == 5e-6  # the YAML string "5e-6" -> number
    assert p["apply_lora"] == "true"
    assert p["lr_scheduler_type"] == "cosine"
    assert p["number_of_gpu_to_use_finetuning"] == 1


def test_line_overrides_beat_model_and_cli_beats_line(tmp_path: Path) -> None:
    """Per-line overrides beat model defaults; command-line overrides beat both."""
    settings = Settings(
        platform="local",
        home=tmp_path,
        line_overrides={"support": {"num_train_epochs": 2, "lr_scheduler_type": "linear"}},
    )
    plan = make_plan(settings, cli={"num_train_epochs": "4"})
    assert plan.parameters["num_train_epochs"] == 4
    assert plan.parameters["lr_scheduler_type"] == "linear"


def test_undeclared_model_default_is_dropped_with_a_warning(plain_settings: Settings) -> None:
    """learning_rate_min is not an input: dropped, and the plan says so."""
    defaults = {**model_specific_defaults(bundled_base_model()), "learning_rate_min": 5e-7}
    model = model_with(tags={"model_specific_defaults": json.dumps(defaults)})
    plan = make_plan(plain_settings, base_model=model)
    assert "learning_rate_min" not in plan.parameters
    assert any("learning_rate_min" in w and "not an input" in w for w in plan.warnings)


def test_misspelled_override_is_a_plan_error_with_a_suggestion(plain_settings: Settings) -> None:
    """A user-written unknown input is an error naming it and the likely intended input."""
    with pytest.raises(PlanError) as excinfo:
        make_plan(plain_settings, cli={"num_train_epoch": 2})
    assert problems_of(excinfo) == [
        "num_train_epoch (command line) is not an input of chat_completion_pipeline 0.0.82; "
        "did you mean num_train_epochs?"
    ]


def test_out_of_enum_value_names_input_and_allowed_values(plain_settings: Settings) -> None:
    """deepspeed_stage 4 is refused with the input's allowed values."""
    with pytest.raises(PlanError) as excinfo:
        make_plan(plain_settings, cli={"deepspeed_stage": 4})
    assert problems_of(excinfo) == [
        "input deepspeed_stage = 4 (command line) is not one of the allowed values: 2, 3"
    ]


def test_uncoercible_types_are_refused(plain_settings: Settings) -> None:
    """Text for an integer, a boolean for a number and a value below min are each refused."""
    with pytest.raises(PlanError) as excinfo:
        make_plan(
            plain_settings,
            cli={"num_train_epochs": "three", "learning_rate": True, "lora_r": 2.5, "seed": "7"},
        )
    assert sorted(problems_of(excinfo)) == [
        "input learning_rate = True (command line) is a boolean, not a number",
        "input lora_r = 2.5 (command line) is not an integer",
        "input num_train_epochs = 'three' (command line) is not an integer",
    ]


def test_every_problem_is_reported_at_once(plain_settings: Settings) -> None:
    """A plan with several violations lists each one, one line per problem."""
    with pytest.raises(PlanError) as excinfo:
        make_plan(
            plain_settings,
            compute=ComputeInfo("c", "Standard_NC12_v2", "Succeeded", 1),
            cli={"optim": "sgd", "num_train_epochs": 0},
        )
    problems = problems_of(excinfo)
    assert len(problems) == 3
    assert any(p.startswith("input optim = 'sgd'") for p in problems)
    assert any("below the minimum 1" in p for p in problems)
    assert any("allow-list" in p for p in problems)


def test_booleans_and_case_fold_into_string_enums(plain_settings: Settings) -> None:
    """True and "TRUE" both become the component's "true"."""
    plan = make_plan(plain_settings, cli={"apply_early_stopping": True, "apply_ort": "FALSE"})
    assert plan.parameters["apply_early_stopping"] == "true"
    assert plan.parameters["apply_ort"] == "false"


def test_owned_inputs_cannot_be_overridden(plain_settings: Settings) -> None:
    """Data, model and compute inputs come from the run and settings, never from --set."""
    assert {"train_file_path", "mlflow_model_path", "compute_finetune"} <= OWNED_INPUTS
    with pytest.raises(PlanError) as excinfo:
        make_plan(plain_settings, cli={"compute_finetune": "other"})
    assert "compute_finetune (command line) is set by tuneloop" in problems_of(excinfo)[0]


# --- model_specific_defaults shapes --------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "{'deepspeed_stage': 2, 'learning_rate': 5e-6}",
        '{"deepspeed_stage": 2, "learning_rate": 5e-6}',
        "OrderedDict([('deepspeed_stage', 2), ('learning_rate', 5e-6)])",
        "ordereddict({'deepspeed_stage': 2, 'learning_rate': 5e-6})",
    ],
)
def test_model_defaults_parse_from_literal_strings(raw: str) -> None:
    """Python, JSON and OrderedDict literal forms all parse, safely."""
    model = model_with(tags={"model_specific_defaults": raw})
    assert model_specific_defaults(model) == {"deepspeed_stage": 2, "learning_rate": 5e-6}


def test_model_defaults_are_never_evaluated() -> None:
    """Code in the tag is refused, not run."""
    model = model_with(tags={"model_specific_defaults": "__import__('os').getcwd()"})
    with pytest.raises(PlanError, match="not a JSON or Python literal"):
        model_specific_defaults(model)


def test_model_defaults_in_system_metadata_mapping() -> None:
    """A mapping kept in system metadata (not a tag) is used as is."""
    model = model_with(tags={}, system_metadata={"model_specific_defaults": {"apply_ort": "true"}})
    assert model_specific_defaults(model) == {"apply_ort": "true"}


def test_model_without_defaults_or_allow_list_plans(plain_settings: Settings) -> None:
    """A bare base model (the local tiny model) plans on tuneloop defaults alone."""
    bare = BaseModelInfo(id="local:tiny", name="tiny", version="1")
    plan = make_plan(
        plain_settings, base_model=bare, compute=ComputeInfo("local", None, "Succeeded")
    )
    assert plan.parameters["num_train_epochs"] == 3
    assert plan.parameters["compute_finetune"] == "local"
    assert not any("allow-list" in w for w in plan.warnings)


# --- compute -------------------------------------------------------------------------


def test_disallowed_compute_size_is_refused(plain_settings: Settings) -> None:
    """A GPU size outside Phi-4's fine-tune SKUs is a specific error listing the allowed ones."""
    with pytest.raises(PlanError) as excinfo:
        make_plan(
            plain_settings, compute=ComputeInfo("gpu-t4", "Standard_NC4as_T4_v3", "Succeeded", 1)
        )
    assert problems_of(excinfo) == [
        "compute gpu-t4 size Standard_NC4as_T4_v3 is not in Phi-4's fine-tune "
        "allow-list: Standard_NC24ads_A100_v4, Standard_NC48ads_A100_v4, "
        "Standard_NC96ads_A100_v4, Standard_ND96asr_v4, Standard_ND96amsr_A100_v4, "
        "Standard_NC40ads_H100_v5, Standard_NC80adis_H100_v5, Standard_ND96isr_H100_v5"
    ]


def test_allow_list_compares_case_insensitively(plain_settings: Settings) -> None:
    """Azure reports sizes upper-cased; that still matches the allow-list."""
    plan = make_plan(
        plain_settings, compute=ComputeInfo("gpu", "STANDARD_NC24ADS_A100_V4", "Succeeded", 1)
    )
    assert plan.compute == "gpu"


def test_allow_list_tag_literal_is_used() -> None:
    """The older tag form, a string list literal, is an allow-list too."""
    model = model_with(
        tags={"finetune_compute_allow_list": "['Standard_NC24rs_v3', 'Standard_ND40rs_v2']"},
        system_metadata={},
    )
    assert finetune_allow_list(model) == ["Standard_NC24rs_v3", "Standard_ND40rs_v2"]


def test_notebook_unsupported_sizes_are_refused_without_allow_list(
    plain_settings: Settings,
) -> None:
    """standard_nc6 and friends cannot fine-tune even when the model has no allow-list."""
    bare = BaseModelInfo(id="m", name="m", version="1")
    with pytest.raises(PlanError) as excinfo:
        make_plan(
            plain_settings,
            base_model=bare,
            compute=ComputeInfo("old", "Standard_NC24r", "Succeeded", 4),
        )
    assert problems_of(excinfo) == [
        "compute old size Standard_NC24r cannot fine-tune (unsupported sizes: standard_nc12, "
        "standard_nc24, standard_nc24r, standard_nc6)"
    ]


def test_failed_cluster_is_refused(plain_settings: Settings) -> None:
    """A cluster whose provisioning failed is an error before submit."""
    failed = dataclasses.replace(A100, provisioning_state="Failed")
    with pytest.raises(PlanError, match="compute gpu-a100 is Failed"):
        make_plan(plain_settings, compute=failed)


def test_gpus_per_node_sets_gpu_input_and_caps_overrides(plain_settings: Settings) -> None:
    """GPUs per node fill number_of_gpu_to_use_finetuning; asking for more is an error."""
    four = ComputeInfo("gpu4", "Standard_NC96ads_A100_v4", "Succeeded", gpus_per_node=4)
    assert (
        make_plan(plain_settings, compute=four).parameters["number_of_gpu_to_use_finetuning"] == 4
    )
    assert (
        make_plan(
            plain_settings, compute=four, cli={"number_of_gpu_to_use_finetuning": 2}
        ).parameters["number_of_gpu_to_use_finetuning"]
        == 2
    )
    with pytest.raises(PlanError, match="exceeds the 4 GPUs per node"):
        make_plan(plain_settings, compute=four, cli={"number_of_gpu_to_use_finetuning": 8})


def test_serverless_compute_sets_instance_type(plain_settings: Settings) -> None:
    """Serverless runs every step on 'serverless' and fine-tunes on the chosen size."""
    serverless = ComputeInfo("serverless", "Standard_NC24ads_A100_v4", "Succeeded", 1)
    plan = make_plan(plain_settings, compute=serverless)
    assert plan.compute is None
    assert plan.instance_type == "Standard_NC24ads_A100_v4"
    assert plan.parameters["compute_finetune"] == "serverless"
    assert plan.parameters["instance_type_finetune"] == "Standard_NC24ads_A100_v4"


def test_no_compute_anywhere_is_a_plan_error(plain_settings: Settings) -> None:
    """Without a cluster, an instance type or a looked-up compute there is nothing to run on."""
    with pytest.raises(PlanError, match="no compute"):
        make_plan(plain_settings, compute=None)


# --- identity of the run -------------------------------------------------------------


def test_run_id_names_tags_and_blobs(plain_settings: Settings) -> None:
    """The run id is the job name, the blobs live under it, tags are dot-free."""
    plan = make_plan(plain_settings)
    assert plan.run_id.startswith(f"tl-support-{SHA[:12]}-")
    assert plan.train_blob == f"{plan.run_id}/train.jsonl"
    assert plan.validation_blob == f"{plan.run_id}/validation.jsonl"
    assert plan.data_container == "prepared"
    assert plan.experiment_name == "tuneloop-support"
    assert plan.display_name == (
        "Phi-4-support-bs1-cosine-ds3-lora-save_limit1-seqlen_model_max"
    )
    assert plan.tags["tuneloop_run"] == plan.run_id
    assert plan.tags["tuneloop_line"] == "support"
    assert plan.tags["tuneloop_dataset"] == SHA
    assert all("." not in key for key in plan.tags)


def test_same_facts_same_run_and_any_change_a_new_run(plain_settings: Settings) -> None:
    """Replanning is deterministic; a parameter, compute or dataset change makes a new run."""
    first = make_plan(plain_settings)
    assert make_plan(plain_settings).run_id == first.run_id
    assert make_plan(plain_settings, cli={"seed": 7}).run_id != first.run_id
    bigger = ComputeInfo("gpu-a100", "Standard_NC48ads_A100_v4", "Succeeded", 2)
    assert make_plan(plain_settings, compute=bigger).run_id != first.run_id
    assert make_plan(plain_settings, sha="f" * 64).run_id != first.run_id


def test_bad_line_and_sha_are_refused(plain_settings: Settings) -> None:
    """The line and the dataset hash are checked like every other input."""
    with pytest.raises(PlanError) as excinfo:
        make_plan(plain_settings, line="../x", sha="nothex")
    assert len(problems_of(excinfo)) == 2


# --- specs on disk -------------------------------------------------------------------


def test_model_spec_loader_stores_mapping_tags_as_json(tmp_path: Path) -> None:
    """A spec's mapping-valued tag becomes JSON text (registry tags are strings) and round-trips."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: m\nversion: 3\ntags:\n  model_specific_defaults:\n    seed: 1\n")
    model = load_model_spec(spec, registry="myreg")
    assert model.id == "azureml://registries/myreg/models/m/versions/3"
    assert json.loads(model.tags["model_specific_defaults"]) == {"seed": 1}


def test_unreadable_specs_are_plan_errors(tmp_path: Path) -> None:
    """A missing or malformed spec is a clear error, not a traceback."""
    with pytest.raises(PlanError, match="cannot read component spec"):
        load_component_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(PlanError, match="not a YAML mapping"):
        load_model_spec(bad)


# --- Planner -------------------------------------------------------------------------


class _NoCluster(FakePlatform):
    def get_compute(self, name: str) -> ComputeInfo:
        raise NotFoundError(f"compute {name}: not found")


def test_planner_uses_platform_facts(tmp_path: Path) -> None:
    """The Planner asks the platform for model, component and compute, then plans."""
    settings = Settings(platform="local", home=tmp_path, compute="gpu-a100")
    plan = Planner(settings, FakePlatform()).plan(line="support", dataset_sha256=SHA)
    assert plan.parameters["num_train_epochs"] == 3
    assert plan.data_container == settings.prepared_container
    assert any("apply_lora" in w for w in plan.warnings)  # the fake component lacks it


def test_planner_turns_a_missing_cluster_into_a_plan_error(tmp_path: Path) -> None:
    """A cluster that does not exist is a PlanError naming it, before any submit."""
    settings = Settings(platform="local", home=tmp_path, compute="gone")
    with pytest.raises(PlanError, match="compute gone not found"):
        Planner(settings, _NoCluster()).plan(line="support", dataset_sha256=SHA)


# --- sanity bounds -------------------------------------------------------------------


def test_every_sanity_bound_names_a_numeric_input_and_says_why() -> None:
    """The bounds table has no typo'd input and a reason for every bound."""
    from shared.finetune import SANITY_BOUNDS

    inputs = bundled_component().inputs
    for name, bound in SANITY_BOUNDS.items():
        assert inputs[name].type in {"integer", "number"}, name
        assert len(bound.why) > 10, name
        assert bound.low is not None or bound.high is not None, name


@pytest.mark.parametrize(
    ("cli", "bound"),
    [
        ({"learning_rate": 0}, "is not above 0, tuneloop's sanity minimum"),
        ({"learning_rate": 5}, "is above 0.1, tuneloop's sanity maximum"),
        ({"lora_r": 0}, "is below 1, tuneloop's sanity minimum"),
        ({"lora_dropout": 1}, "is above 0.9, tuneloop's sanity maximum"),
        ({"max_steps": -7}, "is below 1, tuneloop's sanity minimum"),
        ({"per_device_train_batch_size": 100000}, "is above 1024, tuneloop's sanity maximum"),
    ],
)
def test_values_beyond_reason_are_refused_naming_the_bound(
    plain_settings: Settings, cli: dict[str, Any], bound: str
) -> None:
    """A value past a sanity bound is one problem naming input, value, source and bound."""
    with pytest.raises(PlanError) as excinfo:
        make_plan(plain_settings, cli=cli)
    [problem] = problems_of(excinfo)
    key = next(iter(cli))
    assert problem.startswith(f"input {key} = ")
    assert "(command line)" in problem
    assert bound in problem


def test_the_unset_value_passes_the_bounds(plain_settings: Settings) -> None:
    """-1 means "not set" for max_seq_length and max_steps, as the component's defaults do."""
    plan = make_plan(plain_settings, cli={"max_seq_length": -1, "max_steps": -1})
    assert plan.parameters["max_seq_length"] == -1


def test_a_bound_the_component_declares_wins(plain_settings: Settings) -> None:
    """Where the component declares a maximum, tuneloop's sanity maximum does not apply."""
    component = bundled_component()
    wide = dataclasses.replace(component.inputs["lora_r"], max_value=4096.0)
    generous = dataclasses.replace(component, inputs={**component.inputs, "lora_r": wide})
    plan = plan_finetune(
        plain_settings, line="support", dataset_sha256=SHA, base_model=bundled_base_model(),
        component=generous, data_container="prepared", compute=A100, cli_overrides={"lora_r": 2048},
    )  # fmt: skip
    assert plan.parameters["lora_r"] == 2048
    with pytest.raises(PlanError, match="is above the maximum 4096 the component declares"):
        plan_finetune(
            plain_settings, line="support", dataset_sha256=SHA, base_model=bundled_base_model(),
            component=generous, data_container="prepared", compute=A100,
            cli_overrides={"lora_r": 5000},
        )  # fmt: skip


def test_a_line_override_beyond_reason_names_its_setting(tmp_path: Path) -> None:
    """The problem names where the value came from: the line's TUNELOOP_LINE_OVERRIDES entry."""
    settings = Settings(
        platform="local", home=tmp_path, line_overrides={"support": {"num_train_epochs": 500}}
    )
    with pytest.raises(PlanError) as excinfo:
        make_plan(settings)
    assert problems_of(excinfo) == [
        "input num_train_epochs = 500 (TUNELOOP_LINE_OVERRIDES[support]) is above 100, "
        "tuneloop's sanity maximum: a fine-tune over-fits long before 100 passes over its data "
        "(the notebook uses 1-3, the demo's tiny model 20)"
    ]


def test_max_seq_length_within_the_models_context_window(plain_settings: Settings) -> None:
    """Phi-4 reads 16384 tokens: 16384 plans, 16385 is refused naming the window."""
    assert make_plan(plain_settings, cli={"max_seq_length": 16384}).parameters[
        "max_seq_length"
    ] == 16384
    with pytest.raises(PlanError, match="context window of 16384 tokens"):
        make_plan(plain_settings, cli={"max_seq_length": 16385})


def test_importing_the_planner_does_not_load_yaml() -> None:
    """Importing shared.finetune (reached from the Functions triggers) leaves PyYAML unloaded
    until a spec is read."""
    code = "import sys, shared.finetune; print('yaml' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
