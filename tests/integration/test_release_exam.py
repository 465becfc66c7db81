"""The exam gate on Azurite + FakePlatform: who answers, what decides, resuming, caching."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from shared.errors import NotPromotableError, TransientError
from shared.ledger import IN_RELEASE, RunRecord, RunState
from shared.naming import line_key
from shared.release import ReleaseContext, handle_job_event, promote_held, reconcile
from shared.release.exam import ExamSet, exam_set, parse_example, run_exam
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform
from tests.integration.conftest import with_settings
from tests.integration.test_release import chat_endpoint, completed

pytestmark = pytest.mark.integration

LINE = "chat"
RUN1 = "tl-chat-000000000001-aaaaaaaa"
RUN2 = "tl-chat-000000000002-bbbbbbbb"
RUN3 = "tl-chat-000000000003-cccccccc"
GOOD = "Open Settings, choose Account, then Reset password and follow the link we email you."
CURT = "No."


def example(i: int, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"question {i}: how do I reset it?"},
                         {"role": "assistant", "content": answer}]}


def drop(ctx: ReleaseContext, sha: str, rows: list[dict[str, Any]]) -> None:
    """A drop's stored evaluation side, as the line's corpus keeps it."""
    ctx.storage.write_bytes(
        BlobRef(ctx.settings.prepared_container, f"_drops/{line_key(LINE)}/{sha}/eval.jsonl"),
        "\n".join(json.dumps(r) for r in rows).encode(),
    )


def seed(
    ctx: ReleaseContext, fake: FakePlatform, run_id: str, drops: list[str], *,
    eval_loss: float = 0.5,
) -> None:
    """A SUBMITTED run whose corpus is ``drops`` (oldest first), with its completed job."""
    name = f"batch-{run_id[-4:]}"
    data = {"mode": "cumulative", "drops": [{"name": s, "sha256": s} for s in drops]}
    ctx.ledger.create(LINE, run_id, RunState.SUBMITTED, name=name,
                      blob=f"incoming/{LINE}/{name}.jsonl", dataset_sha256=drops[-1], data=data)
    fake.set_job(run_id, "Completed", metrics={"eval_loss": eval_loss},
                 tags={"tuneloop_run": run_id})


def release(ctx: ReleaseContext, fake: FakePlatform, run_id: str, drops: list[str],
            **kw: Any) -> RunRecord:
    seed(ctx, fake, run_id, drops, **kw)
    handle_job_event(ctx, completed(run_id))
    for _ in range(10):
        if not ctx.ledger.list(states=IN_RELEASE):
            break
        reconcile(ctx)
    return ctx.ledger.get(LINE, run_id)


def exam_calls(fake: FakePlatform) -> list[tuple[str | None, str]]:
    """(deployment, prompt) of each exam call (greedy decoding; the smoke test samples)."""
    return [
        (d, p["input_data"]["input_string"][0][-1]["content"])
        for _, d, p in fake.invocations
        if p["input_data"]["parameters"].get("do_sample") is False
    ]


@pytest.fixture
def good_line(ctx: ReleaseContext, fake: FakePlatform) -> RunRecord:
    """v01 promoted on drop "d1" (10 good eval examples); its deployment answers well."""
    drop(ctx, "d1", [example(i, GOOD) for i in range(10)])
    fake.answers["v01"] = GOOD
    rec = release(ctx, fake, RUN1, ["d1"])
    assert rec.state is RunState.PROMOTED
    return rec


def test_first_version_is_scored_on_its_own_corpus_and_promoted(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """A line's first version sits an exam of its own corpus, alone, and is promoted."""
    exam = good_line.release.exam
    assert exam is not None
    assert exam["decision"] == "promote"
    assert exam["champion"] is None
    assert exam["examples"] == 10
    assert exam["source"] == "sample"
    assert exam["candidate"] == 100.0
    assert exam["scores"]["candidate"]["exact"] == 100.0
    assert exam["calls"] == 10
    assert {d for d, _ in exam_calls(fake)} == {"v01"}
    report = ctx.storage.read_json(BlobRef(ctx.settings.reports_container,
                                           f"{LINE}/_exams/{RUN1}.json"))
    assert report["calls"] == 10
    model = fake.models[("tuneloop-chat", "1")]
    assert model.tags["tuneloop_exam_score"] == "100.00"


