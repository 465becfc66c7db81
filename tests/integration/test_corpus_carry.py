"""The line's corpus is carried at promotion, and a long drop list leaves the ledger column
(issue 11 §1 follow-up), on Azurite with the FakePlatform and the real release.

Drops 2 and 3 in flight together each train on the live corpus of their arrival ({1, 2} and
{1, 3}); once both are promoted the line's corpus is {1, 2, 3}: the next drop trains on all
three, the sampled exam draws from all three and a retraction retrains on what is left."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cli.commands import status as status_command
from shared.clients import Clients
from shared.corpus import (
    INLINE_CHARS,
    DropData,
    RunData,
    carry_line_corpus,
    data_column,
    drop_refs,
    hydrated,
    line_drops,
    record_retraction,
    resolve_corpus,
)
from shared.errors import TransientError
from shared.ingest import Ingest, Outcome
from shared.ledger import IN_RELEASE, RunRecord, RunState
from shared.release import ReleaseContext, handle_job_event, reconcile
from shared.release.exam import exam_set
from shared.release.promote import promote
from shared.retract import Retraction, corpus_shas
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform
from tests.integration.conftest import with_settings
from tests.integration.test_ingest_resume import Clock, SimplePlanner
from tests.integration.test_release import completed

pytestmark = pytest.mark.integration

LINE = "chat"  # the line test_release's job events name


def chat(q: int, topic: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"{topic} question {q}?"},
                         {"role": "assistant", "content": f"{topic} answer {q}."}]}


class Story:
    """One line: drops through the real ingest, releases through the real release (auto
    promotion: the exam has its own test below), all on Azurite and one FakePlatform."""

    def __init__(self, clients: Clients, ctx: ReleaseContext, fake: FakePlatform) -> None:
        self.clients, self.fake = clients, fake
        self.ctx = with_settings(ctx, promotion="auto")
        self.ingest = Ingest(
            settings=clients.settings, storage=clients.storage, ledger=clients.ledger,
            platform=fake, planner=SimplePlanner(clients.settings), clock=Clock(),
        )

    def drop(self, name: str, topic: str, n: int = 20) -> RunRecord:
        s = self.clients.settings
        rows = [chat(q, topic) for q in range(n)]
        body = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
        self.clients.storage.write_bytes(BlobRef(s.incoming_container, f"{LINE}/{name}.jsonl"),
                                         body)
        result = self.ingest.handle(s.incoming_container, f"{LINE}/{name}.jsonl")
        assert result.outcome is Outcome.SUBMITTED, result
        return self.run(name)

    def run(self, name: str) -> RunRecord:
        (rec,) = [r for r in self.clients.ledger.list(line=LINE) if r.get("name") == name]
        return rec

    def release(self, name: str) -> RunRecord:
        run_id = self.run(name).run_id
        self.fake.set_job(run_id, "Completed", metrics={"eval_loss": 0.5},
                          tags={"tuneloop_run": run_id})
        handle_job_event(self.ctx, completed(run_id))
        for _ in range(10):
            if not self.clients.ledger.list(states=IN_RELEASE):
                break
            reconcile(self.ctx)
        rec = self.clients.ledger.get(LINE, run_id)
        assert rec.state is RunState.PROMOTED, (rec.state, rec.reason)
        return rec

    def names(self, rec: RunRecord) -> list[str]:
        data = RunData.from_record(rec, self.clients.storage)
        assert data is not None
        return [d.name for d in data.drops]

    def train_topics(self, rec: RunRecord) -> set[str]:
        ref = BlobRef(self.clients.settings.prepared_container, f"{rec.run_id}/train.jsonl")
        text = b"".join(self.clients.storage.read_chunks(ref)).decode()
        return {json.loads(x)["messages"][0]["content"].split()[0] for x in text.splitlines()}


@pytest.fixture
def story(clients: Clients, ctx: ReleaseContext, fake: FakePlatform) -> Story:
    """v01 live on drop "one"; drops "two" and "three" arrived while it was live (each run's
    corpus resolved then: {one, two} and {one, three}); "two" promoted, then "three"."""
    st = Story(clients, ctx, fake)
    st.drop("one", "alpha")
    st.release("one")
    st.drop("two", "beta")
    st.drop("three", "gamma")
    st.release("two")
    st.release("three")
    return st


def test_a_drop_promoted_while_another_run_was_in_flight_stays_in_the_line_corpus(
    story: Story,
) -> None:
    """Run 3 (planned on {1, 3} while run 2 was in flight) promoted after run 2: the next drop
    trains on 1, 2, 3 and itself; run 3's data.drops still says exactly what it trained on."""
    three = story.run("three")
    assert story.names(three) == ["one", "three"]  # what run 3 trained on, unchanged
    assert [d.name for d in line_drops(story.clients.storage, three)] == ["one", "two", "three"]
    assert three.get("line_corpus")["of"] == story.run("two").run_id

    four = story.drop("four", "delta")
    assert story.names(four) == ["one", "two", "three", "four"]
    assert story.train_topics(four) == {"alpha", "beta", "gamma", "delta"}


