"""Model metadata parsed once (shared.platform.metadata) into BaseModelInfo.metadata: the bundled
Phi-4 and Phi-3 specs, the older tag forms, and odd metadata that must never crash or pass
silently."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.errors import PlanError
from shared.finetune import (
    RETIRED_MODEL_SPEC,
    bundled_base_model,
    finetune_allow_list,
    load_model_spec,
    model_specific_defaults,
)
from shared.platform.metadata import parse_model_metadata
from shared.platform.port import BaseModelInfo
from shared.release import inference_allow_list

PHI3_FINETUNE = (
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
)
PHI4_FINETUNE = (
    *PHI3_FINETUNE,
    "Standard_NC40ads_H100_v5",
    "Standard_NC80adis_H100_v5",
    "Standard_ND96isr_H100_v5",
)


def model(tags: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> BaseModelInfo:
    return BaseModelInfo(
        id="azureml://registries/azureml/models/m/versions/1",
        name="m",
        version="1",
        tags=tags or {},
        system_metadata=meta or {},
    )


def test_bundled_phi4_metadata_is_typed() -> None:
    """Phi-4 v8's shape (no deprecation section, preview, 8 SKUs) reads with no problem."""
    base = bundled_base_model()
    meta = base.metadata
    assert (base.name, base.version, base.archived) == ("Phi-4", "8", False)
    assert meta.problems == {}
    assert meta.finetune_skus == PHI4_FINETUNE
    assert meta.inference_skus == (
        *PHI4_FINETUNE[:5],
        "Standard_ND96isr_H100_v5",
        "Standard_NC40ads_H100_v5",
        "Standard_NC80adis_H100_v5",
    )
    assert meta.finetune_tasks == meta.inference_tasks == ("chat-completion",)
    assert meta.finetune_retirement is None
    assert meta.inference_retirement is None
    assert meta.context_window == 16384
    assert meta.preview is True
    assert meta.model_specific_defaults["deepspeed_stage"] == 3


def test_bundled_phi3_metadata_is_typed() -> None:
    """Every fact of the kept Phi-3 spec is read into its typed field, with no problem."""
    phi3 = load_model_spec(RETIRED_MODEL_SPEC)
    assert phi3.archived is True
    meta = phi3.metadata
    assert meta.problems == {}
    assert meta.finetune_skus == PHI3_FINETUNE
    assert meta.inference_skus is not None
    assert meta.inference_skus[0] == "Standard_NC6s_v3"  # supportedComputes.inferenceComputes
    assert len(meta.inference_skus) == 9
    assert meta.finetune_tasks == ("chat-completion",)
    assert meta.inference_tasks == ("chat-completion",)
    assert meta.finetune_deprecation == datetime(2025, 6, 30, tzinfo=UTC)
    assert meta.finetune_retirement == datetime(2025, 8, 30, tzinfo=UTC)
    assert meta.inference_retirement == datetime(2025, 8, 30, tzinfo=UTC)
    assert meta.context_window == 4096
    assert meta.model_specific_defaults["deepspeed_stage"] == 2
    assert meta.model_specific_defaults["learning_rate"] == "5e-6"  # YAML text, coerced later


def test_planner_and_release_read_the_same_parse() -> None:
    """finetune_allow_list and the release's inference_allow_list are views of one parse."""
    base = bundled_base_model()
    assert finetune_allow_list(base) == list(PHI4_FINETUNE)
    assert inference_allow_list(base) == list(base.metadata.inference_skus or ())


def test_plan_warns_of_retirement_with_a_date() -> None:
    """The deprecation warnings print the date, not the registry's timestamp text."""
    from shared.finetune import _deprecation_warnings

    assert _deprecation_warnings(load_model_spec(RETIRED_MODEL_SPEC)) == [
        "Phi-3-mini-4k-instruct 15: fine-tuning deprecated from 2025-06-30 (metadata)",
        "Phi-3-mini-4k-instruct 15: fine-tuning retired from 2025-08-30 (metadata)",
        "Phi-3-mini-4k-instruct 15: inference retired from 2025-08-30 (metadata)",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        "['Standard_NC24rs_v3', 'Standard_ND40rs_v2']",
        '["Standard_NC24rs_v3", "Standard_ND40rs_v2"]',
        "Standard_NC24rs_v3, Standard_ND40rs_v2",
        ("Standard_NC24rs_v3", "Standard_ND40rs_v2"),
    ],
    ids=["python-literal", "json", "comma-separated", "list"],
)
def test_allow_list_tag_forms(raw: Any) -> None:
    """The tag form the notebooks read with literal_eval, JSON, plain words or a real list."""
    meta = model(tags={"finetune_compute_allow_list": raw}).metadata
    assert meta.finetune_skus == ("Standard_NC24rs_v3", "Standard_ND40rs_v2")
    assert meta.problems == {}


