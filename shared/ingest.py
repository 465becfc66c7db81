"""Ingest one dataset drop: claim → validate (streamed) → report → quarantine, or split → submit.

The trigger hands us a blob name; everything else is decided here, with side effects passed
in (storage, ledger, platform, planner, clock) so that tests wire fakes and the composition
root wires the real adapters.

Exactly-once effect under at-least-once delivery:

* A *delivery* is one blob version: key = sha256(``container/name@etag``). The first handler
  to insert the key's claim into the ledger does the work; a later or concurrent delivery of
  the same version finds the claim and returns (done, or another handler holds a fresh lease).
* The claim carries a heartbeat. A handler that raises a TransientError releases it so that
  the host's retry resumes at once; one that died (killed, timed out) leaves a heartbeat that
  goes stale after ``lease`` (= the host's function timeout), after which a retry or
  :meth:`Ingest.resume_stale` takes over, fenced by the claim's ETag.
* Every step is idempotent and the ledger records how far a run got, so a resumed handler
  re-validates (cheap, deterministic, pinned to the ETag) and continues from the run's state:
  RECEIVED → split → ACCEPTED → submit (idempotent on the job name) → SUBMITTED.
* The same content under another name plans the same run id; the ledger already holds that
  run for another delivery, so this delivery is recorded as DUPLICATE and nothing is submitted.

The line's corpus (issue 11, :mod:`shared.corpus`): a valid drop's run trains on the corpus
resolved for it (by default the live run's drops, minus retracted ones, plus this drop), from
the start model the line's policy names; the plan's fingerprint covers both, so the same
corpus + plan is still one run. A drop already in the live corpus is a DUPLICATE of the run
that brought it. At the split step the drop is split once into its per-drop sides
(``prepared/_drops/<line>/<sha256>/``) and the run's files are assembled from the corpus's
sides; the run records ``data`` (what it trained on) at ACCEPTED, and a resumed handler keeps
the corpus it recorded. ``<line>/_exam/*.jsonl`` is the line's golden exam: validated and
reported like a drop (an invalid one is quarantined), then left in place; never a run.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from shared import telemetry
from shared.corpus import (
    Corpus,
    RunData,
    assemble,
    data_column,
    drop_refs,
    is_exam_name,
    read_golden_exam,
    resolve_corpus,
)
from shared.dataset import ValidationConfig, split_to, validate_stream
from shared.dataset.report import markdown_code, markdown_text
from shared.errors import (
    AlreadyExistsError,
    BlobChangedError,
    LedgerConflictError,
    NotFoundError,
    PlanError,
    TransientError,
    TuneloopError,
    translate_azure_error,
)
from shared.finetune import retry_plan
from shared.leases import claim_status, let_go, renew, stale_claims, take_claim
from shared.ledger import TERMINAL, Claim, LedgerPort, RunRecord, RunState
from shared.naming import is_valid_line, slug
from shared.reports import report_prefix, validation_refs, write_run_report
from shared.storage import BlobRef, Storage

if TYPE_CHECKING:
    from shared.clients import Clients
    from shared.dataset.report import ValidationReport
    from shared.platform.port import FinetunePlan, ModelVersionInfo, Platform
    from shared.settings import Settings

__all__ = [
    "LEASE",
    "DatasetPath",
    "Ingest",
    "IngestResult",
    "Outcome",
    "PlanDataset",
    "blob_from_subject",
    "claim_status",
    "delivery_key",
    "delivery_run_id",
    "ingest_blob",
    "parse_dataset_path",
]

log = logging.getLogger(__name__)

# A handler older than the host's function timeout (host.json: 10 min) is dead for sure.
LEASE = timedelta(minutes=10)
# Attempts of one dataset + plan after FAILED runs (a re-drop retrains; see _attempt).
MAX_ATTEMPTS = 5
_JSONL = "application/jsonl"
_CLAIM_KIND = "ingest"  # other stages keep claims in the same ledger partition


class PlanDataset(Protocol):
    """Plans the fine-tune of a validated dataset on its corpus (the sha256s of the drops the
    run trains on) from ``start_model`` (None = the base model); raises PlanError."""

    def __call__(
        self,
        *,
        line: str,
        dataset_sha256: str,
        corpus: Sequence[str] = (),
        start_model: ModelVersionInfo | None = None,
    ) -> FinetunePlan: ...


class Outcome(StrEnum):
    IGNORED = "ignored"  # not a dataset path
    GONE = "gone"  # the blob no longer exists
    SUPERSEDED = "superseded"  # overwritten while read; the new version has its own event
    ALREADY_DONE = "already_done"  # this blob version was processed before
    IN_PROGRESS = "in_progress"  # another handler holds a fresh claim on this version
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    EXAM = "exam"  # a valid golden exam file: reported, left in place, never a run
    SUBMITTED = "submitted"
    FAILED = "failed"


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    blob: str
    line: str | None = None
    run_id: str | None = None
    state: RunState | None = None


@dataclass(frozen=True)
class DatasetPath:
    """``<line>/<name>.jsonl`` in the incoming container."""

    blob: str
    line: str
    name: str  # without the line folder and the .jsonl suffix; may contain folders


def parse_dataset_path(blob: str) -> DatasetPath:
    """Split a blob name into line and name; ValueError says why it is not a dataset."""
    if not blob.lower().endswith(".jsonl"):
        raise ValueError("not a .jsonl file")
    line, sep, rest = blob.partition("/")
    if not sep:
        raise ValueError("not under a <line>/ folder")
    if not is_valid_line(line):
        raise ValueError(f"folder {line!r} is not a valid line name (1-63 of A-Z a-z 0-9 . _ -)")
    name = rest[: -len(".jsonl")]
    if not name or name.endswith("/") or "//" in rest or name.startswith("/"):
        raise ValueError("empty file or folder name")
    return DatasetPath(blob=blob, line=line, name=name)


def blob_from_subject(subject: str) -> tuple[str, str]:
    """(container, blob name) of a Storage event subject ``/blobServices/default/containers/
    <container>/blobs/<name>``; ValueError if the subject is not a blob's."""
    head, sep, name = subject.partition("/blobs/")
    prefix = "/blobServices/default/containers/"
    if not sep or not head.startswith(prefix) or not name:
        raise ValueError(f"{subject!r} is not a blob event subject")
    return head[len(prefix):], name


