"""The Azure ML jobs adapter through the real SDK and a fake HTTP transport.

Every request goes through ``MLClient(..., transport=FakeTransport)``: registry discovery,
registry component and model GETs, compute GET and the workspace's VM size list, job GET and
PUT. The replies are realistic REST bodies from ``tests/fixtures/azureml``; the tests assert
on what we send.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any, ClassVar

import pytest

from shared.errors import ConflictError, NotFoundError, PlanError, PlatformError, TransientError
from shared.finetune import Planner
from shared.platform.port import FinetunePlan
from shared.settings import Settings
from tests.fakes.credential import FakeCredential
from tests.fakes.transport import FakeTransport, Reply
from tests.fixtures.azureml.rest import (
    HISTORY,
    SHA,
    VM_SIZES,
    WORKSPACE,
    azureml_transport,
    created,
    fixture,
    job_body,
    run_details,
    workspace_settings,
)


@pytest.fixture
def transport() -> FakeTransport:
    return azureml_transport()


def make_settings(**changes: Any) -> Settings:
    return workspace_settings(
        **{"datastore": "tuneloopprepared", "prepared_container": "prepared", **changes}
    )


def make_platform(settings: Settings, transport: FakeTransport) -> Any:
    from shared.platform.azureml import AzureMLPlatform

    return AzureMLPlatform(settings, credential=FakeCredential(), transport=transport)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def platform(settings: Settings, transport: FakeTransport) -> Any:
    return make_platform(settings, transport)


@pytest.fixture
def plan(settings: Settings, platform: Any) -> FinetunePlan:
    return Planner(settings, platform).plan(line="support", dataset_sha256=SHA)


# --- facts ---------------------------------------------------------------------------


def test_component_latest_comes_from_the_discovered_registry(
    platform: Any, transport: FakeTransport
) -> None:
    """The registry client discovers the registry's host, then resolves label latest there."""
    component = platform.get_component("chat_completion_pipeline")
    assert (
        component.id
        == "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"
    )
    assert len(component.inputs) == 69
    assert component.inputs["deepspeed_stage"].enum == ("2", "3")
    assert component.inputs["num_train_epochs"].min_value == 1
    urls = [r.url for r in transport.requests]
    assert "registries/azureml/discovery" in urls[0]
    assert any("$orderBy=createdtime desc&$top=1" in u for u in urls)


def test_base_model_has_tags_and_system_metadata(platform: Any) -> None:
    """Tags and the registry's systemMetadata (fine-tune SKUs) both reach the plan."""
    model = platform.get_base_model("Phi-4")
    assert model.id == "azureml://registries/azureml/models/Phi-4/versions/8"
    assert model.version == "8"
    assert model.archived is False
    assert model.tags["model_specific_defaults"].startswith("{'apply_deepspeed': 'true'")
    assert "Standard_NC24ads_A100_v4" in model.system_metadata["SKU"]["finetuneRecommendedSkus"]
    assert model.metadata.finetune_tasks == ("chat-completion",)


def test_a_retired_archived_registry_model_is_refused(transport: FakeTransport) -> None:
    """Phi-3-mini v15 as the registry serves it (isArchived, retired 2025-08-30) is refused."""
    settings = make_settings(base_model="Phi-3-mini-4k-instruct")
    platform = make_platform(settings, transport)
    assert platform.get_base_model("Phi-3-mini-4k-instruct").archived is True
    planner = Planner(settings, platform, today=lambda: date(2026, 12, 1))
    with pytest.raises(PlanError) as excinfo:
        planner.plan(line="support", dataset_sha256=SHA)
    assert any("fine-tuning was retired on 2025-08-30" in p for p in excinfo.value.problems)
    assert any("is archived" in p for p in excinfo.value.problems)
    assert not transport.calls("PUT")


def test_cluster_size_state_and_gpus(platform: Any, transport: FakeTransport) -> None:
    """The cluster's size comes from its GET, GPUs per node from the region's VM size list."""
    compute = platform.get_compute("gpu-a100")
    assert (compute.name, compute.size, compute.provisioning_state) == (
        "gpu-a100",
        "STANDARD_NC24ADS_A100_V4",
        "Succeeded",
    )
    assert compute.gpus_per_node == 1
    assert transport.calls("GET", VM_SIZES)


