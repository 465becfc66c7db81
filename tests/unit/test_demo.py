"""`tuneloop demo`: the run's typed release fields, the three-drop story's settings, line,
data and exam tables, and the choice of the quick loop."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from cli.commands.demo import (
    DEMO_DATASET,
    STORY,
    Demo,
    DemoError,
    DemoUsageError,
    add_arguments,
    exam_lines,
    exam_table,
    run,
    story_line,
    story_settings,
)
from functions.devhost import DevHost
from shared.ledger import ReleaseRecord, RunRecord, RunState
from shared.platform.local import LocalPlatform
from shared.settings import LinePolicy, Settings
from tests.fakes.ledger import FakeLedger


def _demo(tmp_path: Path) -> Demo:
    settings = Settings(platform="local", home=tmp_path / "home")
    host = DevHost(settings, platform=LocalPlatform(settings))
    return Demo(host=host, line="demo", timeout=60.0)


def test_a_promoted_run_without_a_recorded_endpoint_is_a_demo_error(tmp_path: Path) -> None:
    """A run whose row lacks its endpoint ends the demo with one line naming the run, instead
    of asking the platform for an endpoint called "None"."""
    rec = RunRecord("demo", "tl-demo-000000000001-aaaaaaaa", RunState.PROMOTED,
                    release=ReleaseRecord(deployment="v01", model_name="tuneloop-demo"))
    with pytest.raises(DemoError, match=r"tl-demo-000000000001-aaaaaaaa .*no endpoint"):
        _demo(tmp_path).endpoint_url(rec)


# -- the three-drop story (issue 11 §4) ------------------------------------------------------
def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_story_settings_turn_on_the_exam_a_live_start_and_fixed_steps_for_its_line_only(
) -> None:
    """The story's devhost examines every candidate, trains its line cumulatively from the live
    version in a fixed number of steps, and leaves other lines' settings as they were."""
    base = Settings(promotion="auto", line_overrides={"other": {"num_train_epochs": 2}},
                    line_policy={"other": {"data": "latest"}})
    s = story_settings(base, "support")
    assert (s.platform, s.promotion, s.validation_fraction) == ("local", "exam", 0.2)
    assert s.policy_for("support") == LinePolicy(data="cumulative", start="live")
    assert s.line_overrides["support"] == {"max_steps": 160}
    assert (s.line_overrides["other"], s.policy_for("other").data) == ({"num_train_epochs": 2},
                                                                       "latest")


def test_the_users_own_overrides_and_policy_for_the_story_line_win() -> None:
    """TUNELOOP_LINE_OVERRIDES / TUNELOOP_LINE_POLICY entries for the story's line are kept
    over the demo's choices."""
    base = Settings(line_overrides={"support": {"max_steps": 40}},
                    line_policy={"support": {"start": "base"}})
    s = story_settings(base, "support")
    assert s.line_overrides["support"] == {"max_steps": 40}
    assert s.policy_for("support") == LinePolicy(data="cumulative", start="base")


def test_a_local_base_model_trains_with_its_own_defaults_in_the_story(tmp_path: Path) -> None:
    """With TUNELOOP_LOCAL_BASE_MODEL the tiny model's fixed steps are not imposed."""
    s = story_settings(Settings(local_base_model=str(tmp_path)), "support")
    assert "support" not in s.line_overrides


def _held_exam() -> dict[str, object]:
    return {
        "metric": "chrf", "candidate": 33.41, "champion": 60.62, "examples": 18,
        "decision": "hold", "source": "sample", "calls": 36, "tolerance": 0.0,
        "scores": {"candidate": {"chrf": 33.41, "bleu": 21.8, "exact": 11.1},
                   "champion": {"chrf": 60.62, "bleu": 45.5, "exact": 44.4}},
        "own_eval": {"examples": 36, "chrf": 71.2},
        "report": "reports/support/_exams/tl-x.json",
    }


def test_a_held_candidates_exam_shows_both_scores_and_the_decision() -> None:
    """The exam table of a held run prints the candidate's and the live model's three scores,
    HOLD with the deciding comparison, and the drop's own evaluation apart."""
    text = "\n".join(exam_lines(_held_exam()))
    assert "18 questions" in text
    assert re.search(r"candidate \(this run\)\s+33\.4\s+21\.8\s+11\.1", text)
    assert re.search(r"champion \(live\)\s+60\.6\s+45\.5\s+44\.4", text)
    assert "decision: HOLD (chrf 33.4 vs 60.6, tolerance 0.0)" in text
    assert "never deciding: chrF 71.2 on 36 examples" in text