def delivery_key(container: str, blob: str, etag: str) -> str:
    """The idempotency key of one blob version."""
    return hashlib.sha256(f"{container}/{blob}@{etag}".encode()).hexdigest()


def delivery_run_id(line: str, key: str) -> str:
    """Ledger id for a delivery that never becomes a job (rejected, duplicate, failed)."""
    return f"in-{slug(line)[:40]}-{key[:16]}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _LostClaimError(Exception):
    """Another handler took the claim over (our heartbeat went stale); stop quietly."""


@dataclass
class _Delivery:
    """What one handler knows about the blob version it is working on."""

    path: DatasetPath
    ref: BlobRef
    etag: str
    key: str
    claim: Claim
    record: RunRecord | None = None
    report: ValidationReport | None = None
    ingest: dict[str, Any] = field(default_factory=dict)
    corpus: Corpus | None = None

    @property
    def prefix(self) -> str:
        return report_prefix(self.path.line, self.path.name)


class Ingest:
    """The ingest flow over injected ports. One instance serves many deliveries (thread-safe)."""

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        ledger: LedgerPort,
        platform: Platform,
        planner: PlanDataset,
        clock: Callable[[], datetime] = _utcnow,
        lease: timedelta = LEASE,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.ledger = ledger
        self.platform = platform
        self.planner = planner
        self.clock = clock
        self.lease = lease
        self.config = ValidationConfig.from_settings(settings)
        # An exam may be small: any number of examples from 1 (the rest of the rules hold).
        self.exam_config = replace(self.config, min_examples=1)

    @classmethod
    def from_clients(
        cls,
        clients: Clients,
        *,
        planner: PlanDataset | None = None,
        clock: Callable[[], datetime] = _utcnow,
        lease: timedelta = LEASE,
    ) -> Ingest:
        """Wire the real adapters; the planner defaults to :class:`shared.finetune.Planner`."""
        if planner is None:
            from shared.finetune import Planner

            planner = Planner(clients.settings, clients.platform).plan
        return cls(
            settings=clients.settings,
            storage=clients.storage,
            ledger=clients.ledger,
            platform=clients.platform,
            planner=planner,
            clock=clock,
            lease=lease,
        )

    # -- entry points -------------------------------------------------------------------
    def handle(self, container: str, blob: str) -> IngestResult:
        """Process the current version of ``container/blob`` (a BlobCreated delivery)."""
        where = f"{container}/{blob}"
        if container != self.settings.incoming_container:
            log.info("ingest ignored blob=%s reason=not the incoming container", where)
            return IngestResult(Outcome.IGNORED, where)
        try:
            path = parse_dataset_path(blob)
        except ValueError as why:
            log.info("ingest ignored blob=%s reason=%s", where, why)
            return IngestResult(Outcome.IGNORED, where)
        ref = BlobRef(container, blob)
        try:
            etag = str(self.storage.properties(ref)["etag"])
        except NotFoundError:
            log.info("ingest gone blob=%s line=%s (deleted before it was read)", where, path.line)
            return IngestResult(Outcome.GONE, where, path.line)
        return self._deliver(path, ref, etag)

    def resume_stale(self) -> list[IngestResult]:
        """Finish every delivery whose handler died (claim not done, heartbeat stale)."""
        results = []
        now = self.clock()
        for claim in stale_claims(self.ledger, kind=_CLAIM_KIND, now=now, lease=self.lease):
            f = claim.fields
            path = parse_dataset_path(str(f["blob_name"]))
            ref = BlobRef(str(f["container"]), path.blob)
            results.append(self._deliver(path, ref, str(f["etag"])))
        return results

    # -- one delivery -------------------------------------------------------------------
    def _deliver(self, path: DatasetPath, ref: BlobRef, etag: str) -> IngestResult:
        # The run's trace starts here: its traceparent is stored on the run (shared.telemetry).
        with telemetry.span(self.settings, "tuneloop.ingest", line=path.line,
                            blob=str(ref)) as current:
            result = self._deliver_traced(path, ref, etag)
            if current is not None and result.run_id:
                current.set_attributes({"tuneloop.run": result.run_id,
                                        "tuneloop.outcome": result.outcome.value,
                                        "tuneloop.state": str(result.state or "")})
            return result

    def _deliver_traced(self, path: DatasetPath, ref: BlobRef, etag: str) -> IngestResult:
        key = delivery_key(ref.container, ref.name, etag)
        claim_or_result = self._acquire(path, ref, etag, key)
        if isinstance(claim_or_result, IngestResult):
            return claim_or_result
        d = _Delivery(path=path, ref=ref, etag=etag, key=key, claim=claim_or_result)
        try:
            try:
                return self._work(d)
            except (_LostClaimError, TransientError):
                raise
            except (BlobChangedError, NotFoundError) as exc:
                gone_after_validation = isinstance(exc, NotFoundError) and d.report is not None
                if d.record is not None or gone_after_validation:
                    return self._fail(d, exc)  # a run was under way: record why it stopped
                changed = isinstance(exc, BlobChangedError)
                return self._close(d, Outcome.SUPERSEDED if changed else Outcome.GONE, exc)
            except Exception as exc:  # a bug must end in a recorded state, not a retry loop
                if _looks_transient(exc):
                    raise TransientError(f"{type(exc).__name__}: {exc}") from exc
                log.exception("ingest internal error blob=%s line=%s", ref, path.line)
                return self._fail(d, exc)
        except _LostClaimError:
            return self._result(d, Outcome.IN_PROGRESS, note="claim taken over by another handler")
        except TransientError:
            self._release(d)
            raise

    def _acquire(
        self, path: DatasetPath, ref: BlobRef, etag: str, key: str
    ) -> Claim | IngestResult:
        where = str(ref)
        taken = take_claim(
            self.ledger, key, now=self.clock(), lease=self.lease, attempt=uuid.uuid4().hex[:12],
            kind=_CLAIM_KIND, container=ref.container, blob_name=ref.name, etag=etag,
            line=path.line, step="claimed",
        )
        run_id = taken.claim.fields.get("run_id")
        if taken.status == "done":
            state = taken.claim.fields.get("state")
            log.info(
                "ingest already_done run=%s line=%s state=%s blob=%s",
                run_id, path.line, state, where,
            )
            return IngestResult(
                Outcome.ALREADY_DONE, where, path.line, run_id, RunState(state) if state else None
            )
        if taken.status == "busy":
            log.info("ingest in_progress run=%s line=%s blob=%s", run_id, path.line, where)
            return IngestResult(Outcome.IN_PROGRESS, where, path.line, run_id)
        if taken.status == "resumed":
            log.warning(
                "ingest resume run=%s line=%s step=%s blob=%s (previous attempt failed or died)",
                run_id, path.line, taken.claim.fields.get("step"), where,
            )
        return taken.claim

    def _work(self, d: _Delivery) -> IngestResult:
        step, run_id = d.claim.fields.get("step"), d.claim.fields.get("run_id")
        if step == "quarantined":
            # The verified copy and REJECTED are recorded; only the delete may be missing.
            return self._finish_reject(d, self.ledger.get(d.path.line, str(run_id)))
        if run_id and step in ("planned", "split"):
            rec = self.ledger.get(d.path.line, str(run_id))
            if rec.state not in (RunState.RECEIVED, RunState.ACCEPTED):
                # Died after submitting (or failing): only run.json and the claim may be behind.
                d.record = rec
                write_run_report(self.storage, self.settings, rec)
                return self._close(d, self._outcome_of(rec))
        exam = is_exam_name(d.path.name)
        report = validate_stream(
            self.storage.read_chunks(d.ref, etag=d.etag), name=d.path.blob,
            config=self.exam_config if exam else self.config,
        )
        d.report = report
        for code, count in report.error_counts.items():
            telemetry.record("tuneloop.validation.errors", count, line=d.path.line, code=code)
        self._step(d, "validated", valid=report.valid, dataset_sha256=report.dataset.sha256)
        self._write_validation(d)
        if not report.valid:
            return self._reject(d)
        if exam:
            return self._exam(d)
        corpus = self._corpus(d, run_id)
        if corpus.new_drop_retracted:
            return self._fail(d, RetractedDropError(
                f"dataset {report.dataset.sha256} was retracted from line {d.path.line}",
                hint="a retracted drop does not train again; drop different data",
            ))
        if corpus.duplicate_of:
            try:
                original = self.ledger.get(d.path.line, corpus.duplicate_of)
            except NotFoundError:
                original = None
            if original is not None:
                return self._duplicate(d, original)
        d.corpus = corpus
        try:
            plan = self.planner(
                line=d.path.line, dataset_sha256=report.dataset.sha256,
                corpus=corpus.sha256s, start_model=corpus.start_model,
            )
        except PlanError as exc:
            return self._fail(d, exc)
        return self._accept(d, plan)

    def _corpus(self, d: _Delivery, run_id: Any) -> Corpus:
        """The corpus this delivery's run trains on: the one its run recorded at ACCEPTED (a
        resumed handler), else resolved now from the line's live run and retractions."""
        assert d.report is not None
        if run_id:
            try:
                rec = self.ledger.get(d.path.line, str(run_id))
            except NotFoundError:
                rec = None
            data = RunData.from_record(rec, self.storage) if rec is not None else None
            if rec is not None and data is not None and rec.get("delivery") == d.key:
                policy = self.settings.policy_for(d.path.line)
                start = None
                if data.start_model and rec.get("start_model"):
                    start = _model_info(rec.get("start_model"))
                return Corpus.from_run_data(d.path.line, data, start, policy.max_train_examples)
        return resolve_corpus(self.ledger, self.settings, d.path.line,
                              sha256=d.report.dataset.sha256, name=d.path.name,
                              storage=self.storage)

    def _exam(self, d: _Delivery) -> IngestResult:
        """A valid golden exam file: reported, left where it is (the exam reads it there)."""
        d.ingest = {"outcome": "exam"}
        self._write_validation(d)
        return self._close(d, Outcome.EXAM)

    # -- invalid: quarantine -------------------------------------------------------------
    def _reject(self, d: _Delivery) -> IngestResult:
        assert d.report is not None
        rec = self._create_or_get(d, delivery_run_id(d.path.line, d.key), RunState.RECEIVED)
        d.record = rec
        write_run_report(self.storage, self.settings, rec)
        target = BlobRef(self.settings.rejected_container, d.ref.name)
        copied = self.storage.copy_verified(d.ref, target, etag=d.etag)
        if copied != d.report.dataset.sha256:
            raise TransientError(
                f"quarantine copy {target} has sha256 {copied}, "
                f"the dataset {d.report.dataset.sha256}",
                hint="the original is kept",
            )
        d.ingest = {"outcome": "rejected", "run_id": rec.run_id, "quarantined": str(target)}
        self._write_validation(d)
        if rec.state == RunState.RECEIVED:
            rec = self._advance(
                d, rec, RunState.REJECTED, reason=_reason(d.report), quarantined=str(target)
            )
        self._step(d, "quarantined", run_id=rec.run_id)
        return self._finish_reject(d, rec)

    def _finish_reject(self, d: _Delivery, rec: RunRecord) -> IngestResult:
        d.record = rec
        write_run_report(self.storage, self.settings, rec)
        self.storage.delete(d.ref, etag=d.etag)
        return self._close(d, Outcome.REJECTED)

    # -- valid: duplicate, or split and submit --------------------------------------------
    def _accept(self, d: _Delivery, plan: FinetunePlan) -> IngestResult:
        assert d.report is not None
        previous = d.claim.fields.get("run_id")
        plan, rec = self._attempt(d, plan)
        if previous and previous != plan.run_id:
            self._supersede(d, str(previous), plan.run_id)
        if rec.get("delivery") != d.key:
            return self._duplicate(d, rec)
        d.record = rec
        write_run_report(self.storage, self.settings, rec)
        self._step(d, "planned", run_id=plan.run_id)
        if rec.get("split"):  # resumed after the split: keep the rewritten report whole
            d.ingest = {"outcome": "accepted", "run_id": plan.run_id}
            self._write_validation(d, split=rec.get("split"),
                                   data=RunData.from_record(rec, self.storage))
        while rec.state not in TERMINAL and rec.state != RunState.SUBMITTED:
            try:
                if rec.state == RunState.RECEIVED:
                    split, data = self._split(d, plan)
                    d.ingest = {"outcome": "accepted", "run_id": plan.run_id}
                    self._write_validation(d, split=split, data=data)
                    rec = self._advance(  # a long drop list goes to its manifest first
                        d, rec, RunState.ACCEPTED, split=split,
                        data=data_column(self.storage, self.settings, plan.run_id, data),
                    )
                    self._step(d, "split")
                elif rec.state == RunState.ACCEPTED:
                    job = self.platform.submit_finetune(telemetry.with_trace_tag(
                        _without_empty_validation(plan, rec), telemetry.run_traceparent(rec)))
                    rec = self._advance(
                        d, rec, RunState.SUBMITTED, job_name=job.name, studio_url=job.studio_url,
                        note=f"job {job.name} submitted",
                    )
                else:
                    break  # already beyond SUBMITTED (a resumed handler arrives late)
            except LedgerConflictError:
                rec = self.ledger.get(rec.line, rec.run_id)
            d.record = rec
        return self._close(d, self._outcome_of(rec))

    def _attempt(self, d: _Delivery, plan: FinetunePlan) -> tuple[FinetunePlan, RunRecord]:
        """The run this delivery owns or duplicates: the plan's run, or a later attempt.

        The same content + plan is one run; but once that run FAILED, dropping the data again
        trains it again, as the deterministic next attempt (``<run>-r2``, ``-r3``, ...).
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            candidate = retry_plan(plan, attempt)
            rec = self._create_or_get(d, candidate.run_id, RunState.RECEIVED, plan=candidate)
            mine = rec.get("delivery") == d.key
            if mine or rec.state != RunState.FAILED:
                return candidate, rec
        return candidate, rec  # every attempt failed: report a duplicate of the last one

    @staticmethod
    def _outcome_of(rec: RunRecord) -> Outcome:
        return Outcome.FAILED if rec.state == RunState.FAILED else Outcome.SUBMITTED

    def _split(self, d: _Delivery, plan: FinetunePlan) -> tuple[dict[str, Any], RunData]:
        """Split the pinned blob once into the drop's sides (staged blocks, committed), then
        assemble the run's train and validation files from the corpus's sides."""
        assert d.report is not None
        assert d.corpus is not None
        sha256 = d.report.dataset.sha256
        train_side, eval_side = drop_refs(self.settings, d.path.line, sha256)
        train = self.storage.open_writer(train_side)
        validation = self.storage.open_writer(eval_side)
        counts = split_to(
            self.storage.read_chunks(d.ref, etag=d.etag),
            train.write,
            validation.write,
            validation_fraction=self.settings.validation_fraction,
            max_line_bytes=self.settings.max_line_bytes,
        )
        if counts.sha256 != sha256:  # pinned reads make this unreachable
            raise BlobChangedError(f"{d.ref} read for the split is not the validated content")
        train.commit(content_type=_JSONL)
        validation.commit(content_type=_JSONL)
        self._heartbeat(d)
        container = plan.data_container or self.settings.prepared_container
        exam = read_golden_exam(self.storage, self.settings, d.path.line)
        data, train_sha, validation_sha = assemble(
            self.storage, self.settings, d.corpus.with_run(plan.run_id),
            train=BlobRef(container, plan.train_blob),
            validation=BlobRef(container, plan.validation_blob),
            exam=exam.prompt_digests if exam else frozenset(),
        )
        if not data.start_model:
            data = replace(data, start_model=plan.base_model.id)
        split = {
            "validation_fraction": self.settings.validation_fraction,
            "train_examples": data.train_examples,
            "validation_examples": data.eval_examples,
            "duplicates_dropped": counts.duplicates,
            "drop_train_examples": counts.train,
            "drop_validation_examples": counts.validation,
            "train_blob": f"{container}/{plan.train_blob}",
            "validation_blob": f"{container}/{plan.validation_blob}",
            "train_sha256": train_sha,
            "validation_sha256": validation_sha,
        }
        return split, data

    def _duplicate(self, d: _Delivery, original: RunRecord) -> IngestResult:
        rec = self._create_or_get(
            d,
            delivery_run_id(d.path.line, d.key),
            RunState.DUPLICATE,
            duplicate_of=original.run_id,
            note=f"same content as run {original.run_id} ({original.get('blob')})",
        )
        d.record = rec
        # Re-uploading the very same file under its own name must not clobber its reports.
        if original.get("report_prefix") != d.prefix:
            d.ingest = {
                "outcome": "duplicate",
                "run_id": rec.run_id,
                "duplicate_of": original.run_id,
                "duplicate_of_blob": original.get("blob"),
            }
            self._write_validation(d)
            write_run_report(self.storage, self.settings, rec)
        return self._close(d, Outcome.DUPLICATE)

    def _supersede(self, d: _Delivery, old_id: str, new_id: str) -> None:
        """A resumed handler planned another run id (settings changed): close the old run."""
        try:
            old = self.ledger.get(d.path.line, old_id)
        except NotFoundError:
            return
        if old.state not in TERMINAL and old.get("delivery") == d.key:
            reason = f"superseded: the plan changed between attempts; now run {new_id}"
            old = self.ledger.advance(old, RunState.FAILED, reason=reason)
            write_run_report(self.storage, self.settings, old)

    # -- failures ----------------------------------------------------------------------
    def _fail(self, d: _Delivery, exc: Exception) -> IngestResult:
        """Record a non-retryable failure: the run (or the delivery) FAILED with the reason."""
        error = (
            exc.to_dict()
            if isinstance(exc, TuneloopError)
            else {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
        )
        reason = f"{error['code']}: {error['message']}"
        rec = d.record
        if rec is None:
            rec = self._create_or_get(
                d, delivery_run_id(d.path.line, d.key), RunState.FAILED, reason=reason,
                note=reason,
            )
        elif rec.state not in TERMINAL:
            rec = self._advance(d, rec, RunState.FAILED, reason=reason)
        d.record = rec
        d.ingest = {"outcome": "failed", "run_id": rec.run_id, "error": error}
        if d.report is not None:
            self._write_validation(d)
        write_run_report(self.storage, self.settings, rec)
        return self._close(d, Outcome.FAILED)

    def _release(self, d: _Delivery) -> None:
        """Let the host's retry take over at once (best effort: else the lease expires)."""
        try:
            d.claim = let_go(self.ledger, d.claim)
        except Exception:  # the storage may be what is down; the lease covers it then
            log.warning("ingest could not release claim blob=%s; it expires after the lease", d.ref)

    # -- bookkeeping ---------------------------------------------------------------------
    def _create_or_get(
        self,
        d: _Delivery,
        run_id: str,
        state: RunState,
        *,
        plan: FinetunePlan | None = None,
        note: str | None = None,
        **extra: Any,
    ) -> RunRecord:
        json_ref, md_ref = validation_refs(self.settings, d.prefix)
        fields: dict[str, Any] = {
            "blob": str(d.ref),
            "name": d.path.name,
            "etag": d.etag,
            "delivery": d.key,
            "report_prefix": d.prefix,
            "traceparent": telemetry.current_traceparent(),  # the run's trace (telemetry)
            **extra,
        }
        if d.report is not None:
            fields.update(
                dataset_sha256=d.report.dataset.sha256,
                dataset_bytes=d.report.dataset.bytes,
                examples=d.report.stats.get("examples"),
                reports={"json": str(json_ref), "md": str(md_ref)},
            )
        if plan is not None:
            if plan.start_model is not None:
                start = plan.start_model
                fields["start_model"] = {"name": start.name, "version": start.version,
                                         "id": start.id}
            fields.update(
                fingerprint=plan.fingerprint,
                base_model=plan.base_model.id,
                train_blob=f"{plan.data_container}/{plan.train_blob}",
                validation_blob=f"{plan.data_container}/{plan.validation_blob}",
            )
        try:
            return self.ledger.create(d.path.line, run_id, state, note=note, **fields)
        except AlreadyExistsError:
            return self.ledger.get(d.path.line, run_id)

    def _advance(
        self, d: _Delivery, rec: RunRecord, state: RunState, **fields: Any
    ) -> RunRecord:
        self._heartbeat(d)
        rec = self.ledger.advance(rec, state, **fields)
        write_run_report(self.storage, self.settings, rec)
        return rec

    def _step(self, d: _Delivery, step: str, **fields: Any) -> None:
        self._heartbeat(d, step=step, **fields)

    def _heartbeat(self, d: _Delivery, **fields: Any) -> None:
        """Prove we still own the claim (ETag-fenced) and push the lease forward."""
        try:
            d.claim = renew(self.ledger, d.claim, now=self.clock(), **fields)
        except LedgerConflictError:
            raise _LostClaimError from None

    def _close(
        self, d: _Delivery, outcome: Outcome, exc: Exception | None = None
    ) -> IngestResult:
        rec = d.record
        fields: dict[str, Any] = {"done": True, "step": "done", "outcome": outcome.value}
        if rec is not None:
            fields.update(run_id=rec.run_id, state=rec.state.value)
        self._heartbeat(d, **fields)
        return self._result(d, outcome, note=str(exc) if exc else None)

    def _result(self, d: _Delivery, outcome: Outcome, *, note: str | None = None) -> IngestResult:
        rec = d.record
        log.info(
            "ingest %s run=%s line=%s state=%s blob=%s%s",
            outcome.value,
            rec.run_id if rec else None,
            d.path.line,
            rec.state.value if rec else None,
            d.ref,
            f" note={note}" if note else "",
        )
        run_id, state = (rec.run_id, rec.state) if rec else (None, None)
        return IngestResult(outcome, str(d.ref), d.path.line, run_id, state)

    def _write_validation(
        self, d: _Delivery, *, split: dict[str, Any] | None = None, data: RunData | None = None
    ) -> None:
        assert d.report is not None
        if split is not None:
            d.report = d.report.with_split(split)
        json_ref, md_ref = validation_refs(self.settings, d.prefix)
        doc = d.report.to_dict()
        if d.ingest:
            doc["ingest"] = d.ingest
        if data is not None:
            doc["data"] = data.to_dict()
        self.storage.write_json(json_ref, doc)
        self.storage.write_text(
            md_ref,
            d.report.to_markdown() + _ingest_markdown(d.ingest)
            + (corpus_markdown(data) if data is not None else ""),
        )