def test_serverless_gpus_from_the_size_list(transport: FakeTransport) -> None:
    """Serverless uses the configured instance type; an unoffered size is NotFound."""
    settings = make_settings(compute=None, finetune_instance_type="Standard_NC96ads_A100_v4")
    assert make_platform(settings, transport).get_compute("serverless").gpus_per_node == 4
    settings = make_settings(compute=None, finetune_instance_type="Standard_NC999")
    with pytest.raises(NotFoundError, match="Standard_NC999"):
        make_platform(settings, transport).get_compute("serverless")


def test_missing_cluster_is_a_plan_error(transport: FakeTransport) -> None:
    """A cluster that does not exist stops the plan with its name, before any submit."""
    settings = make_settings(compute="gpu-gone")
    with pytest.raises(PlanError, match="compute gpu-gone not found"):
        Planner(settings, make_platform(settings, transport)).plan(
            line="support", dataset_sha256=SHA
        )
    assert not transport.calls("PUT")


def test_disallowed_cluster_size_is_a_plan_error(transport: FakeTransport) -> None:
    """A V100 cluster is refused: retired, and not in Phi-4's fine-tune SKUs from the registry."""
    body = fixture("compute_gpu-a100.json")
    body["name"] = "gpu-v100"
    body["properties"]["properties"]["vmSize"] = "STANDARD_NC6S_V3"
    transport.add("GET", WORKSPACE + r"/computes/gpu-v100\?", Reply(200, body))
    settings = make_settings(compute="gpu-v100")
    with pytest.raises(PlanError) as excinfo:
        Planner(settings, make_platform(settings, transport)).plan(
            line="support", dataset_sha256=SHA
        )
    problems = excinfo.value.problems
    assert any("STANDARD_NC6S_V3 was retired by Azure on 2025-09-30" in p for p in problems)
    assert any("not in Phi-4's fine-tune allow-list" in p for p in problems)


# --- the VM size list is a subscription-scope read (defect 3) ------------------------


def forbid_vm_sizes(transport: FakeTransport, status: int = 403) -> None:
    """The ARM answer to a workspace-scoped identity: 403 AuthorizationFailed."""
    transport.add(
        "GET", VM_SIZES, Reply(status, fixture("error_vm_sizes_forbidden.json"),
                               headers={"x-ms-failure-cause": "gateway"}),
    )


