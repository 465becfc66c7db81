"""Fine-tuning on Azure ML: base model, component and compute facts; submit once; job status.

The job is built with the SDK's ``@pipeline`` DSL from the SDK's own component object (from
the registry, or ``load_component`` on a local spec for ``tuneloop plan``) and validated by the
SDK before it is sent. Submission is idempotent on the job name (= the run id): an existing job
is returned, and a 409 on create means another worker won the race, so its job is returned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    PlanError,
    PlatformError,
    TransientError,
    TuneloopError,
    _service_message,  # the one mapper's reader of the service's words
    map_azure_errors,
)
from shared.platform.azureml._base import AzureMLBase
from shared.platform.port import (
    ASSET_TYPES,
    SERVERLESS,
    BaseModelInfo,
    ComponentInput,
    ComponentInterface,
    ComputeInfo,
    FinetunePlan,
    JobInfo,
    JobStatus,
)

if TYPE_CHECKING:
    from azure.ai.ml.entities import PipelineJob

    from shared.platform.azureml._metrics import MlflowRuns

__all__ = [
    "MERGE_LORA_INPUT",
    "PIPELINE_OUTPUT",
    "JobsMixin",
    "build_pipeline_job",
    "component_interface",
    "datastore_uri",
    "job_to_dict",
    "map_sdk_errors",
    "start_model_path",
]

log = logging.getLogger(__name__)

# The pipeline job's output holding the fine-tuned MLflow model (the notebook's name).
PIPELINE_OUTPUT = "trained_model"
# The component input that merges LoRA weights into the saved model (chat_completion_pipeline).
MERGE_LORA_INPUT = "merge_lora_weights"


# The roles the app's identity needs: AzureML Data Scientist on the workspace (jobs, models,
# endpoints) and read access on the registry (base models, components).
AZUREML_ROLE = "AzureML Data Scientist on the workspace (and Reader on the model registry)"


@contextmanager
def map_sdk_errors(what: str) -> Iterator[None]:
    """Translate azure-core / azure-ai-ml exceptions into the port's error tree.

    azure-core errors go through the one mapper (:func:`shared.errors.map_azure_errors`);
    only azure-ai-ml's own exception type is handled here.
    """
    from azure.ai.ml.exceptions import MlException, ValidationErrorType

    with map_azure_errors(what, role=AZUREML_ROLE):
        try:
            yield
        except MlException as exc:  # an AzureError too: handled first, inside the mapper
            # The SDK resolves label "latest" by listing versions; none listed is its own
            # "does not exist" exception, which is a NotFoundError like a 404.
            if getattr(exc, "error_type", None) == ValidationErrorType.RESOURCE_NOT_FOUND:
                raise NotFoundError(f"{what}: not found ({_service_message(exc)})") from exc
            raise PlatformError(f"{what}: {exc}") from exc


def datastore_uri(datastore: str, blob: str) -> str:
    """The ``azureml://`` URI of a blob in the container the datastore points at."""
    return f"azureml://datastores/{datastore}/paths/{blob}"


def component_interface(component: Any) -> ComponentInterface:
    """The port's view of an SDK component object (registry or ``load_component``)."""
    inputs: dict[str, ComponentInput] = {}
    for name, spec in component.inputs.items():
        enum = getattr(spec, "enum", None)
        inputs[name] = ComponentInput(
            name=name,
            type=str(spec.type),
            optional=bool(getattr(spec, "optional", False)),
            default=getattr(spec, "default", None),
            enum=tuple(str(e) for e in enum) if enum else None,
            description=getattr(spec, "description", None),
            min_value=_float_or_none(getattr(spec, "min", None)),
            max_value=_float_or_none(getattr(spec, "max", None)),
        )
    return ComponentInterface(
        name=str(component.name),
        version=str(component.version),
        inputs=inputs,
        id=component.id,
        outputs=tuple(component.outputs or ()),
    )


