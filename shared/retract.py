"""Retract a drop from a line: ``tuneloop retract --line L DATASET`` (issue 11).

A retraction takes one dataset drop (by its name or sha256) out of the line for good:

1. **record** it in the ledger (:func:`shared.corpus.record_retraction`; idempotent), so every
   later corpus leaves it out and the release holds any run that still trains on it;
2. **delete its stored copies**: the incoming blob (only the version that was ingested, by its
   ETag), a quarantined copy, the drop's per-drop sides ``prepared/_drops/<line key>/<sha>/*``,
   and the prepared ``train``/``validation`` files of every run that trained on it once its
   training is over (a run still training keeps its files until it ends: retract again then);
3. **tag** every registered model version trained on it: ``tuneloop_retracted`` = the
   retracted sha256s of its corpus, comma-separated (merged into the version's tags);
4. **retrain** the line without it when its live model was trained on it: a new run whose
   corpus is the live run's drops minus every retracted drop, with no new data, planned from
   the base model (the live model learned the retracted data, so it is not a starting point),
   created and submitted as ingest does (RECEIVED → ACCEPTED → SUBMITTED) and released through
   the same gate. Its run id is derived from that corpus, so retracting again submits nothing
   new. A line left with no data gets no run: the retraction is recorded and the live model
   tagged, and the result says so.

Every step is idempotent and reads what it needs from the ledger and storage, so a retract
cut short (a crash, a storage fault) is finished by running it again; a retract with nothing
left to do says so. A run in flight whose corpus includes a retracted drop is HELD before
promotion by :func:`hold_if_retracted`, which the release's DEPLOYED step calls.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from shared import telemetry
from shared.errors import (
    AlreadyExistsError,
    ConfigError,
    LedgerConflictError,
    NotFoundError,
    NotPromotableError,
)
from shared.ledger import RunRecord, RunState
from shared.naming import RETRACTED_TAG, line_key
from shared.storage import BlobRef

if TYPE_CHECKING:
    from shared.clients import Clients
    from shared.corpus import Corpus
    from shared.ledger import LedgerPort
    from shared.platform.port import FinetunePlan, Platform
    from shared.release.context import ReleaseContext
    from shared.settings import Settings
    from shared.storage import Storage

__all__ = [
    "RETRACTED_TAG",
    "AmbiguousDatasetError",
    "Drop",
    "PlanRetrain",
    "RetractResult",
    "Retraction",
    "UnknownDatasetError",
    "corpus_drops",
    "corpus_shas",
    "hold_if_retracted",
    "refuse_retracted",
    "resolve_drop",
    "retract",
    "tag_model",
]

log = logging.getLogger(__name__)


# Runs whose job may still read its prepared files: they are kept until the training is over.
_TRAINING = frozenset(
    {RunState.RECEIVED, RunState.ACCEPTED, RunState.SUBMITTED, RunState.TRAINING}
)
# Runs that never trained on their dataset (no corpus of their own).
_NOT_TRAINED = frozenset({RunState.REJECTED, RunState.DUPLICATE})
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_MAX_ATTEMPTS = 5  # retrains of one corpus after FAILED runs, as ingest's MAX_ATTEMPTS


class PlanRetrain(Protocol):
    """Plans a run on a corpus (``shared.finetune.Planner.plan``); PlanError when it cannot."""

    def __call__(
        self, *, line: str, dataset_sha256: str, corpus: Sequence[str]
    ) -> FinetunePlan: ...


class UnknownDatasetError(NotFoundError):
    """No drop of the line has this name or sha256 (exit 1, like an unknown run id)."""


class AmbiguousDatasetError(ConfigError):
    """A name (or sha256 prefix) names several drops: the user gives the sha256 (exit 2)."""

    code = "ambiguous_dataset"


@dataclass(frozen=True)
class Drop:
    """One dataset drop of a line: its name (``incoming/<line>/<name>.jsonl``) and sha256."""

    name: str
    sha256: str


# -- reading a run's corpus (leniently: rows written before ``data`` existed) ----------------
def corpus_drops(rec: RunRecord) -> list[Mapping[str, Any]]:
    """The drops a run trains on: its ``data.drops``; for a run recorded without ``data``,
    its own dataset (``dataset_sha256``, ``name``); none for a REJECTED or DUPLICATE run."""
    data = rec.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("drops"), list):
        return [d for d in data["drops"] if isinstance(d, Mapping) and d.get("sha256")]
    if isinstance(data, Mapping) and data.get("drops_manifest"):  # never its own drop alone
        raise ValueError(f"run {rec.run_id}: its drops are in {data['drops_manifest']}; "
                         "read them first (shared.corpus.hydrated)")
    sha = rec.get("dataset_sha256")
    if not sha or rec.state in _NOT_TRAINED:
        return []
    split = rec.get("split") if isinstance(rec.get("split"), Mapping) else {}
    return [{
        "name": rec.get("name"), "sha256": str(sha),
        "train_examples": split.get("train_examples"),
        "eval_examples": split.get("validation_examples"),
    }]


def corpus_shas(rec: RunRecord) -> set[str]:
    """The sha256s of :func:`corpus_drops`."""
    return {str(d["sha256"]) for d in corpus_drops(rec)}


# -- which drop ------------------------------------------------------------------------------
def _known_drops(runs: Iterable[RunRecord]) -> dict[str, list[str]]:
    """sha256 -> the names it was dropped under, oldest first, from every run of the line."""
    known: dict[str, list[str]] = {}

    def note(name: Any, sha: Any) -> None:
        if not sha:
            return
        names = known.setdefault(str(sha), [])
        if name and str(name) not in names:
            names.append(str(name))

    for rec in runs:
        note(rec.get("name"), rec.get("dataset_sha256"))
        for d in corpus_drops(rec):
            note(d.get("name"), d.get("sha256"))
    return known


def resolve_drop(runs: Sequence[RunRecord], dataset: str, *, line: str) -> Drop:
    """The drop of ``line`` that ``dataset`` names: a name it was dropped under (with or
    without ``.jsonl``), else its sha256 or a prefix of at least 8 hex digits.

    Raises UnknownDatasetError when no run of the line knows it, AmbiguousDatasetError when it
    names several drops (a name dropped twice with other content; a short prefix).
    """
    wanted = dataset.strip().removesuffix(".jsonl")
    known = _known_drops(runs)
    by_name = [sha for sha, names in known.items() if wanted in names]
    matches = by_name or (
        [sha for sha in known if sha.startswith(wanted.lower())]
        if _HEX.match(wanted.lower()) else []
    )
    if len(matches) > 1:  # a name rejected once and dropped again valid: the one trained on
        trained = {sha for rec in runs for sha in corpus_shas(rec)}
        matches = [sha for sha in matches if sha in trained] or matches
    status = f"tuneloop status --line {line}"
    if not matches:
        names = sorted({n for ns in known.values() for n in ns})
        listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise UnknownDatasetError(
            f"line {line} has no dataset named {dataset!r} (by name or sha256) in the ledger"
            + (f"; its datasets: {listed}" if names else "; it has no datasets"),
            hint=f"give a name or sha256 that `{status}` shows",
        )
    if len(matches) > 1:
        shas = ", ".join(f"{s[:12]}… ({'/'.join(known[s]) or 'no name'})" for s in matches)
        raise AmbiguousDatasetError(
            f"{dataset!r} names {len(matches)} datasets of line {line}: {shas}",
            hint="give the full sha256 of the one to retract",
        )
    sha = matches[0]
    names = known[sha]
    return Drop(name=wanted if wanted in names else (names[-1] if names else sha[:12]), sha256=sha)


# -- the outcome -----------------------------------------------------------------------------
@dataclass
class RetractResult:
    """What one ``retract`` did (a re-run after a crash reports what was left to do)."""

    line: str
    drop: Drop
    already: bool = False  # the retraction was recorded by an earlier call
    deleted: list[str] = field(default_factory=list)  # blobs deleted now
    kept: list[str] = field(default_factory=list)  # runs still training: files kept
    tagged: list[str] = field(default_factory=list)  # "<model>:<version>" tagged now
    retrain: RunRecord | None = None  # the retrain run (created now or before)
    retrain_created: bool = False
    submitted: bool = False  # the retrain was submitted by this call
    no_data: bool = False  # the line's live corpus had nothing else: no retrain
    live_run: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def nothing_done(self) -> bool:
        """Already retracted and nothing was left to delete, tag or start."""
        return self.already and not (
            self.deleted or self.tagged or self.retrain_created or self.submitted
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "dataset": {"name": self.drop.name, "sha256": self.drop.sha256},
            "already_retracted": self.already,
            "nothing_done": self.nothing_done,
            "deleted": self.deleted,
            "kept": self.kept,
            "tagged": self.tagged,
            "live_run": self.live_run,
            "retrain": self.retrain.to_dict() if self.retrain else None,
            "retrain_created": self.retrain_created,
            "no_data": self.no_data,
            "notes": self.notes,
        }

    def summary(self) -> list[str]:
        """The lines ``tuneloop retract`` prints."""
        d = self.drop
        what = f"{d.name} ({d.sha256[:12]}) on line {self.line}"
        if self.nothing_done:
            out = [f"{what} was already retracted; nothing left to do"]
        elif self.already:
            out = [f"{what} was already retracted; finished what was left"]
        else:
            out = [f"retracted {what}"]
        if self.deleted:
            out.append(f"deleted {len(self.deleted)} stored copies: {', '.join(self.deleted)}")
        if self.tagged:
            out.append(f"tagged {RETRACTED_TAG} on {', '.join(self.tagged)}")
        out.extend(self.kept)
        if self.retrain is not None:
            r = self.retrain
            out.append(
                f"retrain started: run {r.run_id} {r.state.value} (the live corpus without the "
                "retracted data, from the base model; it goes through the gate)"
                if self.retrain_created else
                f"retrain run {r.run_id} is {r.state.value} (started by an earlier retract)"
            )
        elif self.no_data:
            out.append(
                f"line {self.line} has no data left: no retrain; the live run "
                f"{self.live_run} keeps serving, tagged {RETRACTED_TAG}"
            )
        out.extend(self.notes)
        return out


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _blob(value: Any, default_container: str) -> BlobRef | None:
    """A ``container/name`` ledger field as a BlobRef."""
    if not value:
        return None
    container, sep, name = str(value).partition("/")
    return BlobRef(container, name) if sep and name else BlobRef(default_container, container)


# -- the flow --------------------------------------------------------------------------------
class Retraction:
    """The retraction flow over injected ports (as :class:`shared.ingest.Ingest`)."""

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        ledger: LedgerPort,
        platform: Platform,
        planner: PlanRetrain,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.ledger = ledger
        self.platform = platform
        self.planner = planner
        self.clock = clock

    @classmethod
    def from_clients(
        cls, clients: Clients, *, planner: PlanRetrain | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> Retraction:
        if planner is None:
            from shared.finetune import Planner

            planner = Planner(clients.settings, clients.platform).plan
        return cls(
            settings=clients.settings, storage=clients.storage, ledger=clients.ledger,
            platform=clients.platform, planner=planner, clock=clock,
        )

    def retract(
        self, line: str, dataset: str, *, by: str = "cli", reason: str | None = None
    ) -> RetractResult:
        """Retract the drop ``dataset`` names from ``line`` (see the module)."""
        from shared.corpus import hydrated

        # Read-only copies with each run's whole drop list (a long one is in its manifest).
        runs = [hydrated(self.storage, r) for r in self.ledger.list(line=line)]
        drop = resolve_drop(runs, dataset, line=line)
        # The retraction joins the trace of the run the drop came in with (shared.telemetry).
        origin = next((r for r in runs if r.get("dataset_sha256") == drop.sha256), None)
        with telemetry.span(self.settings, "tuneloop.retract", line=line, run=origin,
                            dataset=drop.sha256):
            return self._retract(line, runs, drop, by=by, reason=reason)

    def _retract(
        self, line: str, runs: list[RunRecord], drop: Drop, *, by: str, reason: str | None
    ) -> RetractResult:
        from shared.corpus import record_retraction, retracted

        result = RetractResult(line=line, drop=drop)
        result.already = not record_retraction(
            self.ledger, line, drop.sha256, name=drop.name, by=by, reason=reason or "",
            now=self.clock(),
        )
        if not result.already:
            log.info("retract line=%s dataset=%s sha256=%s recorded", line, drop.name, drop.sha256)
        self._announce(runs, drop, by=by, reason=reason)
        gone = retracted(self.ledger, line)
        self._delete_copies(runs, result)
        self._tag_models(runs, gone, result)
        self._retrain(runs, gone, result)
        return result

    def _announce(
        self, runs: Sequence[RunRecord], drop: Drop, *, by: str, reason: str | None
    ) -> None:
        """The ``tuneloop.run.retracted`` event on the run the drop came in with (events on):
        once per run, also when a retraction is run again to finish it."""
        if not self.ledger.records_events:
            return
        origin = next((r for r in runs if r.get("dataset_sha256") == drop.sha256), None)
        if origin is None:
            return
        why = f"drop {drop.name} ({drop.sha256[:12]}) retracted by {by}"
        why += f": {reason}" if reason else ""
        for _ in range(3):
            rec = self.ledger.get(origin.line, origin.run_id)
            if rec.outbox.counts.get("retracted"):
                return
            try:
                self.ledger.update(rec, note=why, events=("retracted",))
                return
            except LedgerConflictError:
                continue
        log.warning("retract: run %s kept changing; its retracted event is sent when the "
                    "retraction is run again", origin.run_id)

    # -- 2. stored copies ------------------------------------------------------------------
    def _delete_copies(self, runs: Sequence[RunRecord], result: RetractResult) -> None:
        s, sha = self.settings, result.drop.sha256
        for rec in runs:
            if rec.get("dataset_sha256") == sha:
                self._delete_dropped(rec, result)
        prefix = f"_drops/{line_key(result.line)}/{sha}/"
        for name in self.storage.list_names(s.prepared_container, prefix):
            self._delete(BlobRef(s.prepared_container, name), result)
        for rec in runs:
            if sha not in corpus_shas(rec):
                continue
            if rec.state in _TRAINING:
                result.kept.append(
                    f"run {rec.run_id} is {rec.state.value}: its prepared files are kept until "
                    "its training ends (it is HELD before promotion); retract again then"
                )
                continue
            for key, leaf in (("train_blob", "train"), ("validation_blob", "validation")):
                ref = _blob(rec.get(key), s.prepared_container) or BlobRef(
                    s.prepared_container, f"{rec.run_id}/{leaf}.jsonl"
                )
                self._delete(ref, result)

    def _delete_dropped(self, rec: RunRecord, result: RetractResult) -> None:
        """The incoming blob of a run of this drop, only as ingested (its ETag): the same name
        may hold newer content since; and a quarantined copy."""
        ref = _blob(rec.get("blob"), self.settings.incoming_container)
        if ref is not None:
            try:
                etag = str(self.storage.properties(ref)["etag"])
            except NotFoundError:
                etag = ""
            if etag and etag == rec.get("etag"):
                self.storage.delete(ref, etag=etag)
                result.deleted.append(str(ref))
            elif etag:
                result.notes.append(f"{ref} holds other content since; not deleted")
        quarantined = _blob(rec.get("quarantined"), self.settings.rejected_container)
        if quarantined is not None:
            self._delete(quarantined, result)

    def _delete(self, ref: BlobRef, result: RetractResult) -> None:
        if self.storage.exists(ref):
            self.storage.delete(ref)
            result.deleted.append(str(ref))

    # -- 3. tags ---------------------------------------------------------------------------
    def _tag_models(
        self, runs: Sequence[RunRecord], gone: set[str], result: RetractResult
    ) -> None:
        for rec in runs:
            if result.drop.sha256 in corpus_shas(rec):
                tagged = tag_model(self.platform, rec, gone)
                if tagged:
                    result.tagged.append(tagged)

    # -- 4. the retrain --------------------------------------------------------------------
    def _retrain(self, runs: Sequence[RunRecord], gone: set[str], result: RetractResult) -> None:
        from shared.corpus import hydrated, live_run, retrain_corpus

        live = live_run(self.ledger, result.line)
        if live is not None:
            live = hydrated(self.storage, live)  # read only: its whole drop list
        if live is None:
            result.notes.append(f"line {result.line} has no live model: nothing to retrain")
            return
        result.live_run = live.run_id
        if result.drop.sha256 not in corpus_shas(live):
            result.notes.append(
                f"the live run {live.run_id} was not trained on it: nothing to retrain"
            )
            return
        # The live corpus minus every retracted drop, from the base model whatever the line's
        # start policy: the live model learned the retracted data, so it is no starting point.
        corpus = replace(
            retrain_corpus(self.ledger, self.settings, result.line, self.storage),
            start="base", start_model=None,
        )
        if not corpus.drops:
            result.no_data = True
            return
        # No new drop names the run: the corpus does (its sha256 in the run id, its drops in
        # the fingerprint), so the same corpus is the same run however often it is retracted.
        plan = self.planner(
            line=result.line, dataset_sha256=corpus.sha256, corpus=corpus.sha256s
        )
        self._start(plan, live, corpus, sorted(gone & corpus_shas(live)), result)

    def _start(
        self, plan: FinetunePlan, live: RunRecord, corpus: Corpus, without: list[str],
        result: RetractResult,
    ) -> None:
        """Create (or find) the retrain run and move it RECEIVED → ACCEPTED → SUBMITTED, as
        ingest moves a drop's run (a FAILED retrain of the same corpus is tried again as the
        next attempt, ``<run>-r2`` ...)."""
        from shared.corpus import build_run_files, data_column
        from shared.finetune import retry_plan
        from shared.reports import write_run_report

        for attempt in range(1, _MAX_ATTEMPTS + 1):
            candidate = retry_plan(plan, attempt)
            rec, created = self._create(candidate, live, without, result)
            if rec.state != RunState.FAILED:
                break
        plan = candidate
        result.retrain, result.retrain_created = rec, created
        while rec.state in (RunState.RECEIVED, RunState.ACCEPTED):
            try:
                if rec.state == RunState.RECEIVED:
                    data = build_run_files(
                        self.storage, self.settings, corpus, run_id=plan.run_id,
                        base_model_id=plan.base_model.id,
                    )
                    rec = self.ledger.advance(  # a long drop list goes to its manifest first
                        rec, RunState.ACCEPTED,
                        data=data_column(self.storage, self.settings, plan.run_id, data),
                        note=f"{data.train_examples} train / {data.eval_examples} eval examples "
                        f"from {len(data.drops)} drop(s)",
                    )
                else:
                    if not (rec.get("data") or {}).get("eval_examples"):
                        plan = replace(plan, validation_blob="")  # no eval side: no input
                    job = self.platform.submit_finetune(plan)
                    rec = self.ledger.advance(
                        rec, RunState.SUBMITTED, job_name=job.name, studio_url=job.studio_url,
                        note=f"job {job.name} submitted",
                    )
                    result.submitted = True
            except LedgerConflictError:
                rec = self.ledger.get(rec.line, rec.run_id)
            write_run_report(self.storage, self.settings, rec)
        result.retrain = rec

    def _create(
        self, plan: FinetunePlan, live: RunRecord, without: list[str], result: RetractResult
    ) -> tuple[RunRecord, bool]:
        from shared.reports import write_run_report

        names = ", ".join(f"{_name_of(live, s)} ({s[:12]})" for s in without)
        try:
            rec = self.ledger.create(
                result.line, plan.run_id, RunState.RECEIVED,
                note=f"retrain of {live.run_id}'s corpus without {names}",
                kind="retrain",
                retrain={"of": live.run_id, "without": without},
                fingerprint=plan.fingerprint,
                base_model=plan.base_model.id,
                train_blob=f"{plan.data_container}/{plan.train_blob}",
                validation_blob=f"{plan.data_container}/{plan.validation_blob}",
            )
        except AlreadyExistsError:
            return self.ledger.get(result.line, plan.run_id), False
        write_run_report(self.storage, self.settings, rec)
        return rec, True


def _name_of(rec: RunRecord, sha: str) -> str:
    for d in corpus_drops(rec):
        if d.get("sha256") == sha and d.get("name"):
            return str(d["name"])
    return sha[:12]


def tag_model(platform: Platform, rec: RunRecord, gone: set[str]) -> str | None:
    """Tag ``rec``'s registered model version with the retracted drops of its corpus, unless it
    says so already; ``<model>:<version>`` when tagged now, else None."""
    r = rec.release
    mine = sorted(gone & corpus_shas(rec))
    if not (r.model_name and r.model_version and mine):
        return None
    value = ",".join(mine)
    try:
        current = platform.get_model_version(r.model_name, r.model_version)
    except NotFoundError:
        return None  # not registered (yet, or any more): nothing to tag
    if current.tags.get(RETRACTED_TAG) == value:
        return None
    platform.update_model_tags(r.model_name, r.model_version, {RETRACTED_TAG: value})
    return f"{r.model_name}:{r.model_version}"


# -- the gate's check ------------------------------------------------------------------------
def hold_if_retracted(ctx: ReleaseContext, run: RunRecord) -> RunRecord | None:
    """HOLD a smoke-tested-to-be run (DEPLOYED, not yet promoting) whose corpus includes a
    retracted drop: its deployment is deleted and its model tagged. None when its corpus has
    none (one ledger read)."""
    from shared.corpus import hydrated, retracted
    from shared.release.context import hold, serving

    full = hydrated(ctx.storage, run)  # read only: ``run`` is what is written back
    mine = corpus_shas(full) & retracted(ctx.ledger, run.line)
    if not mine:
        return None
    tag_model(ctx.platform, full, mine)
    ctx.platform.delete_deployment(*serving(run))  # before promoting: it carries no traffic
    names = ", ".join(f"{_name_of(full, s)} ({s[:12]})" for s in sorted(mine))
    return hold(
        ctx, run,
        f"retracted data in its corpus: {names}; the retract started a retrain without it",
    )


def refuse_retracted(ctx: ReleaseContext, run: RunRecord) -> None:
    """NotPromotableError when ``run``'s corpus has a retracted drop: ``tuneloop promote``
    never puts retracted data live (one ledger read)."""
    from shared.corpus import hydrated, retracted

    run = hydrated(ctx.storage, run)  # read only: its whole drop list
    mine = corpus_shas(run) & retracted(ctx.ledger, run.line)
    if mine:
        names = ", ".join(f"{_name_of(run, s)} ({s[:12]})" for s in sorted(mine))
        raise NotPromotableError(
            f"run {run.run_id} on line {run.line} trained on retracted data: {names}",
            hint=f"promote the retrain without it instead (`tuneloop status --line {run.line}`)",
        )


def retract(
    clients: Clients, line: str, dataset: str, *, by: str = "cli", reason: str | None = None
) -> RetractResult:
    """The composition ``tuneloop retract`` uses: real adapters from ``clients``."""
    return Retraction.from_clients(clients).retract(line, dataset, by=by, reason=reason)
