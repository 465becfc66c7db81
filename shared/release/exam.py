"""The line's exam: the candidate and the live model answer the same trusted questions.

* **The exam set** (:func:`exam_set`): the line's golden exam (``incoming/<line>/_exam/*.jsonl``,
  read by :func:`shared.corpus.read_golden_exam`) when there is one, else a deterministic
  sample of ``TUNELOOP_EXAM_EXAMPLES`` evaluation-side examples (the lowest prompt digests) of
  the drops behind the **live** model: trusted data. A line's first version has no live
  model; it is examined on its own corpus. The new drop's own evaluation side is scored for
  the candidate only (``own_eval``): untrusted data never votes its own model in.
* **The runner** (:func:`run_exam`): every prompt goes to the candidate deployment and to the
  live deployment of the same endpoint (``Platform.invoke(..., deployment=...)``, the header
  that targets one deployment whatever the traffic split), greedy decoding, a bounded pool,
  a timeout per answer and retries of transient failures. Answers are stored as they come
  (``reports/<line>/_exams/_answers/<run>/<exam digest>.json``), so an exam cut short resumes
  without asking again, and the champion's answers stay cached per (champion run, exam
  digest): an unchanged exam costs the candidate's calls only.
* **The scores** (:func:`corpus_scores`, :func:`sentence_scores`): sacrebleu's chrF (primary;
  character n-grams, language-independent), BLEU and exact match, each on a 0-100 scale;
  ``TUNELOOP_GATE_METRIC`` picks the one that decides (:func:`shared.release.gate.decide_exam`).

Endpoint calls an exam costs: one per prompt and deployment not yet answered (both at the
first exam of a champion, the candidate's only once the champion's answers are cached), plus
retries, plus the new drop's own evaluation prompts that the exam does not already ask.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from shared import telemetry
from shared.corpus import (
    drop_refs,
    drops_of,
    jsonl_lines,
    line_drops,
    read_golden_exam,
    retracted,
)
from shared.dataset.split import prompt_digest, prompt_of
from shared.errors import NotFoundError, TransientError, TuneloopError
from shared.ledger import RunRecord
from shared.release.context import ReleaseContext, serving
from shared.release.exam_report import (
    METRICS,
    ExamItem,
    ExamOutcome,
    exam_report_refs,
    line_history,
    write_exam_report,
)
from shared.release.gate import GateDecision, decide_exam
from shared.release.smoke import answer_text, validation_ref
from shared.storage import BlobRef

__all__ = [
    "EXAM_METRICS",
    "MAX_EXAM_ATTEMPTS",
    "Answers",
    "ExamAnswers",
    "ExamQuestion",
    "ExamSet",
    "ask",
    "corpus_scores",
    "exam_items",
    "exam_set",
    "examine",
    "own_eval_questions",
    "parse_example",
    "run_exam",
    "sentence_scores",
]

log = logging.getLogger(__name__)

EXAM_METRICS = METRICS  # ("chrf", "bleu", "exact"), in report order
# Tries of a whole exam that stops on transient failures (each resumes) before the run is HELD.
MAX_EXAM_ATTEMPTS = 5
# Tags the exam's outcome leaves on the registered model version.
EXAM_SCORE_TAG = "tuneloop_exam_score"
EXAM_METRIC_TAG = "tuneloop_exam_metric"
EXAM_DECISION_TAG = "tuneloop_exam_decision"
EXAM_DIGEST_TAG = "tuneloop_exam_digest"
# Tries of one exam call on TransientError, and the pause before each retry (seconds).
CALL_TRIES = 3
_RETRY_PAUSES = (0.5, 2.0)
# Answers stored after this many new ones (and whenever the exam stops): a crash re-asks
# fewer than this many prompts.
_STORE_EVERY = 10


# -- the exam set ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ExamQuestion:
    """One exam example: the conversation before the final assistant turn and that turn."""

    prompt: tuple[Mapping[str, Any], ...]
    reference: str
    prompt_digest: bytes

    @property
    def key(self) -> str:
        """The prompt's digest in hex: the key of its stored answers."""
        return self.prompt_digest.hex()


