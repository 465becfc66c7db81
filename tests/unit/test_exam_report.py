"""The exam report: its JSON, its Markdown, the order of the differences and the history chart."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.ledger import RunRecord, RunState
from shared.release.exam_report import (
    EXAM_SCHEMA,
    ExamItem,
    ExamOutcome,
    HistoryPoint,
    history_figure,
    top_differences,
    write_exam_report,
)
from shared.settings import Settings
from tests.fakes.storage import FakeStorage

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LINE = "support"
RUN = "tl-support-0123456789ab-cdef0123"
HOSTILE = "<script>alert(1)</script> | **bold** [x](http://e.example) `code`\n# heading"


def item(cand: float, champ: float | None, *, text: str = "answer") -> ExamItem:
    """An exam item whose candidate/champion sentence chrF are ``cand``/``champ``."""
    return ExamItem(
        prompt=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "q?"}],
        reference="the reference",
        candidate=f"candidate {text}",
        candidate_scores={"chrf": cand, "bleu": cand / 2, "exact": 0.0},
        champion=None if champ is None else f"champion {text}",
        champion_scores=None if champ is None else {"chrf": champ, "bleu": champ / 2,
                                                    "exact": 0.0},
    )


def outcome(items: list[ExamItem], **changes: Any) -> ExamOutcome:
    fields: dict[str, Any] = {
        "metric": "chrf",
        "candidate": {"chrf": 61.2, "bleu": 30.5, "exact": 0.1},
        "champion": {"chrf": 55.0, "bleu": 28.0, "exact": 0.0},
        "decision": "promote",
        "reason": "candidate chrF 61.20 >= champion 55.00 - tolerance 0.0",
        "digest": "d" * 64,
        "source": "sample",
        "calls": 24,
        "items": items,
        "champion_run": "tl-support-aaaaaaaaaaaa-bbbbbbbb",
    }
    return ExamOutcome(**{**fields, **changes})


def run_record(state: RunState = RunState.DEPLOYED) -> RunRecord:
    return RunRecord(LINE, RUN, state, fields={
        "model_name": "tuneloop-support", "model_version": "3", "eval_loss": 1.25,
    })


HISTORY = [
    HistoryPoint("r1", "1", "RETIRED", score=50.0, metric="chrf", eval_loss=1.7),
    HistoryPoint("r2", "2", "HELD", score=20.0, metric="chrf", eval_loss=0.23),
    HistoryPoint("r3", "3", "PROMOTED", score=55.0, metric="chrf", eval_loss=1.5, live=True),
]


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage(Settings())


def written(storage: FakeStorage, result: ExamOutcome, history: list[HistoryPoint]) -> Any:
    refs = write_exam_report(storage, storage.settings, run_record(), result, history)
    return json.loads(storage.read(refs.json.container, refs.json.name))


# -- the JSON -------------------------------------------------------------------------------


def test_the_report_lands_under_the_lines_exams_folder(storage: FakeStorage) -> None:
    """JSON, Markdown and chart are <line>/_exams/<run>.{json,md,png} and the line's chart is
    <line>/_exams/history.png, all in the reports container."""
    refs = write_exam_report(storage, storage.settings, run_record(), outcome([item(1, 2)]),
                             HISTORY)
    names = {refs.json.name, refs.markdown.name, refs.chart.name, refs.history_chart.name}
    assert names == {f"{LINE}/_exams/{RUN}.json", f"{LINE}/_exams/{RUN}.md",
                     f"{LINE}/_exams/{RUN}.png", f"{LINE}/_exams/history.png"}
    assert {r.container for r in (refs.json, refs.markdown, refs.chart, refs.history_chart)} \
        == {storage.settings.reports_container}
    for ref in (refs.json, refs.markdown, refs.chart, refs.history_chart):
        assert storage.read(ref.container, ref.name)


def test_the_json_carries_both_scores_the_decision_and_the_calls(storage: FakeStorage) -> None:
    """The document names the metric, both corpus scores in chrF/BLEU/exact, the decision and
    its reason, the exam's size, digest and source, and the endpoint calls spent."""
    doc = written(storage, outcome([item(40, 30), item(10, 10)]), HISTORY)
    assert doc["schema"] == EXAM_SCHEMA
    assert (doc["line"], doc["run_id"]) == (LINE, RUN)
    assert doc["model"] == {"name": "tuneloop-support", "version": "3"}
    assert (doc["metric"], doc["candidate"], doc["champion"]) == ("chrf", 61.2, 55.0)
    assert doc["scores"] == {
        "candidate": {"chrf": 61.2, "bleu": 30.5, "exact": 0.1},
        "champion": {"chrf": 55.0, "bleu": 28.0, "exact": 0.0},
    }
    assert doc["decision"] == "promote"
    assert doc["reason"].startswith("candidate chrF 61.20")
    assert doc["exam"] == {"examples": 2, "digest": "d" * 64, "source": "sample"}
    assert doc["calls"] == 24
    assert doc["eval_loss"] == 1.25
    assert doc["chart"] == f"{LINE}/_exams/{RUN}.png"


