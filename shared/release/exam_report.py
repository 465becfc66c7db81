"""The exam report of a run: ``<line>/_exams/<run>.json`` + ``.md`` and a chart of the line.

Layout in the reports container (``settings.reports_container``)::

    <line>/_exams/<run>.json     tuneloop.exam/v1: scores of both, decision, the differences
    <line>/_exams/<run>.md       the same, for people
    <line>/_exams/<run>.png      the line's history: exam score and eval loss per version
    <line>/_exams/history.png    the line's chart as its latest exam left it (rewritten by each)

The exam (:mod:`shared.release.exam`) builds an :class:`ExamOutcome` and calls
:func:`write_exam_report` with the line's history (:func:`line_history`). The chart is drawn
with matplotlib, imported inside :func:`history_figure` only: the Functions host imports
``function_app`` at every cold start and must not load matplotlib for it.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.dataset.report import markdown_code, markdown_text, plural
from shared.ledger import RunRecord, RunState
from shared.storage import BlobRef

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from shared.ledger import LedgerPort
    from shared.settings import Settings
    from shared.storage import Storage

__all__ = [
    "EXAM_SCHEMA",
    "METRICS",
    "TOP_DIFFERENCES",
    "ExamItem",
    "ExamOutcome",
    "ExamReportRefs",
    "HistoryPoint",
    "exam_report",
    "exam_report_markdown",
    "exam_report_refs",
    "history_figure",
    "line_history",
    "top_differences",
    "write_exam_report",
]

EXAM_SCHEMA = "tuneloop.exam/v1"
# The scores every exam reports, in report order; an outcome's ``metric`` is one of them.
METRICS = ("chrf", "bleu", "exact")
_METRIC_LABEL = {"chrf": "chrF", "bleu": "BLEU", "exact": "exact match"}
# The examples shown side by side: the ones whose answers differ most.
TOP_DIFFERENCES = 10
# What the differences are ordered by: the sentence chrF (language-independent, defined on
# one sentence, unlike BLEU, whose sentence scores are mostly 0 on short answers).
_DIFFERENCE_METRIC = "chrf"
# Longest answer/prompt shown in the Markdown (the JSON keeps the whole text).
_MD_TEXT_MAX = 600

# Runs that produced a model (and so have a place in the line's history).
_MODEL_STATES = frozenset(
    {
        RunState.TRAINED, RunState.REGISTERED, RunState.DEPLOYING, RunState.DEPLOYED,
        RunState.PROMOTED, RunState.HELD, RunState.RETIRED,
    }
)


@dataclass(frozen=True)
class ExamItem:
    """One exam example and both answers to it.

    ``prompt`` is the conversation before the final assistant turn, ``reference`` that turn's
    content. ``candidate_scores``/``champion_scores`` are the sentence-level scores of each
    answer against the reference, by metric name (:data:`METRICS`); the champion's are None
    when there is no champion (a line's first version).
    """

    prompt: Sequence[Mapping[str, Any]]
    reference: str
    candidate: str
    candidate_scores: Mapping[str, float]
    champion: str | None = None
    champion_scores: Mapping[str, float] | None = None

    @property
    def difference(self) -> float | None:
        """Candidate minus champion sentence chrF; None without a champion."""
        if self.champion_scores is None:
            return None
        cand = self.candidate_scores.get(_DIFFERENCE_METRIC)
        champ = self.champion_scores.get(_DIFFERENCE_METRIC)
        if cand is None or champ is None:
            return None
        return cand - champ


@dataclass(frozen=True)
class ExamOutcome:
    """What an exam found, as the exam hands it to the report.

    ``candidate``/``champion`` are the corpus-level scores by metric name (:data:`METRICS`);
    ``champion`` is None for a line's first version. ``metric`` is the one that decided,
    ``decision`` is ``"promote"`` or ``"hold"`` and ``reason`` says why in one line.
    ``digest``/``source`` identify the exam (``"golden"`` or ``"sample"``); ``calls`` is the
    number of endpoint calls this exam spent (cached champion answers cost none).
    ``own_eval`` is the candidate's score on the new drop's own evaluation side (information,
    never a vote), ``champion_run`` the live run the candidate was compared with.
    """

    metric: str
    candidate: Mapping[str, float]
    champion: Mapping[str, float] | None
    decision: str
    reason: str
    digest: str
    source: str
    calls: int
    items: Sequence[ExamItem] = ()
    tolerance: float = 0.0
    min_score: float | None = None
    champion_run: str | None = None
    own_eval: Mapping[str, Any] | None = None

    @property
    def examples(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class HistoryPoint:
    """One version of a line as the chart shows it (from the ledger: :func:`line_history`).

    ``score`` is the exam score the run got as a candidate, in ``metric``; ``live`` marks the
    line's live version.
    """

    run_id: str
    version: str | None
    state: str
    score: float | None = None
    metric: str | None = None
    eval_loss: float | None = None
    live: bool = False

    @property
    def held(self) -> bool:
        return self.state == RunState.HELD

    @property
    def label(self) -> str:
        return f"v{self.version}" if self.version else self.run_id[-8:]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "version": self.version, "state": self.state,
            "score": self.score, "metric": self.metric, "eval_loss": self.eval_loss,
            "live": self.live,
        }


@dataclass(frozen=True)
class ExamReportRefs:
    """Where :func:`write_exam_report` wrote the report."""

    json: BlobRef
    markdown: BlobRef
    chart: BlobRef
    history_chart: BlobRef


def exam_report_refs(settings: Settings, line: str, run_id: str) -> ExamReportRefs:
    """The blobs of ``run_id``'s exam report (the line is a valid blob path part:
    ``shared.naming``'s line rule allows letters, digits, ``.``, ``_`` and ``-``)."""
    container, folder = settings.reports_container, f"{line}/_exams"
    return ExamReportRefs(
        json=BlobRef(container, f"{folder}/{run_id}.json"),
        markdown=BlobRef(container, f"{folder}/{run_id}.md"),
        chart=BlobRef(container, f"{folder}/{run_id}.png"),
        history_chart=BlobRef(container, f"{folder}/history.png"),
    )


# -- the line's history ---------------------------------------------------------------------
def line_history(ledger: LedgerPort, line: str) -> list[HistoryPoint]:
    """The line's runs that produced a model, oldest first, each with its exam score (as a
    candidate), eval loss, state and whether it is the live version (the latest PROMOTED run,
    the rule of :func:`shared.corpus.live_run`)."""
    from shared.corpus import promoted_at  # the live rule stands once, there

    runs = [r for r in ledger.list(line=line) if r.state in _MODEL_STATES]
    promoted = [r for r in runs if r.state == RunState.PROMOTED]
    live = max(promoted, key=promoted_at).run_id if promoted else None
    return [_point(r, live=r.run_id == live) for r in runs]


def _point(run: RunRecord, *, live: bool) -> HistoryPoint:
    exam = _exam_of(run)
    score, metric = None, None
    if exam:
        metric = str(exam["metric"]) if exam.get("metric") else None
        score = _finite(exam.get("candidate"))
    return HistoryPoint(
        run_id=run.run_id, version=run.release.model_version, state=run.state.value,
        score=score, metric=metric, eval_loss=_finite(run.release.eval_loss), live=live,
    )


def _exam_of(run: RunRecord) -> Mapping[str, Any] | None:
    """The run's ``exam`` column (a dict; JSON text as an entity stores it), or None."""
    value = getattr(run.release, "exam", None)
    if value is None:
        value = run.fields.get("exam")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) else None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _with_this_exam(
    history: Sequence[HistoryPoint], run: RunRecord, result: ExamOutcome
) -> list[HistoryPoint]:
    """The history as it stands after this exam's decision: the run carries its score, is
    HELD when held, and is the live version when promoted."""
    promote = result.decision == "promote"
    this = HistoryPoint(
        run_id=run.run_id, version=run.release.model_version,
        state=RunState.HELD.value if not promote else run.state.value,
        score=_finite(result.candidate.get(result.metric)), metric=result.metric,
        eval_loss=_finite(run.release.eval_loss), live=promote,
    )
    points = [p for p in history if p.run_id != run.run_id]
    if promote:
        points = [_not_live(p) for p in points]
    before = next((i for i, p in enumerate(history) if p.run_id == run.run_id), None)
    if before is None:
        return [*points, this]
    points.insert(before, this)
    return points