def test_the_sampled_exam_is_drawn_from_the_line_corpus(story: Story) -> None:
    """The drops behind the live model are its line corpus: the exam samples drop 2's
    evaluation side too, although the live run did not train on it."""
    four = story.drop("four", "delta")
    ctx = with_settings(story.ctx, exam_examples=1000)
    exam = exam_set(ctx, four, story.run("three"))
    topics = {q.prompt[-1]["content"].split()[0] for q in exam.questions}
    assert topics == {"alpha", "beta", "gamma"}


def test_a_retraction_retrains_on_the_line_corpus_and_a_carried_drop_can_be_retracted(
    story: Story,
) -> None:
    """Retracting drop 3 (the live model learned it) retrains on the line corpus left: 1 and
    the carried 2; retracting the carried drop 2 (the live model never learned it) retrains
    nothing, and 2 leaves every later corpus."""
    c = story.clients
    retraction = Retraction(settings=c.settings, storage=c.storage, ledger=c.ledger,
                            platform=story.fake, planner=SimplePlanner(c.settings),
                            clock=lambda: datetime(2026, 12, 2, tzinfo=UTC))
    three = retraction.retract(LINE, "three", by="test")
    assert three.retrain is not None
    assert story.names(three.retrain) == ["one", "two"]
    assert story.train_topics(three.retrain) == {"alpha", "beta"}

    two = retraction.retract(LINE, "two", by="test")
    assert two.retrain is None
    assert any("was not trained on it" in n for n in two.notes)
    assert story.names(story.drop("four", "delta")) == ["one", "four"]