def test_the_json_shows_answers_side_by_side_for_the_top_ten(storage: FakeStorage) -> None:
    """Of 12 examples the 10 whose sentence chrF differ most are shown, each with prompt,
    reference, both answers, both sentence scores and the difference."""
    items = [item(float(i), 50.0, text=str(i)) for i in range(12)]
    doc = written(storage, outcome(items), HISTORY)
    diffs = doc["differences"]
    assert (diffs["by"], diffs["shown"], diffs["of"]) == ("chrf", 10, 12)
    first = diffs["examples"][0]
    assert first["index"] == 0
    assert first["prompt"][-1] == {"role": "user", "content": "q?"}
    assert first["reference"] == "the reference"
    assert (first["candidate"], first["champion"]) == ("candidate 0", "champion 0")
    assert first["scores"]["candidate"]["chrf"] == 0.0
    assert first["scores"]["champion"]["chrf"] == 50.0
    assert first["difference"] == -50.0
    assert {e["index"] for e in diffs["examples"]} == set(range(10))


def test_a_first_version_has_no_champion(storage: FakeStorage) -> None:
    """Without a champion the champion score and scores are null and the Markdown says why."""
    refs = write_exam_report(
        storage, storage.settings, run_record(),
        outcome([item(10, None)], champion=None, champion_run=None), [],
    )
    doc = json.loads(storage.read(refs.json.container, refs.json.name))
    assert doc["champion"] is None
    assert doc["scores"]["champion"] is None
    assert doc["differences"]["examples"][0]["champion"] is None
    md = storage.read(refs.markdown.container, refs.markdown.name).decode()
    assert "No champion" in md


# -- the order of the differences ------------------------------------------------------------


def test_top_differences_are_ordered_by_absolute_sentence_chrf_difference() -> None:
    """Largest |candidate - champion| sentence chrF first, whatever its sign; ties keep the
    exam order."""
    items = [item(55, 50), item(20, 50), item(70, 50), item(50, 50), item(30, 50)]
    assert [i for i, _ in top_differences(items)] == [1, 2, 4, 0, 3]


def test_top_differences_keep_ten() -> None:
    """At most ten examples are shown."""
    items = [item(float(i), 0.0) for i in range(25)]
    shown = top_differences(items)
    assert [i for i, _ in shown] == list(range(24, 14, -1))


def test_without_a_champion_the_worst_answers_come_first() -> None:
    """A first version has nothing to differ from: its lowest sentence chrF come first."""
    items = [item(40, None), item(5, None), item(90, None), item(5, None)]
    assert [i for i, _ in top_differences(items)] == [1, 3, 0, 2]


# -- the Markdown ----------------------------------------------------------------------------


def test_the_markdown_escapes_hostile_user_text(storage: FakeStorage) -> None:
    """Prompts, answers, references and the reason never render as markup or HTML and never
    break a table row: tags, pipes, emphasis, links and code spans are escaped, newlines
    folded."""
    hostile = ExamItem(
        prompt=[{"role": "user", "content": HOSTILE}], reference=HOSTILE, candidate=HOSTILE,
        candidate_scores={"chrf": 0.0}, champion=HOSTILE, champion_scores={"chrf": 90.0},
    )
    refs = write_exam_report(storage, storage.settings, run_record(),
                             outcome([hostile], reason=HOSTILE), HISTORY)
    md = storage.read(refs.markdown.container, refs.markdown.name).decode()
    assert re.search(r"(?<!\\)<[A-Za-z/]", md) is None  # every tag opener escaped
    assert "\\<script>" in md
    assert "**bold**" not in md
    assert "](http" not in md
    assert not any(ln.startswith("# heading") for ln in md.splitlines())
    for who in ("reference", "candidate", "champion"):
        (row,) = [ln for ln in md.splitlines() if ln.startswith(f"| {who} |")]
        # 4 unescaped cell borders: the answer's own pipe is escaped
        assert row.count("|") - row.count("\\|") == 4
        assert "heading |" in row  # the whole answer, its newline folded, in one row