@dataclass(frozen=True)
class ExamSet:
    """The questions of an exam, ordered by prompt digest, its digest and where it came from."""

    questions: tuple[ExamQuestion, ...]
    source: Literal["golden", "sample"]
    digest: str = ""

    @classmethod
    def of(cls, questions: Iterable[ExamQuestion], source: Literal["golden", "sample"]) -> ExamSet:
        ordered = tuple(sorted(questions, key=lambda q: q.prompt_digest))
        return cls(ordered, source, exam_digest(ordered))


def exam_digest(questions: Iterable[ExamQuestion]) -> str:
    """sha256 of the sorted (prompt digest, reference) pairs: a changed exam has a new digest."""
    h = hashlib.sha256()
    for q in sorted(questions, key=lambda q: (q.prompt_digest, q.reference)):
        h.update(q.prompt_digest)
        ref = q.reference.encode("utf-8")
        h.update(len(ref).to_bytes(8, "big"))
        h.update(ref)
    return h.hexdigest()


def parse_example(example: Any) -> ExamQuestion | None:
    """An exam question from a canonical example (``{"messages": [...]}``): the prompt and
    digest the line's split uses (:func:`shared.dataset.split.prompt_of`); None for a line
    that has no final assistant turn after a prompt."""
    messages = example.get("messages") if isinstance(example, Mapping) else None
    if not isinstance(messages, list):
        return None
    try:
        prompt, reference = prompt_of(messages)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not prompt or not reference.strip():
        # A blank reference cannot tell a good answer from a bad one (chrF and BLEU score
        # every answer 0 against it, exact match rewards saying nothing): no exam question.
        return None
    return ExamQuestion(tuple(prompt), reference, prompt_digest(prompt))


def exam_set(ctx: ReleaseContext, run: RunRecord, live: RunRecord | None) -> ExamSet:
    """The exam ``run`` sits: the golden exam, else the lowest-digest sample of the live
    run's evaluation sides (the candidate's own for a line's first version)."""
    golden = _golden(ctx, run.line)
    if golden is not None:
        return golden
    trusted = live if live is not None else run
    gone = retracted(ctx.ledger, run.line)
    questions = _read_questions(ctx, _eval_refs(ctx, trusted, gone, line=live is not None))
    return ExamSet.of(lowest(questions, ctx.settings.exam_examples), "sample")


def own_eval_questions(
    ctx: ReleaseContext, run: RunRecord, live: RunRecord | None
) -> tuple[ExamQuestion, ...]:
    """The new drop's own evaluation side (the candidate's drops that the live model was not
    trained on), sampled like the exam: scored for the candidate only, never a vote."""
    behind_live = (
        {d.sha256 for d in line_drops(ctx.storage, live)} if live is not None else set()
    )
    own = drops_of(run, ctx.storage)
    if own:
        new = [d.sha256 for d in own if d.sha256 not in behind_live]
        refs = [drop_refs(ctx.settings, run.line, sha)[1] for sha in new]
    else:  # a run from before the line's corpus: its own validation split
        refs = [validation_ref(ctx, run)]
    ordered = sorted(
        lowest(_read_questions(ctx, refs), ctx.settings.exam_examples),
        key=lambda q: q.prompt_digest,
    )
    return tuple(ordered)


def lowest(questions: Iterable[ExamQuestion], n: int) -> list[ExamQuestion]:
    """The ``n`` questions with the lowest prompt digests, in memory bounded by ``n``; a prompt
    met again (a later drop answering it anew) keeps its latest reference."""
    kept: dict[bytes, ExamQuestion] = {}
    heap: list[_Desc] = []  # the kept digests, highest first
    for q in questions:
        d = q.prompt_digest
        if d in kept:
            kept[d] = q
            continue
        if len(kept) < n:
            kept[d] = q
            heapq.heappush(heap, _Desc(d))
        elif d < heap[0].digest:
            del kept[heapq.heapreplace(heap, _Desc(d)).digest]
            kept[d] = q
    return list(kept.values())


@dataclass(frozen=True)
class _Desc:
    """A digest ordered highest first (heapq is a min-heap)."""

    digest: bytes

    def __lt__(self, other: _Desc) -> bool:
        return self.digest > other.digest