def test_a_promotion_replayed_after_a_crash_carries_the_same_corpus_minus_a_retraction(
    story: Story, fake: FakePlatform, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A promotion cut short after the previous run was RETIRED (the PROMOTED write fails) is
    finished by a replay that still carries the previous line corpus (read from the RETIRED
    row); a drop retracted in between is left out, one retracted after it is filtered by every
    reader."""
    c, ctx = story.clients, story.ctx
    story.drop("four", "delta")
    five = story.drop("five", "epsilon")  # planned on {1, 2, 3, 5}: four is in flight
    story.release("four")
    advance, crashed = c.ledger.advance, []

    def crash_at_promoted(rec: RunRecord, state: RunState, **kw: Any) -> RunRecord:
        if state is RunState.PROMOTED and rec.run_id == five.run_id:
            monkeypatch.setattr(c.ledger, "advance", advance)  # once
            crashed.append(rec.run_id)
            raise TransientError("the host died before the PROMOTED write")
        return advance(rec, state, **kw)

    monkeypatch.setattr(c.ledger, "advance", crash_at_promoted)
    fake.set_job(five.run_id, "Completed", metrics={"eval_loss": 0.5},
                 tags={"tuneloop_run": five.run_id})
    for i in range(10):
        with contextlib.suppress(TransientError):
            handle_job_event(ctx, completed(five.run_id)) if i == 0 else reconcile(ctx)
        if crashed:
            break
    assert crashed
    rec = c.ledger.get(LINE, five.run_id)
    assert rec.state is RunState.DEPLOYED
    assert rec.release.promoting
    previous = c.ledger.get(LINE, str(rec.release.previous_run))
    assert previous.get("name") == "four"
    assert previous.state is RunState.RETIRED
    rec = promote(ctx, rec)  # the replay
    assert rec.state is RunState.PROMOTED
    names = [d.name for d in line_drops(c.storage, rec)]
    assert names == ["one", "two", "three", "four", "five"]  # four carried

    # The same crash again on a copy of the world, with drop four retracted in between: the
    # replay leaves the carried drop out (computed at the PROMOTED write, not before).
    rec = c.ledger.get(LINE, five.run_id)
    record_retraction(c.ledger, LINE, str(story.run("four").get("dataset_sha256")), name="four",
                      by="test", reason="between", now=datetime(2026, 12, 2, tzinfo=UTC))
    column = carry_line_corpus(c.storage, c.settings, c.ledger, rec)
    assert column is not None
    assert column["same"] is True
    assert column["count"] == 4
    # one retracted after the promotion: every reader filters it (and four) out
    record_retraction(c.ledger, LINE, str(story.run("one").get("dataset_sha256")), name="one",
                      by="test", reason="after", now=datetime(2026, 12, 2, tzinfo=UTC))
    assert story.names(story.drop("six", "zeta")) == ["two", "three", "five", "six"]


# -- a long-lived line: the drop list leaves the Table column -------------------------------
def _drops(n: int) -> tuple[DropData, ...]:
    return tuple(DropData(f"support-{i:04d}", f"{i:064x}", f"tl-chat-{i:012d}-aaaaaaaa", 3, 1)
                 for i in range(n))


def _write_sides(clients: Clients, drops: tuple[DropData, ...]) -> None:
    """Each drop's stored sides: one train and one eval example."""
    for d in drops:
        train, evaluation = drop_refs(clients.settings, LINE, d.sha256)
        i = int(d.sha256, 16)
        clients.storage.write_bytes(train, json.dumps(chat(i, "old")).encode() + b"\n")
        clients.storage.write_bytes(evaluation, json.dumps(chat(-1 - i, "old")).encode() + b"\n")


def test_a_line_with_a_thousand_drops_still_ingests_and_status_lists_every_drop(
    clients: Clients, fake: FakePlatform
) -> None:
    """1,000 drops behind the live model (an entity property holds ~178 of them): the next
    drop is SUBMITTED on all 1,001 (its list in prepared/<run>/data.json, the column the
    summary), and `status --json` prints every drop of it."""
    s = clients.settings
    old = _drops(1000)
    _write_sides(clients, old)
    live_id = "tl-chat-000000000999-live0000"
    data = RunData(mode="cumulative", start="base", start_model="local:tiny", drops=old,
                   train_examples=1000, eval_examples=1000)
    column = data_column(clients.storage, s, live_id, data)
    assert "drops" not in column
    assert column["drop_count"] == 1000
    assert len(json.dumps(data.to_dict())) > 2 * INLINE_CHARS  # would not fit a property
    live = clients.ledger.create(LINE, live_id, RunState.PROMOTED, name="support-0999",
                                 data=column)
    assert RunData.from_record(live, clients.storage) == data
    with pytest.raises(ValueError, match="manifest"):
        RunData.from_record(live)  # never a silently empty list

    story = Story(clients, ReleaseContext.from_clients(clients), fake)
    new = story.drop("fresh", "new")
    names = story.names(new)
    assert len(names) == 1001
    assert names[:2] == ["support-0000", "support-0001"]
    assert names[-1] == "fresh"
    stored = new.get("data")
    assert stored["drops_manifest"] == f"{s.prepared_container}/{new.run_id}/data.json"
    fresh = RunData.from_record(new, clients.storage)
    assert fresh is not None
    assert "drops" not in stored
    assert stored["train_examples"] == 1000 + fresh.drops[-1].train_examples

    out = io.StringIO()
    assert status_command.run(argparse.Namespace(line=LINE, json=True), clients=clients,
                              out=out) == 0
    runs = {r["run_id"]: r for r in json.loads(out.getvalue())}
    printed = runs[new.run_id]["data"]["drops"]
    assert [d["name"] for d in printed] == names
    assert all(d["train_examples"] == 1 for d in printed[:1000])
    out = io.StringIO()  # the table names the first and newest drops, not all 1,001
    assert status_command.run(argparse.Namespace(line=LINE, json=False), clients=clients,
                              out=out) == 0
    assert "data: support-0000, support-0001, support-0002, ... 996 more ..., support-0999, " \
        "fresh (" in out.getvalue()


def test_a_long_line_corpus_is_carried_in_a_manifest(
    clients: Clients, ctx: ReleaseContext
) -> None:
    """A line corpus too long for its column (1,000 carried drops) is written to
    prepared/<run>/line.json; readers get it back whole, oldest first."""
    s = clients.settings
    old = _drops(1000)
    prev_data = RunData("cumulative", "base", "local:tiny", old)
    prev = clients.ledger.create(LINE, "tl-chat-prev", RunState.RETIRED,
                                 data=data_column(clients.storage, s, "tl-chat-prev", prev_data))
    mine = (old[0], DropData("mine", "f" * 64, "tl-chat-mine"))
    rec = clients.ledger.create(
        LINE, "tl-chat-mine", RunState.DEPLOYED,
        data=RunData("cumulative", "base", "local:tiny", mine).to_dict(),
    )
    rec = clients.ledger.update(rec, release=rec.release.with_columns(
        {"previous_run": prev.run_id}))
    column = carry_line_corpus(clients.storage, s, clients.ledger, rec)
    assert column is not None
    assert column["manifest"] == f"{s.prepared_container}/tl-chat-mine/line.json"
    assert column["count"] == 1001
    assert "drops" not in column
    rec = clients.ledger.advance(rec, RunState.PROMOTED, line_corpus=column)
    carried = line_drops(clients.storage, rec)
    assert [d.sha256 for d in carried] == [*(d.sha256 for d in old), "f" * 64]
    corpus = resolve_corpus(clients.ledger, s, LINE, sha256="e" * 64, name="next",
                            storage=clients.storage)
    assert corpus.live_run == rec.run_id
    assert len(corpus.drops) == 1002
    assert corpus.drops[-1].name == "next"
    assert hydrated(clients.storage, prev).get("data")["drops"][999]["name"] == "support-0999"


def test_retract_reads_the_drop_lists_kept_in_manifests(
    clients: Clients, fake: FakePlatform
) -> None:
    """A live run whose 100 drops are in its manifest: retracting one of them finds that the
    live model learned it and retrains on the other 99 (their list in the retrain's own
    manifest); a reader of a raw row never mistakes it for a run of its own drop alone."""
    s = clients.settings
    old = _drops(100)
    _write_sides(clients, old)
    data = RunData("cumulative", "base", "local:tiny", old, 100, 100)
    live = clients.ledger.create(LINE, "tl-chat-live", RunState.PROMOTED, name="support-0099",
                                 dataset_sha256=old[-1].sha256,
                                 data=data_column(clients.storage, s, "tl-chat-live", data))
    assert "drops_manifest" in live.get("data")
    with pytest.raises(ValueError, match="hydrated"):
        corpus_shas(live)
    retraction = Retraction(settings=s, storage=clients.storage, ledger=clients.ledger,
                            platform=fake, planner=SimplePlanner(s),
                            clock=lambda: datetime(2026, 12, 2, tzinfo=UTC))
    result = retraction.retract(LINE, "support-0005", by="test")
    assert result.live_run == live.run_id
    assert result.retrain is not None
    assert result.retrain.state is RunState.SUBMITTED
    assert "drops_manifest" in result.retrain.get("data")
    retrained = RunData.from_record(result.retrain, clients.storage)
    assert retrained is not None
    assert [d.name for d in retrained.drops] == [d.name for d in old if d.name != "support-0005"]
    assert retrained.train_examples == 99
