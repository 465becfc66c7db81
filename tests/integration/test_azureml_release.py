"""The Azure ML release operations through the real SDK and a fake HTTP transport.

``MLClient(..., transport=FakeTransport)`` talks to a small stateful fake of the workspace's
REST API (models, online endpoints, deployments, keys, async operations, scoring) answering
with the bodies in ``tests/fixtures/azureml_release``; the tests assert on what we send.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ConflictError, NotFoundError, PlatformError, TransientError
from shared.platform.port import DeploymentSpec, ModelVersionInfo, ProvisioningState
from shared.settings import Settings
from tests.fakes.credential import FakeCredential
from tests.fakes.transport import FakeTransport, Recorded, Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "azureml_release"
SUB = "00000000-1111-2222-3333-444444444444"
ARM = "https://management.azure.com"
WS = (
    f"/subscriptions/{SUB}/resourceGroups/rg-tuneloop/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws-tuneloop"
)
ASYNC = f"{ARM}/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/eastus2/mfeOperationsStatus/oe:op-1?api-version=2023-04-01-preview"  # noqa: E501
JOB = "tl-chat-0123456789ab-cdef0123"


def fixture(name: str, **subs: str) -> Any:
    text = (FIXTURES / name).read_text()
    for key, value in subs.items():
        text = text.replace(f"__{key}__", value)
    return json.loads(text)


def not_found(what: str) -> Reply:
    return Reply(404, fixture("error_not_found.json", WHAT=what))


class FakeWorkspace:
    """The workspace's REST surface for the release, with state: PUT creates, GET reads."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.scores: list[Recorded] = []
        self.score_reply = Reply(200, fixture("score_chat.json"))
        self.t = FakeTransport()
        t, base = self.t, re.escape(ARM + WS)
        t.add("GET", base + r"\?", Reply(200, fixture("workspace.json")))
        t.add("GET", base + r"/models/[^/]+/versions\?", self.list_models)
        t.add("GET", base + r"/models/([^/]+)/versions/([^/?]+)\?", self.get_model)
        t.add("PUT", base + r"/models/([^/]+)/versions/([^/?]+)\?", self.put_model)
        t.add("GET", base + r"/onlineEndpoints/([^/?]+)\?", self.get_endpoint)
        t.add("PUT", base + r"/onlineEndpoints/([^/?]+)\?", self.put_endpoint)
        t.add("POST", base + r"/onlineEndpoints/([^/?]+)/listKeys\?",
              Reply(200, fixture("endpoint_keys.json")))
        t.add("GET", base + r"/onlineEndpoints/([^/]+)/deployments\?", self.list_deployments)
        t.add("GET", base + r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)\?", self.get_deployment)
        t.add("PUT", base + r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)\?", self.put_deployment)
        t.add("DELETE", base + r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)\?", self.delete)
        t.add("GET", re.escape(ASYNC.split("?")[0]), Reply(200, {"status": "Succeeded"}))
        t.add("POST", r"\.inference\.ml\.azure\.com/score$", self.score)

    @staticmethod
    def _parts(rec: Recorded, pattern: str) -> tuple[str, ...]:
        match = re.search(pattern, rec.url)
        assert match
        return match.groups()

    def list_models(self, rec: Recorded) -> Reply:
        return Reply(200, {"value": list(self.models.values())[-1:], "nextLink": None})

    def get_model(self, rec: Recorded) -> Reply:
        key = self._parts(rec, r"/models/([^/]+)/versions/([^/?]+)")
        body = self.models.get((key[0], key[1]))
        return Reply(200, body) if body else not_found(f"model {key[0]}:{key[1]}")

    def put_model(self, rec: Recorded) -> Reply:
        name, version = self._parts(rec, r"/models/([^/]+)/versions/([^/?]+)")
        job = rec.json()["properties"]["modelUri"].split("/jobs/")[1].split("/")[0]
        body = fixture("model_version.json", NAME=name, VERSION=version, JOB=job)
        body["properties"]["tags"] = rec.json()["properties"]["tags"]
        self.models[(name, version)] = body
        return Reply(200, body)

    def get_endpoint(self, rec: Recorded) -> Reply:
        (name,) = self._parts(rec, r"/onlineEndpoints/([^/?]+)")
        body = self.endpoints.get(name)
        return Reply(200, body) if body else not_found(f"endpoint {name}")

    def put_endpoint(self, rec: Recorded) -> Reply:
        (name,) = self._parts(rec, r"/onlineEndpoints/([^/?]+)")
        sent = rec.json()
        body = copy.deepcopy(self.endpoints.get(name) or fixture("online_endpoint.json", NAME=name))
        body["tags"] = sent.get("tags") or {}
        body["properties"]["traffic"] = sent["properties"].get("traffic") or {}
        body["properties"]["provisioningState"] = (
            "Updating" if name in self.endpoints else ProvisioningState.CREATING
        )
        self.endpoints[name] = body
        return Reply(201, body, {"Azure-AsyncOperation": ASYNC, "Retry-After": "0"})

    def list_deployments(self, rec: Recorded) -> Reply:
        (endpoint,) = self._parts(rec, r"/onlineEndpoints/([^/]+)/deployments")
        if endpoint not in self.endpoints:
            return not_found(f"endpoint {endpoint}")
        value = [b for (e, _), b in self.deployments.items() if e == endpoint]
        return Reply(200, {"value": value, "nextLink": None})

    def get_deployment(self, rec: Recorded) -> Reply:
        key = self._parts(rec, r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)")
        body = self.deployments.get((key[0], key[1]))
        return Reply(200, body) if body else not_found(f"deployment {key[1]}")

    def put_deployment(self, rec: Recorded) -> Reply:
        endpoint, name = self._parts(rec, r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)")
        sent = rec.json()
        body = fixture(
            "online_deployment.json", ENDPOINT=endpoint, NAME=name,
            MODEL=sent["properties"]["model"],
        )
        body["properties"]["instanceType"] = sent["properties"]["instanceType"]
        self.deployments[(endpoint, name)] = body
        return Reply(201, body, {"Azure-AsyncOperation": ASYNC, "Retry-After": "0"})

    def delete(self, rec: Recorded) -> Reply:
        key = self._parts(rec, r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)")
        if self.deployments.pop((key[0], key[1]), None) is None:
            return Reply(204, b"")
        return Reply(202, b"", {"Azure-AsyncOperation": ASYNC, "Location": ASYNC,
                                "Retry-After": "0"})

    def score(self, rec: Recorded) -> Reply:
        self.scores.append(rec)
        return self.score_reply

    def succeed(self) -> None:
        """Provisioning finishes: every endpoint and deployment reads Succeeded."""
        for body in [*self.endpoints.values(), *self.deployments.values()]:
            body["properties"]["provisioningState"] = ProvisioningState.SUCCEEDED


