"""Domain types and the :class:`Platform` Protocol both adapters (and the test fake) implement.

Ownership: names are derived from lines (``shared.naming``), and what the platform holds under
a name says which line it belongs to through the :data:`~shared.naming.LINE_TAG` tag.
``register_model``, ``update_model_tags``, ``ensure_endpoint`` and ``deploy`` refuse, with
NameOwnedByAnotherLineError (a ConflictError), to reuse a model or endpoint whose tag names
another line
(:func:`check_line_owner`): one line never serves or replaces another line's model, even if
two lines' names ever collided. The refusal is permanent (the release holds the run at once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from shared.errors import NameOwnedByAnotherLineError
from shared.naming import LINE_TAG
from shared.platform.metadata import ModelMetadata, parse_model_metadata

__all__ = [
    "ASSET_TYPES",
    "SERVERLESS",
    "TERMINAL_JOB_STATUSES",
    "BaseModelInfo",
    "ComponentInput",
    "ComponentInterface",
    "ComputeInfo",
    "DeploymentInfo",
    "DeploymentSpec",
    "EndpointInfo",
    "FinetunePlan",
    "JobInfo",
    "JobStatus",
    "ModelMetadata",
    "ModelVersionInfo",
    "Platform",
    "ProvisioningState",
    "check_line_owner",
]


class ProvisioningState:
    """Azure ML provisioning states (strings as the REST API returns them)."""

    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"
    CANCELED = "Canceled"

    IN_PROGRESS = frozenset({CREATING, UPDATING, DELETING})


class JobStatus(StrEnum):
    """A job's status, spelled as Azure ML's REST API and events spell it.

    The values of azure-ai-ml's ``JobStatus`` (``_restclient/arm_ml_service/models/_enums``).
    A ``StrEnum``: a member equals, hashes and serialises as its spelling.
    """

    NOT_STARTED = "NotStarted"
    STARTING = "Starting"
    PROVISIONING = "Provisioning"
    PREPARING = "Preparing"
    QUEUED = "Queued"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    CANCEL_REQUESTED = "CancelRequested"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"
    NOT_RESPONDING = "NotResponding"
    PAUSED = "Paused"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, value: object) -> JobStatus | None:
        """The status a service or event spells in any case (``cancelled`` too); None if
        it is not a status."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            return None
        return _JOB_STATUS_BY_LOWER.get(value.strip().lower())

    @classmethod
    def of(cls, value: object) -> JobStatus:
        """Like :meth:`parse`, but a status we do not know reads as ``UNKNOWN``."""
        return cls.parse(value) or cls.UNKNOWN


_JOB_STATUS_BY_LOWER = {s.value.lower(): s for s in JobStatus} | {"cancelled": JobStatus.CANCELED}

# Job statuses after which nothing changes (NotResponding as the release has always read it).
TERMINAL_JOB_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.NOT_RESPONDING}
)

# The compute name of Azure ML serverless compute (a plan's steps run on "serverless" and the
# fine-tune step on ``instance_type_finetune``), as ComputeInfo.name and in compute inputs.
SERVERLESS = "serverless"
# Component input types that are data/model assets (passed as Input(type=..., path=...)): the
# values of azure.ai.ml.constants.AssetTypes; every other input type is a literal value.
ASSET_TYPES = frozenset(
    {"uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model", "triton_model"}
)


def check_line_owner(what: str, existing: Mapping[str, str], wanted: Mapping[str, str]) -> None:
    """Raise NameOwnedByAnotherLineError (a ConflictError) when ``existing`` tags name another
    line than ``wanted`` does.

    ``what`` names the thing (``endpoint tl-support``). Nothing is checked when either side
    names no line: the port only refuses a name that another line has claimed.
    """
    mine, theirs = wanted.get(LINE_TAG), existing.get(LINE_TAG)
    if mine and theirs and mine != theirs:
        raise NameOwnedByAnotherLineError(
            f"{what} belongs to line {theirs!r}, not to line {mine!r}",
            hint="two lines must not share a model or endpoint; rename one of the lines "
            "or delete the other line's model or endpoint",
        )