@pytest.mark.parametrize("status", [401, 403])
def test_unreadable_vm_sizes_make_the_gpu_count_unknown(
    transport: FakeTransport, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """401/403 on the vmSizes list: the cluster is still read, GPUs unknown, one warning."""
    forbid_vm_sizes(transport, status)
    platform = make_platform(make_settings(), transport)
    with caplog.at_level("WARNING", logger="shared.platform.azureml._jobs"):
        compute = platform.get_compute("gpu-a100")
    assert (compute.size, compute.gpus_per_node) == ("STANDARD_NC24ADS_A100_V4", None)
    assert transport.calls("GET", VM_SIZES)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "GPUs per node of STANDARD_NC24ADS_A100_V4 unknown" in warning
    assert "TUNELOOP_GPUS_PER_NODE" in warning


def test_unreadable_vm_sizes_for_serverless_are_unknown_not_unoffered(
    transport: FakeTransport,
) -> None:
    """Serverless with a 403 size list: the configured size, GPUs unknown (no NotFoundError)."""
    forbid_vm_sizes(transport)
    settings = make_settings(compute=None, finetune_instance_type="Standard_NC24ads_A100_v4")
    compute = make_platform(settings, transport).get_compute("serverless")
    assert (compute.name, compute.size, compute.gpus_per_node) == (
        "serverless", "Standard_NC24ads_A100_v4", None,
    )


def test_a_plan_with_unreadable_vm_sizes_falls_back_to_the_setting(
    transport: FakeTransport,
) -> None:
    """The plan succeeds: TUNELOOP_GPUS_PER_NODE (else --gpus-per-node) gives the GPU count;
    without either it still plans, warning that the count is unknown."""
    forbid_vm_sizes(transport)
    settings = make_settings(gpus_per_node=1)
    plan = Planner(settings, make_platform(settings, transport)).plan(
        line="support", dataset_sha256=SHA
    )
    assert plan.parameters["number_of_gpu_to_use_finetuning"] == 1
    flag = Planner(make_settings(), make_platform(make_settings(), transport)).plan(
        line="support", dataset_sha256=SHA, gpus_per_node=1
    )
    assert flag.parameters["number_of_gpu_to_use_finetuning"] == 1
    bare = Planner(make_settings(), make_platform(make_settings(), transport)).plan(
        line="support", dataset_sha256=SHA
    )
    assert "number_of_gpu_to_use_finetuning" not in bare.parameters
    assert any("unknown" in w and "TUNELOOP_GPUS_PER_NODE" in w for w in bare.warnings)


def test_gpus_beyond_the_fallback_count_are_refused(transport: FakeTransport) -> None:
    """The fallback count bounds a user's number_of_gpu_to_use_finetuning like a looked-up one."""
    forbid_vm_sizes(transport)
    settings = make_settings(gpus_per_node=1)
    with pytest.raises(PlanError, match="exceeds the 1 GPUs per node"):
        Planner(settings, make_platform(settings, transport)).plan(
            line="support", dataset_sha256=SHA,
            cli_overrides={"number_of_gpu_to_use_finetuning": 2},
        )


# --- submit --------------------------------------------------------------------------


def test_submit_gets_404_then_creates_the_job(
    plan: FinetunePlan, platform: Any, transport: FakeTransport
) -> None:
    """A new run is looked up (404), then PUT under its run id with our inputs, tags and compute."""
    transport.add("PUT", WORKSPACE + r"/jobs/", created)
    info = platform.submit_finetune(plan)

    assert info.name == plan.run_id
    assert info.status == "NotStarted"
    methods = [
        (r.method, r.url.split("?")[0].rsplit("/", 1)[-1])
        for r in transport.calls(pattern=r"/jobs/")
    ]
    assert methods == [("GET", plan.run_id), ("PUT", plan.run_id)]

    body = transport.calls("PUT")[0].json()["properties"]
    assert body["jobType"] == "Pipeline"
    assert body["experimentName"] == "tuneloop-support"
    assert body["displayName"] == plan.display_name
    assert body["tags"] == {**plan.tags, "tuneloop_run": plan.run_id}
    assert body["settings"]["force_rerun"] is True
    assert body["settings"]["continue_on_step_failure"] is False
    node = body["jobs"]["chat_completion_pipeline"]
    assert node["componentId"] == (
        "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"
    )
    inputs = node["inputs"]
    assert inputs["train_file_path"] == {
        "uri": f"azureml://datastores/tuneloopprepared/paths/{plan.run_id}/train.jsonl",
        "job_input_type": "uri_file",
    }
    assert inputs["validation_file_path"]["uri"] == (
        f"azureml://datastores/tuneloopprepared/paths/{plan.run_id}/validation.jsonl"
    )
    assert inputs["mlflow_model_path"] == {
        "uri": "azureml://registries/azureml/models/Phi-4/versions/8",
        "job_input_type": "mlflow_model",
    }
    for name in (
        "compute_model_import",
        "compute_preprocess",
        "compute_finetune",
        "compute_model_evaluation",
    ):
        assert inputs[name]["value"] == "gpu-a100"
    assert inputs["number_of_gpu_to_use_finetuning"]["value"] == "1"
    assert inputs["deepspeed_stage"]["value"] == "3"
    assert inputs["precision"]["value"] == "16"
    assert "learning_rate_min" not in inputs
    assert body["outputs"]["trained_model"]["jobOutputType"] == "mlflow_model"


def test_submit_returns_an_existing_job_without_creating(
    plan: FinetunePlan, platform: Any, transport: FakeTransport
) -> None:
    """A retried trigger finds the job by name and sends no PUT."""
    transport.add("GET", WORKSPACE + r"/jobs/", Reply(200, job_body(plan.run_id, "Running")))
    info = platform.submit_finetune(plan)
    assert (info.name, info.status) == (plan.run_id, "Running")
    assert not transport.calls("PUT")


def test_submit_conflict_returns_the_winner(
    plan: FinetunePlan, platform: Any, transport: FakeTransport
) -> None:
    """A 409 on create means another worker created it: we GET it and go on."""
    transport.add(
        "GET",
        WORKSPACE + r"/jobs/",
        [
            Reply(404, fixture("error_job_not_found.json")),
            Reply(200, job_body(plan.run_id, "Preparing")),
        ],
    )
    transport.add("PUT", WORKSPACE + r"/jobs/", Reply(409, fixture("error_job_conflict.json")))
    info = platform.submit_finetune(plan)
    assert (info.name, info.status) == (plan.run_id, "Preparing")
    assert [r.method for r in transport.calls(pattern=r"/jobs/")] == ["GET", "PUT", "GET"]


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, TransientError), (503, TransientError), (400, PlatformError), (409, ConflictError)],
)
def test_service_errors_map_to_the_port_errors(status: int, error: type[Exception]) -> None:
    """Throttling and 5xx are transient; other refusals keep the service's message."""
    from azure.core.exceptions import HttpResponseError

    from shared.platform.azureml._jobs import map_sdk_errors

    class _Response:
        status_code = status
        reason = "x"
        headers: ClassVar[dict[str, str]] = {}

        def text(self) -> str:
            return json.dumps(
                {"error": {"code": "UserError", "message": "Quota exceeded for NCADSA100v4"}}
            )

    with pytest.raises(error) as excinfo, map_sdk_errors("create job tl-x"):
        raise HttpResponseError(response=_Response())  # type: ignore[arg-type]
    assert "create job tl-x" in str(excinfo.value)