def test_the_first_versions_exam_says_there_is_no_champion() -> None:
    """A line's first version has nothing to beat: the champion row says so."""
    exam = {"metric": "chrf", "candidate": 60.6, "champion": None, "examples": 18,
            "decision": "promote", "scores": {"candidate": {"chrf": 60.6, "bleu": 45.5,
                                                            "exact": 44.4}, "champion": None}}
    text = "\n".join(exam_lines(exam))
    assert "champion (live)" in text
    assert "none: the first version" in text
    assert "decision: PROMOTE (chrf 60.6, nothing to beat)" in text
    assert exam_lines(None) == ["no exam recorded for this run"]


def test_the_story_table_has_a_row_per_drop_with_its_corpus() -> None:
    """Each drop's row shows its run's state and version, both exam scores, and the drops it
    trained on (the held drop absent from the third run's)."""
    rows = [
        {"drop": "1-good", "state": "PROMOTED", "model_version": "1",
         "exam": {"candidate": 60.62, "champion": None},
         "data": {"drops": [{"name": "1-good"}]}},
        {"drop": "2-bad", "state": "HELD", "model_version": "2", "exam": _held_exam(),
         "data": {"drops": [{"name": "1-good"}, {"name": "2-bad"}]}},
        {"drop": "3-more", "state": "PROMOTED", "model_version": "3",
         "exam": {"candidate": 80.0, "champion": 60.62},
         "data": {"drops": [{"name": "1-good"}, {"name": "3-more"}]}},
    ]
    lines = exam_table(rows).splitlines()
    assert lines[0].split() == ["drop", "state", "version", "exam", "live", "trained", "on"]
    assert lines[1].split() == ["1-good", "PROMOTED", "v01", "60.6", "-", "1-good"]
    assert lines[2].split() == ["2-bad", "HELD", "v02", "33.4", "60.6", "1-good", "+", "2-bad"]
    assert lines[3].split() == ["3-more", "PROMOTED", "v03", "80.0", "60.6", "1-good", "+",
                                "3-more"]


def test_the_story_is_told_on_the_first_line_without_runs() -> None:
    """`support` when it has no run; else the next free `support-N`."""
    ledger = FakeLedger()
    assert story_line(ledger, None) == "support"
    ledger.create("support", "tl-support-000000000001-aaaaaaaa", RunState.PROMOTED)
    ledger.create("support-2", "tl-support-2-000000000001-aaaaaaaa", RunState.HELD)
    assert story_line(ledger, None) == "support-3"


def test_a_chosen_line_with_runs_or_an_invalid_one_is_a_usage_error() -> None:
    """--line naming a line that already has runs (or no valid line) stops the demo with a
    line that says what to do, instead of replaying drops as duplicates."""
    ledger = FakeLedger()
    ledger.create("mine", "tl-mine-000000000001-aaaaaaaa", RunState.PROMOTED)
    with pytest.raises(DemoUsageError, match=r"line 'mine' already has runs.*another --line"):
        story_line(ledger, "mine")
    with pytest.raises(DemoUsageError, match=r"not a valid line name"):
        story_line(ledger, "no/slash")
    assert story_line(ledger, "fresh") == "fresh"


def test_quick_and_dataset_choose_the_one_drop_loop(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--dataset implies --quick; a missing dataset is exit 2 with one line, before anything
    starts."""
    assert _args("--quick").quick
    assert (_args().dataset, _args().line) == (None, None)
    missing = tmp_path / "nope.jsonl"
    assert run(_args("--dataset", str(missing))) == 2
    assert capsys.readouterr().err.strip() == f"error: dataset {missing} not found"


def test_the_story_data_is_shipped_next_to_the_quick_demos() -> None:
    """Each drop of the story is a package data file beside support.jsonl (pyproject's
    data/demo/*), and drop 2 asks every one of drop 1's questions (same prompts, so the same
    sides) with another final answer."""
    files = {c.name: DEMO_DATASET.parent / c.file for c in STORY}
    assert all(p.is_file() for p in files.values())
    assert [c.expect for c in STORY] == ["PROMOTED", "HELD", "PROMOTED"]

    def prompts(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            messages = json.loads(line)["messages"]
            out[json.dumps(messages[:-1])] = messages[-1]["content"]
        return out

    good, bad = prompts(files["1-good"]), prompts(files["2-bad"])
    assert set(good) <= set(bad)
    assert all(bad[p] != good[p] for p in good)