@pytest.fixture
def ws() -> FakeWorkspace:
    return FakeWorkspace()


@pytest.fixture
def platform(ws: FakeWorkspace) -> Any:
    from shared.platform.azureml import AzureMLPlatform

    settings = Settings(
        subscription_id=SUB, resource_group="rg-tuneloop", workspace_name="ws-tuneloop",
        platform="azureml",
    )
    return AzureMLPlatform(settings, credential=FakeCredential(), transport=ws.t)


def puts(ws: FakeWorkspace, pattern: str) -> list[dict[str, Any]]:
    return [r.json() for r in ws.t.calls("PUT", pattern)]


def test_register_model_sends_an_mlflow_model_from_the_job_output(
    ws: FakeWorkspace, platform: Any
) -> None:
    """Registration PUTs name:version with the job's trained_model path, type and lineage tags."""
    tags = {"tuneloop_run": JOB, "tuneloop_line": "chat", "tuneloop_dataset": "ab" * 32}
    info = platform.register_model("tuneloop-chat", "3", job_name=JOB, tags=tags)
    (sent,) = puts(ws, r"/models/tuneloop-chat/versions/3\?")
    assert sent["properties"]["modelType"] == "mlflow_model"
    assert sent["properties"]["modelUri"] == f"azureml://jobs/{JOB}/outputs/trained_model"
    assert sent["properties"]["tags"] == tags
    assert info.version == "3"
    assert info.id.endswith(f"{WS}/models/tuneloop-chat/versions/3")