@dataclass(frozen=True)
class BaseModelInfo:
    """A registry model: its asset id, tags and system metadata, and ``metadata``, the typed
    facts (allow-lists, tasks, retirement dates, defaults) parsed once from those two by
    :func:`~shared.platform.metadata.parse_model_metadata`. Read the facts from ``metadata``,
    never from ``tags``/``system_metadata``.
    """

    id: str  # azureml://registries/azureml/models/<name>/versions/<v>, or a local path/id
    name: str
    version: str
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    system_metadata: Mapping[str, Any] = field(default_factory=dict)
    # The registry's isArchived: an archived model is not offered for new fine-tunes.
    archived: bool = False
    metadata: ModelMetadata = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # frozen: set the derived field once, here (dataclasses.replace re-derives it)
        object.__setattr__(self, "metadata", parse_model_metadata(self.tags, self.system_metadata))


@dataclass(frozen=True)
class ComponentInput:
    """One declared input of a component, as its spec states it."""

    name: str
    type: str  # string | integer | number | boolean | uri_file | uri_folder | mlflow_model ...
    optional: bool = False
    default: Any = None
    enum: tuple[str, ...] | None = None
    description: str | None = None
    min_value: float | None = None  # the spec's ``min`` (integer/number inputs)
    max_value: float | None = None  # the spec's ``max``


@dataclass(frozen=True)
class ComponentInterface:
    """A (pipeline) component's identity and declared inputs: what a plan is checked against."""

    name: str
    version: str
    inputs: Mapping[str, ComponentInput]
    id: str | None = None  # azureml://registries/azureml/components/<name>/versions/<v>
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ComputeInfo:
    """A compute target for fine-tuning: cluster (or local) name, VM size, state, GPUs/node."""

    name: str
    size: str | None
    provisioning_state: str
    gpus_per_node: int | None = None
    location: str | None = None


@dataclass(frozen=True)
class FinetunePlan:
    """Everything needed to submit one fine-tune job, decided before anything is spent.

    ``parameters`` are the component's inputs, already coerced to their declared types.
    ``train_blob`` / ``validation_blob`` name blobs in ``data_container`` (the prepared
    container); the Azure ML adapter maps them to ``azureml://datastores/<ds>/paths/<blob>``.
    """

    run_id: str  # = the job name; deterministic from dataset sha256 + fingerprint
    line: str
    dataset_sha256: str
    fingerprint: str
    base_model: BaseModelInfo
    component_name: str
    component_version: str
    parameters: Mapping[str, Any]
    data_container: str
    train_blob: str
    validation_blob: str
    experiment_name: str
    display_name: str
    compute: str | None = None  # cluster name; None = serverless
    instance_type: str | None = None  # serverless instance type or the cluster's size
    tags: Mapping[str, str] = field(default_factory=dict)
    warnings: Sequence[str] = ()
    # The model training starts from: None = ``base_model``; else a registered version of the
    # line (``TUNELOOP_LINE_START=live``: the live version), trained on further (issue 11).
    start_model: ModelVersionInfo | None = None


@dataclass(frozen=True)
class JobInfo:
    """A job's state as the platform reports it (a status string is read as a JobStatus)."""

    name: str
    status: JobStatus
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    studio_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", JobStatus.of(self.status))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    id: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointInfo:
    """A managed online endpoint as listed: enough for the sweeper to decide without a GET."""

    name: str
    id: str  # ARM resource id (or the local equivalent)
    tags: Mapping[str, str]
    created: datetime | None
    modified: datetime | None
    provisioning_state: str
    traffic: Mapping[str, int]
    scoring_uri: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class DeploymentSpec:
    endpoint: str
    name: str
    model: ModelVersionInfo
    instance_type: str
    instance_count: int = 1
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentInfo:
    endpoint: str
    name: str
    model_id: str
    provisioning_state: str
    error: str | None = None