def _not_live(point: HistoryPoint) -> HistoryPoint:
    return point if not point.live else HistoryPoint(
        run_id=point.run_id, version=point.version, state=point.state, score=point.score,
        metric=point.metric, eval_loss=point.eval_loss, live=False,
    )


# -- the report -----------------------------------------------------------------------------
def top_differences(
    items: Sequence[ExamItem], n: int = TOP_DIFFERENCES
) -> list[tuple[int, ExamItem]]:
    """The ``n`` examples whose answers differ most, as ``(index, item)``: by |sentence chrF
    difference|, largest first (ties in exam order). Without a champion: the candidate's
    lowest sentence chrF first (its worst answers)."""
    indexed = list(enumerate(items))
    if any(item.difference is not None for item in items):
        indexed.sort(key=lambda pair: (-abs(pair[1].difference or 0.0), pair[0]))
    else:
        indexed.sort(
            key=lambda pair: (pair[1].candidate_scores.get(_DIFFERENCE_METRIC, 0.0), pair[0])
        )
    return indexed[:n]


def exam_report(
    run: RunRecord, result: ExamOutcome, history: Sequence[HistoryPoint], refs: ExamReportRefs
) -> dict[str, Any]:
    """The ``tuneloop.exam/v1`` document of ``run``'s exam."""
    shown = top_differences(result.items)
    return {
        "schema": EXAM_SCHEMA,
        "line": run.line,
        "run_id": run.run_id,
        "model": {"name": run.release.model_name, "version": run.release.model_version},
        "metric": result.metric,
        "decision": result.decision,
        "reason": result.reason,
        "candidate": _finite(result.candidate.get(result.metric)),
        "champion": (
            None if result.champion is None else _finite(result.champion.get(result.metric))
        ),
        "champion_run": result.champion_run,
        "tolerance": result.tolerance,
        "min_score": result.min_score,
        "exam": {"examples": result.examples, "digest": result.digest, "source": result.source},
        "calls": result.calls,
        "scores": {
            "candidate": _scores(result.candidate),
            "champion": None if result.champion is None else _scores(result.champion),
        },
        "own_eval": None if result.own_eval is None else dict(result.own_eval),
        "eval_loss": _finite(run.release.eval_loss),
        "differences": {
            "by": _DIFFERENCE_METRIC,
            "shown": len(shown),
            "of": result.examples,
            "examples": [_item_dict(i, item) for i, item in shown],
        },
        "history": [p.to_dict() for p in history],
        "chart": refs.chart.name,
        "history_chart": refs.history_chart.name,
    }