def test_most_specific_source_wins_and_duplicates_fold() -> None:
    """The tag beats supportedComputes, which beats SKU; sizes differing in case fold to one."""
    meta = {
        "supportedComputes": {"inferenceComputes": ["Standard_NC6s_v3", "STANDARD_NC6S_V3"]},
        "SKU": {"inferenceRecommendedSkus": ["Standard_NC12s_v3"]},
    }
    assert model(meta=meta).metadata.inference_skus == ("Standard_NC6s_v3",)
    tagged = model(tags={"inference_compute_allow_list": "['Standard_ND40rs_v2']"}, meta=meta)
    assert tagged.metadata.inference_skus == ("Standard_ND40rs_v2",)


def test_an_empty_list_states_nothing() -> None:
    """An empty allow-list would forbid every size: it reads as "does not say" (None)."""
    meta = {"supportedComputes": {"finetuneComputes": []}, "SKU": {"finetuneRecommendedSkus": []}}
    assert model(meta=meta).metadata.finetune_skus is None
    assert model(tags={"finetune_compute_allow_list": "[]"}).metadata.finetune_skus is None


@pytest.mark.parametrize(
    ("tags", "meta", "fact"),
    [
        ({"finetune_compute_allow_list": "[unclosed"}, {}, "finetune_skus"),
        ({"finetune_compute_allow_list": "{'a': 1}"}, {}, "finetune_skus"),
        ({}, {"supportedComputes": {"finetuneComputes": 5}}, "finetune_skus"),
        ({"inference_compute_allow_list": "__import__('os')"}, {}, "inference_skus"),
        ({"model_specific_defaults": "[1, 2"}, {}, "model_specific_defaults"),
        ({"model_specific_defaults": "[1, 2]"}, {}, "model_specific_defaults"),
        ({"model_specific_defaults": "[" * 5000 + "]" * 5000}, {}, "model_specific_defaults"),
        ({"model_specific_defaults": "{" + "'k': 1, " * 20000 + "}"}, {},
         "model_specific_defaults"),
        ({}, {"deprecation": {"finetuneRetirementDate": "next year"}}, "finetune_retirement"),
        ({}, {"tasks": {"fineTuningTasks": {"chat": True}}}, "finetune_tasks"),
        ({}, {"textContextWindow": "lots"}, "context_window"),
    ],
    ids=[
        "tag-unclosed", "tag-mapping", "meta-int", "tag-code", "defaults-unclosed",
        "defaults-list", "defaults-deep", "defaults-huge", "date-words", "tasks-mapping",
        "window-words",
    ],
)
def test_odd_metadata_is_a_problem_never_a_crash(
    tags: dict[str, Any], meta: dict[str, Any], fact: str
) -> None:
    """Unreadable metadata leaves that fact empty and says why, keyed by the fact."""
    parsed = parse_model_metadata(tags, meta)
    assert fact in parsed.problems
    assert getattr(parsed, fact) in (None, (), {})
    assert all(k == fact for k in parsed.problems)


def test_an_unreadable_tag_is_not_replaced_by_another_source() -> None:
    """A garbled allow-list tag is an error to the planner, not a silent fall back to SKU."""
    base = model(
        tags={"finetune_compute_allow_list": "[unclosed"},
        meta={"SKU": {"finetuneRecommendedSkus": ["Standard_NC24ads_A100_v4"]}},
    )
    assert base.metadata.finetune_skus is None
    with pytest.raises(PlanError, match="m tag finetune_compute_allow_list is not a list literal"):
        finetune_allow_list(base)


def test_the_planner_refuses_unreadable_defaults_and_the_release_does_not_care() -> None:
    """Garbled defaults stop a plan; the release still reads the inference list."""
    base = model(
        tags={"model_specific_defaults": "[1, 2]"},
        meta={"supportedComputes": {"inferenceComputes": ["Standard_NC6s_v3"]}},
    )
    with pytest.raises(PlanError, match="is not a mapping but list"):
        model_specific_defaults(base)
    assert inference_allow_list(base) == ["Standard_NC6s_v3"]


def test_replace_parses_again() -> None:
    """dataclasses.replace with new tags gives the metadata of the new tags."""
    base = bundled_base_model()
    bare = dataclasses.replace(base, tags={}, system_metadata={})
    assert bare.metadata.finetune_skus is None
    assert bare.metadata.model_specific_defaults == {}
    assert base.metadata.finetune_skus == PHI4_FINETUNE
