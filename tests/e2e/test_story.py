"""The demo's three-drop story (issue 11 §4) on the embedded local platform, all real.

On the demo's own settings (``story_settings``: exam promotion, cumulative corpus trained from
the live version, 160 steps on the tiny model): drop 1 (good) is promoted as the line's first
version with its exam score; drop 2 (drop 1's questions answered badly) is trained on drops
1 + 2, sits the exam beside the live model and is HELD with both scores; drop 3 (more good
data) is trained on drops 1 + 3 only and promoted with a better score; the endpoint answers.
Read through ``tuneloop status --json`` (the contract), one devhost for the module.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from cli.commands import status
from cli.commands.demo import DEMO_DATASET, STORY, story_settings
from functions.devhost import DevHost
from shared.ledger import RunState
from shared.storage import BlobRef
from tests.e2e.conftest import Loop
from tests.e2e.test_loop import CHAT, post
from tests.isolation import isolated_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LINE = "support"
ENDED = {RunState.PROMOTED, RunState.HELD, RunState.FAILED, RunState.REJECTED}


@dataclass
class Story:
    loop: Loop
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # drop -> status --json

    def status(self) -> list[dict[str, Any]]:
        out = io.StringIO()
        code = status.run(argparse.Namespace(line=LINE, json=True), clients=self.loop.clients,
                          out=out)
        assert code == 0
        runs: list[dict[str, Any]] = json.loads(out.getvalue())
        return runs

    def tell(self, name: str, data: bytes) -> dict[str, Any]:
        """Drop ``data`` as ``name``; its run as ``status --json`` shows it once it ended."""
        self.loop.drop(name, data)

        def ended() -> dict[str, Any] | None:
            for run in self.status():
                if run.get("name") == name and run["state"] != RunState.DUPLICATE.value:
                    return run if RunState(run["state"]) in ENDED else None
            return None

        run = wait_until(ended, timeout=900, what=f"the run of {name} ended")
        self.runs[name] = run
        return run


@pytest.fixture(scope="module")
def story(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    home = tmp_path_factory.mktemp("story") / "home"
    settings = story_settings(isolated_settings(azurite, home, idle_after=timedelta(hours=1)),
                              LINE)
    host = DevHost(settings, poll_every=0.2, reconcile_every=1.0, sweep_every=10**9, threads=1)
    told = Story(Loop(settings, host, LINE))
    try:
        host.start_background()
        for chapter in STORY:
            told.tell(chapter.name, (DEMO_DATASET.parent / chapter.file).read_bytes())
        yield told
    finally:
        host.stop()


def _names(run: dict[str, Any]) -> list[str]:
    return [d["name"] for d in run["data"]["drops"]]


def test_every_drop_ends_as_the_story_expects(story: Story) -> None:
    """1-good PROMOTED, 2-bad HELD, 3-more PROMOTED (reasons shown when not)."""
    ended = {name: (run["state"], run.get("reason")) for name, run in story.runs.items()}
    assert {name: state for name, (state, _) in ended.items()} == {
        c.name: c.expect for c in STORY}, ended


def test_drop_1_is_the_lines_first_version_promoted_with_its_exam_score(story: Story) -> None:
    """The first version is examined (nothing to beat) and promoted, trained on drop 1."""
    run = story.runs["1-good"]
    exam = run["exam"]
    assert (exam["metric"], exam["decision"], exam["champion"]) == ("chrf", "promote", None)
    assert exam["examples"] > 0
    assert exam["candidate"] > 0
    assert _names(run) == ["1-good"]


def test_drop_2_trains_on_drops_1_and_2_and_is_held_with_both_scores(story: Story) -> None:
    """The bad drop joins the live corpus for its run, scores below the live model on the same
    exam and is held; its reason names both scores."""
    run, first = story.runs["2-bad"], story.runs["1-good"]
    exam = run["exam"]
    assert _names(run) == ["1-good", "2-bad"]
    assert exam["decision"] == "hold"
    assert exam["champion"] == pytest.approx(first["exam"]["candidate"])
    assert exam["candidate"] < exam["champion"]
    assert exam["examples"] == first["exam"]["examples"]
    reason = str(run.get("reason"))
    assert f"{exam['candidate']:.2f}" in reason, reason
    assert f"{exam['champion']:.2f}" in reason, reason


def test_drop_3_trains_on_drops_1_and_3_not_2_and_is_promoted_with_a_better_score(
    story: Story,
) -> None:
    """The held drop never joins the corpus: drop 3's run lists drops 1 and 3 only (by name and
    sha256), starts from the live version, and beats it on the same exam."""
    run, first, bad = story.runs["3-more"], story.runs["1-good"], story.runs["2-bad"]
    assert _names(run) == ["1-good", "3-more"]
    bad_sha = {d["sha256"] for d in bad["data"]["drops"] if d["name"] == "2-bad"}
    assert bad_sha
    assert bad_sha.isdisjoint(d["sha256"] for d in run["data"]["drops"])
    assert str(first.get("model_name")) in str(run["data"]["start_model"])
    exam = run["exam"]
    assert exam["decision"] == "promote"
    assert exam["champion"] == pytest.approx(first["exam"]["candidate"])
    assert exam["candidate"] > exam["champion"]


def test_drop_3s_training_file_holds_none_of_the_held_drops_answers(story: Story) -> None:
    """``prepared/<run>/train.jsonl`` of drop 3's run has drop 1's good answers and not one of
    drop 2's final answers."""
    run = story.runs["3-more"]
    settings = story.loop.settings
    ref = BlobRef(settings.prepared_container, f"{run['run_id']}/train.jsonl")
    text = b"".join(story.loop.clients.storage.read_chunks(ref)).decode()
    trained = {json.loads(line)["messages"][-1]["content"] for line in text.splitlines()}
    good = {json.loads(line)["messages"][-1]["content"]
            for line in (DEMO_DATASET.parent / STORY[0].file).read_text().splitlines()}
    bad = {json.loads(line)["messages"][-1]["content"]
           for line in (DEMO_DATASET.parent / STORY[1].file).read_text().splitlines()}
    assert trained & good
    assert not trained & bad


def test_the_line_serves_drop_3s_version(story: Story) -> None:
    """The promoted v02 (drop 3's run) is live and answers with its key."""
    live = [r for r in story.status() if r["state"] == RunState.PROMOTED.value]
    assert [r["run_id"] for r in live] == [story.runs["3-more"]["run_id"]]
    rec = story.loop.clients.ledger.get(LINE, live[0]["run_id"])
    url, key = story.loop.scoring(rec)
    code, body, _ = post(url, CHAT, key)
    assert code == 200
    assert str(body["output"]).strip()


def test_the_exam_chart_of_the_line_is_written(story: Story) -> None:
    """The exam report's chart of the line (history.png) is in the reports container."""
    from shared.release.exam_report import exam_report_refs

    ref = exam_report_refs(story.loop.settings, LINE,
                           story.runs["3-more"]["run_id"]).history_chart
    head = b"".join(story.loop.clients.storage.read_chunks(ref))[:8]
    assert head == b"\x89PNG\r\n\x1a\n"