def test_register_model_is_idempotent(ws: FakeWorkspace, platform: Any) -> None:
    """A second registration of the same (name, version) sends nothing new."""
    platform.register_model("tuneloop-chat", "1", job_name=JOB, tags={})
    again = platform.register_model("tuneloop-chat", "1", job_name=JOB, tags={})
    assert again.version == "1"
    assert len(ws.t.calls("PUT", r"/models/")) == 1


def test_update_model_tags_puts_the_version_back_whole_with_merged_tags(
    ws: FakeWorkspace, platform: Any
) -> None:
    """Tagging GETs the version and PUTs it back under the same name:version with the same
    modelUri, type, description and flavors and the merged tags; a merge that changes nothing sends
    no PUT."""
    platform.register_model(
        "tuneloop-chat", "3", job_name=JOB, tags={"tuneloop_line": "chat", "tuneloop_run": JOB}
    )
    info = platform.update_model_tags("tuneloop-chat", "3", {"tuneloop_exam_chrf": "61.20"})
    register, update = puts(ws, r"/models/tuneloop-chat/versions/3\?")
    sent = update["properties"]
    assert sent["tags"] == {
        "tuneloop_line": "chat", "tuneloop_run": JOB, "tuneloop_exam_chrf": "61.20"
    }
    assert sent["modelUri"] == register["properties"]["modelUri"]
    assert sent["modelType"] == "mlflow_model"
    assert sent["description"] == register["properties"]["description"]
    assert sent["flavors"]["transformers"]["data"]["task"] == "chat-completion"
    assert info.tags["tuneloop_exam_chrf"] == "61.20"
    platform.update_model_tags("tuneloop-chat", "3", {"tuneloop_exam_chrf": "61.20"})
    assert len(ws.t.calls("PUT", r"/models/")) == 2


def test_update_model_tags_of_a_missing_version_sends_no_put(
    ws: FakeWorkspace, platform: Any
) -> None:
    """A missing version is NotFoundError (the GET's 404) and nothing is PUT."""
    with pytest.raises(NotFoundError):
        platform.update_model_tags("tuneloop-chat", "9", {"tuneloop_exam_chrf": "1"})
    assert ws.t.calls("PUT", r"/models/") == []


def test_get_model_version_missing_raises_not_found(platform: Any) -> None:
    """get_* raises NotFoundError on a 404."""
    with pytest.raises(NotFoundError):
        platform.get_model_version("tuneloop-chat", "9")


def test_ensure_endpoint_creates_a_key_auth_endpoint_without_waiting(
    ws: FakeWorkspace, platform: Any
) -> None:
    """The endpoint PUT says key auth and our tags; the call returns while it is Creating."""
    tags = {"tuneloop_managed": "true", "tuneloop_line": "chat"}
    info = platform.ensure_endpoint("tl-chat", tags=tags)
    (sent,) = puts(ws, r"/onlineEndpoints/tl-chat\?")
    assert sent["properties"]["authMode"] == "Key"
    assert sent["tags"] == tags
    assert sent["location"] == "eastus2"
    assert info.provisioning_state == ProvisioningState.CREATING
    assert info.scoring_uri == "https://tl-chat.eastus2.inference.ml.azure.com/score"
    ws.succeed()
    again = platform.ensure_endpoint("tl-chat", tags=tags)
    assert again.provisioning_state == ProvisioningState.SUCCEEDED
    assert len(ws.t.calls("PUT", r"/onlineEndpoints/tl-chat\?")) == 1


def spec(name: str = "v02", instance_type: str = "Standard_NC6s_v3") -> DeploymentSpec:
    model = ModelVersionInfo(
        "tuneloop-chat", "2", f"{WS}/models/tuneloop-chat/versions/2",
    )
    return DeploymentSpec(
        endpoint="tl-chat", name=name, model=model, instance_type=instance_type,
        instance_count=1, tags={"tuneloop_run": JOB},
    )


