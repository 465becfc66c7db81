"""``LocalPlatform``: the platform port on one machine, every part real.

Training is a subprocess (``train.py``), the registry is MLflow in SQLite, each endpoint is a
router process (``router.py``) in front of one server process per deployment (``serve.py``),
and job status changes land in an Event Grid outbox (``events.py``). All state lives under
``settings.home`` (see ``state.py``), so a new ``LocalPlatform`` on the same home sees the
same jobs, models and endpoints; :meth:`LocalPlatform.restore` restarts the servers after a
devhost restart and :meth:`LocalPlatform.close` stops every child this instance started.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from shared.errors import (
    ConflictError,
    NotFoundError,
    PlatformError,
    TransientError,
    UnknownTrafficError,
)
from shared.platform.local import events
from shared.platform.local.azurite import free_port
from shared.platform.local.counts import RequestCounts
from shared.platform.local.procs import get_json, pid_alive, spawn, stop_pid, tail
from shared.platform.local.state import Paths, locked, read_json, utcnow_iso, write_json
from shared.platform.local.tinymodel import (
    MODEL_SPECIFIC_DEFAULTS,
    TINY_MODEL_NAME,
    TINY_MODEL_VERSION,
)
from shared.platform.port import (
    TERMINAL_JOB_STATUSES,
    BaseModelInfo,
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
from shared.settings import LOCAL_WORKSPACE_ID, Settings

__all__ = ["LocalPlatform", "LostJob"]

log = logging.getLogger(__name__)

_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
_DEPLOYMENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
_TRAIN_MODULE = "shared.platform.local.train"
_SERVE_MODULE = "shared.platform.local.serve"
_ROUTER_MODULE = "shared.platform.local.router"
DEPLOYMENT_HEADER = "azureml-model-deployment"


def _plan_to_json(plan: FinetunePlan) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    out: dict[str, Any] = plain(plan)
    return out


def _plan_from_json(data: Mapping[str, Any]) -> FinetunePlan:
    """The plan :func:`_plan_to_json` wrote (keys it does not know are ignored)."""
    known = {f.name for f in dataclasses.fields(FinetunePlan) if f.init}
    fields = {k: v for k, v in data.items() if k in known}
    base = {k: v for k, v in dict(data["base_model"]).items()
            if k in {f.name for f in dataclasses.fields(BaseModelInfo) if f.init}}
    fields["base_model"] = BaseModelInfo(**base)
    fields["warnings"] = tuple(fields.get("warnings") or ())
    start = fields.get("start_model")
    fields["start_model"] = ModelVersionInfo(**dict(start)) if start else None
    return FinetunePlan(**fields)


@dataclasses.dataclass(frozen=True)
class LostJob:
    """A job that ended because its host stopped: its plan, the error, when it was reaped."""

    plan: FinetunePlan
    error: str
    finished: str


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value))


class LocalPlatform:
    """The embedded local platform (``kind = "local"``); see the module docstring."""

    kind = "local"

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Any = None,
        threads: int = 1,
        tie_children: bool = True,
    ) -> None:
        """``tie_children=False`` lets children outlive this process (a one-shot CLI submit)."""
        self.settings = settings
        self.tie_children = tie_children
        self.storage = storage
        self.home = Path(settings.home).resolve()
        self.paths = Paths(self.home)
        self.threads = threads
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._children_lock = threading.Lock()
        self._counts: RequestCounts | None = None
        self._closing = False  # close() is stopping our children: their jobs are lost

    @classmethod
    def from_settings(cls, settings: Settings, *, storage: Any = None) -> LocalPlatform:
        """The platform for ``settings.home`` (``storage`` is the app's Storage; optional)."""
        return cls(settings, storage=storage)

    # -- fine-tuning ------------------------------------------------------------------------
    def get_base_model(self, name: str, version_or_label: str = "latest") -> BaseModelInfo:
        """The local base model, whatever model was asked for (noted in ``properties``).

        ``settings.local_base_model`` (a Hugging Face directory) when set, else the tiny
        built-in Phi-3-shaped model; its tags carry ``model_specific_defaults`` suited to it.
        """
        local = self.settings.local_base_model
        properties = {"requested_model": name, "requested_version": version_or_label}
        if local:
            path = Path(local).expanduser().resolve()
            if not (path / "config.json").exists():
                raise NotFoundError(
                    f"local base model directory {path} has no config.json",
                    hint="set TUNELOOP_LOCAL_BASE_MODEL to a Hugging Face model directory",
                )
            return BaseModelInfo(
                id=str(path), name=path.name, version="local",
                tags={"task": "chat-completion"}, properties=properties,
                system_metadata={"tasks": {"fineTuningTasks": ["chat-completion"]}},
            )
        return BaseModelInfo(
            id=f"local://models/{TINY_MODEL_NAME}/versions/{TINY_MODEL_VERSION}",
            name=TINY_MODEL_NAME,
            version=TINY_MODEL_VERSION,
            tags={
                "task": "chat-completion",
                "model_specific_defaults": json.dumps(MODEL_SPECIFIC_DEFAULTS, sort_keys=True),
            },
            properties=properties,
            system_metadata={
                "tasks": {
                    "fineTuningTasks": ["chat-completion"],
                    "inferenceTasks": ["chat-completion"],
                }
            },
        )

    def get_component(self, name: str, version_or_label: str = "latest") -> ComponentInterface:
        """The bundled ``chat_completion_pipeline`` interface (the trainer honours its inputs)."""
        from shared.specs import bundled_component

        component = bundled_component()
        if name != component.name:
            raise NotFoundError(
                f"component {name} is not available locally (only {component.name})",
                hint=f"set TUNELOOP_COMPONENT_NAME={component.name}",
            )
        return component

    def get_compute(self, name: str) -> ComputeInfo:
        """This machine, whatever compute was named. GPUs: the CUDA device count, else None.

        None (unknown) rather than 0 on CPU: the planner refuses a compute with 0 GPUs, and
        the local trainer runs on CPU by design.
        """
        del name
        gpus: int | None = None
        if self.settings.local_device.startswith("cuda"):
            import torch

            gpus = int(torch.cuda.device_count()) or None
        return ComputeInfo(
            name="local", size=None, provisioning_state="Succeeded", gpus_per_node=gpus,
            location="local",
        )

    def submit_finetune(self, plan: FinetunePlan) -> JobInfo:
        """Start the training subprocess for ``plan.run_id`` (once); return the job at once."""
        name = plan.run_id
        if not _JOB_NAME.match(name):
            raise PlatformError(f"job name {name!r} is not a valid Azure ML job name")
        job_dir = self.paths.job(name)
        from shared.platform.local import registry

        # The tracking store exists before any trainer starts: two first trainers creating
        # its schema at once fail (see registry.ensure_store).
        registry.ensure_store(self.home)
        start_dir = None
        if plan.start_model is not None and read_json(job_dir / "job.json") is None:
            # Before the lock (it reads the MLflow registry): a missing version is NotFound.
            start_dir = self._start_model_dir(plan.start_model)
        with locked(self.paths):
            exists = read_json(job_dir / "job.json") is not None
            if not exists:
                proc = self._start_job(plan, job_dir, start_dir)
        if exists:
            log.info("job %s exists; not submitting again", name)
            return self._job_info(name)  # outside the lock: it may take it to reap
        log.info("job %s submitted (pid %s) line=%s", name, proc.pid, plan.line)
        return JobInfo(name=name, status=JobStatus.NOT_STARTED, tags=dict(plan.tags))

    def _start_model_dir(self, model: ModelVersionInfo) -> Path:
        """The Hugging Face directory of a registered version (what its deployment serves)."""
        from shared.platform.local import registry

        model_dir, _ = self._resolve_model(model)
        return registry.hf_model_dir(model_dir)

    def _start_job(
        self, plan: FinetunePlan, job_dir: Path, start_dir: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Record the job and spawn its trainer (caller holds the lock)."""
        name = plan.run_id
        if plan.start_model is not None and start_dir is None:
            start_dir = self._start_model_dir(plan.start_model)
        spec = {
            "name": name,
            "plan": _plan_to_json(plan),
            "home": str(self.home),
            "base_model_dir": self.settings.local_base_model,
            # the registered version training continues from (None: from the base model)
            "start_model_dir": str(start_dir) if start_dir is not None else None,
            "device": self.settings.local_device,
            "threads": self.threads,
            "submitted": utcnow_iso(),
            "topic": LOCAL_WORKSPACE_ID,
            # The process the trainer lives and dies with; None when it outlives us.
            "host_pid": os.getpid() if self.tie_children else None,
        }
        write_json(job_dir / "job.json", spec)
        write_json(job_dir / "status.json", {"status": "NotStarted"})
        proc = spawn(
            _TRAIN_MODULE, [str(job_dir)], log_file=job_dir / "process.log",
            env=self._child_env(), tie_to_parent=self.tie_children,
        )
        self._remember(f"job:{name}", proc)
        write_json(job_dir / "job.json", {**spec, "pid": proc.pid})
        return proc

    def get_job(self, name: str) -> JobInfo:
        """The job's status (Azure ML names), metrics, outputs and error. Raises NotFoundError."""
        if read_json(self.paths.job(name) / "job.json") is None:
            raise NotFoundError(f"job {name} does not exist on the local platform")
        return self._job_info(name)

    def _job_info(self, name: str) -> JobInfo:
        job_dir = self.paths.job(name)
        spec = read_json(job_dir / "job.json") or {}
        status = self._reap_job(name) or read_json(job_dir / "status.json") or {}
        metrics = {
            k: float(v)
            for k, v in (status.get("metrics") or {}).items()
            if isinstance(v, int | float)
        }
        return JobInfo(
            name=name,
            status=JobStatus.of(status.get("status", JobStatus.NOT_STARTED)),
            tags=dict((spec.get("plan") or {}).get("tags") or {}),
            metrics=metrics,
            outputs=dict(status.get("outputs") or {}),
            error=status.get("error"),
            studio_url=(job_dir / "log.jsonl").as_uri(),
        )

    def _job_process_alive(self, name: str, pid: int | None) -> bool:
        with self._children_lock:
            proc = self._children.get(f"job:{name}")
        if proc is not None:
            return proc.poll() is None
        return pid_alive(pid, f"{self.paths.job(name)} ")

    def _reap_job(self, name: str) -> dict[str, Any] | None:
        """Mark a job Failed when its process ended without reporting; the new status or None."""
        job_dir = self.paths.job(name)
        status = read_json(job_dir / "status.json") or {}
        if status.get("status") in TERMINAL_JOB_STATUSES:
            return None
        spec = read_json(job_dir / "job.json") or {}
        if self._job_process_alive(name, spec.get("pid")):
            return None
        with locked(self.paths):
            # Look again under the lock: it may have just finished, or just been spawned.
            status = read_json(job_dir / "status.json") or {}
            spec = read_json(job_dir / "job.json") or {}
            if status.get("status") in TERMINAL_JOB_STATUSES or self._job_process_alive(
                name, spec.get("pid")
            ):
                return None
            last = tail(job_dir / "process.log", lines=3)
            host = spec.get("host_pid")
            lost = self._closing or (
                isinstance(host, int) and host != os.getpid() and not pid_alive(host)
            )
            why = (
                f"lost with its host (pid {host}), which stopped or died"
                if lost
                else "killed, or crashed"
            )
            error = (
                f"the training process (pid {spec.get('pid')}) ended without reporting a result "
                f"({why})"
                # Its last output says why it died by itself; a lost one's only that it stopped.
                + (f"; last output: {last}" if last and not lost else "")
            )
            status = {"status": "Failed", "error": error, "finished": utcnow_iso()}
            if lost:
                status["lost"] = True  # not the data's fault: see lost_jobs()
            write_json(job_dir / "status.json", status)
        plan = spec.get("plan") or {}
        events.emit_job_event(
            self.home, job_name=name, experiment_name=str(plan.get("experiment_name", name)),
            status="Failed", tags=plan.get("tags") or {},
            properties={"azureml.runsource": "azureml.PipelineRun", "tuneloop.platform": "local"},
        )
        log.warning("job %s marked Failed: %s", name, error)
        return status

    def job_log(self, name: str) -> Path:
        """The job's progress file (one JSON object per line), for the devhost/demo to tail."""
        return self.paths.job(name) / "log.jsonl"

    def lost_jobs(self) -> list[LostJob]:
        """Jobs that failed only because their host (the devhost) stopped or died while they
        ran, not yet settled (:meth:`settle_lost`), oldest first. Nothing was wrong with their
        data: the devhost retries each as the run's next attempt."""
        if not self.paths.jobs.is_dir():
            return []
        out = []
        for folder in self.paths.jobs.iterdir():
            status = read_json(folder / "status.json")
            if not isinstance(status, dict) or not status.get("lost") or "settled" in status:
                continue
            spec = read_json(folder / "job.json") or {}
            try:
                plan = _plan_from_json(spec["plan"])
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("lost job %s has no readable plan (%s); not retried", folder.name, exc)
                continue
            out.append(LostJob(plan, str(status.get("error") or "lost"),
                               str(status.get("finished") or "")))
        return sorted(out, key=lambda j: (j.finished, j.plan.run_id))

    def settle_lost(self, name: str, note: str) -> None:
        """Record what became of a lost job (``note``); it is no longer listed as lost."""
        path = self.paths.job(name) / "status.json"
        with locked(self.paths):
            status = read_json(path)
            if isinstance(status, dict):
                write_json(path, {**status, "settled": note})

    # -- release ----------------------------------------------------------------------------
    def register_model(
        self, name: str, version: str, *, job_name: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        """Register the job's MLflow model as ``name`` with ``tuneloop_version=version``."""
        from shared.platform.local import registry

        job = self.get_job(job_name)
        status = read_json(self.paths.job(job_name) / "status.json") or {}
        if job.status != JobStatus.COMPLETED or not status.get("model_uri"):
            raise ConflictError(
                f"job {job_name} is {job.status}: only a completed job's model can be registered",
                hint="wait for the job to complete",
            )
        with locked(self.paths):
            for other in registry.versions(self.home, name):
                theirs = dict(other.tags or {})
                check_line_owner(
                    f"model {name}:{theirs.get(registry.VERSION_TAG, other.version)}", theirs, tags
                )
            mv = registry.register(
                self.home, name, version, model_uri=str(status["model_uri"]),
                run_id=status.get("mlflow_run_id"), tags=tags,
            )
        return self._model_version_info(name, version, mv)

    @staticmethod
    def _model_version_info(name: str, version: str, mv: Any) -> ModelVersionInfo:
        return ModelVersionInfo(
            name=name, version=version, id=f"models:/{name}/{mv.version}", tags=dict(mv.tags)
        )

    def get_model_version(self, name: str, version: str) -> ModelVersionInfo:
        """Our ``name:version`` (the MLflow version tagged ``tuneloop_version``)."""
        from shared.platform.local import registry

        mv = registry.find_version(self.home, name, version)
        if mv is None:
            raise NotFoundError(f"model {name} version {version} is not registered locally")
        return self._model_version_info(name, version, mv)

    def update_model_tags(
        self, name: str, version: str, tags: Mapping[str, str]
    ) -> ModelVersionInfo:
        """Merge ``tags`` into our ``name:version``'s MLflow model version tags."""
        from shared.platform.local import registry

        with locked(self.paths):
            mv = registry.find_version(self.home, name, version)
            if mv is None:
                raise NotFoundError(f"model {name} version {version} is not registered locally")
            check_line_owner(f"model {name}:{version}", dict(mv.tags or {}), tags)
            mv = registry.set_tags(self.home, name, str(mv.version), tags)
        return self._model_version_info(name, version, mv)

    def ensure_endpoint(self, name: str, *, tags: Mapping[str, str]) -> EndpointInfo:
        """Create the endpoint (key, port, router process) if missing; return its state."""
        if not _ENDPOINT_NAME.match(name):
            raise PlatformError(
                f"endpoint name {name!r} is invalid: 3-32 letters, digits and hyphens, "
                "starting with a letter"
            )
        with locked(self.paths):
            record = self._endpoint_record(name)
            if record is not None:
                check_line_owner(f"endpoint {name}", record.get("tags") or {}, tags)
            else:
                now = utcnow_iso()
                record = {
                    "name": name,
                    "key": secrets.token_urlsafe(32),
                    "port": free_port(),
                    "tags": dict(tags),
                    "traffic": {},
                    "created": now,
                    "modified": now,
                    "state": ProvisioningState.CREATING,
                }
                self._save_endpoint(record)
                self._start_router(record)
                log.info("endpoint %s creating on port %s", name, record["port"])
        return self._endpoint_info(name)

    def get_endpoint(self, name: str) -> EndpointInfo:
        """Raises NotFoundError."""
        if self._endpoint_record(name) is None:
            raise NotFoundError(f"endpoint {name} does not exist on the local platform")
        return self._endpoint_info(name)

    def endpoint_key(self, name: str) -> str:
        """The endpoint's key (the local ``get_keys``), for ``Authorization: Bearer <key>``."""
        record = self._endpoint_record(name)
        if record is None:
            raise NotFoundError(f"endpoint {name} does not exist on the local platform")
        return str(record["key"])

    def deploy(self, spec: DeploymentSpec) -> DeploymentInfo:
        """Start the deployment's server (at 0 % traffic) if missing; return its state."""
        if not _DEPLOYMENT_NAME.match(spec.name):
            raise PlatformError(f"deployment name {spec.name!r} is invalid (3-32, letter first)")
        endpoint = self._endpoint_record(spec.endpoint)
        if endpoint is None:
            raise NotFoundError(
                f"endpoint {spec.endpoint} does not exist", hint="call ensure_endpoint first"
            )
        check_line_owner(f"endpoint {spec.endpoint}", endpoint.get("tags") or {}, spec.tags)
        check_line_owner(
            f"model {spec.model.name}:{spec.model.version}", spec.model.tags, spec.tags
        )
        path = self.paths.deployment(spec.endpoint, spec.name)
        if read_json(path) is None:
            model_dir, model_id = self._resolve_model(spec.model)
            with locked(self.paths):
                if read_json(path) is None:
                    record = {
                        "endpoint": spec.endpoint,
                        "name": spec.name,
                        "model_id": model_id,
                        "model_name": spec.model.name,
                        "model_version": spec.model.version,
                        "model_dir": str(model_dir),
                        "instance_type": spec.instance_type,
                        "instance_count": spec.instance_count,
                        "tags": dict(spec.tags),
                        "home": str(self.home),
                        "threads": self.threads,
                        "created": utcnow_iso(),
                        "state": ProvisioningState.CREATING,
                    }
                    self._start_deployment(record)
                    log.info("deployment %s/%s creating (model %s)", spec.endpoint, spec.name,
                             model_id)
        return self.get_deployment(spec.endpoint, spec.name)

    def _resolve_model(self, model: ModelVersionInfo) -> tuple[Path, str]:
        from shared.platform.local import registry

        match = re.fullmatch(r"models:/([^/]+)/(\d+)", model.id or "")
        if match:
            name, mlflow_version = match.group(1), match.group(2)
        else:
            found = registry.find_version(self.home, model.name, model.version)
            if found is None:
                raise NotFoundError(f"model {model.name}:{model.version} is not registered")
            name, mlflow_version = model.name, str(found.version)
        try:
            path = registry.model_local_dir(self.home, name, mlflow_version)
        except Exception as exc:
            raise NotFoundError(f"model {name} version {mlflow_version} not found: {exc}") from exc
        return path, f"models:/{name}/{mlflow_version}"

    def get_deployment(self, endpoint: str, name: str) -> DeploymentInfo:
        """Raises NotFoundError. Creating → Succeeded once the server answers readiness."""
        record = read_json(self.paths.deployment(endpoint, name))
        if record is None:
            raise NotFoundError(f"deployment {name} does not exist on endpoint {endpoint}")
        if record.get("state") == ProvisioningState.CREATING:
            record = self._refresh_deployment(record)
        return DeploymentInfo(
            endpoint=endpoint, name=name, model_id=str(record.get("model_id", "")),
            provisioning_state=str(record["state"]), error=record.get("error"),
        )

    def _refresh_deployment(self, record: dict[str, Any]) -> dict[str, Any]:
        status, body = get_json(int(record["port"]), "/health", timeout=2.0)
        update: dict[str, Any] = {}
        if status == 200:
            update = {"state": ProvisioningState.SUCCEEDED, "error": None}
        elif status == 500:
            error = (body or {}).get("error") if isinstance(body, dict) else None
            update = {"state": ProvisioningState.FAILED, "error": f"model load failed: {error}"}
        elif not self._server_alive(record):
            log_file = self._deployment_log(record["endpoint"], record["name"])
            update = {
                "state": ProvisioningState.FAILED,
                "error": f"the deployment server exited: {tail(log_file, lines=3)}",
            }
        if not update:
            return record
        with locked(self.paths):
            path = self.paths.deployment(record["endpoint"], record["name"])
            current: dict[str, Any] | None = read_json(path)
            if current is None or current.get("pid") != record.get("pid"):
                return current or record
            current.update(update, modified=utcnow_iso())
            write_json(path, current)
        return current

    def _server_alive(self, record: Mapping[str, Any]) -> bool:
        key = f"deploy:{record['endpoint']}/{record['name']}"
        with self._children_lock:
            proc = self._children.get(key)
        if proc is not None:
            return proc.poll() is None
        marker = f"{self.paths.deployment(record['endpoint'], record['name'])} "
        return pid_alive(record.get("pid"), marker)

    def invoke(
        self, endpoint: str, payload: Mapping[str, Any], *, deployment: str | None = None
    ) -> Any:
        """POST ``payload`` to the endpoint's ``/score`` with its key; the parsed JSON answer."""
        record = self._endpoint_record(endpoint)
        if record is None:
            raise NotFoundError(f"endpoint {endpoint} does not exist on the local platform")
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {record['key']}",
        }
        if deployment:
            headers[DEPLOYMENT_HEADER] = deployment
        conn = http.client.HTTPConnection("127.0.0.1", int(record["port"]), timeout=300)
        try:
            conn.request("POST", "/score", body=json.dumps(payload).encode(), headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"endpoint {endpoint} unreachable: {exc}") from exc
        finally:
            conn.close()
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = data.decode(errors="replace")
        if resp.status >= 400:
            message = body.get("error", {}).get("message") if isinstance(body, dict) else body
            text = f"endpoint {endpoint} answered {resp.status}: {message}"
            if resp.status in (502, 503, 504):
                raise TransientError(text)
            if resp.status == 404:
                raise NotFoundError(text)
            raise PlatformError(text)
        return body

    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        """Replace the traffic split (omitted deployments get 0); applies on the next request."""
        with locked(self.paths):
            record = self._endpoint_record(endpoint)
            if record is None:
                raise NotFoundError(f"endpoint {endpoint} does not exist on the local platform")
            known = set(self._deployment_names(endpoint))
            unknown = sorted(set(split) - known)
            if unknown:
                raise NotFoundError(
                    f"cannot route traffic on {endpoint} to missing deployments {unknown} "
                    f"(existing: {sorted(known)})"
                )
            values = {str(k): int(v) for k, v in split.items()}
            if any(v < 0 or v > 100 for v in values.values()):
                raise PlatformError(f"traffic percentages must be within 0..100: {values}")
            total = sum(values.values())
            if total not in (0, 100):
                raise PlatformError(f"traffic must sum to 100 (or all be 0), got {total}")
            record["traffic"] = {k: v for k, v in values.items() if v > 0}
            record["modified"] = utcnow_iso()
            self._save_endpoint(record)
        log.info("endpoint %s traffic %s", endpoint, values)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Stop routing to it, let its requests in flight finish, stop it; gone is success."""
        with locked(self.paths):
            path = self.paths.deployment(endpoint, name)
            record = read_json(path)
            if record is None:
                return
            ep = self._endpoint_record(endpoint) or {}
            if int((ep.get("traffic") or {}).get(name, 0)) > 0:
                raise ConflictError(
                    f"deployment {name} still takes {ep['traffic'][name]} % of {endpoint}'s "
                    "traffic", hint="set its traffic to 0 first",
                )
            path.unlink(missing_ok=True)
        self._stop_child(f"deploy:{endpoint}/{name}", record.get("pid"), f"{path} ")
        log.info("deployment %s/%s deleted", endpoint, name)

    # -- sweeping ---------------------------------------------------------------------------
    def list_endpoints(self) -> list[EndpointInfo]:
        """Every local endpoint, from the recorded state."""
        if not self.paths.endpoints.is_dir():
            return []
        out = []
        for folder in sorted(self.paths.endpoints.iterdir()):
            if (folder / "endpoint.json").exists():
                try:
                    out.append(self._endpoint_info(folder.name))
                except NotFoundError:
                    continue  # deleted meanwhile
        return out

    def endpoint_requests(
        self, endpoints: Sequence[EndpointInfo], window: timedelta, *, now: datetime
    ) -> dict[str, int]:
        """Scoring requests per endpoint in ``[now - window, now]`` (unknown endpoints omitted)."""
        import sqlite3

        known = [e.name for e in endpoints if self._endpoint_record(e.name) is not None]
        try:
            return self._request_counts().total(known, now - window, now)
        except sqlite3.Error as exc:
            raise UnknownTrafficError(
                f"cannot read local request counts from {self.paths.requests_db}: {exc}"
            ) from exc

    def delete_endpoint(self, name: str) -> None:
        """Stop the endpoint's router and deployments and forget it; gone is success."""
        with locked(self.paths):
            record = self._endpoint_record(name)
            if record is None:
                return
            deployments = [
                read_json(self.paths.deployment(name, d)) or {}
                for d in self._deployment_names(name)
            ]
            folder = self.paths.endpoint(name)
            trash = folder.with_name(f".deleting-{name}-{secrets.token_hex(4)}")
            os.replace(folder, trash)
        # Children's command lines name the endpoint's original paths: that is the marker.
        for dep in deployments:
            dep_name = str(dep.get("name"))
            self._stop_child(f"deploy:{name}/{dep_name}", dep.get("pid"),
                             f"{self.paths.deployment(name, dep_name)} ")
        self._stop_child(f"router:{name}", record.get("pid"), f"{folder} ")
        shutil.rmtree(trash, ignore_errors=True)
        self._request_counts().forget(name)
        log.info("endpoint %s deleted", name)

    # -- events (for the devhost) -------------------------------------------------------------
    def pending_events(self) -> list[dict[str, Any]]:
        """Event Grid events not yet acknowledged, oldest first (dead jobs reported first)."""
        self._reap_all_jobs()
        return events.pending_events(self.home)

    def ack_event(self, event_id: str) -> None:
        """Mark an event delivered; unknown or already acknowledged ids are fine."""
        events.ack_event(self.home, event_id)

    # -- lifecycle ----------------------------------------------------------------------------
    def restore(self) -> list[str]:
        """Restart recorded endpoint and deployment servers; what could not be restored, why.

        Jobs whose host died are reaped as lost (see :meth:`lost_jobs`); a trainer still
        running without its host (it stops itself within a second) is stopped first.
        """
        self._stop_orphaned_trainers()
        problems = [
            f"job {name}: {status.get('error')}"
            for name, status in self._reap_all_jobs()
        ]
        if not self.paths.endpoints.is_dir():
            return problems
        for folder in sorted(self.paths.endpoints.iterdir()):
            record = read_json(folder / "endpoint.json")
            if not isinstance(record, dict):
                continue
            problems += self._restore_endpoint(record)
        return problems

    def _restore_endpoint(self, record: dict[str, Any]) -> list[str]:
        name = str(record["name"])
        problems: list[str] = []
        with locked(self.paths):
            if not self._router_alive(record):
                port = int(record["port"])
                if get_json(port, "/")[0] != 0:
                    record["port"] = free_port()
                    problems.append(
                        f"endpoint {name}: port {port} is taken; moved to {record['port']} "
                        "(its scoring URI changed)"
                    )
                record["state"] = ProvisioningState.CREATING
                self._save_endpoint(record)
                self._start_router(record)
            for dep_name in self._deployment_names(name):
                dep = read_json(self.paths.deployment(name, dep_name)) or {}
                if not dep or self._server_alive(dep):
                    continue
                if not Path(str(dep.get("model_dir", ""))).exists():
                    dep.update(state=ProvisioningState.FAILED,
                               error=f"model files missing at {dep.get('model_dir')}")
                    write_json(self.paths.deployment(name, dep_name), dep)
                    problems.append(f"deployment {name}/{dep_name}: {dep['error']}")
                    continue
                dep["state"] = ProvisioningState.CREATING
                dep["error"] = None
                self._start_deployment(dep)
        return problems

    def _stop_orphaned_trainers(self) -> None:
        """Stop the trainers of unfinished jobs whose host process has gone."""
        if not self.paths.jobs.is_dir():
            return
        for folder in self.paths.jobs.iterdir():
            status = read_json(folder / "status.json") or {}
            spec = read_json(folder / "job.json") or {}
            host = spec.get("host_pid")
            if (
                status.get("status") in TERMINAL_JOB_STATUSES
                or not isinstance(host, int)
                or host == os.getpid()
                or pid_alive(host)
            ):
                continue
            stop_pid(spec.get("pid"), f"{folder} ")

    def close(self) -> None:
        """Stop every child process this instance started (jobs end up Failed).

        With ``tie_children=False`` the children are left running: they were started to
        outlive this instance.
        """
        if not self.tie_children:
            with self._children_lock:
                self._children.clear()
            self._close_counts()
            return
        self._closing = True
        with self._children_lock:
            children = dict(self._children)
            self._children.clear()
        for proc in children.values():
            if proc.poll() is None:
                proc.terminate()
        for key, proc in children.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %s) did not stop; killing it", key, proc.pid)
                proc.kill()
                proc.wait(timeout=5)
        self._reap_all_jobs()
        self._close_counts()

    def _close_counts(self) -> None:
        if self._counts is not None:
            self._counts.close()
            self._counts = None

    def __enter__(self) -> LocalPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELOOP_")}
        s = self.settings
        if s.storage_connection_string:
            env["TUNELOOP_STORAGE_CONNECTION_STRING"] = s.storage_connection_string
        if s.storage_account_url:
            env["TUNELOOP_STORAGE_ACCOUNT_URL"] = s.storage_account_url
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        env["TUNELOOP_LOCAL_DEVICE"] = s.local_device
        return env

    def _remember(self, key: str, proc: subprocess.Popen[bytes]) -> None:
        with self._children_lock:
            old = self._children.get(key)
            if old is not None:
                old.poll()  # reap it
            self._children[key] = proc

    def _stop_child(self, key: str, pid: Any, marker: str) -> None:
        """Stop a child: ours by its Popen, else (an earlier instance's) by pid + marker."""
        with self._children_lock:
            proc = self._children.pop(key, None)
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            return
        stop_pid(int(pid) if pid else None, marker)

    def _request_counts(self) -> RequestCounts:
        if self._counts is None:
            self._counts = RequestCounts(self.paths.requests_db)
        return self._counts

    def _endpoint_record(self, name: str) -> dict[str, Any] | None:
        if not _ENDPOINT_NAME.match(name):
            return None
        record = read_json(self.paths.endpoint(name) / "endpoint.json")
        return record if isinstance(record, dict) else None

    def _save_endpoint(self, record: Mapping[str, Any]) -> None:
        write_json(self.paths.endpoint(str(record["name"])) / "endpoint.json", dict(record),
                   private=True)

    def _deployment_names(self, endpoint: str) -> list[str]:
        folder = self.paths.endpoint(endpoint) / "deployments"
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))

    def _deployment_log(self, endpoint: str, name: str) -> Path:
        return self.paths.endpoint(endpoint) / "logs" / f"{name}.log"

    def _start_router(self, record: dict[str, Any]) -> None:
        """Spawn the router for ``record`` (caller holds the lock and saved the record)."""
        folder = self.paths.endpoint(str(record["name"]))
        proc = spawn(
            _ROUTER_MODULE, [str(folder), "--counts", str(self.paths.requests_db)],
            log_file=folder / "logs" / "router.log", env=self._child_env(),
            tie_to_parent=self.tie_children,
        )
        self._remember(f"router:{record['name']}", proc)
        record["pid"] = proc.pid
        self._save_endpoint(record)

    def _start_deployment(self, record: dict[str, Any]) -> None:
        """Pick a port, record, spawn the server (caller holds the lock)."""
        endpoint, name = str(record["endpoint"]), str(record["name"])
        path = self.paths.deployment(endpoint, name)
        record["port"] = free_port()
        record["pid"] = None
        write_json(path, record)
        proc = spawn(
            _SERVE_MODULE, [str(path)], log_file=self._deployment_log(endpoint, name),
            env=self._child_env(), tie_to_parent=self.tie_children,
        )
        self._remember(f"deploy:{endpoint}/{name}", proc)
        record["pid"] = proc.pid
        write_json(path, record)

    def _router_alive(self, record: Mapping[str, Any]) -> bool:
        with self._children_lock:
            proc = self._children.get(f"router:{record['name']}")
        if proc is not None:
            return proc.poll() is None
        return pid_alive(record.get("pid"), f"{self.paths.endpoint(str(record['name']))} ")

    def _endpoint_info(self, name: str) -> EndpointInfo:
        record = self._endpoint_record(name)
        if record is None:
            raise NotFoundError(f"endpoint {name} does not exist on the local platform")
        if record.get("state") == ProvisioningState.CREATING:
            record = self._refresh_endpoint(record)
        return EndpointInfo(
            name=name,
            id=f"{LOCAL_WORKSPACE_ID}/onlineEndpoints/{name}",
            tags=dict(record.get("tags") or {}),
            created=_parse_time(record.get("created")),
            modified=_parse_time(record.get("modified")),
            provisioning_state=str(record["state"]),
            traffic={str(k): int(v) for k, v in (record.get("traffic") or {}).items()},
            scoring_uri=f"http://127.0.0.1:{record['port']}/score",
            location="local",
        )

    def _refresh_endpoint(self, record: dict[str, Any]) -> dict[str, Any]:
        status, _ = get_json(int(record["port"]), "/health", timeout=1.0)
        if status == 200:
            update = {"state": ProvisioningState.SUCCEEDED, "error": None}
        elif not self._router_alive(record):
            log_file = self.paths.endpoint(str(record["name"])) / "logs" / "router.log"
            update = {"state": ProvisioningState.FAILED,
                      "error": f"the endpoint router exited: {tail(log_file, lines=3)}"}
        else:
            return record
        with locked(self.paths):
            current = self._endpoint_record(str(record["name"]))
            if current is None or current.get("pid") != record.get("pid"):
                return current or record
            current.update(update)
            self._save_endpoint(current)
        return current

    def _reap_all_jobs(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.paths.jobs.is_dir():
            return []
        reaped = []
        for folder in sorted(self.paths.jobs.iterdir()):
            if (folder / "job.json").exists():
                status = self._reap_job(folder.name)
                if status is not None:
                    reaped.append((folder.name, status))
        return reaped
