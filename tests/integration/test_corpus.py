"""The line's corpus on Azurite (issue 11 §1): a run trains on the live run's drops + the new
drop, deduplicated, without held drops, retracted drops or golden-exam prompts, optionally
capped; the run records what it trained on; the same corpus is the same run."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clients import Clients
from shared.corpus import (
    Corpus,
    DropData,
    RunData,
    assemble,
    build_run_files,
    drop_refs,
    read_golden_exam,
    record_retraction,
    resolve_corpus,
    retracted,
    retractions,
    retrain_corpus,
)
from shared.dataset import prompt_digest, prompt_of, split_to
from shared.ingest import Ingest, Outcome
from shared.ledger import RunRecord, RunState
from shared.platform.port import ModelVersionInfo
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform
from tests.integration.test_ingest_resume import Clock, SimplePlanner

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def chat(q: int, answer: str = "good") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"What is {q} + 1?"},
                         {"role": "assistant", "content": f"{answer}: {q + 1}."}]}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def lines(clients: Clients, ref: BlobRef) -> list[dict[str, Any]]:
    data = b"".join(clients.storage.read_chunks(ref))
    return [json.loads(x) for x in data.splitlines() if x]


def prompts(rows: list[dict[str, Any]]) -> set[str]:
    return {json.dumps(prompt_of(r["messages"])[0]) for r in rows}


class Line:
    """One line's ingest over Azurite with a fake platform; drops and outcomes by name."""

    def __init__(self, clients: Clients, line: str = "support") -> None:
        self.clients, self.line = clients, line
        self.platform = FakePlatform()
        self.ingest = Ingest(
            settings=clients.settings, storage=clients.storage, ledger=clients.ledger,
            platform=self.platform, planner=SimplePlanner(clients.settings), clock=Clock(),
        )

    def drop(self, name: str, rows: list[dict[str, Any]]) -> Outcome:
        s = self.clients.settings
        self.clients.storage.write_bytes(BlobRef(s.incoming_container, f"{self.line}/{name}.jsonl"),
                                         jsonl(rows))
        return self.ingest.handle(s.incoming_container, f"{self.line}/{name}.jsonl").outcome

    def run(self, name: str) -> RunRecord:
        (rec,) = [r for r in self.clients.ledger.list(line=self.line) if r.get("name") == name]
        return rec

    def data(self, name: str) -> RunData:
        data = RunData.from_record(self.run(name))
        assert data is not None
        return data

    def promote(self, name: str, *, model: ModelVersionInfo | None = None) -> None:
        rec = self.run(name)
        release = rec.release
        if model is not None:
            release = replace(release, model_name=model.name, model_version=model.version,
                              model_id=model.id, promoted_at=datetime.now(UTC))
        self.clients.ledger.advance(rec, RunState.PROMOTED, release=release)

    def hold(self, name: str) -> None:
        rec = self.clients.ledger.advance(self.run(name), RunState.TRAINED)
        self.clients.ledger.advance(rec, RunState.HELD, reason="exam: worse than live")

    def train_file(self, name: str) -> list[dict[str, Any]]:
        rec = self.run(name)
        return lines(self.clients, BlobRef(self.clients.settings.prepared_container,
                                           f"{rec.run_id}/train.jsonl"))

    def validation_file(self, name: str) -> list[dict[str, Any]]:
        rec = self.run(name)
        return lines(self.clients, BlobRef(self.clients.settings.prepared_container,
                                           f"{rec.run_id}/validation.jsonl"))


@pytest.fixture
def line(clients: Clients) -> Line:
    return Line(clients)


def test_a_run_trains_on_the_live_drops_and_the_new_one_each_example_once(line: Line) -> None:
    """Cumulative: drop 2's run trains on drop 1 (live) + drop 2, oldest first; examples in
    both are counted as cross-drop duplicates, not repeated; data says what came from where."""
    first = [chat(q) for q in range(30)]
    second = [chat(q) for q in range(20, 50)]  # 20..29 again, same answers
    assert line.drop("one", first) is Outcome.SUBMITTED
    line.promote("one")
    assert line.drop("two", second) is Outcome.SUBMITTED

    one, two = line.data("one"), line.data("two")
    assert [d.name for d in two.drops] == ["one", "two"]
    assert [d.run_id for d in two.drops] == [line.run("one").run_id, line.run("two").run_id]
    assert two.drops[0].train_examples == one.train_examples
    train = line.train_file("two")
    assert len(train) == two.train_examples == sum(d.train_examples for d in two.drops)
    assert len({json.dumps(r) for r in train}) == len(train)  # each example once
    assert prompts(train) | prompts(line.validation_file("two")) == prompts(first + second)
    assert two.cross_drop_duplicates == 10
    assert two.mode == "cumulative"
    assert two.start == "base"
    assert two.start_model == "local:tiny"
    assert line.run("two").get("split")["train_examples"] == two.train_examples
    # the plan's corpus: the run id differs from drop 2 alone
    assert line.platform.plans[line.run("two").run_id].fingerprint != "f" * 8