def test_the_markdown_has_the_score_table_and_the_calls(storage: FakeStorage) -> None:
    """The Markdown shows both scores per metric with their difference, the calls spent and
    the new drop's own evaluation score (information)."""
    own = {"examples": 4, "chrf": 61.23456}
    refs = write_exam_report(storage, storage.settings, run_record(),
                             outcome([item(40, 30)], own_eval=own), HISTORY)
    md = storage.read(refs.markdown.container, refs.markdown.name).decode()
    assert "| chrF (decides) | 61.20 | 55.00 | +6.20 |" in md
    assert "| BLEU | 30.50 | 28.00 | +2.50 |" in md
    assert "**24 endpoint calls**" in md
    assert f"({RUN}.png)" in md
    assert "(information, never decides): examples 4, chrf 61.23." in md


# -- the chart -------------------------------------------------------------------------------


def _marked(fig: Any, label: str) -> list[tuple[list[float], list[float]]]:
    """(x, y) data of the lines labelled ``label`` on each axes of ``fig``."""
    return [
        (list(line.get_xdata()), list(line.get_ydata()))
        for ax in fig.axes for line in ax.get_lines() if line.get_label() == label
    ]


def test_the_chart_marks_the_live_version_and_the_held_ones() -> None:
    """Both panels (exam score, eval loss) mark the live version with the ``live`` marker and
    held candidates with the ``held`` one; x ticks name the versions."""
    fig = history_figure(HISTORY, metric="chrf", title="t", champion_score=55.0)
    assert len(fig.axes) == 2
    assert _marked(fig, "live") == [([2], [55.0]), ([2], [1.5])]
    assert _marked(fig, "held") == [([1], [20.0]), ([1], [0.23])]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["v1", "v2", "v3"]
    assert fig.axes[0].get_ylabel() == "exam chrF"
    assert fig.axes[1].get_ylabel() == "eval loss"


def test_a_long_history_slants_its_version_labels() -> None:
    """Past twelve versions the x labels are drawn at 45 degrees; up to twelve, upright."""
    many = [HistoryPoint(f"r{i}", str(i), "RETIRED", score=float(i), metric="chrf")
            for i in range(1, 14)]
    for points, angle in ((many, 45.0), (many[:12], 0.0)):
        fig = history_figure(points, metric="chrf", title="t")
        assert {t.get_rotation() for t in fig.axes[1].get_xticklabels()} == {angle}


def test_the_charts_are_real_pngs(storage: FakeStorage) -> None:
    """The run's chart and the line's history.png are PNG files of non-trivial size."""
    refs = write_exam_report(storage, storage.settings, run_record(),
                             outcome([item(40, 30)]), HISTORY)
    for ref in (refs.chart, refs.history_chart):
        data = storage.read(ref.container, ref.name)
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000
        assert storage.blobs.containers[ref.container][ref.name].content_type == "image/png"


def test_a_promoted_run_becomes_the_live_version_in_its_report(storage: FakeStorage) -> None:
    """The report shows the line as the exam leaves it: a promoted candidate is live (the
    previous live version no longer), a held one is held and the live version stays."""
    promoted = written(storage, outcome([item(40, 30)]), HISTORY)["history"]
    assert [(p["run_id"], p["live"]) for p in promoted] == [
        ("r1", False), ("r2", False), ("r3", False), (RUN, True)
    ]
    assert promoted[-1]["score"] == 61.2
    held = written(storage, outcome([item(40, 30)], decision="hold"), HISTORY)["history"]
    assert [(p["run_id"], p["live"], p["state"]) for p in held][-2:] == [
        ("r3", True, "PROMOTED"), (RUN, False, "HELD")
    ]


def test_a_run_already_in_the_history_keeps_its_place(storage: FakeStorage) -> None:
    """The examined run, listed in the history already, is updated where it stands."""
    mine = HistoryPoint(RUN, "3", "DEPLOYED", eval_loss=1.25)
    history = [HISTORY[0], mine, HISTORY[2]]
    doc = written(storage, outcome([item(40, 30)], decision="hold"), history)
    assert [p["run_id"] for p in doc["history"]] == ["r1", RUN, "r3"]
    assert doc["history"][1]["score"] == 61.2


# -- import cost -----------------------------------------------------------------------------


def test_importing_the_report_module_leaves_matplotlib_unloaded() -> None:
    """matplotlib is imported when a chart is drawn, never by importing the module."""
    code = (
        "import sys; import shared.release.exam_report; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
