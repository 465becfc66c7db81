"""A hand-written in-memory implementation of the platform port, for unit and flow tests.

It keeps the port's contract, and runs in the contract suite next to both adapters to prove
it (``tests/contract``): idempotent verbs, NotFoundError from get_*, delete_* of a missing
thing succeeds, long operations finish only after ``polls_to_provision`` reads, a traffic
split sums to 100 (or 0), a deployment with traffic is not deleted, and a name another
line's tag claims is not reused (NameOwnedByAnotherLineError, a ConflictError).

Fault injection: ``fail_once("deploy", TransientError("boom"))`` makes the next ``deploy``
raise; :attr:`FakePlatform.fired` lists the faults that went off, and
:meth:`FakePlatform.assert_faults_fired` fails a test whose injected fault never did.

``base_model`` / ``component`` give the fake a catalogue of one (anything else is
NotFoundError); without them it makes up a model for any name and a two-input component.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import ConflictError, NotFoundError, PlatformError, UnknownTrafficError
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
    JobStatus,
    ModelVersionInfo,
    ProvisioningState,
    check_line_owner,
)

TRAINED_MODEL = "trained_model"
# What a Trainer logs at the end of a fine-tune (the gate reads eval_loss).
FINAL_METRICS = {"eval_loss": 0.42, "train_loss": 0.51, "epoch": 1.0}


@dataclass
class _Endpoint:
    info: EndpointInfo
    polls: int = 0
    deployments: dict[str, DeploymentInfo] = field(default_factory=dict)
    deployment_polls: dict[str, int] = field(default_factory=dict)


class FakePlatform:
    """In-memory platform. ``calls`` counts every port call by method name."""

    kind = "fake"

    def __init__(
        self,
        *,
        polls_to_provision: int = 0,
        now: datetime | None = None,
        base_model: BaseModelInfo | None = None,
        component: ComponentInterface | None = None,
    ) -> None:
        self.polls_to_provision = polls_to_provision
        self.now = now or datetime(2026, 1, 1, tzinfo=UTC)
        self.base_model = base_model
        self.component = component
        self.jobs: dict[str, JobInfo] = {}
        self.plans: dict[str, FinetunePlan] = {}
        self.models: dict[tuple[str, str], ModelVersionInfo] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        self.requests: dict[str, int] = {}  # endpoint -> count in any window (set by tests)
        self.scored: dict[str, list[datetime]] = defaultdict(list)  # endpoint -> invoke times
        self.unknown_traffic: set[str] = set()
        self.metrics_down = False
        self.answers: dict[str, str] = {}  # deployment name -> output text ("" = empty answer)
        self.invocations: list[tuple[str, str | None, Mapping[str, Any]]] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.deleted_endpoints: list[str] = []
        self.created: list[tuple[str, ...]] = []  # ("job", n), ("endpoint", n), ...
        self.fired: list[tuple[str, BaseException]] = []
        self._faults: dict[str, list[BaseException]] = defaultdict(list)
        self._lock = threading.RLock()

    # -- fault injection ----------------------------------------------------------------
    def fail_once(self, method: str, exc: BaseException) -> None:
        """The next call of ``method`` raises ``exc`` (queued: one per call)."""
        if not callable(getattr(self, method, None)):
            raise AttributeError(f"the platform has no method {method!r} to fail")
        self._faults[method].append(exc)

    def fired_count(self, method: str) -> int:
        """How many injected faults of ``method`` went off."""
        return sum(1 for m, _ in self.fired if m == method)

    def assert_faults_fired(self) -> None:
        """Fail when an injected fault never went off (the test did not test what it says)."""
        pending = {m: len(q) for m, q in self._faults.items() if q}
        assert not pending, f"injected faults never fired: {pending}"

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self._faults[method]:
            exc = self._faults[method].pop(0)
            self.fired.append((method, exc))
            raise exc

    # -- fine-tuning --------------------------------------------------------------------
    def get_base_model(self, name: str, version_or_label: str = "latest") -> BaseModelInfo:
        self._enter("get_base_model")
        known = self.base_model
        if known is not None:
            if name != known.name or version_or_label not in ("latest", known.version):
                raise NotFoundError(f"model {name}:{version_or_label} not found in the registry")
            return known
        version = "1" if version_or_label == "latest" else version_or_label
        return BaseModelInfo(
            id=f"azureml://registries/azureml/models/{name}/versions/{version}",
            name=name,
            version=version,
        )

    def get_component(self, name: str, version_or_label: str = "latest") -> ComponentInterface:
        self._enter("get_component")
        known = self.component
        if known is not None:
            if name != known.name or version_or_label not in ("latest", known.version):
                raise NotFoundError(f"component {name}:{version_or_label} not found")
            return known
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
            start = plan.start_model
            new = plan.run_id not in self.jobs
            if new and start is not None and (start.name, start.version) not in self.models:
                # as the adapters refuse a start model that is not registered
                raise NotFoundError(f"start model {start.name}:{start.version} not found")
            if plan.run_id not in self.jobs:
                self.jobs[plan.run_id] = JobInfo(
                    plan.run_id, JobStatus.NOT_STARTED, dict(plan.tags)
                )
                self.plans[plan.run_id] = plan
                self.created.append(("job", plan.run_id))
            return self.jobs[plan.run_id]

    def get_job(self, name: str) -> JobInfo:
        self._enter("get_job")
        try:
            return self.jobs[name]
        except KeyError:
            raise NotFoundError(f"job {name} not found") from None

    def set_job(self, name: str, status: str, **changes: Any) -> JobInfo:
        """Test helper: move a job (e.g. to Completed with metrics)."""
        job = self.jobs.get(name) or JobInfo(name, JobStatus.of(status))
        self.jobs[name] = replace(job, status=JobStatus.of(status), **changes)
        return self.jobs[name]

    def complete(self, name: str, metrics: Mapping[str, float] | None = None) -> JobInfo:
        """Test helper: the job finished well, with its model output and final metrics (no
        eval_loss by default when its plan had no validation blob, as the trainers report)."""
        if metrics is None:
            plan = self.plans.get(name)
            no_eval = plan is not None and not plan.validation_blob
            metrics = {k: v for k, v in FINAL_METRICS.items() if not (no_eval and k == "eval_loss")}
        return self.set_job(
            name, JobStatus.COMPLETED,
            outputs={TRAINED_MODEL: f"azureml://jobs/{name}/outputs/{TRAINED_MODEL}"},
            metrics=dict(metrics), error=None,
        )

    # -- release ------------------------------------------------------------------------
    def register_model(
        self, name: str, version: str, *, job_name: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        with self._lock:
            self._enter("register_model")
            for (other, other_version), model in self.models.items():
                if other == name:
                    check_line_owner(f"model {name}:{other_version}", model.tags, tags)
            key = (name, version)
            if key not in self.models:
                self.models[key] = ModelVersionInfo(
                    name, version, f"azureml:{name}:{version}", {**tags, "job": job_name}
                )
                self.created.append(("model", name, version))
            return self.models[key]

    def get_model_version(self, name: str, version: str) -> ModelVersionInfo:
        self._enter("get_model_version")
        try:
            return self.models[(name, version)]
        except KeyError:
            raise NotFoundError(f"model {name}:{version} not found") from None

    def update_model_tags(
        self, name: str, version: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        with self._lock:
            self._enter("update_model_tags")
            model = self.models.get((name, version))
            if model is None:
                raise NotFoundError(f"model {name}:{version} not found")
            check_line_owner(f"model {name}:{version}", model.tags, tags)
            updated = replace(model, tags={**model.tags, **tags})
            self.models[(name, version)] = updated
            return updated

    def _poll_endpoint(self, ep: _Endpoint) -> EndpointInfo:
        if ep.info.provisioning_state == ProvisioningState.CREATING:
            ep.polls += 1
            if ep.polls > self.polls_to_provision:
                ep.info = replace(ep.info, provisioning_state=ProvisioningState.SUCCEEDED)
        return ep.info

    def ensure_endpoint(self, name: str, *, tags: Mapping[str, str]) -> EndpointInfo:
        with self._lock:
            self._enter("ensure_endpoint")
            if name in self.endpoints:
                check_line_owner(f"endpoint {name}", self.endpoints[name].info.tags, tags)
            else:
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
                self.created.append(("endpoint", name))
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
            check_line_owner(f"endpoint {spec.endpoint}", ep.info.tags, spec.tags)
            check_line_owner(f"model {spec.model.name}:{spec.model.version}",
                             spec.model.tags, spec.tags)
            if spec.name not in ep.deployments:
                ep.deployments[spec.name] = DeploymentInfo(
                    spec.endpoint, spec.name, spec.model.id, ProvisioningState.CREATING
                )
                ep.deployment_polls[spec.name] = 0
                ep.info = replace(ep.info, traffic={**ep.info.traffic, spec.name: 0})
                self.created.append(("deployment", spec.endpoint, spec.name))
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
        live = {d: share for d, share in ep.info.traffic.items() if share > 0}
        target = deployment or max(live, key=lambda d: live[d], default=None)
        if target is None or target not in ep.deployments:
            raise NotFoundError(f"no deployment to serve {endpoint}" + (
                f" ({deployment} does not exist)" if deployment else " (no traffic anywhere)"))
        self.invocations.append((endpoint, deployment, payload))
        self.scored[endpoint].append(datetime.now(UTC))
        return {"output": self.answers.get(target, f"hello from {target}")}

    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        with self._lock:
            self._enter("set_traffic")
            ep = self._endpoint(endpoint)
            unknown = set(split) - set(ep.deployments)
            if unknown:
                raise NotFoundError(f"deployments {sorted(unknown)} not on {endpoint}")
            values = {str(k): int(v) for k, v in split.items()}
            if any(v < 0 or v > 100 for v in values.values()) or sum(values.values()) not in (
                0, 100,
            ):
                raise PlatformError(f"traffic must sum to 100 (or all be 0): {values}")
            traffic = dict.fromkeys(ep.deployments, 0) | values
            ep.info = replace(ep.info, traffic=traffic, modified=self.now)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        with self._lock:
            self._enter("delete_deployment")
            ep = self.endpoints.get(endpoint)
            if ep is None or name not in ep.deployments:
                return
            share = int(ep.info.traffic.get(name, 0))
            if share > 0:
                raise ConflictError(
                    f"deployment {name} still takes {share} % of {endpoint}'s traffic",
                    hint="set its traffic to 0 first",
                )
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
        start = now - window
        return {
            e.name: self.requests.get(e.name, 0)
            + sum(1 for at in self.scored.get(e.name, ()) if start <= at <= now)
            for e in endpoints
            # Like Azure Monitor: an endpoint it has nothing for is left out, never 0.
            if e.name not in self.unknown_traffic
            and (e.name in self.endpoints or e.name in self.requests)
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
