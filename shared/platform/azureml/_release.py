"""Release on Azure ML: register the job's MLflow model, endpoints, deployments, traffic, invoke.

Long operations never block: ``begin_create_or_update`` is started and its poller left to
run (the caller polls through ``get_*`` later). ``get_*`` raise NotFoundError, ``delete_*``
succeed when the thing is already gone. Deployment settings follow the Azure ML fine-tuning
notebook for chat completion (``liveness_probe=ProbeSettings(initial_delay=600)``,
``request_settings=OnlineRequestSettings(request_timeout_ms=90000)``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from shared.errors import ConflictError, NotFoundError, PlatformError, map_azure_errors
from shared.naming import LINE_TAG
from shared.platform.azureml._base import AzureMLBase
from shared.platform.azureml._jobs import PIPELINE_OUTPUT, map_sdk_errors
from shared.platform.azureml._sweep import _listed_endpoint
from shared.platform.port import (
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    ModelVersionInfo,
    ProvisioningState,
    check_line_owner,
)

__all__ = [
    "LIVENESS_INITIAL_DELAY_S",
    "REQUEST_TIMEOUT_MS",
    "TRAFFIC_WAIT_S",
    "ReleaseMixin",
    "model_path",
]

log = logging.getLogger(__name__)

# From the azureml-examples chat-completion fine-tuning notebook: a fine-tuned LLM takes
# minutes to load (liveness probe) and seconds to minutes to answer (request timeout).
LIVENESS_INITIAL_DELAY_S = 600
REQUEST_TIMEOUT_MS = 90_000
# Traffic updates are quick; wait this long so the previous deployment can be deleted next.
TRAFFIC_WAIT_S = 120.0
MODEL_DEPLOYMENT_HEADER = "azureml-model-deployment"


def model_path(job_name: str) -> str:
    """Where a fine-tune pipeline job leaves its MLflow model (the job's named output)."""
    return f"azureml://jobs/{job_name}/outputs/{PIPELINE_OUTPUT}"


def _state(value: Any) -> str:
    """The REST spelling of a provisioning state (the SDK hands enums or strings)."""
    if value is None:
        return ProvisioningState.CREATING
    return str(getattr(value, "value", value))


def _model_info(model: Any) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=str(model.name), version=str(model.version), id=str(model.id),
        tags=dict(model.tags or {}),
    )


def _tag(tags: Mapping[str, str], key: str) -> str | None:
    """A tag's value; Azure tag names are case-insensitive."""
    for name, value in tags.items():
        if name.lower() == key:
            return str(value)
    return None


# What the service says when another workspace (any subscription) in the region holds the name;
# it may answer 400 rather than 409 (azureml-examples #1931: "There is already an endpoint with
# this name, Endpoint name needs to be unique within a region"; azure ansible #2231: "The
# specified endpoint name '...' is not available. Endpoint names must be unique within the
# region").
_TAKEN_IN_REGION = ("unique within the region", "unique within a region")


def _service_text(exc: PlatformError) -> str:
    """The service's own message when the mapped one lacks it (a 400's generic text)."""
    cause = exc.__cause__
    error = getattr(getattr(cause, "model", None), "error", None) or getattr(cause, "error", None)
    message = getattr(error, "message", None)
    if not message and cause is not None:
        found = re.search(r'"message":\s*"([^"]+)"', str(cause))
        message = found.group(1) if found else None
    return " ".join(str(message or exc.message).split())[:300]


def _name_taken_in_region(exc: PlatformError) -> bool:
    """Whether the refusal (or the service body it wraps) says the name is taken in the region."""
    text = f"{exc.message} {exc.__cause__ or ''}".lower()
    return any(phrase in text for phrase in _TAKEN_IN_REGION)


def _endpoint_info(endpoint: Any) -> EndpointInfo:
    # The same view as the listing (times from ARM systemData in ``properties``), so get and
    # list report the same endpoint; a missing provisioning state reads as Creating here.
    return _listed_endpoint(endpoint, state=_state)