def _scores(scores: Mapping[str, float]) -> dict[str, float | None]:
    return {m: _finite(scores.get(m)) for m in METRICS if m in scores}


def _item_dict(index: int, item: ExamItem) -> dict[str, Any]:
    return {
        "index": index,
        "prompt": [dict(m) for m in item.prompt],
        "reference": item.reference,
        "candidate": item.candidate,
        "champion": item.champion,
        "scores": {
            "candidate": _scores(item.candidate_scores),
            "champion": None if item.champion_scores is None else _scores(item.champion_scores),
        },
        "difference": item.difference,
    }


def exam_report_markdown(report: Mapping[str, Any]) -> str:
    """The exam report for people, from :func:`exam_report`'s document. Every piece of user
    text (prompts, answers, references, the line) is escaped: it never renders as markup."""
    metric = str(report["metric"])
    verdict = "✅ promote" if report["decision"] == "promote" else "⛔ hold"
    exam = report["exam"]
    out = [
        f"# Exam of {markdown_code(report['run_id'])} on line {markdown_code(report['line'])}: "
        f"{verdict}",
        "",
        f"{markdown_text(str(report['reason']))}",
        "",
        f"Exam: {plural(int(exam['examples']), 'example')} ({markdown_text(str(exam['source']))}"
        f"), digest `{exam['digest']}`; **{plural(int(report['calls']), 'endpoint call')}** "
        "spent.",
        f"Deciding metric: {_METRIC_LABEL.get(metric, markdown_text(metric))}, tolerance "
        f"{report['tolerance']}"
        + ("" if report["min_score"] is None else f", minimum score {report['min_score']}")
        + ".",
        "",
        "| metric | candidate | champion | difference |",
        "| --- | ---: | ---: | ---: |",
    ]
    cand, champ = report["scores"]["candidate"], report["scores"]["champion"] or {}
    for m in METRICS:
        if m not in cand:
            continue
        c, p = cand.get(m), champ.get(m)
        diff = "—" if c is None or p is None else f"{c - p:+.2f}"
        name = _METRIC_LABEL[m] + (" (decides)" if m == metric else "")
        out.append(f"| {name} | {_num(c)} | {_num(p)} | {diff} |")
    if report["scores"]["champion"] is None:
        out += ["", "No champion: the line's first version is scored and promoted."]
    elif report["champion_run"]:
        out += ["", f"Champion: the live run {markdown_code(str(report['champion_run']))}."]
    own = report.get("own_eval")
    if own:
        out.append(
            "The new drop's own evaluation side (information, never decides): "
            + ", ".join(f"{markdown_text(str(k))} {_value(v)}" for k, v in own.items())
            + "."
        )
    if report.get("eval_loss") is not None:
        out.append(f"eval_loss of the fine-tune job (information): {report['eval_loss']:.4f}.")
    out += _differences_markdown(report["differences"])
    chart = str(report["chart"]).rsplit("/", 1)[-1]
    out += ["", "## The line's history", "", f"![exam score and eval loss per version]({chart})"]
    return "\n".join(out) + "\n"


