"""A hand-written in-memory implementation of the platform port, for unit and flow tests.

It keeps the port's contract (idempotent verbs, NotFoundError from get_*, delete_* of a missing
thing succeeds, long operations finish only after ``polls_to_provision`` reads) and lets a test
inject faults: ``fail_once("deploy", TransientError("boom"))`` makes the next call raise.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import NotFoundError, UnknownTrafficError
from shared.platform.port import (
    BaseModelInfo,
    ComponentInput,
    ComponentInterface,
    ComputeInfo,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    FinetunePlan,
    JobInfo,
    ModelVersionInfo,
    ProvisioningState,
)


@dataclass
class _Endpoint:
    info: EndpointInfo
    polls: int = 0
    deployments: dict[str, DeploymentInfo] = field(default_factory=dict)
    deployment_polls: dict[str, int] = field(default_factory=dict)


class FakePlatform:
    """In-memory platform. ``calls`` counts every port call by method name."""

    kind = "fake"

    def __init__(self, *, polls_to_provision: int = 0, now: datetime | None = None) -> None:
        self.polls_to_provision = polls_to_provision
        self.now = now or datetime(2026, 1, 1, tzinfo=UTC)
        self.jobs: dict[str, JobInfo] = {}
        self.plans: dict[str, FinetunePlan] = {}
        self.models: dict[tuple[str, str], ModelVersionInfo] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        self.requests: dict[str, int] = {}  # endpoint -> count in any window (None = unknown)
        self.unknown_traffic: set[str] = set()
        self.metrics_down = False
        self.answers: dict[str, str] = {}  # deployment name -> output text ("" = empty answer)
        self.invocations: list[tuple[str, str | None, Mapping[str, Any]]] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.deleted_endpoints: list[str] = []
        self._faults: dict[str, list[Exception]] = defaultdict(list)
        self._lock = threading.RLock()

    # -- fault injection ----------------------------------------------------------------
    def fail_once(self, method: str, exc: Exception) -> None:
        self._faults[method].append(exc)

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self._faults[method]:
            raise self._faults[method].pop(0)

    # -- fine-tuning --------------------------------------------------------------------
    def get_base_model(self, name: str, version_or_label: str = "latest") -> BaseModelInfo:
        self._enter("get_base_model")
        version = "1" if version_or_label == "latest" else version_or_label
        return BaseModelInfo(
            id=f"azureml://registries/azureml/models/{name}/versions/{version}",
            name=name,
            version=version,
        )

    def get_component(self, name: str, version_or_label: str = "latest") -> ComponentInterface:
        self._enter("get_component")
        inputs = {
            "num_train_epochs": ComponentInput("num_train_epochs", "integer", True, 1),
            "learning_rate": ComponentInput("learning_rate", "number", True, 2e-5),
        }
        return ComponentInterface(name=name, version="0.0.1", inputs=inputs)

    def get_compute(self, name: str) -> ComputeInfo:
        self._enter("get_compute")
        return ComputeInfo(name=name, size=None, provisioning_state="Succeeded")

    def submit_finetune(self, plan: FinetunePlan) -> JobInfo:
        with self._lock:
            self._enter("submit_finetune")
            if plan.run_id not in self.jobs:
                self.jobs[plan.run_id] = JobInfo(plan.run_id, "NotStarted", dict(plan.tags))
                self.plans[plan.run_id] = plan
            return self.jobs[plan.run_id]

    def get_job(self, name: str) -> JobInfo:
        self._enter("get_job")
        try:
            return self.jobs[name]
        except KeyError:
            raise NotFoundError(f"job {name} not found") from None

    def set_job(self, name: str, status: str, **changes: Any) -> JobInfo:
        """Test helper: move a job (e.g. to Completed with metrics)."""
        job = self.jobs.get(name) or JobInfo(name, status)
        self.jobs[name] = replace(job, status=status, **changes)
        return self.jobs[name]

    # -- release ------------------------------------------------------------------------
    def register_model(
        self, name: str, version: str, *, job_name: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        with self._lock:
            self._enter("register_model")
            key = (name, version)
            if key not in self.models:
                self.models[key] = ModelVersionInfo(
                    name, version, f"azureml:{name}:{version}", {**tags, "job": job_name}
                )
            return self.models[key]

    def get_model_version(self, name: str, version: str) -> ModelVersionInfo:
        self._enter("get_model_version")
        try:
            return self.models[(name, version)]
        except KeyError:
            raise NotFoundError(f"model {name}:{version} not found") from None

    def _poll_endpoint(self, ep: _Endpoint) -> EndpointInfo:
        if ep.info.provisioning_state == ProvisioningState.CREATING:
            ep.polls += 1
            if ep.polls > self.polls_to_provision:
                ep.info = replace(ep.info, provisioning_state=ProvisioningState.SUCCEEDED)
        return ep.info

    def ensure_endpoint(self, name: str, *, tags: Mapping[str, str]) -> EndpointInfo:
        with self._lock:
            self._enter("ensure_endpoint")
            if name not in self.endpoints:
                self.endpoints[name] = _Endpoint(
                    EndpointInfo(
                        name=name,
                        id=f"/fake/onlineEndpoints/{name}",
                        tags=dict(tags),
                        created=self.now,
                        modified=self.now,
                        provisioning_state=ProvisioningState.CREATING,
                        traffic={},
                        scoring_uri=f"https://{name}.fake/score",
                    )
                )
                return self.endpoints[name].info
            return self._poll_endpoint(self.endpoints[name])

    def get_endpoint(self, name: str) -> EndpointInfo:
        with self._lock:
            self._enter("get_endpoint")
            if name not in self.endpoints:
                raise NotFoundError(f"endpoint {name} not found")
            return self._poll_endpoint(self.endpoints[name])

    def deploy(self, spec: DeploymentSpec) -> DeploymentInfo:
        with self._lock:
            self._enter("deploy")
            ep = self._endpoint(spec.endpoint)
            if spec.name not in ep.deployments:
                ep.deployments[spec.name] = DeploymentInfo(
                    spec.endpoint, spec.name, spec.model.id, ProvisioningState.CREATING
                )
                ep.deployment_polls[spec.name] = 0
                ep.info = replace(ep.info, traffic={**ep.info.traffic, spec.name: 0})
                return ep.deployments[spec.name]
            return self._poll_deployment(ep, spec.name)

    def _poll_deployment(self, ep: _Endpoint, name: str) -> DeploymentInfo:
        dep = ep.deployments[name]
        if dep.provisioning_state == ProvisioningState.CREATING:
            ep.deployment_polls[name] += 1
            if ep.deployment_polls[name] > self.polls_to_provision:
                dep = replace(dep, provisioning_state=ProvisioningState.SUCCEEDED)
                ep.deployments[name] = dep
        return dep

    def get_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        with self._lock:
            self._enter("get_deployment")
            ep = self._endpoint(endpoint)
            if name not in ep.deployments:
                raise NotFoundError(f"deployment {endpoint}/{name} not found")
            return self._poll_deployment(ep, name)

    def invoke(
        self, endpoint: str, payload: Mapping[str, Any], *, deployment: str | None = None
    ) -> Any:
        self._enter("invoke")
        ep = self._endpoint(endpoint)
        target = deployment or max(ep.info.traffic, key=lambda d: ep.info.traffic[d], default=None)
        if target is None or target not in ep.deployments:
            raise NotFoundError(f"no deployment to serve {endpoint}")
        self.invocations.append((endpoint, deployment, payload))
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
        return {"output": self.answers.get(target, f"hello from {target}")}

    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        with self._lock:
            self._enter("set_traffic")
            ep = self._endpoint(endpoint)
            unknown = set(split) - set(ep.deployments)
            if unknown:
                raise NotFoundError(f"deployments {sorted(unknown)} not on {endpoint}")
            traffic = dict.fromkeys(ep.deployments, 0) | dict(split)
            ep.info = replace(ep.info, traffic=traffic, modified=self.now)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        with self._lock:
            self._enter("delete_deployment")
            ep = self.endpoints.get(endpoint)
            if ep is None or name not in ep.deployments:
                return
            del ep.deployments[name]
            ep.info = replace(
                ep.info, traffic={k: v for k, v in ep.info.traffic.items() if k != name}
            )

    # -- sweeping -----------------------------------------------------------------------
    def list_endpoints(self) -> list[EndpointInfo]:
        self._enter("list_endpoints")
        return [ep.info for ep in self.endpoints.values()]

    def endpoint_requests(
        self, endpoints: Sequence[EndpointInfo], window: timedelta, *, now: datetime
    ) -> dict[str, int]:
        self._enter("endpoint_requests")
        if self.metrics_down:
            raise UnknownTrafficError("metrics service unavailable")
        return {
            e.name: self.requests.get(e.name, 0)
            for e in endpoints
            if e.name not in self.unknown_traffic
        }

    def delete_endpoint(self, name: str) -> None:
        with self._lock:
            self._enter("delete_endpoint")
            if self.endpoints.pop(name, None) is not None:
                self.deleted_endpoints.append(name)

    # -- helpers ------------------------------------------------------------------------
    def add_endpoint(self, info: EndpointInfo, *, requests: int | None = 0) -> None:
        """Test helper: an endpoint that already exists (requests None = unknown traffic)."""
        self.endpoints[info.name] = _Endpoint(info)
        if requests is None:
            self.unknown_traffic.add(info.name)
        else:
            self.requests[info.name] = requests

    def _endpoint(self, name: str) -> _Endpoint:
        if name not in self.endpoints:
            raise NotFoundError(f"endpoint {name} not found")
        return self.endpoints[name]
