"""Release a trained run: register → endpoint → deployment at 0 % → smoke test → gate → promote.

Every step reads the run from the ledger, does one idempotent platform call and records its
progress (ETag-guarded) before the next step starts, so a crash, a duplicate delivery or a
redelivery resumes from the recorded step. Long operations (endpoint, deployment) are
started and left: the run waits in DEPLOYING and :func:`advance_release`, called by later
events or the reconciler, polls and continues.

One release at a time per line: a lease entity in the ledger's claims partition names the run
that owns the line's endpoint (``holder``) and the one worker driving it now (``worker``, with
an expiry so a crashed worker never blocks the line). A worker that finds the lease taken
returns at once; the reconciler advances the waiting run later.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared import reports
from shared.errors import (
    LedgerConflictError,
    NotFoundError,
    NotPromotableError,
    PlatformError,
    TransientError,
    TuneloopError,
)
from shared.events import FAILED_STATUSES, RUNNING_STATUSES, JobEvent, Skip, parse_job_event
from shared.ledger import IN_RELEASE, Ledger, RunRecord, RunState
from shared.naming import deployment_name, endpoint_name, model_name
from shared.platform.port import (
    BaseModelInfo,
    DeploymentSpec,
    JobInfo,
    ModelVersionInfo,
    Platform,
    ProvisioningState,
)
from shared.settings import Settings
from shared.storage import BlobRef, Storage

if TYPE_CHECKING:
    from shared.clients import Clients

__all__ = [
    "LEASE_TTL",
    "GateDecision",
    "ReconcileSummary",
    "ReleaseContext",
    "advance_release",
    "answer_text",
    "decide_promotion",
    "handle_delivery",
    "handle_job_event",
    "inference_allow_list",
    "promote_held",
    "reconcile",
    "write_run_report",
]

log = logging.getLogger(__name__)

LEASE_TTL = timedelta(minutes=10)  # longer than any one invocation may run
MAX_STEP_FAILURES = 3  # non-transient failures of one step before the run is HELD
MAX_SMOKE_ATTEMPTS = 3  # transient smoke-test failures before the run is HELD
_MAX_STEPS = 12
_SMOKE_PARAMETERS = {"max_new_tokens": 64, "temperature": 0.6, "top_p": 0.9, "do_sample": True}
_PROBE = [{"role": "user", "content": "Say hello."}]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReleaseContext:
    """What the release needs: settings, ledger, platform and blob storage (all injectable)."""

    settings: Settings
    ledger: Ledger
    platform: Platform
    storage: Storage
    now: Callable[[], datetime] = _utcnow

    @classmethod
    def from_clients(cls, clients: Clients) -> ReleaseContext:
        return cls(clients.settings, clients.ledger, clients.platform, clients.storage)


# -- reports --------------------------------------------------------------------------------
def write_run_report(ctx: ReleaseContext, run: RunRecord) -> None:
    """Rewrite the run's ``run.json`` (the ingest side owns its place and shape)."""
    reports.write_run_report(ctx.storage, ctx.settings, run)


def _advance(
    ctx: ReleaseContext, run: RunRecord, state: RunState, **kwargs: Any
) -> RunRecord:
    """Advance (ETag-guarded), reset the step failure count, and rewrite run.json."""
    out = ctx.ledger.advance(run, state, failures=None, last_error=None, **kwargs)
    write_run_report(ctx, out)
    return out


# -- event handling -------------------------------------------------------------------------
def handle_delivery(ctx: ReleaseContext, event: Any) -> RunRecord | None:
    """Parse one delivered event and act on it; events that change nothing return None."""
    parsed = parse_job_event(event, trusted_topic=ctx.settings.workspace_arm_id)
    if isinstance(parsed, Skip):
        level = logging.WARNING if parsed.warn else logging.INFO
        log.log(level, "job event %s ignored: %s", parsed.event_id, parsed.reason)
        return None
    return handle_job_event(ctx, parsed)