def _float_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def start_model_path(plan: FinetunePlan) -> str:
    """What the job's ``mlflow_model_path`` input names: the base model's registry id, or,
    with a start model, the workspace model version as ``azureml:<name>:<version>``.

    ``azureml:<name>:<version>`` is the SDK's short form of a workspace asset (azure-ai-ml
    ``Input(type="mlflow_model", path="azureml:<name>:<version>")``, resolved to the asset's
    ARM id when the job is created); the model import step takes any ``mlflow_model`` there
    ("The pytorch_model_path or mlflow_model_path takes precedence over huggingface_id",
    chat_completion_model_import spec.yaml), so training continues from that version.
    """
    start = plan.start_model
    if start is None:
        return plan.base_model.id
    return f"azureml:{start.name}:{start.version}"


def build_pipeline_job(plan: FinetunePlan, component: Any, *, datastore: str) -> PipelineJob:
    """The pipeline job for ``plan`` from the SDK component, built with the ``@pipeline`` DSL."""
    from azure.ai.ml import Input
    from azure.ai.ml.dsl import pipeline

    declared = {name: str(spec.type) for name, spec in component.inputs.items()}
    inputs: dict[str, Any] = {}
    for key, value in plan.parameters.items():
        kind = declared.get(key)
        inputs[key] = Input(type=kind, path=value) if kind in ASSET_TYPES else value
    inputs["train_file_path"] = Input(
        type="uri_file", path=datastore_uri(datastore, plan.train_blob)
    )
    if plan.validation_blob:
        inputs["validation_file_path"] = Input(
            type="uri_file", path=datastore_uri(datastore, plan.validation_blob)
        )
    # else: the run has no evaluation side (issue 11, "empty validation"); the input is left
    # out: chat_completion_pipeline 0.0.82 declares validation_file_path ``optional: true``
    # (azureml-assets training/finetune_acft_hf_nlp/components/pipeline_components/
    # chat_completion/spec.yaml). Its preprocess step then splits the train file itself
    # ("an automatic split from train data happens if they are not passed ... 10% of train
    # data will be assigned to each of them": preprocess/chat_completion/spec.yaml), so such a
    # job trains on ~80% of the file and its eval_loss is measured on that automatic split.
    inputs["mlflow_model_path"] = Input(type="mlflow_model", path=start_model_path(plan))
    if plan.start_model is not None and MERGE_LORA_INPUT in declared:
        # Continuing from a version of the line: the same spec's ``merge_lora_weights`` ("If
        # 'true', the lora weights are merged with the base Hugging Face model weights before
        # saving"; default "true") is set explicitly, so each output is a whole MLflow model
        # the next version can start from, never an adapter over a model the job did not save.
        inputs[MERGE_LORA_INPUT] = "true"

    def tuneloop_finetune() -> dict[str, Any]:
        chat_completion_pipeline = component(**inputs)
        return {PIPELINE_OUTPUT: chat_completion_pipeline.outputs.mlflow_model_folder}

    build = pipeline(
        tuneloop_finetune,
        name=f"tuneloop_{plan.component_name}",
        display_name=plan.display_name,
        experiment_name=plan.experiment_name,
        tags=dict(plan.tags),
        description=f"tuneloop run {plan.run_id} of line {plan.line}",
    )
    from azure.ai.ml.exceptions import MlException

    try:
        job: PipelineJob = build()
    except MlException as exc:  # e.g. UnexpectedKeywordError for an input the component lacks
        raise PlanError(
            [f"SDK refused the job: {' '.join(str(exc).split())[:400]}"],
            hint="plan against the same component version that is submitted",
        ) from exc
    job.name = plan.run_id
    settings = job.settings
    assert settings is not None  # the DSL always attaches settings
    settings.force_rerun = True
    settings.continue_on_step_failure = False
    return job


def validate_job(job: PipelineJob) -> None:
    """Run the SDK's own validation; PlanError lists what it found."""
    result = job._validate()
    if not result.passed:
        problems = [f"SDK validation: {d.yaml_path}: {d.message}" for d in result._errors] or [
            f"SDK validation failed: {result.error_messages}"
        ]
        raise PlanError(problems, hint="the job does not match the component's interface")