def _golden(ctx: ReleaseContext, line: str) -> ExamSet | None:
    golden = read_golden_exam(ctx.storage, ctx.settings, line)
    if golden is None or not golden.examples:
        return None
    questions = [
        ExamQuestion(tuple(e.prompt), e.reference, e.prompt_digest)
        for e in golden.examples if e.reference.strip()
    ]
    if len(questions) < len(golden.examples):
        log.warning(
            "line %s: %d golden exam example(s) left out of the exam: their reference answer "
            "is empty, so no answer could score on it (%s)", line,
            len(golden.examples) - len(questions), ", ".join(golden.files),
        )
    if not questions:
        return None
    return ExamSet.of(questions, "golden")


def _eval_refs(
    ctx: ReleaseContext, run: RunRecord, retracted: set[str], *, line: bool = False
) -> list[BlobRef]:
    """The evaluation sides of the run's corpus drops (``line``: of the line's corpus as of
    the run's promotion: the drops behind the live model), oldest first, retracted ones left
    out."""
    drops = line_drops(ctx.storage, run) if line else drops_of(run, ctx.storage)
    if drops:
        return [
            drop_refs(ctx.settings, run.line, d.sha256)[1]
            for d in drops if d.sha256 not in retracted
        ]
    return [validation_ref(ctx, run)]  # a run from before the line's corpus


def _read_questions(ctx: ReleaseContext, refs: Iterable[BlobRef]) -> Iterator[ExamQuestion]:
    """The questions of JSONL blobs in order; a missing blob (a retracted drop's copies are
    deleted) is skipped, a line that is no exam example is skipped."""
    for ref in refs:
        try:
            for line in jsonl_lines(ctx.storage.read_chunks(ref)):
                try:
                    question = parse_example(json.loads(line))
                except ValueError:
                    question = None
                if question is not None:
                    yield question
        except NotFoundError:
            log.info("exam: %s is gone (retracted or never written); skipped", ref)


# -- answers, stored as they come -----------------------------------------------------------
@dataclass
class Answers:
    """One deployment's answers to an exam, by prompt key, kept in a blob as they come."""

    ref: BlobRef
    deployment: str
    answers: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    calls: int = 0  # endpoint calls spent on this run's exam (kept on the candidate's blob)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, ctx: ReleaseContext, ref: BlobRef, deployment: str) -> Answers:
        try:
            body = ctx.storage.read_json(ref)
        except NotFoundError:
            body = None
        stored = body.get("answers") if isinstance(body, Mapping) else None
        answers = {str(k): str(v) for k, v in stored.items()} if isinstance(stored, Mapping) else {}
        calls = body.get("calls") if isinstance(body, Mapping) else 0
        return cls(ref, deployment, answers, calls=calls if isinstance(calls, int) else 0)

    def record(self, key: str, answer: str, error: str | None = None) -> None:
        with self._lock:
            self.answers[key] = answer
            if error:
                self.errors[key] = error

    def count_call(self) -> None:
        with self._lock:
            self.calls += 1

    def store(self, ctx: ReleaseContext) -> None:
        with self._lock:
            body = {
                "deployment": self.deployment, "calls": self.calls, "answers": dict(self.answers),
                "refused": dict(self.errors),  # prompts answered "" because they were refused
            }
        ctx.storage.write_json(self.ref, body)


def answers_ref(ctx: ReleaseContext, line: str, run_id: str, digest: str) -> BlobRef:
    """Where ``run_id``'s answers to the exam ``digest`` are kept."""
    return BlobRef(
        ctx.settings.reports_container, f"{line}/_exams/_answers/{run_id}/{digest}.json"
    )