def handle_job_event(ctx: ReleaseContext, event: JobEvent) -> RunRecord | None:
    """Move the event's run forward: TRAINING, FAILED, or TRAINED and on into the release."""
    run = _lookup(ctx, event)
    if run is None:
        log.info("job event %s: run %s is not in the ledger; ignored", event.event_id, event.run_id)
        return None
    log.info(
        "job event %s run=%s line=%s status=%s state=%s",
        event.event_id, run.run_id, run.line, event.status, run.state.value,
    )
    if event.running:
        return _mark_training(ctx, run)
    if event.failed:
        return _mark_failed(ctx, run, event.status)
    if event.completed:
        run = _mark_trained(ctx, run)
        return advance_release(ctx, run)
    return run


def _lookup(ctx: ReleaseContext, event: JobEvent) -> RunRecord | None:
    try:
        if event.line:
            try:
                return ctx.ledger.get(event.line, event.run_id)
            except NotFoundError:
                pass
        return ctx.ledger.find(event.run_id)
    except NotFoundError:
        return None


def _reread(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    return ctx.ledger.get(run.line, run.run_id)


_BEFORE_TRAINING = frozenset({RunState.ACCEPTED, RunState.SUBMITTED})
_BEFORE_TRAINED = frozenset({RunState.ACCEPTED, RunState.SUBMITTED, RunState.TRAINING})


def _move(
    ctx: ReleaseContext, run: RunRecord, allowed: frozenset[RunState], state: RunState,
    **kwargs: Any,
) -> RunRecord:
    """Advance while the run is in ``allowed``, re-reading on conflicts; later states stay."""
    while run.state in allowed:
        try:
            return _advance(ctx, run, state, **kwargs)
        except LedgerConflictError:
            run = _reread(ctx, run)
    return run


def _mark_training(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    return _move(ctx, run, _BEFORE_TRAINING, RunState.TRAINING, note="job running")


def _job_or_none(ctx: ReleaseContext, run_id: str) -> JobInfo | None:
    try:
        return ctx.platform.get_job(run_id)
    except NotFoundError:
        return None


def _mark_failed(
    ctx: ReleaseContext, run: RunRecord, status: str, job: JobInfo | None = None
) -> RunRecord:
    if run.state not in _BEFORE_TRAINED:
        return run
    job = job or _job_or_none(ctx, run.run_id)
    error = (job.error if job else None) or "Azure ML gave no error message"
    return _move(
        ctx, run, _BEFORE_TRAINED, RunState.FAILED, reason=f"job {status}: {error}",
        job_status=status, studio_url=job.studio_url if job else None,
    )


def _eval_loss(metrics: Mapping[str, float]) -> float | None:
    if "eval_loss" in metrics:
        return float(metrics["eval_loss"])
    for key, value in metrics.items():
        if key.lower().replace("/", "_").endswith("eval_loss"):
            return float(value)
    return None


def _mark_trained(ctx: ReleaseContext, run: RunRecord, job: JobInfo | None = None) -> RunRecord:
    if run.state not in _BEFORE_TRAINED:
        return run
    job = job or ctx.platform.get_job(run.run_id)
    if job.status in FAILED_STATUSES:
        return _mark_failed(ctx, run, job.status, job)
    metrics = {str(k): float(v) for k, v in job.metrics.items()}
    return _move(
        ctx, run, _BEFORE_TRAINED, RunState.TRAINED, note="job completed",
        metrics=metrics or None, eval_loss=_eval_loss(metrics), studio_url=job.studio_url,
    )


# -- the line lease -------------------------------------------------------------------------
def _lease_key(line: str) -> str:
    return f"release-{line}"


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _holder_active(ctx: ReleaseContext, line: str, holder: str) -> bool:
    try:
        return ctx.ledger.get(line, holder).state in IN_RELEASE
    except NotFoundError:
        return False


def _acquire(ctx: ReleaseContext, run: RunRecord, token: str) -> bool:
    """Take the line's lease for ``run`` and this worker; False if another run or worker has it."""
    key = _lease_key(run.line)
    until = (ctx.now() + LEASE_TTL).isoformat()
    for _ in range(3):
        try:
            claim = ctx.ledger.get_claim(key)
        except NotFoundError:
            if ctx.ledger.claim(key, holder=run.run_id, worker=token, worker_until=until):
                return True
            continue
        holder = str(claim.fields.get("holder") or "")
        if holder and holder != run.run_id and _holder_active(ctx, run.line, holder):
            log.info("line %s: release of %s waits for %s", run.line, run.run_id, holder)
            return False
        busy_until = _parse_time(claim.fields.get("worker_until"))
        if claim.fields.get("worker") and busy_until and busy_until > ctx.now():
            log.info("line %s: run %s is being advanced by another worker", run.line, holder)
            return False
        try:
            ctx.ledger.update_claim(claim, holder=run.run_id, worker=token, worker_until=until)
            return True
        except LedgerConflictError:
            continue
    return False


def _release(ctx: ReleaseContext, line: str, token: str, *, done: bool) -> None:
    try:
        claim = ctx.ledger.get_claim(_lease_key(line))
        if claim.fields.get("worker") != token:
            return
        holder = "" if done else claim.fields.get("holder", "")
        ctx.ledger.update_claim(claim, holder=holder, worker="", worker_until="")
    except (LedgerConflictError, NotFoundError, TransientError) as exc:
        # The worker lock expires on its own; nothing is lost.
        log.warning("line %s: could not release the lease (%s); it expires by itself", line, exc)


# -- the release ----------------------------------------------------------------------------
Step = Callable[[ReleaseContext, RunRecord], tuple[RunRecord, bool]]


def advance_release(ctx: ReleaseContext, run: RunRecord, *, kick: bool = True) -> RunRecord:
    """Drive a run that is mid-release as far as it can go now; never waits for Azure.

    When the run's release ends (PROMOTED, HELD, FAILED) and ``kick`` is set, the next run
    waiting for the same line is started at once instead of at the next reconcile.
    """
    if run.state not in IN_RELEASE:
        return run
    token = uuid.uuid4().hex
    if not _acquire(ctx, run, token):
        return run
    done = False
    try:
        run = _drive(ctx, _reread(ctx, run))
        done = run.state not in IN_RELEASE
    finally:
        _release(ctx, run.line, token, done=done)
    if done and kick:
        _start_next(ctx, run)
    return run


def _start_next(ctx: ReleaseContext, finished: RunRecord) -> None:
    """Start the oldest run still waiting on the line; its failures are the reconciler's."""
    waiting = [
        r for r in ctx.ledger.list(line=finished.line, states=IN_RELEASE)
        if r.run_id != finished.run_id
    ]
    if not waiting:
        return
    try:
        advance_release(ctx, waiting[0], kick=False)
    except Exception as exc:  # the finished run's delivery must not fail for the next one
        log.warning(
            "line %s: next release %s did not start (%s); the reconciler retries",
            finished.line, waiting[0].run_id, exc,
        )


def _drive(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    for _ in range(_MAX_STEPS):
        step = _STEPS.get(run.state)
        if step is None:
            return run
        try:
            run, moved = step(ctx, run)
        except LedgerConflictError:
            run = _reread(ctx, run)
            continue
        except TransientError:
            raise
        except PlatformError as exc:
            run = _record_failure(ctx, run, exc)
            if run.state not in IN_RELEASE:
                return run
            raise
        if not moved:
            return run
    return run


def _record_failure(ctx: ReleaseContext, run: RunRecord, exc: TuneloopError) -> RunRecord:
    failures = int(run.get("failures") or 0) + 1
    try:
        current = _reread(ctx, run)
        if current.state != run.state:
            return current
        if failures >= MAX_STEP_FAILURES:
            _discard_deployment(ctx, current)
            return _hold(ctx, current, f"{run.state.value} step failed {failures} times: {exc}")
        return ctx.ledger.update(
            current, failures=failures, last_error=str(exc),
            note=f"{run.state.value} step failed ({exc.code}); will retry",
        )
    except LedgerConflictError:
        return run


def _discard_deployment(ctx: ReleaseContext, run: RunRecord) -> None:
    """Best effort: remove a held run's new deployment (never once it may carry traffic)."""
    if run.state not in (RunState.DEPLOYING, RunState.DEPLOYED) or run.get("promoting"):
        return
    try:
        ctx.platform.delete_deployment(str(run.get("endpoint")), str(run.get("deployment")))
    except TuneloopError as exc:
        log.warning("run %s: could not delete deployment %s: %s", run.run_id,
                    run.get("deployment"), exc)


def _hold(ctx: ReleaseContext, run: RunRecord, reason: str) -> RunRecord:
    log.warning("run %s line %s HELD: %s", run.run_id, run.line, reason)
    return _advance(ctx, run, RunState.HELD, reason=reason)


def _lineage_tags(run: RunRecord) -> dict[str, str]:
    tags = {
        "tuneloop_run": run.run_id,
        "tuneloop_line": run.line,
        "tuneloop_job": run.run_id,
        "tuneloop_dataset": str(run.get("dataset_sha256") or run.get("sha256") or ""),
        "tuneloop_blob": str(run.get("blob") or ""),
    }
    return {k: v for k, v in tags.items() if v}


def _next_version(ctx: ReleaseContext, line: str) -> str:
    """Next model version of the line from an ETag-guarded counter (gaps possible, never reuse)."""
    key = f"version-{line}"
    while True:
        try:
            claim = ctx.ledger.get_claim(key)
        except NotFoundError:
            if ctx.ledger.claim(key, last=1) is not None:
                return "1"
            continue
        last = int(claim.fields.get("last") or 0) + 1
        try:
            ctx.ledger.update_claim(claim, last=last)
            return str(last)
        except LedgerConflictError:
            continue


def _step_trained(ctx: ReleaseContext, run: RunRecord) -> tuple[RunRecord, bool]:
    if not run.get("model_version"):
        version = _next_version(ctx, run.line)
        run = ctx.ledger.update(
            run,
            model_version=version,
            model_name=model_name(run.line),
            endpoint=endpoint_name(run.line),
            deployment=deployment_name(version),
            note=f"model version {version} assigned",
        )
    model = ctx.platform.register_model(
        str(run.get("model_name")), str(run.get("model_version")),
        job_name=run.run_id, tags=_lineage_tags(run),
    )
    run = _advance(
        ctx, run, RunState.REGISTERED, note=f"registered {model.name}:{model.version}",
        model_id=model.id,
    )
    return run, True


def _step_registered(ctx: ReleaseContext, run: RunRecord) -> tuple[RunRecord, bool]:
    endpoint = str(run.get("endpoint"))
    ep = ctx.platform.ensure_endpoint(
        endpoint, tags={"tuneloop_managed": "true", "tuneloop_line": run.line}
    )
    if ep.provisioning_state == ProvisioningState.FAILED:
        return _hold(ctx, run, f"endpoint {endpoint} is in state Failed"), True
    run = _advance(
        ctx, run, RunState.DEPLOYING, note=f"endpoint {endpoint} {ep.provisioning_state}",
        endpoint_state=ep.provisioning_state,
    )
    return run, True


def inference_allow_list(base: BaseModelInfo) -> list[str] | None:
    """The instance types the base model may be served on, or None if it does not say."""
    raw: Any = base.tags.get("inference_compute_allow_list")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw.replace("'", '"'))
        except ValueError:
            raw = [part.strip(" []'\"") for part in raw.split(",")]
    if not raw:
        meta = base.system_metadata
        computes = meta.get("supportedComputes") or {}
        skus = meta.get("SKU") or {}
        raw = (computes.get("inferenceComputes") if isinstance(computes, Mapping) else None) or (
            skus.get("inferenceRecommendedSkus") if isinstance(skus, Mapping) else None
        )
    if not raw:
        return None
    return [str(x) for x in raw if str(x)]


def _check_instance_type(ctx: ReleaseContext) -> str | None:
    """A reason to hold if the inference instance type is off the base model's allow-list."""
    s = ctx.settings
    base = ctx.platform.get_base_model(s.base_model, s.base_model_version or "latest")
    allowed = inference_allow_list(base)
    if allowed is None or s.inference_instance_type.lower() in {a.lower() for a in allowed}:
        return None
    return (
        f"instance type {s.inference_instance_type} is not on the inference allow-list of "
        f"{base.name}:{base.version} ({', '.join(allowed)}); set TUNELOOP_INFERENCE_INSTANCE_TYPE "
        "to one of them"
    )


def _step_deploying(ctx: ReleaseContext, run: RunRecord) -> tuple[RunRecord, bool]:
    endpoint = str(run.get("endpoint"))
    deployment = str(run.get("deployment"))
    try:
        ep = ctx.platform.get_endpoint(endpoint)
    except NotFoundError:  # gone since (e.g. swept): start it again
        ep = ctx.platform.ensure_endpoint(
            endpoint, tags={"tuneloop_managed": "true", "tuneloop_line": run.line}
        )
    if ep.provisioning_state == ProvisioningState.FAILED:
        return _hold(ctx, run, f"endpoint {endpoint} is in state Failed"), True
    if ep.provisioning_state != ProvisioningState.SUCCEEDED:
        return _note_wait(ctx, run, "endpoint_state", ep.provisioning_state), False
    if not run.get("instance_checked"):
        problem = _check_instance_type(ctx)
        if problem:
            return _hold(ctx, run, problem), True
        run = ctx.ledger.update(run, instance_checked=True)
    model = ModelVersionInfo(
        name=str(run.get("model_name")), version=str(run.get("model_version")),
        id=str(run.get("model_id")),
    )
    s = ctx.settings
    dep = ctx.platform.deploy(
        DeploymentSpec(
            endpoint=endpoint, name=deployment, model=model,
            instance_type=s.inference_instance_type, instance_count=s.inference_instance_count,
            tags={"tuneloop_run": run.run_id, "tuneloop_line": run.line},
        )
    )
    if dep.provisioning_state == ProvisioningState.SUCCEEDED:
        run = _advance(
            ctx, run, RunState.DEPLOYED, note=f"deployment {deployment} ready at 0 % traffic",
            endpoint_state=ep.provisioning_state, deployment_state=dep.provisioning_state,
            scoring_uri=ep.scoring_uri,
        )
        return run, True
    if dep.provisioning_state in (ProvisioningState.FAILED, ProvisioningState.CANCELED):
        ctx.platform.delete_deployment(endpoint, deployment)
        reason = f"deployment {deployment} {dep.provisioning_state}: {dep.error or 'no detail'}"
        return _hold(ctx, run, reason), True
    return _note_wait(ctx, run, "deployment_state", dep.provisioning_state), False


def _note_wait(ctx: ReleaseContext, run: RunRecord, key: str, value: str) -> RunRecord:
    """Record what the run waits on, once per change (the timeline stays short)."""
    if run.get(key) == value:
        return run
    try:
        note = f"waiting: {key.replace('_', ' ')} {value}"
        return ctx.ledger.update(run, note=note, **{key: value})
    except LedgerConflictError:
        return run


# -- smoke test and gate ---------------------------------------------------------------------
def _jsonl_head(chunks: Iterator[bytes], n: int) -> list[Any]:
    """The first ``n`` JSON lines of a stream, reading no further than needed."""
    out: list[Any] = []
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                out.append(json.loads(line))
                if len(out) >= n:
                    return out
    if buffer.strip() and len(out) < n:
        out.append(json.loads(buffer))
    return out


def _validation_ref(ctx: ReleaseContext, run: RunRecord) -> BlobRef:
    """The run's validation split: as ingest recorded it, else ``<prepared>/<run>/``."""
    recorded = str(run.get("validation_blob") or "")
    container, _, name = recorded.partition("/")
    if container and name:
        return BlobRef(container, name)
    return BlobRef(ctx.settings.prepared_container, f"{run.run_id}/validation.jsonl")


def _smoke_conversations(ctx: ReleaseContext, run: RunRecord) -> list[list[dict[str, Any]]]:
    ref = _validation_ref(ctx, run)
    try:
        examples = _jsonl_head(ctx.storage.read_chunks(ref), ctx.settings.smoke_examples)
    except NotFoundError:
        log.warning("run %s: no validation examples at %s; smoke-testing a probe", run.run_id, ref)
        return [_PROBE]
    conversations = []
    for example in examples:
        messages = list(example.get("messages") or []) if isinstance(example, dict) else []
        while messages and messages[-1].get("role") == "assistant":
            messages.pop()
        if messages:
            conversations.append(messages)
    return conversations or [_PROBE]


def answer_text(response: Any) -> str:
    """The assistant text in a scoring response (``{"output": ...}`` and its variants)."""
    if isinstance(response, bytes):
        response = response.decode("utf-8", "replace")
    if isinstance(response, str):
        try:
            decoded = json.loads(response)
        except ValueError:
            return response.strip()
        return answer_text(decoded) if not isinstance(decoded, str) else decoded.strip()
    if isinstance(response, Mapping):
        for key in ("output", "0", "generated_text", "text"):
            if key in response:
                return answer_text(response[key])
        choices = response.get("choices")
        if isinstance(choices, list) and choices:
            first = choices[0]
            if isinstance(first, Mapping):
                message = first.get("message")
                if isinstance(message, Mapping):
                    return answer_text(message.get("content"))
        return ""
    if isinstance(response, list) and response:
        return answer_text(response[0])
    return ""


def _smoke_test(ctx: ReleaseContext, run: RunRecord) -> str | None:
    """Invoke the new deployment directly; None if every answer is non-empty text, else why."""
    endpoint, deployment = str(run.get("endpoint")), str(run.get("deployment"))
    for messages in _smoke_conversations(ctx, run):
        payload = {"input_data": {"input_string": [messages], "parameters": _SMOKE_PARAMETERS}}
        try:
            response = ctx.platform.invoke(endpoint, payload, deployment=deployment)
        except TransientError:
            raise
        except Exception as exc:  # any refusal of the new deployment fails the smoke test
            return f"{deployment} raised {type(exc).__name__}: {exc}"
        if not answer_text(response):
            return f"{deployment} answered no text"
    return None


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    keep_deployment: bool = False


def decide_promotion(
    mode: Literal["auto", "gate", "manual"],
    *,
    new_loss: float | None,
    live_loss: float | None,
    has_live: bool,
    tolerance: float,
) -> GateDecision:
    """Pure: whether a smoke-tested deployment replaces the live one."""
    if mode == "auto":
        return GateDecision(True, "promotion auto")
    if mode == "manual":
        return GateDecision(
            False, "promotion is manual (TUNELOOP_PROMOTION=manual); the deployment waits at 0 %",
            keep_deployment=True,
        )
    if not has_live:
        return GateDecision(True, "gate: no live model to compare with")
    if new_loss is None:
        return GateDecision(False, "gate: the new job reported no eval_loss; cannot compare")
    if live_loss is None:
        return GateDecision(False, "gate: the live model has no recorded eval_loss; cannot compare")
    if new_loss > live_loss + tolerance:
        return GateDecision(
            False,
            f"gate: eval_loss {new_loss:.4f} is worse than the live model's {live_loss:.4f} "
            f"by more than {tolerance:g}",
        )
    return GateDecision(True, f"gate: eval_loss {new_loss:.4f} vs live {live_loss:.4f}")


def _live_run(ctx: ReleaseContext, run: RunRecord) -> RunRecord | None:
    live = [
        r for r in ctx.ledger.list(line=run.line, states=[RunState.PROMOTED])
        if r.run_id != run.run_id
    ]
    live.sort(key=lambda r: str(r.get("promoted_at") or r.get("updated") or ""))
    return live[-1] if live else None


def _as_float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _step_deployed(ctx: ReleaseContext, run: RunRecord) -> tuple[RunRecord, bool]:
    endpoint, deployment = str(run.get("endpoint")), str(run.get("deployment"))
    if not run.get("promoting"):
        try:
            problem = _smoke_test(ctx, run)
        except TransientError as exc:
            attempts = int(run.get("smoke_attempts") or 0) + 1
            if attempts < MAX_SMOKE_ATTEMPTS:
                ctx.ledger.update(run, smoke_attempts=attempts, last_error=str(exc))
                raise
            problem = f"{deployment} did not answer after {attempts} attempts: {exc}"
        if problem:
            ctx.platform.delete_deployment(endpoint, deployment)
            return _hold(ctx, run, f"smoke test failed: {problem}"), True
        live = _live_run(ctx, run)
        decision = decide_promotion(
            ctx.settings.promotion,
            new_loss=_as_float(run.get("eval_loss")),
            live_loss=_as_float(live.get("eval_loss")) if live else None,
            has_live=live is not None,
            tolerance=ctx.settings.gate_tolerance,
        )
        if not decision.promote:
            if not decision.keep_deployment:
                ctx.platform.delete_deployment(endpoint, deployment)
            return _hold(ctx, run, decision.reason), True
        run = ctx.ledger.update(
            run, promoting=True, gate=decision.reason,
            previous_run=live.run_id if live else None,
            previous_deployment=live.get("deployment") if live else None,
            note=f"smoke test passed; {decision.reason}; promoting",
        )
    return _promote(ctx, run), True


def _promote(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    """Traffic 100 % to the run's deployment → delete the previous one → retire the previous
    run → PROMOTED. Every call is idempotent; ``previous_*`` were recorded before the first."""
    endpoint, deployment = str(run.get("endpoint")), str(run.get("deployment"))
    ctx.platform.set_traffic(endpoint, {deployment: 100})
    previous = run.get("previous_deployment")
    if previous and previous != deployment:
        ctx.platform.delete_deployment(endpoint, str(previous))
    if run.get("previous_run"):
        _retire(ctx, run.line, str(run.get("previous_run")), by=run.run_id)
    ep = ctx.platform.get_endpoint(endpoint)
    run = _advance(
        ctx, run, RunState.PROMOTED, note=f"{deployment} takes 100 % of {endpoint}",
        reason=None, scoring_uri=ep.scoring_uri or run.get("scoring_uri"),
        promoted_at=ctx.now().isoformat(), endpoint=endpoint, deployment=deployment,
        model_version=run.get("model_version"), eval_loss=run.get("eval_loss"),
    )
    log.info("run %s line %s PROMOTED as %s on %s", run.run_id, run.line, deployment, endpoint)
    return run


def _retire(ctx: ReleaseContext, line: str, run_id: str, *, by: str) -> None:
    while True:
        try:
            prev = ctx.ledger.get(line, run_id)
        except NotFoundError:
            return
        if prev.state != RunState.PROMOTED:
            return
        try:
            _advance(ctx, prev, RunState.RETIRED, reason=f"superseded by {by}")
            return
        except LedgerConflictError:
            continue


# -- manual promotion -----------------------------------------------------------------------
def promote_held(ctx: ReleaseContext, run_id: str, *, line: str | None = None) -> RunRecord:
    """Promote a HELD run by hand: the release's own last step on its kept deployment.

    Its deployment (left at 0 % by ``TUNELOOP_PROMOTION=manual``) takes 100 % of the line's
    endpoint, the previous deployment is deleted and the previous live run RETIRED. A PROMOTED
    run is returned as it is, and a promotion cut short resumes from what it recorded. Raises
    NotPromotableError for a run in another state, a deployment that is gone (a failed smoke
    test or gate removes it) or not ready, or a line whose release is under way now.
    """
    run = ctx.ledger.get(line, run_id) if line else ctx.ledger.find(run_id)
    if run.state == RunState.PROMOTED:
        return run
    _check_promotable(ctx, run)
    token = uuid.uuid4().hex
    if not _acquire(ctx, run, token):
        raise NotPromotableError(
            f"line {run.line} is busy: another release is under way",
            hint="try again once `tuneloop status --line "
            f"{run.line}` shows no run between TRAINED and DEPLOYED",
        )
    done = False
    try:
        while True:
            run = _reread(ctx, run)
            if run.state == RunState.PROMOTED:
                done = True
                return run
            _check_promotable(ctx, run)
            try:
                run = _record_manual_promotion(ctx, run)
                run = _promote(ctx, run)
            except LedgerConflictError:
                continue
            done = True
            return run
    finally:
        _release(ctx, run.line, token, done=done)


def _check_promotable(ctx: ReleaseContext, run: RunRecord) -> None:
    """Raise NotPromotableError unless the run is HELD with a ready deployment."""
    where = f"run {run.run_id} on line {run.line}"
    status = f"tuneloop status --line {run.line}"
    if run.state != RunState.HELD:
        raise NotPromotableError(
            f"{where} is {run.state.value}, not HELD; only a held run is promoted by hand",
            hint=f"see `{status}`",
        )
    endpoint, deployment = run.get("endpoint"), run.get("deployment")
    held = f"held: {run.reason}" if run.reason else "held"
    if not endpoint or not deployment:
        raise NotPromotableError(
            f"{where} was {held} before it had a deployment",
            hint="fix the cause and submit the dataset again",
        )
    try:
        dep = ctx.platform.get_deployment(str(endpoint), str(deployment))
    except NotFoundError as exc:
        raise NotPromotableError(
            f"{where}: deployment {deployment} no longer exists on endpoint {endpoint} ({held})",
            hint="only a run held by TUNELOOP_PROMOTION=manual keeps its deployment; "
            "submit the dataset again to release it",
        ) from exc
    if dep.provisioning_state != ProvisioningState.SUCCEEDED:
        raise NotPromotableError(
            f"{where}: deployment {deployment} on endpoint {endpoint} is "
            f"{dep.provisioning_state}, not Succeeded",
            hint="wait for it, or submit the dataset again if it failed",
        )


def _record_manual_promotion(ctx: ReleaseContext, run: RunRecord) -> RunRecord:
    """Record the live run and deployment being replaced, once, before traffic moves."""
    if run.get("promoting"):
        return run
    live = _live_run(ctx, run)
    return ctx.ledger.update(
        run, promoting=True, gate="promoted by hand", held_reason=run.reason, reason=None,
        previous_run=live.run_id if live else None,
        previous_deployment=live.get("deployment") if live else None,
        note=f"promoting {run.get('deployment')} by hand"
        + (f", replacing {live.run_id}" if live else ""),
    )


_STEPS: dict[RunState, Step] = {
    RunState.TRAINED: _step_trained,
    RunState.REGISTERED: _step_registered,
    RunState.DEPLOYING: _step_deploying,
    RunState.DEPLOYED: _step_deployed,
}


# -- the reconciler -------------------------------------------------------------------------
@dataclass
class ReconcileSummary:
    polled: int = 0
    advanced: int = 0
    errors: int = 0


def reconcile(ctx: ReleaseContext) -> ReconcileSummary:
    """Ask Azure ML about runs whose events never came, and advance every run mid-release."""
    summary = ReconcileSummary()
    for run in ctx.ledger.list(states=[RunState.SUBMITTED, RunState.TRAINING]):
        summary.polled += 1
        try:
            _poll_job(ctx, run)
        except TransientError as exc:
            summary.errors += 1
            log.warning("reconcile: run %s job status unavailable: %s", run.run_id, exc)
    for run in ctx.ledger.list(states=IN_RELEASE):
        before = run.state
        try:
            after = advance_release(ctx, run, kick=False)
        except TuneloopError as exc:
            summary.errors += 1
            log.warning("reconcile: run %s line %s at %s: %s", run.run_id, run.line, before, exc)
            continue
        except Exception:  # one broken run must not stop the others
            summary.errors += 1
            log.exception("reconcile: run %s line %s at %s failed", run.run_id, run.line, before)
            continue
        if after.state != before:
            summary.advanced += 1
    log.info(
        "reconcile polled=%s advanced=%s errors=%s",
        summary.polled, summary.advanced, summary.errors,
    )
    return summary


def _poll_job(ctx: ReleaseContext, run: RunRecord) -> None:
    job = _job_or_none(ctx, run.run_id)
    if job is None:
        log.warning("reconcile: run %s has no Azure ML job", run.run_id)
        return
    if job.status == "Completed":
        _mark_trained(ctx, run, job)  # the release loop below picks it up
    elif job.status in FAILED_STATUSES:
        _mark_failed(ctx, run, job.status, job)
    elif job.status in RUNNING_STATUSES and job.status != "NotStarted":
        _mark_training(ctx, run)