def test_the_curt_constant_answer_is_held_despite_its_lower_eval_loss(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """The measured failure: a model answering every question with one curt sentence had a
    far lower eval_loss on its own split (0.23 vs 1.70) and was promoted; the exam holds it,
    with both scores in the reason, and deletes its deployment; the live one keeps serving."""
    drop(ctx, "d2", [example(i, CURT) for i in range(10, 20)])
    fake.answers["v02"] = CURT
    rec = release(ctx, fake, RUN2, ["d1", "d2"], eval_loss=0.23)
    assert rec.state is RunState.HELD
    exam = rec.release.exam
    assert exam is not None
    assert exam["decision"] == "hold"
    assert exam["champion"] == 100.0
    assert exam["candidate"] < 20
    assert f"{exam['candidate']:.2f}" in (rec.reason or "")
    assert "100.00" in (rec.reason or "")
    assert "v02" not in fake.endpoints[chat_endpoint(ctx)].deployments
    assert fake.endpoints[chat_endpoint(ctx)].info.traffic == {"v01": 100}


def test_untrusted_new_data_cannot_vote_its_model_in(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """The exam is drawn from the live model's drops only: a new drop whose references are
    the bad model's own answers scores it 100 on ``own_eval``, and still it is held."""
    drop(ctx, "d2", [example(i, CURT) for i in range(10, 20)])
    fake.answers["v02"] = CURT
    rec = release(ctx, fake, RUN2, ["d1", "d2"])
    assert rec.state is RunState.HELD
    exam = rec.release.exam
    assert exam is not None
    assert exam["own_eval"]["examples"] == 10
    assert exam["own_eval"]["chrf"] == 100.0
    champion_prompts = {p for d, p in exam_calls(fake) if d == "v01"}
    assert champion_prompts == {f"question {i}: how do I reset it?" for i in range(10)}


def test_a_better_candidate_is_promoted_and_the_champion_answers_once_per_exam(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """A candidate at least as good is promoted; the live model's answers to an unchanged
    exam are cached: a second candidate against the same champion costs only its own calls."""
    drop(ctx, "d2", [example(i, CURT) for i in range(10, 12)])
    fake.answers["v02"] = CURT
    assert release(ctx, fake, RUN2, ["d1", "d2"]).state is RunState.HELD
    before = len(exam_calls(fake))
    fake.answers["v03"] = GOOD
    rec = release(ctx, fake, RUN3, ["d1", "d3"])
    assert rec.state is RunState.PROMOTED
    exam = rec.release.exam
    assert exam is not None
    assert exam["decision"] == "promote"
    new_calls = exam_calls(fake)[before:]
    assert {d for d, _ in new_calls} == {"v03"}  # v01's answers came from the cache
    assert exam["calls"] == len(new_calls) == 10


def test_a_transient_failure_mid_exam_resumes_without_asking_again(
    ctx: ReleaseContext, good_line: RunRecord, fake: FakePlatform
) -> None:
    """An exam cut short stores what was answered; the next try asks only the rest, and the
    run is never promoted in between."""
    drop(ctx, "d2", [example(i, GOOD) for i in range(10, 12)])
    seed(ctx, fake, RUN2, ["d1", "d2"])
    fake.answers["v02"] = GOOD
    flaky = FlakyAfter(fake, ok_calls=7)
    flaky_ctx = with_settings(ctx, exam_concurrency=1)
    flaky_ctx = type(ctx)(flaky_ctx.settings, ctx.ledger, flaky, ctx.storage)
    handle_job_event(flaky_ctx, completed(RUN2))
    for _ in range(10):  # the deployment takes a poll; then the exam stops on the failure
        reconcile(flaky_ctx)
        rec = ctx.ledger.get(LINE, RUN2)
        if rec.release.exam_attempts:
            break
    assert rec.state is RunState.DEPLOYED
    assert rec.release.exam_attempts == 1
    assert "503 upstream busy" in (rec.release.last_error or "")
    first = flaky.exam_calls
    flaky.broken = False
    for _ in range(5):
        if not ctx.ledger.list(states=IN_RELEASE):
            break
        reconcile(flaky_ctx)
    rec = ctx.ledger.get(LINE, RUN2)
    assert rec.state is RunState.PROMOTED
    exam = rec.release.exam
    assert exam is not None
    # 12 candidate prompts (10 exam + 2 of the new drop's own); v01's answers to the same
    # exam were kept when it sat it as the line's first version: never asked again.
    answered = [(d, p) for d, p, ok in flaky.asked if ok]
    assert len(answered) == len(set(answered)) == 12
    assert {d for d, _ in answered} == {"v02"}
    assert first > 7  # the failed tries of the first exam count too
    assert exam["calls"] == len(flaky.asked)


class FlakyAfter(FakePlatform):
    """Answers ``ok_calls`` exam calls, then every exam call fails (transiently) until fixed."""

    def __init__(self, inner: FakePlatform, ok_calls: int) -> None:
        self.__dict__.update(inner.__dict__)
        self.ok_calls = ok_calls
        self.broken = True
        self.asked: list[tuple[str | None, str, bool]] = []

    @property
    def exam_calls(self) -> int:
        return len(self.asked)

    def invoke(self, endpoint: str, payload: Mapping[str, Any], *,
               deployment: str | None = None) -> Any:
        if payload["input_data"]["parameters"].get("do_sample") is not False:
            return super().invoke(endpoint, payload, deployment=deployment)
        prompt = payload["input_data"]["input_string"][0][-1]["content"]
        ok = not self.broken or len([a for a in self.asked if a[2]]) < self.ok_calls
        self.asked.append((deployment, prompt, ok))
        if not ok:
            raise TransientError("503 upstream busy")
        return super().invoke(endpoint, payload, deployment=deployment)


def test_a_golden_exam_is_the_exam(ctx: ReleaseContext, fake: FakePlatform,
                                   good_line: RunRecord) -> None:
    """With a golden exam at incoming/<line>/_exam/, the exam is that set, whole."""
    pytest.importorskip("shared.corpus")
    rows = [example(i, GOOD) for i in range(100, 103)]
    ctx.storage.write_bytes(
        BlobRef(ctx.settings.incoming_container, f"{LINE}/_exam/golden.jsonl"),
        "\n".join(json.dumps(r) for r in rows).encode(),
    )
    got = exam_set(ctx, good_line, good_line)
    assert got.source == "golden"
    expected = ExamSet.of([q for r in rows if (q := parse_example(r)) is not None], "golden")
    assert got.questions == expected.questions


def test_a_held_candidate_is_redeployed_and_promoted_by_hand(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """`tuneloop promote` on a run the exam held (deployment deleted) deploys it again and,
    once the deployment is ready, promotes it."""
    drop(ctx, "d2", [example(i, CURT) for i in range(10, 12)])
    fake.answers["v02"] = CURT
    assert release(ctx, fake, RUN2, ["d1", "d2"]).state is RunState.HELD
    assert "v02" not in fake.endpoints[chat_endpoint(ctx)].deployments
    with pytest.raises(NotPromotableError, match="being deployed again"):
        promote_held(ctx, RUN2, line=LINE)
    assert fake.endpoints[chat_endpoint(ctx)].info.traffic.get("v01") == 100
    rec = promote_held(ctx, RUN2, line=LINE)
    assert rec.state is RunState.PROMOTED
    assert fake.endpoints[chat_endpoint(ctx)].info.traffic == {"v02": 100}
    assert ctx.ledger.get(LINE, RUN1).state is RunState.RETIRED


def test_run_exam_counts_two_calls_per_example_against_a_fresh_champion(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """An exam of n examples against a champion never examined costs 2n calls."""
    seed(ctx, fake, RUN2, ["d1"])
    run = ctx.ledger.get(LINE, RUN2)
    # a deployment for the candidate, as the release would have made it
    from dataclasses import replace

    ep = chat_endpoint(ctx)
    fake.endpoints[ep].deployments["v02"] = fake.endpoints[ep].deployments["v01"]
    run = ctx.ledger.update(run, release=replace(run.release, endpoint=ep, deployment="v02"))
    fresh = replace(good_line, run_id="tl-chat-000000000009-zzzzzzzz")
    answers = run_exam(ctx, run, fresh, sleep=lambda _: None)
    assert answers.calls == 20


def test_a_retracted_drop_leaves_the_exam(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """A drop retracted from the line no longer sets exam questions, even while its stored
    copies are still there."""
    from datetime import UTC, datetime

    from shared.corpus import record_retraction

    drop(ctx, "d9", [example(i, GOOD) for i in range(50, 60)])
    live = ctx.ledger.update(good_line, data={"drops": [{"name": "d1", "sha256": "d1"},
                                                        {"name": "d9", "sha256": "d9"}]})
    with_both = exam_set(ctx, live, live)
    assert len(with_both.questions) == 20
    record_retraction(ctx.ledger, LINE, "d9", name="d9", by="test", reason="bad data",
                      now=datetime.now(UTC))
    without = exam_set(ctx, live, live)
    assert {q.prompt[-1]["content"] for q in without.questions} == {
        f"question {i}: how do I reset it?" for i in range(10)
    }


class Slow(FakePlatform):
    """Answers like the fake, but one prompt hangs for ``delay`` seconds; another is refused."""

    def __init__(self, inner: FakePlatform, *, slow: str, refused: str, delay: float) -> None:
        self.__dict__.update(inner.__dict__)
        self.slow, self.refused, self.delay = slow, refused, delay

    def invoke(self, endpoint: str, payload: Mapping[str, Any], *,
               deployment: str | None = None) -> Any:
        import time

        from shared.errors import PlatformError

        prompt = payload["input_data"]["input_string"][0][-1]["content"]
        if prompt == self.refused:
            raise PlatformError("400 prompt too long for this model")
        if prompt == self.slow:
            time.sleep(self.delay)
        return super().invoke(endpoint, payload, deployment=deployment)


def test_an_answer_past_the_timeout_stops_the_exam_with_what_it_has_stored(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """No answer within TUNELOOP_EXAM_CALL_TIMEOUT stops the exam (TransientError) with every
    answer so far stored; a prompt refused for good is answered with no text (scored 0)."""
    from shared.release.exam import Answers, answers_ref, ask

    exam = exam_set(ctx, good_line, None)
    slow = Slow(fake, slow=exam.questions[-1].prompt[-1]["content"],
                refused=exam.questions[0].prompt[-1]["content"], delay=2.0)
    quick = type(ctx)(ctx.settings.model_copy(update={"exam_call_timeout": 0.5,
                                                      "exam_concurrency": 1}),
                      ctx.ledger, slow, ctx.storage)
    ref = answers_ref(quick, LINE, "tl-chat-timeout", exam.digest)
    book = Answers.load(quick, ref, "v01")
    with pytest.raises(TransientError, match=r"no answer within 0\.5 s"):
        ask(quick, chat_endpoint(ctx), [(book, exam.questions)], tally=book,
            sleep=lambda _: None)
    stored = Answers.load(quick, ref, "v01")
    assert len(stored.answers) == len(exam.questions) - 1
    assert stored.answers[exam.questions[0].key] == ""
    assert stored.answers[exam.questions[1].key] == GOOD


def test_a_golden_exam_of_empty_references_is_no_exam(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Golden examples whose reference is empty are left out with a warning (every answer
    scores 0 against them, so the gate would promote any candidate); a golden exam left with
    none falls back to the sample of the line's trusted evaluation side."""
    blank = [example(i, "") for i in range(100, 103)]
    ctx.storage.write_bytes(
        BlobRef(ctx.settings.incoming_container, f"{LINE}/_exam/blank.jsonl"),
        "\n".join(json.dumps(r) for r in blank).encode(),
    )
    with caplog.at_level("WARNING"):
        got = exam_set(ctx, good_line, good_line)
    assert got.source == "sample"
    assert got.questions
    assert all(q.reference == GOOD for q in got.questions)
    assert "reference answer is empty" in caplog.text
    mixed = [*blank, example(104, GOOD)]
    ctx.storage.write_bytes(
        BlobRef(ctx.settings.incoming_container, f"{LINE}/_exam/blank.jsonl"),
        "\n".join(json.dumps(r) for r in mixed).encode(),
    )
    got = exam_set(ctx, good_line, good_line)
    assert got.source == "golden"
    assert [q.reference for q in got.questions] == [GOOD]


class _Crash(BaseException):
    """The worker dies here (nothing in the release catches it)."""


class _CrashBeforeHeld:
    """The ledger of a worker that dies right before it writes HELD (once)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    def advance(self, run: RunRecord, state: RunState, **kw: Any) -> RunRecord:
        if state is RunState.HELD and not self.crashed:
            self.crashed = True
            raise _Crash
        return self.ledger.advance(run, state, **kw)


def test_a_worker_dying_after_the_exam_holds_still_ends_held_with_both_scores(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """The exam holds a candidate and deletes its deployment; the worker dies before HELD is
    written. The next try ends the run HELD with the exam's verdict and both scores, asking
    the endpoint nothing again (not a smoke test of the deployment the hold deleted)."""
    from dataclasses import replace

    drop(ctx, "d2", [example(i, CURT) for i in range(10, 20)])
    fake.answers["v02"] = CURT
    seed(ctx, fake, RUN2, ["d1", "d2"], eval_loss=0.23)
    dying = replace(ctx, ledger=_CrashBeforeHeld(ctx.ledger))  # type: ignore[arg-type]
    with pytest.raises(_Crash):  # noqa: PT012 - the job event and the reconciler's tries
        handle_job_event(dying, completed(RUN2))
        for _ in range(10):
            reconcile(dying)
    assert "v02" not in fake.endpoints[chat_endpoint(ctx)].deployments
    assert ctx.ledger.get(LINE, RUN2).state is RunState.DEPLOYED
    calls = len(fake.invocations)
    for _ in range(5):
        reconcile(ctx)
    rec = ctx.ledger.get(LINE, RUN2)
    assert rec.state is RunState.HELD
    assert rec.release.exam is not None
    assert rec.release.exam["decision"] == "hold"
    assert "100.00" in (rec.reason or "")
    assert (rec.reason or "").startswith("exam:")
    assert len(fake.invocations) == calls
    assert fake.endpoints[chat_endpoint(ctx)].info.traffic == {"v01": 100}


def test_an_answer_with_a_broken_surrogate_still_gets_its_exam_report(
    ctx: ReleaseContext, fake: FakePlatform, good_line: RunRecord
) -> None:
    """An endpoint answer that decodes to a lone UTF-16 surrogate (a JSON "\\ud83d": half an
    emoji cut at the token limit) is no valid Unicode; it is stored and reported with U+FFFD
    in its place, so the exam's Markdown report is written (it could not be encoded)."""
    drop(ctx, "d2", [example(i, GOOD) for i in range(10, 12)])
    fake.answers["v02"] = GOOD + " \ud83d"
    rec = release(ctx, fake, RUN2, ["d1", "d2"])
    assert rec.release.exam is not None
    md = b"".join(ctx.storage.read_chunks(BlobRef(
        ctx.settings.reports_container, f"{LINE}/_exams/{RUN2}.md"))).decode("utf-8")
    assert "\ufffd" in md
    assert "\ud83d" not in md