def test_deploy_sends_model_instance_probe_and_timeout(ws: FakeWorkspace, platform: Any) -> None:
    """The deployment PUT names the registered model, the instance type, the notebook's liveness
    probe delay and request timeout; it starts and returns without waiting."""
    platform.ensure_endpoint("tl-chat", tags={})
    ws.succeed()
    info = platform.deploy(spec())
    (sent,) = puts(ws, r"/deployments/v02\?")
    props = sent["properties"]
    assert props["endpointComputeType"] == "Managed"
    assert props["model"] == f"{WS}/models/tuneloop-chat/versions/2"
    assert props["instanceType"] == "Standard_NC6s_v3"
    assert sent["sku"]["capacity"] == 1
    assert props["livenessProbe"]["initialDelay"] == "PT10M"
    assert props["requestSettings"]["requestTimeout"] == "PT1M30S"
    assert sent["tags"] == {"tuneloop_run": JOB}
    assert info.provisioning_state == ProvisioningState.CREATING
    # Creating a deployment never touches the endpoint's traffic (it starts at 0 %).
    assert len(ws.t.calls("PUT", r"/onlineEndpoints/tl-chat\?")) == 1


def test_deploy_is_idempotent(ws: FakeWorkspace, platform: Any) -> None:
    """deploy() of an existing deployment returns its state and sends no second PUT."""
    platform.ensure_endpoint("tl-chat", tags={})
    ws.succeed()
    platform.deploy(spec())
    ws.succeed()
    assert platform.deploy(spec()).provisioning_state == ProvisioningState.SUCCEEDED
    assert len(ws.t.calls("PUT", r"/deployments/")) == 1


def test_set_traffic_puts_the_endpoint_with_the_new_split(
    ws: FakeWorkspace, platform: Any
) -> None:
    """All traffic to the new deployment: the endpoint PUT carries only {v02: 100}."""
    platform.ensure_endpoint("tl-chat", tags={"tuneloop_line": "chat"})
    ws.endpoints["tl-chat"]["properties"]["traffic"] = {"v01": 100, "v02": 0}
    ws.succeed()
    platform.set_traffic("tl-chat", {"v02": 100})
    sent = puts(ws, r"/onlineEndpoints/tl-chat\?")[-1]
    assert sent["properties"]["traffic"] == {"v02": 100}
    assert sent["tags"] == {"tuneloop_line": "chat"}
    assert sent["properties"]["authMode"] == "Key"


def test_set_traffic_already_set_sends_nothing(ws: FakeWorkspace, platform: Any) -> None:
    """Idempotent: the split in place already means no PUT."""
    platform.ensure_endpoint("tl-chat", tags={})
    ws.endpoints["tl-chat"]["properties"]["traffic"] = {"v02": 100}
    ws.succeed()
    platform.set_traffic("tl-chat", {"v02": 100})
    assert len(ws.t.calls("PUT", r"/onlineEndpoints/tl-chat\?")) == 1


def test_delete_deployment_and_already_gone(ws: FakeWorkspace, platform: Any) -> None:
    """DELETE is sent; a deployment (or endpoint) that is gone counts as deleted."""
    platform.ensure_endpoint("tl-chat", tags={})
    ws.succeed()
    platform.deploy(spec("v01"))
    platform.delete_deployment("tl-chat", "v01")
    assert ("tl-chat", "v01") not in ws.deployments
    platform.delete_deployment("tl-chat", "v01")
    platform.delete_deployment("tl-gone", "v01")  # no endpoint: gone, no DELETE needed
    assert len(ws.t.calls("DELETE")) == 2