def test_a_held_drop_never_joins_a_later_corpus(line: Line) -> None:
    """Drop 2's run was HELD: drop 3 trains on drops 1 and 3, not 2."""
    line.drop("one", [chat(q) for q in range(20)])
    line.promote("one")
    line.drop("two", [chat(q, "bad") for q in range(20)])
    line.hold("two")
    line.drop("three", [chat(q) for q in range(40, 60)])
    three = line.data("three")
    assert [d.name for d in three.drops] == ["one", "three"]
    assert not any("bad" in json.dumps(r) for r in line.train_file("three"))


def test_latest_mode_trains_on_the_new_drop_only(clients: Clients) -> None:
    """TUNELOOP_LINE_POLICY {"support": {"data": "latest"}}: the live drops do not join."""
    s = clients.settings.model_copy(update={"line_policy": {"support": {"data": "latest"}}})
    local = Clients(s)
    line = Line(local)
    line.drop("one", [chat(q) for q in range(20)])
    line.promote("one")
    line.drop("two", [chat(q) for q in range(40, 60)])
    two = line.data("two")
    assert [d.name for d in two.drops] == ["two"]
    assert two.mode == "latest"


def test_a_drop_already_in_the_corpus_is_a_duplicate_of_the_run_that_brought_it(
    line: Line,
) -> None:
    """The live corpus's drop 1 dropped again (another name, after drop 2) is a DUPLICATE of
    drop 1's run; nothing is submitted."""
    rows = [chat(q) for q in range(20)]
    line.drop("one", rows)
    line.promote("one")
    line.drop("two", [chat(q) for q in range(40, 60)])
    line.promote("two")
    submitted = line.platform.calls["submit_finetune"]
    assert line.drop("one-again", rows) is Outcome.DUPLICATE
    assert line.run("one-again").get("duplicate_of") == line.run("one").run_id
    assert line.platform.calls["submit_finetune"] == submitted


def test_a_retracted_drop_leaves_the_corpus_and_does_not_train_again(line: Line) -> None:
    """After drop 1 is retracted, drop 2 trains without it; re-dropping drop 1 FAILS with
    `retracted`. Recording the retraction twice records it once."""
    rows = [chat(q) for q in range(20)]
    line.drop("one", rows)
    line.promote("one")
    sha = line.run("one").get("dataset_sha256")
    ledger = line.clients.ledger
    assert record_retraction(ledger, "support", sha, name="one", by="ops", reason="PII", now=NOW)
    assert not record_retraction(ledger, "support", sha, name="one", by="ops", reason="x",
                                 now=NOW)
    assert retracted(ledger, "support") == {sha}
    assert [e["reason"] for e in retractions(ledger, "support")] == ["PII"]
    assert retracted(ledger, "other") == set()

    line.drop("two", [chat(q) for q in range(40, 60)])
    assert [d.name for d in line.data("two").drops] == ["two"]
    assert line.drop("one-again", rows) is Outcome.FAILED
    assert (line.run("one-again").reason or "").startswith("retracted: ")


def test_golden_exam_files_are_reported_never_trained_and_their_prompts_are_left_out(
    line: Line,
) -> None:
    """incoming/<line>/_exam/*.jsonl: validated and reported, left in place, no run; a drop's
    examples whose prompt is in the exam are left out of training (counted)."""
    clients = line.clients
    exam_rows = [chat(q, "reference") for q in range(5)]
    assert line.drop("_exam/golden", exam_rows) is Outcome.EXAM
    assert clients.ledger.list(line="support") == []
    incoming = clients.settings.incoming_container
    assert clients.storage.exists(BlobRef(incoming, "support/_exam/golden.jsonl"))
    report = clients.storage.read_json(
        BlobRef(clients.settings.reports_container, "support/_exam/golden/validation.json"))
    assert report["valid"] is True
    assert report["ingest"] == {"outcome": "exam"}
    exam = read_golden_exam(clients.storage, clients.settings, "support")
    assert exam is not None
    assert len(exam.examples) == 5
    assert {e.reference for e in exam.examples} == {f"reference: {q + 1}." for q in range(5)}

    line.drop("one", [chat(q) for q in range(40)])  # questions 0-4 are exam questions
    one = line.data("one")
    exam_prompts = {json.dumps(e.prompt) for e in exam.examples}
    trained = prompts(line.train_file("one"))
    assert not trained & exam_prompts
    drop_train, _ = drop_refs(clients.settings, "support", line.run("one").get("dataset_sha256"))
    in_side = prompts(lines(clients, drop_train)) & exam_prompts
    assert one.exam_excluded == len(in_side)