def job_to_dict(
    plan: FinetunePlan,
    component_spec: str | Path,
    *,
    datastore: str,
    component_id: str | None = None,
) -> dict[str, Any]:
    """The job exactly as it would be submitted, in the SDK's dict form; offline.

    The component comes from a local spec via ``load_component``; the submitted job refers to
    the registry component by id, so ``component_id`` replaces the inlined spec in the output.
    """
    from azure.ai.ml import load_component

    with map_sdk_errors(f"load component spec {component_spec}"):
        component = load_component(source=str(component_spec))
    job = build_pipeline_job(plan, component, datastore=datastore)
    validate_job(job)
    data: dict[str, Any] = job._to_dict()
    if component_id:
        for node in (data.get("jobs") or {}).values():
            if isinstance(node.get("component"), Mapping):
                node["component"] = component_id
    return data


class JobsMixin(AzureMLBase):
    """Base model, component and compute lookups; submit; job status."""

    # -- facts --------------------------------------------------------------------------

    def get_base_model(self, name: str, version_or_label: str = "latest") -> BaseModelInfo:
        """The registry model's id, tags, properties and system metadata."""
        version, label = _version_or_label(version_or_label)
        where = f"model {name}:{version_or_label} in registry {self.settings.registry_name}"
        with map_sdk_errors(where):
            model = self.registry_client.models.get(name, version=version, label=label)
            system_metadata, archived = self._registry_version_facts(name, str(model.version))
        return BaseModelInfo(
            id=str(model.id),
            name=str(model.name),
            version=str(model.version),
            tags={str(k): str(v) for k, v in (model.tags or {}).items()},
            properties={str(k): str(v) for k, v in (model.properties or {}).items()},
            system_metadata=system_metadata,
            archived=archived,
        )

    def _registry_version_facts(self, name: str, version: str) -> tuple[dict[str, Any], bool]:
        """The model version's ``systemMetadata`` (where fine-tune SKUs live now) and
        ``isArchived`` (Phi-3 v15: true).

        The SDK's ``Model`` entity drops both for registry models, so the version's REST body
        is read again through the SDK's own registry operations.
        """
        rest = self.registry_client.models._get(name, version)
        props = getattr(rest, "properties", None)
        if isinstance(props, Mapping):
            meta, archived = props.get("systemMetadata"), props.get("isArchived")
        else:
            meta = getattr(props, "system_metadata", None)
            archived = getattr(props, "is_archived", None)
        return (dict(meta) if isinstance(meta, Mapping) else {}), archived is True

    def get_component(self, name: str, version_or_label: str = "latest") -> ComponentInterface:
        """The registry component's interface (the SDK object is kept for submit)."""
        component = self._sdk_component(name, version_or_label)
        return component_interface(component)

    def _sdk_component(self, name: str, version_or_label: str) -> Any:
        cache: dict[tuple[str, str], Any] = self.__dict__.setdefault("_component_cache", {})
        if (name, version_or_label) in cache:
            return cache[(name, version_or_label)]
        version, label = _version_or_label(version_or_label)
        where = f"component {name}:{version_or_label} in registry {self.settings.registry_name}"
        with map_sdk_errors(where):
            component = self.registry_client.components.get(name, version=version, label=label)
        cache[(name, version_or_label)] = component
        cache[(name, str(component.version))] = component
        return component

    def get_compute(self, name: str) -> ComputeInfo:
        """A cluster's size, state and GPUs per node; ``serverless``: the configured VM size."""
        if name == SERVERLESS:
            size = self.settings.finetune_instance_type
            if not size:
                raise ConfigError(
                    "no fine-tuning compute configured",
                    hint="set TUNELOOP_COMPUTE (cluster) or TUNELOOP_FINETUNE_INSTANCE_TYPE",
                )
            sizes = self._vm_sizes(size)
            if sizes is None:  # the size list is not readable: GPU count unknown (warned)
                return ComputeInfo(SERVERLESS, size, "Succeeded", None)
            gpus = _gpus_of(sizes, size)
            if gpus is None:
                raise NotFoundError(
                    f"VM size {size} is not offered in the workspace's region",
                    hint="pick a size from the workspace's VM size list",
                )
            return ComputeInfo(SERVERLESS, size, "Succeeded", gpus)
        with map_sdk_errors(f"compute {name} in workspace {self.settings.workspace_name}"):
            compute = self.ml_client.compute.get(name)
        size = getattr(compute, "size", None)
        return ComputeInfo(
            name=str(compute.name),
            size=size,
            provisioning_state=_text(compute.provisioning_state) or "Unknown",
            gpus_per_node=self._gpus_per_node(size) if size else None,
            location=getattr(compute, "location", None),
        )

    def _gpus_per_node(self, size: str) -> int | None:
        """GPUs per node of ``size``; None when unknown (not listed, or the list unreadable)."""
        sizes = self._vm_sizes(size)
        return _gpus_of(sizes, size) if sizes is not None else None

    def _vm_sizes(self, size: str) -> list[Any] | None:
        """The region's VM sizes, or None (with a warning) when the identity may not read them.

        ``compute.list_sizes()`` is ``GET /subscriptions/{sub}/providers/
        Microsoft.MachineLearningServices/locations/{location}/vmSizes``: a *subscription*-scope
        read (``Microsoft.MachineLearningServices/locations/vmSizes/read``) that AzureML Data
        Scientist on the workspace does not grant, so a workspace-scoped identity gets 403
        AuthorizationFailed (401 without a usable token). That makes the GPU count unknown,
        never a failed plan: ``--gpus-per-node`` / ``TUNELOOP_GPUS_PER_NODE`` stand in, and
        Reader on the subscription makes the lookup work.
        """
        try:
            with map_sdk_errors(f"VM sizes of workspace {self.settings.workspace_name}"):
                return list(self.ml_client.compute.list_sizes())
        except PermissionDeniedError as exc:
            log.warning(
                "GPUs per node of %s unknown: the region's VM size list is a subscription-scope "
                "read the identity lacks (%s); pass --gpus-per-node or set "
                "TUNELOOP_GPUS_PER_NODE, or grant Reader on the subscription",
                size, exc.message,
            )
            return None

    # -- submit and status ----------------------------------------------------------------

    def submit_finetune(self, plan: FinetunePlan) -> JobInfo:
        """Submit the job named ``plan.run_id`` once; an existing job is returned as it is."""
        try:
            existing = self.get_job(plan.run_id)
        except NotFoundError:
            pass
        else:
            log.info("job exists run=%s line=%s status=%s", plan.run_id, plan.line, existing.status)
            return existing
        if plan.start_model is not None:
            # The version training continues from must exist: NotFoundError before anything
            # is created (as on the local platform), not a failed job later.
            start = plan.start_model
            with map_sdk_errors(f"start model {start.name}:{start.version}"):
                self.ml_client.models.get(name=start.name, version=start.version)
        component = self._sdk_component(plan.component_name, plan.component_version)
        job = build_pipeline_job(plan, component, datastore=self.settings.datastore)
        validate_job(job)
        try:
            with map_sdk_errors(f"create job {plan.run_id}"):
                created = self.ml_client.jobs.create_or_update(
                    job, experiment_name=plan.experiment_name
                )
        except ConflictError:
            log.info("job created concurrently run=%s line=%s", plan.run_id, plan.line)
            return self.get_job(plan.run_id)
        log.info("job submitted run=%s line=%s status=%s", plan.run_id, plan.line, created.status)
        return _job_info(created)

    def get_job(self, name: str) -> JobInfo:
        """Status, tags, outputs and error of a job."""
        with map_sdk_errors(f"job {name} in workspace {self.settings.workspace_name}"):
            job = self.ml_client.jobs.get(name)
        status = JobStatus.of(_text(job.status))
        error = self._failure_message(name) if status == JobStatus.FAILED else None
        metrics = self._final_metrics(name, job) if status == JobStatus.COMPLETED else {}
        return _job_info(job, error, metrics)

    def _final_metrics(self, name: str, job: Any) -> dict[str, float]:
        """The fine-tune step's final metrics from MLflow (Completed jobs only, read once).

        Best effort: a lookup that fails logs a warning and gives no metrics (a gate then holds,
        saying why) and is tried again on the next ``get_job``.
        """
        cache: dict[str, dict[str, float]] = self.__dict__.setdefault("_metrics_cache", {})
        if name in cache:
            return dict(cache[name])
        from shared.platform.azureml._metrics import final_metrics

        experiment = str(getattr(job, "experiment_name", None) or "")
        try:
            with map_sdk_errors(f"MLflow metrics of job {name}"):
                runs = self._mlflow_runs()
                if not experiment:
                    raise ValueError("the job names no experiment")
                descendants = runs.descendants(runs.experiment_id(experiment), name)
            metrics = final_metrics(descendants)
        except (TuneloopError, ValueError, KeyError, TypeError) as exc:
            log.warning("no metrics run=%s experiment=%s: %s", name, experiment, exc)
            return {}
        if not metrics:
            log.warning("no metrics run=%s experiment=%s: no step logged eval_loss or "
                        "train_loss", name, experiment)
            return {}
        log.info("metrics run=%s eval_loss=%s train_loss=%s", name,
                 metrics.get("eval_loss"), metrics.get("train_loss"))
        cache[name] = metrics
        return dict(metrics)

    def _mlflow_runs(self) -> MlflowRuns:
        """The workspace's MLflow REST client, from the workspace's tracking URI (read once)."""
        cached = self.__dict__.get("_mlflow_client")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        from shared.platform.azureml._metrics import MlflowRuns, mlflow_rest_base

        s = self.settings
        workspace = self.ml_client.workspaces.get(s.workspace_name)
        uri = getattr(workspace, "mlflow_tracking_uri", None)
        if not uri:  # older API versions: the documented shape on the workspace's API host
            uri = (
                f"{self.ml_client.jobs._api_url}/mlflow/v1.0/subscriptions/{s.subscription_id}"
                f"/resourceGroups/{s.resource_group}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{s.workspace_name}"
            )
        client = MlflowRuns(mlflow_rest_base(str(uri)), self.credential, transport=self.transport)
        self.__dict__["_mlflow_client"] = client
        return client

    def _failure_message(self, name: str) -> str:
        """Azure ML's error for a failed job, from its run history (one more call, failures only).

        Best effort: the status already says Failed, so a lookup that fails falls back to a
        pointer at the job's logs rather than failing the caller.
        """
        fallback = f"job {name} failed; see its logs in Azure ML studio"
        try:
            with map_sdk_errors(f"run history of job {name}"):
                details = self.ml_client.jobs._runs_operations.get_run_details(name)
        except (PlatformError, TransientError) as exc:
            log.warning("no failure details run=%s: %s", name, exc)
            return fallback
        root = getattr(getattr(details, "error", None), "error", None)
        message = getattr(root, "message", None)
        if not message:
            return fallback
        code = getattr(root, "code", None)
        text = " ".join(str(message).split())[:1000]
        return f"{code}: {text}" if code else text


def _text(value: Any) -> str:
    """An SDK enum member (``JobStatus.RUNNING``) or string as the REST API spells it."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _gpus_of(sizes: list[Any], size: str) -> int | None:
    for vm in sizes:
        if str(vm.name).lower() == size.lower():
            return int(vm.gpus or 0)
    return None


def _version_or_label(version_or_label: str) -> tuple[str | None, str | None]:
    return (None, version_or_label) if version_or_label == "latest" else (version_or_label, None)


def _job_info(
    job: Any, error: str | None = None, metrics: Mapping[str, float] | None = None
) -> JobInfo:
    outputs: dict[str, str] = {}
    for key, output in (getattr(job, "outputs", None) or {}).items():
        path = getattr(output, "path", None)
        outputs[key] = str(path) if path else f"azureml://jobs/{job.name}/outputs/{key}"
    return JobInfo(
        name=str(job.name),
        status=JobStatus.of(_text(job.status)),
        tags={str(k): str(v) for k, v in (job.tags or {}).items()},
        metrics=dict(metrics or {}),
        outputs=outputs,
        error=error,
        studio_url=getattr(job, "studio_url", None),
    )
