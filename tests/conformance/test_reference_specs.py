"""The bundled specs and the plan against the real azureml-assets specs, when they are at hand.

``../shared/reference/azureml`` (beside the checkout) holds verbatim copies of the public
chat_completion_pipeline 0.0.82, Phi-4 v8 and Phi-3-mini-4k-instruct v15 specs. A fresh clone
has no such folder: then every test here is skipped (the project never reads it at run time).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.finetune import (
    RETIRED_MODEL_SPEC,
    bundled_base_model,
    bundled_component,
    finetune_allow_list,
    load_component_spec,
    load_model_spec,
    model_specific_defaults,
    plan_finetune,
)
from shared.platform.port import ComputeInfo, FinetunePlan
from shared.settings import Settings

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "azureml" / "assets"
PIPELINE = (
    REFERENCE
    / "training/finetune_acft_hf_nlp/components/pipeline_components/chat_completion/spec.yaml"
)
PHI3 = REFERENCE / "models/system/phi-3-mini-4k-instruct/spec.yaml"
PHI4 = REFERENCE / "models/system/Phi-4/spec.yaml"

pytestmark = [
    pytest.mark.skipif(
        not PIPELINE.is_file(), reason="../shared/reference is not beside the checkout"
    ),
]

SHA = "fedcba9876543210" * 4
A100 = ComputeInfo("gpu-a100", "Standard_NC24ads_A100_v4", "Succeeded", gpus_per_node=1)


def test_bundled_component_matches_the_reference_interface() -> None:
    """Every input of the real spec is bundled with the same type, enum, default, optional, min."""
    reference = load_component_spec(PIPELINE)
    bundled = bundled_component()
    assert (reference.name, reference.version) == (bundled.name, bundled.version)
    assert list(reference.inputs) == list(bundled.inputs)
    assert len(reference.inputs) == 69
    for name, spec in reference.inputs.items():
        ours = bundled.inputs[name]
        assert (spec.type, spec.enum, spec.default, spec.optional, spec.min_value) == (
            ours.type,
            ours.enum,
            ours.default,
            ours.optional,
            ours.min_value,
        ), name
    assert reference.outputs == bundled.outputs


def test_bundled_job_graph_matches_the_reference() -> None:
    """The bundled spec wires the same sub-components the same way."""
    from shared.finetune import BUNDLED_COMPONENT_SPEC

    ours = yaml.safe_load(BUNDLED_COMPONENT_SPEC.read_text())
    theirs = yaml.safe_load(PIPELINE.read_text())
    assert ours["jobs"] == theirs["jobs"]


@pytest.mark.parametrize(
    ("reference_spec", "bundled_spec"),
    [(PHI4, None), (PHI3, RETIRED_MODEL_SPEC)],
    ids=["phi-4-default", "phi-3-refusal-example"],
)
def test_bundled_model_facts_match_the_reference(
    reference_spec: Path, bundled_spec: Path | None
) -> None:
    """Each bundled model's parsed facts (defaults, SKUs, tasks, dates, window) are the
    reference's."""
    reference = load_model_spec(reference_spec)
    bundled = load_model_spec(bundled_spec) if bundled_spec else bundled_base_model()
    assert (reference.id, reference.version) == (bundled.id, bundled.version)
    assert reference.archived == bundled.archived
    assert reference.metadata == bundled.metadata
    assert model_specific_defaults(reference) == model_specific_defaults(bundled)
    assert finetune_allow_list(reference) == finetune_allow_list(bundled)
    skus = reference.system_metadata["SKU"]["finetuneRecommendedSkus"]
    assert set(skus) == set(reference.system_metadata["supportedComputes"]["finetuneComputes"])
    assert set(finetune_allow_list(reference) or ()) == set(skus)


def test_plan_against_the_reference_specs_builds_a_valid_job(tmp_path: Path) -> None:
    """The plan from the real specs equals the bundled plan and its job passes SDK validation."""
    from shared.platform.azureml._jobs import job_to_dict

    settings = Settings(platform="local", home=tmp_path)

    def plan(component_path: Path | None, model_path: Path | None) -> FinetunePlan:
        return plan_finetune(
            settings,
            line="support",
            dataset_sha256=SHA,
            base_model=load_model_spec(model_path) if model_path else bundled_base_model(),
            component=load_component_spec(component_path)
            if component_path
            else bundled_component(),
            data_container="prepared",
            compute=A100,
        )

    real = plan(PIPELINE, PHI4)
    assert real.run_id == plan(None, None).run_id
    assert real.parameters["deepspeed_stage"] == "3"
    assert real.parameters["precision"] == "16"
    job = job_to_dict(real, PIPELINE, datastore="tuneloop")
    assert job["name"] == real.run_id