def _deployment_info(deployment: Any) -> DeploymentInfo:
    return DeploymentInfo(
        endpoint=str(deployment.endpoint_name),
        name=str(deployment.name),
        model_id=str(deployment.model or ""),
        provisioning_state=_state(deployment.provisioning_state),
    )


class ReleaseMixin(AzureMLBase):
    """register_model, endpoints, deployments, invoke, traffic: the release half of the port."""

    # -- models -------------------------------------------------------------------------
    def register_model(
        self, name: str, version: str, *, job_name: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        """Register the job's trained model as an MLflow model ``name:version`` (once).

        Every version of ``name`` is read first: one tagged with another line is a
        NameOwnedByAnotherLineError (the port's ownership rule), the same version is returned
        as is.
        """
        existing = self._model_versions(name)
        for registered in existing:
            check_line_owner(f"model {name}:{registered.version}", registered.tags, tags)
        for registered in existing:
            if registered.version == version:
                return registered
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        model = Model(
            name=name,
            version=version,
            type=AssetTypes.MLFLOW_MODEL,
            path=model_path(job_name),
            tags=dict(tags),
            description=f"tuneloop: fine-tuned by job {job_name}",
        )
        with map_sdk_errors(f"registering model {name}:{version}"):
            created = self.ml_client.models.create_or_update(model)
        log.info("registered model %s:%s from job %s", name, version, job_name)
        return _model_info(created)

    def _model_versions(self, name: str) -> list[ModelVersionInfo]:
        """Every registered version of ``name`` (none when the model does not exist)."""
        try:
            with map_sdk_errors(f"versions of model {name}"):
                return [_model_info(m) for m in self.ml_client.models.list(name=name)]
        except NotFoundError:
            return []

    def get_model_version(self, name: str, version: str) -> ModelVersionInfo:
        with map_sdk_errors(f"model {name}:{version}"):
            return _model_info(self.ml_client.models.get(name=name, version=version))

    def update_model_tags(
        self, name: str, version: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        """Merge ``tags`` into the version's tags: GET the version, PUT it back whole.

        The REST API updates a model version by the same PUT that creates it
        (ModelVersions_CreateOrUpdate, "Create or update version"); the SDK's
        ``models.create_or_update`` sends it, and the service keeps the version as long as its
        ``modelUri`` is unchanged (it refuses a changed path: the SDK's AssetPathException).
        The Azure ML CLI's ``az ml model update`` does the same: show, then create the same
        ``name:version``. A version tagged with another line is NameOwnedByAnotherLineError.
        """
        with map_sdk_errors(f"model {name}:{version}"):
            model = self.ml_client.models.get(name=name, version=version)
        current = {str(k): str(v) for k, v in (model.tags or {}).items()}
        check_line_owner(f"model {name}:{version}", current, tags)
        merged = {**current, **{str(k): str(v) for k, v in tags.items()}}
        if merged == current:
            return _model_info(model)
        model.tags = merged
        with map_sdk_errors(f"tagging model {name}:{version}"):
            updated = self.ml_client.models.create_or_update(model)
        log.info("model %s:%s tagged %s", name, version, sorted(tags))
        return _model_info(updated)

    # -- endpoints ----------------------------------------------------------------------
    def ensure_endpoint(self, name: str, *, tags: Mapping[str, str]) -> EndpointInfo:
        """Start creating the key-auth managed endpoint if missing; return its state now.

        An existing endpoint tagged with another line is a NameOwnedByAnotherLineError (port
        ownership).
        """
        try:
            existing = self.get_endpoint(name)
        except NotFoundError:
            pass
        else:
            check_line_owner(f"endpoint {name}", existing.tags, tags)
            return existing
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        endpoint = ManagedOnlineEndpoint(
            name=name, auth_mode="key", tags=dict(tags),
            description="tuneloop: the live fine-tuned model of one line",
        )
        try:
            with map_sdk_errors(f"creating endpoint {name}"):
                self.ml_client.online_endpoints.begin_create_or_update(endpoint)  # not waited on
            log.info("endpoint %s: creation started", name)
        except ConflictError as exc:
            return self._created_elsewhere(name, tags, exc)
        except PlatformError as exc:
            if not _name_taken_in_region(exc):
                raise
            return self._created_elsewhere(name, tags, exc)
        info = self.get_endpoint(name)
        check_line_owner(f"endpoint {name}", info.tags, tags)
        return info

    def _created_elsewhere(
        self, name: str, tags: Mapping[str, str], exc: PlatformError
    ) -> EndpointInfo:
        """The create was refused because the name exists: ours only if our workspace has it
        with our ``tuneloop_line`` tag (a racing create of the same release).

        Online endpoint names are unique per Azure region across subscriptions and customers,
        so a conflict may come from an endpoint we cannot even see: then GET is 404 here.
        """
        where = f"workspace {self.settings.workspace_name}"
        try:
            info = self.get_endpoint(name)
        except NotFoundError:
            raise ConflictError(
                f"endpoint name {name} is taken in the region by another workspace or "
                "subscription (online endpoint names are unique per Azure region): "
                f"{_service_text(exc)}",
                hint="tuneloop derives endpoint names from the workspace id, so this is a rare "
                "clash: delete that endpoint if it is yours, or rename the line",
            ) from exc
        check_line_owner(f"endpoint {name}", info.tags, tags)
        mine, theirs = tags.get(LINE_TAG), _tag(info.tags, LINE_TAG)
        if not mine or theirs != mine:
            found = f"tagged {LINE_TAG}={theirs!r}" if theirs else f"without a {LINE_TAG} tag"
            raise ConflictError(
                f"endpoint {name} already exists in {where} {found}: it is not this line's",
                hint=f"delete or rename that endpoint, or tag it {LINE_TAG}={mine!r} if it is "
                "meant to serve this line",
            ) from exc
        log.info("endpoint %s: created concurrently (tagged %s=%s)", name, LINE_TAG, mine)
        return info

    def get_endpoint(self, name: str) -> EndpointInfo:
        with map_sdk_errors(f"endpoint {name}"):
            return _endpoint_info(self.ml_client.online_endpoints.get(name=name))

    # -- deployments --------------------------------------------------------------------
    def deploy(self, spec: DeploymentSpec) -> DeploymentInfo:
        """Start the deployment at 0 % traffic if missing; return its state now.

        The endpoint is read first: missing is NotFoundError, tagged with another line than
        ``spec.tags`` (or the model so tagged) is NameOwnedByAnotherLineError (port ownership).
        """
        endpoint = self.get_endpoint(spec.endpoint)
        check_line_owner(f"endpoint {spec.endpoint}", endpoint.tags, spec.tags)
        check_line_owner(
            f"model {spec.model.name}:{spec.model.version}", spec.model.tags, spec.tags
        )
        try:
            return self.get_deployment(spec.endpoint, spec.name)
        except NotFoundError:
            pass
        from azure.ai.ml.entities import (
            ManagedOnlineDeployment,
            OnlineRequestSettings,
            ProbeSettings,
        )

        deployment = ManagedOnlineDeployment(
            name=spec.name,
            endpoint_name=spec.endpoint,
            model=spec.model.id,
            instance_type=spec.instance_type,
            instance_count=spec.instance_count,
            liveness_probe=ProbeSettings(initial_delay=LIVENESS_INITIAL_DELAY_S),
            request_settings=OnlineRequestSettings(request_timeout_ms=REQUEST_TIMEOUT_MS),
            tags=dict(spec.tags),
        )
        try:
            with map_sdk_errors(f"creating deployment {spec.endpoint}/{spec.name}"):
                self.ml_client.online_deployments.begin_create_or_update(deployment)
            log.info("deployment %s/%s: creation started", spec.endpoint, spec.name)
        except ConflictError:  # a racing delivery's create is running: that deployment is ours
            log.info("deployment %s/%s: created concurrently", spec.endpoint, spec.name)
        return self.get_deployment(spec.endpoint, spec.name)

    def get_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        with map_sdk_errors(f"deployment {endpoint}/{name}"):
            return _deployment_info(
                self.ml_client.online_deployments.get(name=name, endpoint_name=endpoint)
            )

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Start deleting the deployment; already gone (or no endpoint) is success.

        One that still takes traffic is a ConflictError, checked here from the endpoint's
        split: the port's rule, whatever the service would answer (safe rollout moves the
        traffic away first, then deletes: learn.microsoft.com, "Perform safe rollout of new
        deployments for real-time inference").
        """
        try:
            with map_sdk_errors(f"endpoint {endpoint}"):
                entity = self.ml_client.online_endpoints.get(name=endpoint)
        except NotFoundError:
            return
        share = int((entity.traffic or {}).get(name, 0))
        if share > 0:
            raise ConflictError(
                f"deployment {name} still takes {share} % of {endpoint}'s traffic",
                hint="set its traffic to 0 first",
            )
        try:
            with map_sdk_errors(f"deleting deployment {endpoint}/{name}"):
                self.ml_client.online_deployments.begin_delete(name=name, endpoint_name=endpoint)
        except NotFoundError:
            return
        log.info("deployment %s/%s: deletion started", endpoint, name)

    # -- traffic and scoring ------------------------------------------------------------
    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        """Set the endpoint's traffic (omitted deployments get 0 %); idempotent."""
        with map_sdk_errors(f"traffic of endpoint {endpoint}"):
            entity = self.ml_client.online_endpoints.get(name=endpoint)
            current = {k: int(v) for k, v in (entity.traffic or {}).items() if int(v)}
            wanted = {k: int(v) for k, v in split.items() if int(v)}
            if current == wanted:
                return
            entity.traffic = dict(split)
            poller = self.ml_client.online_endpoints.begin_create_or_update(entity)
            poller.wait(timeout=TRAFFIC_WAIT_S)
        log.info("endpoint %s: traffic %s", endpoint, wanted)

    def invoke(
        self, endpoint: str, payload: Mapping[str, Any], *, deployment: str | None = None
    ) -> Any:
        """POST the payload to the scoring URI with the endpoint key (deployment header)."""
        from azure.core import PipelineClient
        from azure.core.exceptions import HttpResponseError
        from azure.core.pipeline.policies import RetryPolicy
        from azure.core.rest import HttpRequest

        with map_sdk_errors(f"endpoint {endpoint}"):
            info = self.ml_client.online_endpoints.get(name=endpoint)
            keys = self.ml_client.online_endpoints.get_keys(name=endpoint)
        if not info.scoring_uri:
            raise PlatformError(f"endpoint {endpoint} has no scoring URI yet")
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {keys.primary_key}",
        }
        if deployment:
            headers[MODEL_DEPLOYMENT_HEADER] = deployment
        request = HttpRequest("POST", info.scoring_uri, headers=headers, json=dict(payload))
        client: PipelineClient[Any, Any] = PipelineClient(
            base_url=info.scoring_uri, policies=[RetryPolicy(retry_total=1)],
            **self._client_kwargs(),
        )
        target = f"{endpoint}/{deployment}" if deployment else endpoint
        with map_azure_errors(f"scoring {target}"):
            with client:
                response = client.send_request(request, stream=False)
            status = response.status_code
            if status >= 400:
                # Keep the scoring server's own words (first 300 characters) in the message.
                text = response.text()[:300]
                raise HttpResponseError(message=f"HTTP {status}: {text}", response=response)
        try:
            return response.json()
        except (ValueError, HttpResponseError):
            return response.text()