@runtime_checkable
class Platform(Protocol):
    """The ML platform port. Optional parameters are keyword-only."""

    kind: str  # "azureml" or "local"

    # -- fine-tuning --------------------------------------------------------------------
    def get_base_model(self, name: str, version_or_label: str = "latest") -> BaseModelInfo:
        """The base model's id, tags and system metadata. Raises NotFoundError."""
        ...

    def get_component(self, name: str, version_or_label: str = "latest") -> ComponentInterface:
        """The fine-tune pipeline component's interface. Raises NotFoundError."""
        ...

    def get_compute(self, name: str) -> ComputeInfo:
        """A compute target's size, state and GPUs per node. Raises NotFoundError."""
        ...

    def submit_finetune(self, plan: FinetunePlan) -> JobInfo:
        """Submit the job named ``plan.run_id``; a second call returns the existing job.

        With ``plan.start_model`` the job trains on from that registered version (its tags
        carry it as ``tuneloop_start_model``); a version that is not registered raises
        NotFoundError before anything is created. An empty ``plan.validation_blob`` is a run
        without an evaluation side: it is accepted and trains (the local trainer then reports
        no ``eval_loss``; Azure ML's component splits one off the train file itself).
        """
        ...

    def get_job(self, name: str) -> JobInfo:
        """Status, outputs, metrics and error of a job. Raises NotFoundError."""
        ...

    # -- release ------------------------------------------------------------------------
    def register_model(
        self, name: str, version: str, *, job_name: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        """Register the job's trained model as ``name:version``; idempotent on (name, version).

        Raises NameOwnedByAnotherLineError when a version of ``name`` is tagged with another
        line than ``tags`` name (:func:`check_line_owner`).
        """
        ...

    def get_model_version(self, name: str, version: str) -> ModelVersionInfo:
        """Raises NotFoundError."""
        ...

    def update_model_tags(
        self, name: str, version: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        """Merge ``tags`` into the tags of the registered ``name:version`` and return it.

        A merge: tags not named in ``tags`` keep their values, named ones take the new value.
        Raises NotFoundError for a missing version, and NameOwnedByAnotherLineError when the
        version is tagged with another line than ``tags`` name (:func:`check_line_owner`).
        """
        ...

    def ensure_endpoint(self, name: str, *, tags: Mapping[str, str]) -> EndpointInfo:
        """Start creating the endpoint if missing; return its current state (may be Creating).

        Raises NameOwnedByAnotherLineError when the endpoint exists tagged with another line
        than ``tags``.
        """
        ...

    def get_endpoint(self, name: str) -> EndpointInfo:
        """Raises NotFoundError."""
        ...

    def deploy(self, spec: DeploymentSpec) -> DeploymentInfo:
        """Start the deployment if missing (at 0 % traffic); return its current state.

        Raises NotFoundError without the endpoint, and NameOwnedByAnotherLineError when the
        endpoint, or the model, is tagged with another line than ``spec.tags`` name.
        """
        ...

    def get_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        """Raises NotFoundError."""
        ...

    def invoke(
        self, endpoint: str, payload: Mapping[str, Any], *, deployment: str | None = None
    ) -> Any:
        """POST the scoring payload; ``deployment`` targets one deployment (header)."""
        ...

    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        """Set the endpoint's traffic split (percentages summing to 100, or all zero).

        Omitted deployments get 0 %. A split naming a missing deployment raises
        NotFoundError; one that does not sum to 100 (or 0) raises PlatformError.
        """
        ...

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Start deleting a deployment; already gone (or no endpoint) is success.

        A deployment that still takes traffic (> 0 %) is never deleted: ConflictError, set
        its traffic to 0 first. Azure ML's safe rollout does the same (traffic moves to the
        new deployment, then the old one is deleted: learn.microsoft.com, "Perform safe
        rollout of new deployments for real-time inference"); the adapters check it
        themselves rather than rely on the service, so all implementations agree.
        """
        ...

    # -- sweeping -----------------------------------------------------------------------
    def list_endpoints(self) -> list[EndpointInfo]:
        """Every online endpoint of the workspace, in one list pass."""
        ...

    def endpoint_requests(
        self, endpoints: Sequence[EndpointInfo], window: timedelta, *, now: datetime
    ) -> dict[str, int]:
        """Requests per endpoint name over ``[now - window, now]``.

        An endpoint whose count cannot be established is absent from the result (never 0);
        a failed query raises UnknownTrafficError.
        """
        ...

    def delete_endpoint(self, name: str) -> None:
        """Start deleting the endpoint without waiting for it; already gone is success."""
        ...