def exam_payload(prompt: Sequence[Mapping[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    """The scoring request of one exam prompt: greedy decoding (the same question gets the
    same answer, so stored and cached answers stay valid)."""
    return {
        "input_data": {
            "input_string": [[dict(m) for m in prompt]],
            "parameters": {"max_new_tokens": max_new_tokens, "do_sample": False},
        }
    }


@dataclass
class _Ask:
    answers: Answers
    question: ExamQuestion


def ask(
    ctx: ReleaseContext,
    endpoint: str,
    jobs: Sequence[tuple[Answers, Sequence[ExamQuestion]]],
    *,
    tally: Answers,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Ask every question not yet answered of its deployment; returns the calls made (each
    also counted on ``tally``, whose blob keeps what the run's exam spent over its tries).

    ``exam_concurrency`` calls in flight at once. A call failing with TransientError is
    tried :data:`CALL_TRIES` times; one still failing, or no answer within
    ``exam_call_timeout`` seconds, stops the exam with TransientError after storing every
    answer so far (the next try resumes). A deployment refusing one prompt for good (a
    PlatformError other than NotFoundError) answers it with no text (scored 0); a deployment
    that is gone (NotFoundError) stops the exam.
    """
    todo = [
        _Ask(book, q) for book, questions in jobs for q in questions
        if q.key not in book.answers
    ]
    books = [book for book, _ in jobs]
    if not todo:
        return 0
    s = ctx.settings
    before = tally.calls
    stop = threading.Event()  # set when the exam stops: calls not yet made are not made
    pool = ThreadPoolExecutor(max_workers=s.exam_concurrency, thread_name_prefix="exam")
    pending: set[Future[None]] = {
        pool.submit(_answer, ctx, endpoint, item, tally, stop, sleep) for item in todo
    }
    fresh = 0
    try:
        while pending:
            done, pending = wait(pending, timeout=s.exam_call_timeout, return_when=FIRST_COMPLETED)
            if not done:
                raise TransientError(
                    f"exam on {endpoint}: no answer within {s.exam_call_timeout:g} s "
                    f"({len(pending)} prompts left); it resumes from the answers stored"
                )
            for future in done:
                future.result()  # a call that failed for good stops the exam
            fresh += len(done)
            if fresh >= _STORE_EVERY:
                fresh = 0
                for book in books:
                    book.store(ctx)
    finally:
        stop.set()
        for future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        for book in books:
            book.store(ctx)
    return tally.calls - before


def _answer(
    ctx: ReleaseContext, endpoint: str, item: _Ask, tally: Answers, stop: threading.Event,
    sleep: Callable[[float], None],
) -> None:
    payload = exam_payload(item.question.prompt, ctx.settings.exam_max_new_tokens)
    deployment = item.answers.deployment
    for attempt in range(CALL_TRIES):
        if stop.is_set():  # the exam stopped; the next try asks this prompt
            return
        tally.count_call()
        try:
            response = ctx.platform.invoke(endpoint, payload, deployment=deployment)
        except TransientError:
            if attempt + 1 >= CALL_TRIES:
                raise
            sleep(_RETRY_PAUSES[min(attempt, len(_RETRY_PAUSES) - 1)])
            continue
        except NotFoundError:
            raise
        except TuneloopError as exc:  # this prompt is refused for good: no answer, scored 0
            log.warning("exam: %s refused prompt %s: %s", deployment, item.question.key, exc)
            item.answers.record(item.question.key, "", error=str(exc))
            return
        item.answers.record(item.question.key, answer_text(response))
        return


# -- scores ---------------------------------------------------------------------------------
def _normal(text: str) -> str:
    return " ".join(text.split())


def corpus_scores(answers: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacrebleu's corpus chrF and BLEU and the exact-match rate of ``answers`` (0-100)."""
    if len(answers) != len(references):
        raise ValueError("as many answers as references are needed")
    if not answers:
        raise ValueError("no answers to score")
    # imported when an exam is scored, never at the Functions host's start
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.chrf import CHRF

    refs = [list(references)]
    exact = sum(_normal(a) == _normal(r) for a, r in zip(answers, references, strict=True))
    return {
        "chrf": round(CHRF().corpus_score(list(answers), refs).score, 4),
        "bleu": round(BLEU().corpus_score(list(answers), refs).score, 4),
        "exact": round(100.0 * exact / len(answers), 4),
    }


def sentence_scores(answer: str, reference: str) -> dict[str, float]:
    """The same three scores for one answer (BLEU with effective order, as sacrebleu advises
    for single sentences)."""
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.chrf import CHRF

    return {
        "chrf": round(CHRF().sentence_score(answer, [reference]).score, 4),
        "bleu": round(BLEU(effective_order=True).sentence_score(answer, [reference]).score, 4),
        "exact": 100.0 if _normal(answer) == _normal(reference) else 0.0,
    }


def exam_items(
    exam: ExamSet, candidate: Answers, champion: Answers | None
) -> list[ExamItem]:
    """Every exam question with both answers and their sentence scores (the report's rows)."""
    items = []
    for q in exam.questions:
        mine = candidate.answers.get(q.key, "")
        theirs = champion.answers.get(q.key, "") if champion is not None else None
        items.append(ExamItem(
            prompt=[dict(m) for m in q.prompt],
            reference=q.reference,
            candidate=mine,
            candidate_scores=sentence_scores(mine, q.reference),
            champion=theirs,
            champion_scores=sentence_scores(theirs, q.reference) if theirs is not None else None,
        ))
    return items


# -- the whole exam -------------------------------------------------------------------------
@dataclass(frozen=True)
class ExamAnswers:
    """What :func:`run_exam` gathered: the exam, both deployments' answers, the own-eval
    questions, and the endpoint calls this try spent."""

    exam: ExamSet
    candidate: Answers
    champion: Answers | None
    own_eval: tuple[ExamQuestion, ...]
    calls: int
    champion_run: str | None

    def scores(self) -> tuple[dict[str, float] | None, dict[str, float] | None]:
        """Corpus scores of the candidate and the champion (None: no examples / no champion)."""
        qs = self.exam.questions
        if not qs:
            return None, None
        refs = [q.reference for q in qs]
        mine = corpus_scores([self.candidate.answers.get(q.key, "") for q in qs], refs)
        if self.champion is None:
            return mine, None
        theirs = corpus_scores([self.champion.answers.get(q.key, "") for q in qs], refs)
        return mine, theirs

    def own_eval_scores(self) -> dict[str, Any] | None:
        """The candidate's scores on the new drop's own evaluation side (information only)."""
        if not self.own_eval:
            return None
        answers = [self.candidate.answers.get(q.key, "") for q in self.own_eval]
        scores = corpus_scores(answers, [q.reference for q in self.own_eval])
        return {"examples": len(self.own_eval), **scores}


def run_exam(
    ctx: ReleaseContext, run: RunRecord, live: RunRecord | None, *,
    sleep: Callable[[float], None] = time.sleep,
) -> ExamAnswers:
    """Build the exam and have the candidate (and the live deployment, if any) answer it.

    Raises TransientError when the exam could not finish now (every answer so far is stored;
    the next try resumes) and NotFoundError when a deployment is gone.
    """
    endpoint, deployment = serving(run)
    exam = exam_set(ctx, run, live)
    own = own_eval_questions(ctx, run, live)
    candidate = Answers.load(ctx, answers_ref(ctx, run.line, run.run_id, exam.digest), deployment)
    asked = {q.key for q in exam.questions}
    jobs: list[tuple[Answers, Sequence[ExamQuestion]]] = [
        (candidate, exam.questions + tuple(q for q in own if q.key not in asked)),
    ]
    champion = None
    if live is not None:
        live_deployment = live.release.deployment
        if not live_deployment:
            raise NotFoundError(
                f"the live run {live.run_id} of line {run.line} has no deployment recorded",
                hint="promote a run by hand or submit the dataset again",
            )
        champion = Answers.load(
            ctx, answers_ref(ctx, run.line, live.run_id, exam.digest), live_deployment
        )
        jobs.append((champion, exam.questions))
    calls = ask(ctx, endpoint, jobs, tally=candidate, sleep=sleep)
    log.info(
        "exam of run %s line %s: %s questions (%s, %s), %s endpoint calls now, %s in all",
        run.run_id, run.line, len(exam.questions), exam.source, exam.digest[:12], calls,
        candidate.calls,
    )
    champion_run = live.run_id if live is not None else None
    return ExamAnswers(exam, candidate, champion, own, candidate.calls, champion_run)


# -- the gate's exam: run, decide, record ---------------------------------------------------
def examine(
    ctx: ReleaseContext, run: RunRecord, live: RunRecord | None, *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[GateDecision, dict[str, Any] | None]:
    """The exam gate of a smoke-tested run: run the exam, decide, write the exam report and
    tag the model version; returns the decision and the ``ReleaseRecord.exam`` document.

    An exam cut short by a transient failure counts a try on the run (``exam_attempts``) and
    re-raises, so the release resumes it later from the stored answers; after
    :data:`MAX_EXAM_ATTEMPTS` tries it decides to hold. It never promotes without a score.
    """
    with telemetry.span(ctx.settings, "tuneloop.exam", run=run,
                        champion=live.run_id if live else None):
        return _examine(ctx, run, live, sleep=sleep)


def _examine(
    ctx: ReleaseContext, run: RunRecord, live: RunRecord | None, *,
    sleep: Callable[[float], None],
) -> tuple[GateDecision, dict[str, Any] | None]:
    try:
        answers = run_exam(ctx, run, live, sleep=sleep)
    except TransientError as exc:
        attempts = run.release.exam_attempts + 1
        if attempts < MAX_EXAM_ATTEMPTS:
            ctx.ledger.update(
                run, note=f"exam stopped ({exc}); it resumes from the answers stored",
                release=replace(run.release, exam_attempts=attempts, last_error=str(exc)),
            )
            raise
        return GateDecision(False, f"exam did not finish after {attempts} tries: {exc}"), None
    s = ctx.settings
    metric = s.gate_metric
    mine, theirs = answers.scores()
    for side, scores in (("candidate", mine), ("champion", theirs)):
        for name, value in (scores or {}).items():
            telemetry.record("tuneloop.exam.score", value, line=run.line, metric=name, side=side)
    decision = decide_exam(
        metric=metric,
        candidate=mine[metric] if mine else None,
        champion=theirs[metric] if theirs else None,
        has_live=live is not None,
        tolerance=s.gate_tolerance,
        min_score=s.gate_min_score,
    )
    exam = answers.exam
    refs = exam_report_refs(s, run.line, run.run_id)
    verdict = "promote" if decision.promote else "hold"
    own = answers.own_eval_scores()
    document: dict[str, Any] = {
        "metric": metric,
        "candidate": mine[metric] if mine else None,
        "champion": theirs[metric] if theirs else None,
        "examples": len(exam.questions),
        "decision": verdict,
        "digest": exam.digest,
        "source": exam.source,
        "calls": answers.calls,
        "tolerance": s.gate_tolerance,
        "min_score": s.gate_min_score,
        "scores": {"candidate": mine, "champion": theirs},
        "own_eval": own,
        "champion_run": answers.champion_run,
        "report": str(refs.json),
    }
    outcome = ExamOutcome(
        metric=metric, candidate=mine or {}, champion=theirs, decision=verdict,
        reason=decision.reason, digest=exam.digest, source=exam.source, calls=answers.calls,
        items=exam_items(exam, answers.candidate, answers.champion),
        tolerance=s.gate_tolerance, min_score=s.gate_min_score,
        champion_run=answers.champion_run, own_eval=own,
    )
    _report(ctx, run, outcome)
    _tag(ctx, run, document)
    return decision, document


def _report(ctx: ReleaseContext, run: RunRecord, outcome: ExamOutcome) -> None:
    """Write the exam report; a report that cannot be written never blocks the release."""
    try:
        history = line_history(ctx.ledger, run.line)
        write_exam_report(ctx.storage, ctx.settings, run, outcome, history)
    except Exception:  # the decision stands on the ledger; the report is for people
        log.exception("run %s: the exam report could not be written", run.run_id)


def _tag(ctx: ReleaseContext, run: RunRecord, document: Mapping[str, Any]) -> None:
    """Put the exam's score on the registered model version (best effort)."""
    r = run.release
    if not (r.model_name and r.model_version):
        return
    score = document.get("candidate")
    tags = {
        EXAM_METRIC_TAG: str(document["metric"]),
        EXAM_DECISION_TAG: str(document["decision"]),
        EXAM_DIGEST_TAG: str(document["digest"]),
    }
    if isinstance(score, float | int):
        tags[EXAM_SCORE_TAG] = f"{score:.2f}"
    try:
        ctx.platform.update_model_tags(r.model_name, r.model_version, tags)
    except TuneloopError as exc:
        log.warning("run %s: the exam's tags were not set on the model: %s", run.run_id, exc)