class RetractedDropError(TuneloopError):
    """The drop was retracted from its line: it does not train again."""

    code = "retracted"


def _model_info(value: Any) -> ModelVersionInfo | None:
    """The start model a run recorded (``{"name", "version", "id"}``)."""
    from shared.platform.port import ModelVersionInfo

    if isinstance(value, dict) and value.get("name") and value.get("version"):
        return ModelVersionInfo(str(value["name"]), str(value["version"]),
                                str(value.get("id") or ""))
    return None


def _without_empty_validation(plan: FinetunePlan, rec: RunRecord) -> FinetunePlan:
    """The plan to submit: no validation file when the run's validation side is empty (the
    adapters then leave the optional validation input out)."""
    data = rec.get("data")  # the summary is in the column even when the drops are not
    if (isinstance(data, Mapping) and (data.get("drops") or data.get("drops_manifest"))
            and not data.get("eval_examples")):
        return replace(plan, validation_blob="")
    return plan


def corpus_markdown(data: RunData) -> str:
    """The ``## Trained on`` section of validation.md: the run's drops and counts."""
    code = markdown_code
    start = code(data.start_model) if data.start_model else "the base model"
    lines = [
        "", "## Trained on", "",
        f"Mode {code(data.mode)}, starting from {start} ({code(data.start)}): "
        f"{data.train_examples} training and {data.eval_examples} validation examples from "
        f"{len(data.drops)} drop(s).", "",
        "| drop | sha256 | run | train | validation |", "| --- | --- | --- | ---: | ---: |",
    ]
    lines += [
        f"| {markdown_text(d.name)} | {code(d.sha256[:12], cell=True)} | "
        f"{code(d.run_id, cell=True)} | {d.train_examples} | {d.eval_examples} |"
        for d in data.drops
    ]
    lines += ["", f"- cross-drop duplicates (counted once): {data.cross_drop_duplicates}",
              f"- left out because the prompt is in the golden exam: {data.exam_excluded}"]
    if data.capped is not None:
        lines.append(f"- cap {data.capped.cap}: {data.capped.dropped} older example(s) left out "
                     "(newest drops whole, older ones sampled by digest)")
    lines.append(f"- corpus sha256: {code(data.corpus_sha256)}")
    return "\n".join(lines) + "\n"


