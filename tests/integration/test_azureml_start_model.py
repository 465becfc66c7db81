"""Start from live and empty validation on Azure ML (issue 11 §2), through the real SDK and a
fake HTTP transport: the job PUT says which model training starts from."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shared.errors import NotFoundError
from shared.finetune import Planner
from shared.platform.port import FinetunePlan, ModelVersionInfo
from shared.settings import Settings
from tests.fakes.credential import FakeCredential
from tests.fakes.transport import FakeTransport, Reply
from tests.fixtures.azureml.rest import (
    SHA,
    SUB,
    WORKSPACE,
    azureml_transport,
    created,
    workspace_settings,
)

pytestmark = [pytest.mark.integration]

ARM_WORKSPACE = (
    f"/subscriptions/{SUB}/resourceGroups/rg-tuneloop/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws-tuneloop"
)
LIVE = ModelVersionInfo("tl-support", "3", f"{ARM_WORKSPACE}/models/tl-support/versions/3")


def _release_fixture(file: str, **values: str) -> dict[str, Any]:
    """A release fixture's body (the workspace's recorded shapes) with __KEY__ filled in."""
    text = (Path(__file__).parents[1] / "fixtures" / "azureml_release" / file).read_text()
    for key, value in values.items():
        text = text.replace(f"__{key}__", value)
    body: dict[str, Any] = json.loads(text)
    return body


@pytest.fixture
def transport() -> FakeTransport:
    t = azureml_transport()
    t.add("PUT", WORKSPACE + r"/jobs/", created)
    t.add("GET", WORKSPACE + r"/models/tl-support/versions/3\?",
          Reply(200, _release_fixture("model_version.json", NAME="tl-support", VERSION="3",
                                      JOB="tl-support-v1-job")))
    t.add("GET", WORKSPACE + r"/models/tl-support/versions/4\?",
          Reply(404, _release_fixture("error_not_found.json", WHAT="tl-support:4")))
    return t


@pytest.fixture
def settings() -> Settings:
    return workspace_settings(datastore="tuneloopprepared", prepared_container="prepared")


@pytest.fixture
def platform(settings: Settings, transport: FakeTransport) -> Any:
    from shared.platform.azureml import AzureMLPlatform

    return AzureMLPlatform(settings, credential=FakeCredential(), transport=transport)


def _inputs(transport: FakeTransport) -> dict[str, Any]:
    (put,) = transport.calls("PUT")
    node: dict[str, Any] = put.json()["properties"]["jobs"]["chat_completion_pipeline"]
    return dict(node["inputs"])


def _plan(settings: Settings, platform: Any, start: ModelVersionInfo | None) -> FinetunePlan:
    return Planner(settings, platform).plan(line="support", dataset_sha256=SHA, start_model=start)


def test_a_start_model_is_the_jobs_mlflow_model_with_lora_merged(
    settings: Settings, platform: Any, transport: FakeTransport
) -> None:
    """With a start model the job's mlflow_model_path is the workspace model version and
    merge_lora_weights is "true", so the output is a whole model."""
    plan = _plan(settings, platform, LIVE)
    platform.submit_finetune(plan)
    inputs = _inputs(transport)
    assert inputs["mlflow_model_path"]["job_input_type"] == "mlflow_model"
    # the adapter names azureml:tl-support:3; the SDK sends it as the workspace's ARM id
    assert inputs["mlflow_model_path"]["uri"] == f"{ARM_WORKSPACE}/models/tl-support/versions/3"
    assert inputs["merge_lora_weights"] == {"job_input_type": "literal", "value": "true"}


def test_without_a_start_model_the_job_starts_from_the_base_model(
    settings: Settings, platform: Any, transport: FakeTransport
) -> None:
    """No start model: mlflow_model_path is the registry base model, as before."""
    platform.submit_finetune(_plan(settings, platform, None))
    assert _inputs(transport)["mlflow_model_path"]["uri"] == (
        "azureml://registries/azureml/models/Phi-4/versions/8"
    )


def test_an_empty_validation_blob_leaves_the_validation_input_out(
    settings: Settings, platform: Any, transport: FakeTransport
) -> None:
    """validation_blob "" (no evaluation side): the job has no validation_file_path (optional
    in chat_completion_pipeline) and still trains on its train file."""
    plan = replace(_plan(settings, platform, None), validation_blob="")
    platform.submit_finetune(plan)
    inputs = _inputs(transport)
    assert "validation_file_path" not in inputs
    assert inputs["train_file_path"]["uri"].endswith(f"/{plan.run_id}/train.jsonl")


def test_a_start_model_missing_from_the_workspace_is_not_found(
    settings: Settings, platform: Any, transport: FakeTransport
) -> None:
    """A start model version the workspace does not have (404) is NotFoundError; no job PUT."""
    missing = ModelVersionInfo("tl-support", "4", f"{ARM_WORKSPACE}/models/tl-support/versions/4")
    with pytest.raises(NotFoundError):
        platform.submit_finetune(_plan(settings, platform, missing))
    assert not transport.calls("PUT")
    assert transport.calls("GET", r"/models/tl-support/versions/4")