def _differences_markdown(diffs: Mapping[str, Any]) -> list[str]:
    examples = diffs["examples"]
    if not examples:
        return []
    with_champion = any(e["champion"] is not None for e in examples)
    how = (
        "by |sentence chrF difference|" if with_champion
        else "the candidate's lowest sentence chrF first"
    )
    out = [
        "",
        f"## Where the answers differ most ({diffs['shown']} of {diffs['of']}, {how})",
    ]
    for rank, e in enumerate(examples, 1):
        diff = "" if e["difference"] is None else f", chrF difference {e['difference']:+.1f}"
        out += [
            "",
            f"### {rank}. Example {e['index'] + 1}{diff}",
            "",
            f"Prompt: {_short(_last_user_text(e['prompt']))}",
            "",
            "| | answer | chrF |",
            "| --- | --- | ---: |",
            f"| reference | {_short(e['reference'])} | |",
            f"| candidate | {_short(e['candidate'])} | "
            f"{_num(e['scores']['candidate'].get('chrf'))} |",
        ]
        if e["champion"] is not None:
            champ = e["scores"]["champion"] or {}
            out.append(f"| champion | {_short(e['champion'])} | {_num(champ.get('chrf'))} |")
    return out


def _last_user_text(prompt: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(prompt):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return _content_text(prompt[-1].get("content")) if prompt else ""


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping)
        )
    return "" if content is None else str(content)


def _short(text: str) -> str:
    """User text for a table cell: escaped, one line, cut to :data:`_MD_TEXT_MAX`."""
    text = text if len(text) <= _MD_TEXT_MAX else text[: _MD_TEXT_MAX - 1] + "…"
    return markdown_text(text) if text else "*(empty)*"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _value(value: Any) -> str:
    """A reported value: a count as is, a score to two decimals, anything else escaped."""
    if isinstance(value, float):
        return f"{value:.2f}"
    return markdown_text(str(value))


# -- the chart ------------------------------------------------------------------------------
# Marker styles (Agg draws them; the legend names them).
_STYLE_LIVE = {"marker": "*", "markersize": 16, "color": "#d4a017", "label": "live"}
_STYLE_HELD = {"marker": "X", "markersize": 10, "color": "#c0392b", "label": "held"}
_STYLE_OTHER = {"marker": "o", "markersize": 7, "color": "#2c6fbb", "label": "version"}
# Up to this many versions the x labels stand upright.
_UPRIGHT_TICKS = 12