def test_invoke_targets_the_deployment_with_the_endpoint_key(
    ws: FakeWorkspace, platform: Any
) -> None:
    """Scoring POSTs to the scoring URI with Bearer key and the azureml-model-deployment header."""
    platform.ensure_endpoint("tl-chat", tags={})
    ws.succeed()
    payload = {"input_data": {"input_string": [[{"role": "user", "content": "hi"}]],
                              "parameters": {"max_new_tokens": 8}}}
    answer = platform.invoke("tl-chat", payload, deployment="v02")
    assert answer == {"output": "Hello! How can I help you today?"}
    (rec,) = ws.scores
    assert rec.url == "https://tl-chat.eastus2.inference.ml.azure.com/score"
    headers = {k.lower(): v for k, v in rec.headers.items()}
    assert headers["azureml-model-deployment"] == "v02"
    assert headers["authorization"] == "Bearer test-primary-key-0000"
    assert rec.json() == payload
    platform.invoke("tl-chat", payload)  # without a deployment: no header (no leak from before)
    assert "azureml-model-deployment" not in {k.lower() for k in ws.scores[-1].headers}


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, TransientError), (429, TransientError), (424, PlatformError), (404, NotFoundError)],
)
def test_invoke_maps_scoring_errors(
    ws: FakeWorkspace, platform: Any, status: int, error: type[Exception]
) -> None:
    """Scoring failures map onto the error tree: retryable ones are TransientError."""
    platform.ensure_endpoint("tl-chat", tags={})
    ws.succeed()
    ws.score_reply = Reply(status, {"message": "model failed to load"})
    with pytest.raises(error):
        platform.invoke("tl-chat", {"input_data": {}}, deployment="v02")


# --- endpoint names are unique per region, across customers (issue 10, defect 6) ----------


def name_taken(status: int = 409) -> Reply:
    """The service's refusal of a name another workspace in the region holds."""
    return Reply(status, fixture("error_endpoint_name_taken.json"))


@pytest.mark.parametrize("status", [409, 400])
def test_a_name_taken_elsewhere_in_the_region_is_a_conflict_saying_so(
    ws: FakeWorkspace, platform: Any, status: int
) -> None:
    """PUT refused (409, or 400 'unique within a region') and GET 404 in our workspace: the name
    belongs to another workspace or customer; a ConflictError says so, never 'it is ours'."""
    ws.t.add("PUT", r"/onlineEndpoints/tl-chat\?", name_taken(status))
    with pytest.raises(ConflictError) as excinfo:
        platform.ensure_endpoint("tl-chat", tags={"tuneloop_line": "chat"})
    assert "is taken in the region by another workspace or subscription" in str(excinfo.value)
    assert "unique within a region" in str(excinfo.value)
    assert "rename the line" in (excinfo.value.hint or "")


def test_a_409_from_our_racing_create_is_ours(ws: FakeWorkspace, platform: Any) -> None:
    """A concurrent create of the same line's endpoint (409, then GET shows our line tag) is
    the endpoint we wanted: returned, no error."""
    tags = {"tuneloop_managed": "true", "tuneloop_line": "chat"}

    def raced(rec: Recorded) -> Reply:
        ws.endpoints["tl-chat"] = {**fixture("online_endpoint.json", NAME="tl-chat"), "tags": tags}
        return name_taken()

    ws.t.add("PUT", r"/onlineEndpoints/tl-chat\?", raced)
    info = platform.ensure_endpoint("tl-chat", tags=tags)
    assert info.name == "tl-chat"
    assert info.tags["tuneloop_line"] == "chat"


@pytest.mark.parametrize(
    ("their_tags", "says"),
    [
        ({}, "without a tuneloop_line tag: it is not this line's"),
        ({"tuneloop_line": "other"}, "belongs to line 'other', not to line 'chat'"),
    ],
    ids=["untagged", "other-line"],
)
def test_a_409_on_an_endpoint_without_our_line_tag_is_refused(
    ws: FakeWorkspace, platform: Any, their_tags: dict[str, str], says: str
) -> None:
    """409 and the GET finds the endpoint in our workspace but not tagged with our line: we
    believe it is ours only if it carries our tuneloop_line tag."""

    def raced(rec: Recorded) -> Reply:
        body = fixture("online_endpoint.json", NAME="tl-chat")
        ws.endpoints["tl-chat"] = {**body, "tags": their_tags}
        return name_taken()

    ws.t.add("PUT", r"/onlineEndpoints/tl-chat\?", raced)
    with pytest.raises(ConflictError, match=says):
        platform.ensure_endpoint("tl-chat", tags={"tuneloop_line": "chat"})
