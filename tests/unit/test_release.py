"""Pure parts of the release: the promotion decision, reading answers, allow-lists, names."""

from __future__ import annotations

from typing import Any

import pytest

from shared.naming import deployment_name
from shared.platform.port import BaseModelInfo
from shared.release import answer_text, decide_promotion, inference_allow_list


def test_auto_always_promotes() -> None:
    """promotion=auto promotes without comparing."""
    assert decide_promotion("auto").promote


def test_manual_holds_and_keeps_the_deployment() -> None:
    """promotion=manual holds with the deployment left at 0 % for a person."""
    d = decide_promotion("manual")
    assert not d.promote
    assert d.keep_deployment


@pytest.mark.parametrize(
    ("response", "text"),
    [
        ({"output": "Hi there"}, "Hi there"),
        ('{"output": "Hi"}', "Hi"),
        ([{"0": "Hi"}], "Hi"),
        ({"choices": [{"message": {"role": "assistant", "content": "Hi"}}]}, "Hi"),
        ("plain text", "plain text"),
        ({"output": "   "}, ""),
        ({"output": ""}, ""),
        ({}, ""),
        (None, ""),
        ([], ""),
    ],
)
def test_answer_text(response: Any, text: str) -> None:
    """The assistant text is found in the scoring response shapes Azure ML deployments use."""
    assert answer_text(response) == text


def base(**kwargs: Any) -> BaseModelInfo:
    return BaseModelInfo(id="azureml://registries/azureml/models/m/versions/1", name="m",
                         version="1", **kwargs)


def test_allow_list_from_the_notebook_tag() -> None:
    """Older model cards carry inference_compute_allow_list as a stringified list tag."""
    info = base(tags={"inference_compute_allow_list": "['Standard_NC6s_v3', 'Standard_NC12s_v3']"})
    assert inference_allow_list(info) == ["Standard_NC6s_v3", "Standard_NC12s_v3"]


def test_allow_list_from_system_metadata() -> None:
    """Newer cards (Phi-3 v15) state supportedComputes.inferenceComputes in system metadata."""
    meta = {"supportedComputes": {"inferenceComputes": ["Standard_NC24ads_A100_v4"]},
            "SKU": {"inferenceRecommendedSkus": ["Standard_NC6s_v3"]}}
    assert inference_allow_list(base(system_metadata=meta)) == ["Standard_NC24ads_A100_v4"]


def test_no_allow_list() -> None:
    """A model that states nothing allows anything (None)."""
    assert inference_allow_list(base()) is None


@pytest.mark.parametrize(("version", "name"), [(1, "v01"), ("7", "v07"), (12, "v12"),
                                                 ("123", "v123")])
def test_deployment_name(version: str | int, name: str) -> None:
    """Deployment names are v<version>, padded to Azure ML's 3-character minimum."""
    assert deployment_name(version) == name


def test_deployment_name_rejects_invalid_versions() -> None:
    """A version that cannot make a valid deployment name is a clear error."""
    with pytest.raises(ValueError, match="invalid deployment name"):
        deployment_name("1.0_beta")