def test_an_invalid_exam_file_is_quarantined(line: Line) -> None:
    """An invalid golden exam is rejected and moved like any invalid drop; no exam is read."""
    clients = line.clients
    settings = clients.settings
    clients.storage.write_bytes(BlobRef(settings.incoming_container, "support/_exam/bad.jsonl"),
                                b'{"messages": []}\n')
    result = line.ingest.handle(settings.incoming_container, "support/_exam/bad.jsonl")
    assert result.outcome is Outcome.REJECTED
    assert clients.storage.exists(BlobRef(settings.rejected_container, "support/_exam/bad.jsonl"))
    assert read_golden_exam(clients.storage, settings, "support") is None


def test_the_cap_keeps_the_newest_drop_whole_and_samples_older_ones(clients: Clients) -> None:
    """max_train_examples 30: the newest drop (20) whole, 10 of drop 1's examples; reported;
    the same corpus assembles the same bytes again."""
    s = clients.settings.model_copy(update={"line_max_train_examples": 30,
                                            "validation_fraction": 0.0})
    line = Line(Clients(s))
    line.drop("one", [chat(q) for q in range(40)])
    line.promote("one")
    newest = [chat(q) for q in range(100, 120)]
    line.drop("two", newest)
    two = line.data("two")
    assert two.train_examples == 30
    assert [d.train_examples for d in two.drops] == [10, 20]
    assert two.capped is not None
    assert (two.capped.cap, two.capped.dropped) == (30, 30)
    train = line.train_file("two")
    assert prompts(newest) <= prompts(train)
    assert two.eval_examples == 0
    # deterministic: assembling the same corpus again writes the same file
    corpus = resolve_corpus(line.clients.ledger, s, "support",
                            sha256=line.run("two").get("dataset_sha256"), name="two")
    again = BlobRef(s.prepared_container, "again/train.jsonl")
    data, sha, _ = assemble(line.clients.storage, s, corpus, train=again,
                            validation=BlobRef(s.prepared_container, "again/validation.jsonl"))
    assert sha == line.run("two").get("split")["train_sha256"]
    assert data.capped == two.capped


def test_an_empty_validation_side_submits_without_a_validation_file(clients: Clients) -> None:
    """validation_fraction 0: the run's validation file is empty and the plan submitted has
    validation_blob "" (the adapters leave the input out)."""
    line = Line(Clients(clients.settings.model_copy(update={"validation_fraction": 0.0})))
    assert line.drop("one", [chat(q) for q in range(15)]) is Outcome.SUBMITTED
    assert line.data("one").eval_examples == 0
    plan = line.platform.plans[line.run("one").run_id]
    assert plan.validation_blob == ""
    assert plan.train_blob == f"{line.run('one').run_id}/train.jsonl"


def test_start_live_plans_from_the_live_model_version(clients: Clients) -> None:
    """TUNELOOP_LINE_START=live: drop 2 starts from the live run's registered model, and the
    run records it."""
    line = Line(Clients(clients.settings.model_copy(update={"line_start": "live"})))
    line.drop("one", [chat(q) for q in range(20)])
    model = line.platform.register_model("tl-support", "1", job_name="x", tags={})
    line.promote("one", model=model)
    assert line.drop("two", [chat(q) for q in range(40, 60)]) is Outcome.SUBMITTED
    plan = line.platform.plans[line.run("two").run_id]
    assert plan.start_model is not None
    assert (plan.start_model.name, plan.start_model.version) == ("tl-support", "1")
    assert line.data("two").start == "live"
    assert line.data("two").start_model == plan.start_model.id
    assert line.data("one").start_model == "local:tiny"


def test_the_validation_report_says_what_the_run_trained_on(line: Line) -> None:
    """validation.json carries data; validation.md a "Trained on" table of the drops."""
    line.drop("one", [chat(q) for q in range(20)])
    line.promote("one")
    line.drop("two", [chat(q) for q in range(10, 30)])
    reports = line.clients.settings.reports_container
    doc = line.clients.storage.read_json(BlobRef(reports, "support/two/validation.json"))
    assert doc["data"] == line.run("two").get("data")
    md = b"".join(line.clients.storage.read_chunks(
        BlobRef(reports, "support/two/validation.md"))).decode()
    assert "## Trained on" in md
    assert "| one |" in md
    assert "| two |" in md
    assert f"cross-drop duplicates (counted once): {line.data('two').cross_drop_duplicates}" in md