def test_submit_create_refused_keeps_the_service_message(
    plan: FinetunePlan, platform: Any, transport: FakeTransport
) -> None:
    """A 400 from the service surfaces its message as a PlatformError; 503 is transient."""
    refusal = {"error": {"code": "UserError", "message": "Quota exceeded for family NCADSA100v4"}}
    transport.add("PUT", WORKSPACE + r"/jobs/", Reply(400, refusal))
    with pytest.raises(PlatformError, match="Quota exceeded") as excinfo:
        platform.submit_finetune(plan)
    assert not isinstance(excinfo.value, TransientError)
    busy = {"error": {"code": "ServiceUnavailable", "message": "busy"}}
    # The SDK's retry policy retries 503s itself; a 1 ms Retry-After keeps that quick here.
    transport.add("PUT", WORKSPACE + r"/jobs/", Reply(503, busy, {"Retry-After": "0.001"}))
    with pytest.raises(TransientError):
        platform.submit_finetune(plan)
    assert len(transport.calls("PUT")) > 2  # the 400 once, the 503 with the SDK's retries


def test_get_job_reports_status_tags_and_outputs(platform: Any, transport: FakeTransport) -> None:
    """get_job maps the REST job: status, our tags, the model output's URI, the studio link."""
    transport.add(
        "GET",
        WORKSPACE + r"/jobs/tl-support-x\?",
        Reply(200, job_body("tl-support-x", "Completed")),
    )
    info = platform.get_job("tl-support-x")
    assert info.status == "Completed"
    assert info.terminal
    assert info.tags["tuneloop_line"] == "support"
    assert info.outputs["trained_model"] == (
        "azureml://datastores/workspaceblobstore/paths/azureml/tl-support-x/trained_model/"
    )
    assert info.studio_url is not None
    assert "tl-support-x" in info.studio_url


def test_get_job_missing_is_not_found(platform: Any) -> None:
    """An unknown job name raises NotFoundError."""
    with pytest.raises(NotFoundError, match="job tl-nope"):
        platform.get_job("tl-nope")


def test_failed_job_carries_azure_ml_error_message(platform: Any, transport: FakeTransport) -> None:
    """A Failed job's error comes from its run history, found through workspace discovery."""
    transport.add("GET", WORKSPACE + r"/jobs/tl-bad\?", Reply(200, job_body("tl-bad", "Failed")))
    transport.add("GET", HISTORY + r"tl-bad/details\?", Reply(200, run_details("tl-bad")))
    info = platform.get_job("tl-bad")
    assert info.status == "Failed"
    assert info.error is not None
    assert info.error.startswith("UserError: Pipeline has failed child jobs.")
    assert "chat_completion_finetune" in info.error


def test_failed_job_without_details_still_reports(platform: Any, transport: FakeTransport) -> None:
    """When the run history cannot be read, the error points at the job's logs instead."""
    transport.add("GET", WORKSPACE + r"/jobs/tl-bad\?", Reply(200, job_body("tl-bad", "Failed")))
    info = platform.get_job("tl-bad")
    assert info.error == "job tl-bad failed; see its logs in Azure ML studio"