def history_figure(
    history: Sequence[HistoryPoint],
    *,
    metric: str,
    title: str,
    champion_score: float | None = None,
) -> Figure:
    """The line's history on two panels sharing the versions axis: the exam score in
    ``metric`` (top) and eval loss (bottom). The live version is a gold star labelled
    ``live``, held candidates red crosses; ``champion_score`` (the live version's score on
    this exam) is a dashed line. Drawn on an Agg canvas; no pyplot, so no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    score_ax, loss_ax = fig.subplots(2, 1, sharex=True)
    xs = list(range(len(history)))
    label = _METRIC_LABEL.get(metric, metric)
    scores = [p.score if p.metric == metric else None for p in history]
    losses = [p.eval_loss for p in history]
    for ax, values, ylabel in (
        (score_ax, scores, f"exam {label}"),
        (loss_ax, losses, "eval loss"),
    ):
        # the line joins the versions that were not held: a held candidate stands aside
        kept = [
            (x, v) for x, v, p in zip(xs, values, history, strict=True)
            if v is not None and not p.held
        ]
        ax.plot([x for x, _ in kept], [v for _, v in kept], color="#999999", linewidth=1,
                zorder=1)
        for style, pick in (
            (_STYLE_OTHER, lambda p: not p.live and not p.held),
            (_STYLE_HELD, lambda p: p.held),
            (_STYLE_LIVE, lambda p: p.live),
        ):
            chosen = [
                (x, v) for x, v, p in zip(xs, values, history, strict=True)
                if v is not None and pick(p)
            ]
            if chosen:
                ax.plot(
                    [x for x, _ in chosen], [v for _, v in chosen], linestyle="none",
                    zorder=3, **style,
                )
        ax.set_ylabel(ylabel)
        ax.grid(visible=True, alpha=0.3)
        if all(v is None for v in values):  # e.g. a run without an evaluation side
            ax.set_yticks([])
            ax.text(0.5, 0.5, f"no {ylabel} reported", transform=ax.transAxes, ha="center",
                    va="center", color="#777777")
    if champion_score is not None:
        score_ax.axhline(champion_score, linestyle="--", color="#d4a017", linewidth=1,
                         label="live version on this exam")
    score_ax.set_title(title)
    handles, labels = score_ax.get_legend_handles_labels()
    if handles:
        score_ax.legend(handles, labels, loc="best", fontsize="small")
    loss_ax.set_xticks(xs, [p.label for p in history])
    if len(history) > _UPRIGHT_TICKS:  # long lines: slanted labels stay readable
        loss_ax.tick_params(axis="x", labelrotation=45)
    loss_ax.set_xlabel("version")
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_exam_report(
    storage: Storage,
    settings: Settings,
    run: RunRecord,
    result: ExamOutcome,
    history: Sequence[HistoryPoint],
) -> ExamReportRefs:
    """Write ``run``'s exam report (JSON, Markdown, the run's chart) and the line's
    ``history.png``; idempotent (each blob is overwritten). ``history`` is the line's
    (:func:`line_history`); the run is placed in it as this exam leaves it."""
    refs = exam_report_refs(settings, run.line, run.run_id)
    points = _with_this_exam(history, run, result)
    report = exam_report(run, result, points, refs)
    champion = None if result.champion is None else _finite(result.champion.get(result.metric))
    # One drawing for both charts (about a second each on a small CPU): the line's
    # history.png is the line as its latest exam left it, which is this run's chart.
    chart = _png(history_figure(
        points, metric=result.metric, champion_score=champion,
        title=f"line {run.line} after the exam of {run.run_id}",
    ))
    storage.write_json(refs.json, report)
    storage.write_text(refs.markdown, exam_report_markdown(report))
    storage.write_bytes(refs.chart, chart, content_type="image/png")
    storage.write_bytes(refs.history_chart, chart, content_type="image/png")
    return refs