def test_a_retrain_builds_the_live_corpus_without_the_retracted_drop(line: Line) -> None:
    """retrain_corpus + build_run_files (what `tuneloop retract` uses): the live drops minus the
    retracted one, written as the retrain run's files."""
    line.drop("one", [chat(q) for q in range(20)])
    line.promote("one")
    line.drop("two", [chat(q) for q in range(40, 60)])
    line.promote("two")
    clients = line.clients
    sha = line.run("one").get("dataset_sha256")
    record_retraction(clients.ledger, "support", sha, name="one", by="t", reason="r", now=NOW)
    corpus = retrain_corpus(clients.ledger, clients.settings, "support")
    assert [d.name for d in corpus.drops] == ["two"]
    data = build_run_files(clients.storage, clients.settings, corpus, run_id="tl-retrain",
                           base_model_id="local:tiny")
    assert [d.run_id for d in data.drops] == [line.run("two").run_id]
    train = lines(clients, BlobRef(clients.settings.prepared_container,
                                   "tl-retrain/train.jsonl"))
    assert len(train) == data.train_examples == line.data("two").drops[-1].train_examples
    assert data.start_model == "local:tiny"


# -- the leakage property over the real files -------------------------------------------------
_drops = st.lists(
    st.tuples(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=25),
              st.sampled_from(["good", "bad", "curt"])),
    min_size=1, max_size=4,
)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drops=_drops, fraction=st.sampled_from([0.1, 0.3, 0.5]))
def test_no_eval_prompt_of_any_drop_is_in_any_training_file_of_the_line(
    clients: Clients, drops: list[tuple[list[int], str]], fraction: float
) -> None:
    """Leakage property (issue 11): a line's drops ask the same questions with other answers;
    each drop is split into its sides and every run's files are assembled from the growing
    corpus on Azurite. No prompt on the eval side of any drop is in any run's train file."""
    s = clients.settings.model_copy(update={"validation_fraction": fraction})
    line = f"prop-{uuid.uuid4().hex[:8]}"
    eval_prompts: set[bytes] = set()
    trained: set[bytes] = set()
    corpus_drops: list[tuple[str, str]] = []
    for n, (questions, style) in enumerate(drops):
        data = jsonl([chat(q, style) for q in questions])
        sha = hashlib.sha256(data).hexdigest()
        train_ref, eval_ref = drop_refs(s, line, sha)
        train_w, eval_w = clients.storage.open_writer(train_ref), clients.storage.open_writer(
            eval_ref)
        split_to([data], train_w.write, eval_w.write, validation_fraction=fraction,
                 max_line_bytes=1 << 20)
        train_w.commit()
        eval_w.commit()
        eval_prompts |= {prompt_digest(prompt_of(r["messages"])[0])
                         for r in lines(clients, eval_ref)}
        corpus_drops.append((f"d{n}", sha))
        corpus = Corpus(line, "cumulative", "base",
                        tuple(DropData(name, sha, f"run{i}")
                              for i, (name, sha) in enumerate(corpus_drops)))
        run_train = BlobRef(s.prepared_container, f"{line}-run{n}/train.jsonl")
        assemble(clients.storage, s, corpus, train=run_train,
                 validation=BlobRef(s.prepared_container, f"{line}-run{n}/validation.jsonl"))
        trained |= {prompt_digest(prompt_of(r["messages"])[0])
                    for r in lines(clients, run_train)}
    assert not eval_prompts & trained


def test_a_resumed_ingest_keeps_the_corpus_its_run_recorded(line: Line) -> None:
    """A handler dies after ACCEPTED; meanwhile another drop is promoted (the live corpus
    changes). The resumed handler submits the run it accepted, on the corpus it recorded:
    no superseded run, one job."""
    from datetime import timedelta

    from shared.ingest import LEASE
    from tests.integration.test_ingest_resume import Crash

    line.drop("one", [chat(q) for q in range(20)])
    line.promote("one")
    line.platform.fail_once("submit_finetune", Crash())
    with pytest.raises(Crash):
        line.drop("two", [chat(q) for q in range(40, 60)])
    accepted = line.run("two")
    assert accepted.state is RunState.ACCEPTED
    line.drop("three", [chat(q) for q in range(70, 90)])
    line.promote("three")

    clock = line.ingest.clock
    assert isinstance(clock, Clock)
    clock.now += LEASE + timedelta(seconds=1)
    (result,) = line.ingest.resume_stale()
    assert result.outcome is Outcome.SUBMITTED
    assert result.run_id == accepted.run_id
    assert [d.name for d in line.data("two").drops] == ["one", "two"]
    assert accepted.run_id in line.platform.plans
    assert not [r for r in line.clients.ledger.list(line="support")
                if r.state is RunState.FAILED]