def _looks_transient(exc: Exception) -> bool:
    """An SDK error the adapters did not wrap but that a retry can cure (5xx, 408, 429, I/O)."""
    return isinstance(translate_azure_error(exc, "ingest"), TransientError)


def _reason(report: ValidationReport) -> str:
    """The REJECTED reason: the top error codes with counts and the first error's line."""
    top = sorted(report.error_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    codes = ", ".join(f"{code}×{n}" for code, n in top)
    first = report.errors[0] if report.errors else None
    where = f"; first at line {first.line}" if first and first.line is not None else ""
    return f"invalid dataset: {codes}{where}"


def _ingest_markdown(ingest: dict[str, Any]) -> str:
    # Blob names and messages are user text: escaped like the rest of validation.md.
    code, text_of = markdown_code, markdown_text
    outcome = ingest.get("outcome")
    if outcome == "rejected":
        text = (
            f"Not accepted: the dataset was moved to {code(str(ingest['quarantined']))}. "
            "Fix the errors above and drop it again."
        )
    elif outcome == "accepted":
        text = (
            f"Accepted as run {code(str(ingest['run_id']))}; a fine-tune job of that name is "
            "submitted."
        )
    elif outcome == "exam":
        text = (
            "Valid golden exam file: it stays where it is and is used as (part of) the line's "
            "exam; it never trains a model."
        )
    elif outcome == "duplicate":
        text = (
            f"Not submitted: the same content was already ingested as run "
            f"{code(str(ingest['duplicate_of']))} "
            f"({text_of(str(ingest.get('duplicate_of_blob')))})."
        )
    elif outcome == "failed":
        error = ingest["error"]
        hint = f" {text_of(str(error['hint']))}" if error.get("hint") else ""
        message = text_of(str(error["message"]))
        text = f"Not submitted ({code(str(error['code']))}): {message}.{hint}"
    else:
        return ""
    return f"\n## Ingest\n\n{text}\n"


def ingest_blob(
    clients: Clients, container: str, blob: str, *, planner: PlanDataset | None = None
) -> IngestResult:
    """The composition the trigger uses: real adapters from ``clients``."""
    return Ingest.from_clients(clients, planner=planner).handle(container, blob)
