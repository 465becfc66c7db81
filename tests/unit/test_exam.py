"""The exam gate's pure parts: the decision rule, sacrebleu scores, the deterministic sample."""

from __future__ import annotations

import logging

import pytest

from shared.release.exam import (
    ExamQuestion,
    ExamSet,
    corpus_scores,
    lowest,
    parse_example,
    sentence_scores,
)
from shared.release.gate import decide_exam, decide_promotion, uses_exam
from shared.settings import Settings, release_warnings


@pytest.mark.parametrize(
    ("candidate", "champion", "has_live", "tol", "floor", "promote"),
    [
        (60.0, 55.0, True, 0.0, None, True),     # better
        (55.0, 55.0, True, 0.0, None, True),     # equal
        (53.0, 55.0, True, 2.0, None, True),     # worse within the tolerance
        (52.9, 55.0, True, 2.0, None, False),    # worse beyond the tolerance
        (60.0, 55.0, True, 0.0, 70.0, False),    # better, but under the minimum score
        (10.0, None, False, 0.0, None, True),    # first version: scored and promoted
        (10.0, None, False, 0.0, 20.0, False),   # first version under the minimum score
        (60.0, None, True, 0.0, None, False),    # live model without a score: fails closed
        (None, None, True, 0.0, None, False),    # no exam examples behind a live model
        (None, None, False, 0.0, None, True),    # a first version with nothing to examine
    ],
)
def test_exam_decision(
    candidate: float | None, champion: float | None, has_live: bool, tol: float,
    floor: float | None, promote: bool,
) -> None:
    """Promote when candidate >= champion - tolerance and >= the minimum; else hold."""
    d = decide_exam(metric="chrf", candidate=candidate, champion=champion, has_live=has_live,
                    tolerance=tol, min_score=floor)
    assert d.promote is promote
    assert not d.keep_deployment
    assert d.reason.startswith("exam:")


def test_a_held_candidate_s_reason_has_both_scores() -> None:
    """The hold reason names the metric and both scores."""
    d = decide_exam(metric="chrf", candidate=12.345, champion=61.2, has_live=True, tolerance=0)
    assert "chrF 12.35" in d.reason
    assert "61.20" in d.reason


def test_gate_is_a_deprecated_alias_of_exam() -> None:
    """TUNELOOP_PROMOTION=gate still parses, examines like exam, and says it is deprecated."""
    settings = Settings(promotion="gate")
    assert uses_exam(settings.promotion)
    assert uses_exam("exam")
    assert not uses_exam("auto")
    assert not uses_exam("manual")
    assert "deprecated" in release_warnings(settings)[0]
    with pytest.raises(ValueError, match="decide_exam"):
        decide_promotion("gate")


def test_exam_is_the_default_and_auto_warns(caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The default promotion is exam (no warning); choosing auto is logged once at start."""
    from shared.settings import load_settings

    monkeypatch.delenv("TUNELOOP_PROMOTION", raising=False)
    assert Settings().promotion == "exam"
    assert release_warnings(Settings()) == []
    monkeypatch.setenv("TUNELOOP_PROMOTION", "auto")
    load_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="shared.settings"):
            load_settings()
            load_settings()
    finally:
        load_settings.cache_clear()
    warned = [r for r in caplog.records if "TUNELOOP_PROMOTION=auto" in r.getMessage()]
    assert len(warned) == 1


def test_scores_are_sacrebleu_s_on_a_0_to_100_scale() -> None:
    """chrF and BLEU are sacrebleu's corpus scores; exact match ignores spacing only."""
    refs = ["The cat sits on the mat.", "Bonjour le monde"]
    assert corpus_scores(refs, refs) == {"chrf": 100.0, "bleu": 100.0, "exact": 100.0}
    got = corpus_scores(["The  cat sits on the mat.", "Salut"], refs)
    assert got["exact"] == 50.0
    assert 0 < got["chrf"] < 100
    assert 0 < got["bleu"] < 100
    assert corpus_scores(["", ""], refs) == {"chrf": 0.0, "bleu": 0.0, "exact": 0.0}
    with pytest.raises(ValueError, match="no answers"):
        corpus_scores([], [])


def test_the_curt_constant_answer_scores_below_the_good_answers() -> None:
    """The measured failure of the eval_loss gate: one curt refusal for every question (its
    eval_loss was 0.23 against the good model's 1.70) scores far below good answers on chrF."""
    refs = [
        "Open Settings, choose Account, then Reset password and follow the email link.",
        "Invoices are under Billing > History; each one downloads as a PDF.",
        "Yes: the Pro plan includes up to 10 team members at no extra cost.",
    ]
    good = [
        "Go to Settings > Account and pick Reset password; a link arrives by email.",
        "You find invoices in Billing > History, where each downloads as PDF.",
        "Yes, Pro includes up to 10 team members without extra cost.",
    ]
    curt = ["I cannot help with that."] * 3
    assert corpus_scores(good, refs)["chrf"] > corpus_scores(curt, refs)["chrf"] + 20
    d = decide_exam(metric="chrf", candidate=corpus_scores(curt, refs)["chrf"],
                    champion=corpus_scores(good, refs)["chrf"], has_live=True, tolerance=0)
    assert not d.promote


def test_sentence_scores() -> None:
    """Per-example scores (for the report's largest differences) use the same metrics."""
    assert sentence_scores("same answer", "same answer") == {
        "chrf": 100.0, "bleu": 100.0, "exact": 100.0
    }
    assert sentence_scores("", "an answer")["chrf"] == 0.0


def q(i: int, ref: str = "a") -> ExamQuestion:
    question = parse_example({"messages": [{"role": "user", "content": f"q{i}"},
                                           {"role": "assistant", "content": ref}]})
    assert question is not None
    return question


def test_the_sample_is_the_lowest_prompt_digests_whatever_the_order() -> None:
    """The sampled exam is deterministic: the n lowest prompt digests, in any input order,
    and a prompt answered again in a later drop keeps its latest reference."""
    questions = [q(i) for i in range(200)]
    expected = sorted(questions, key=lambda x: x.prompt_digest)[:7]
    assert sorted(lowest(questions, 7), key=lambda x: x.prompt_digest) == expected
    assert sorted(lowest(reversed(questions), 7), key=lambda x: x.prompt_digest) == expected
    again = int(expected[0].prompt[0]["content"].removeprefix("q"))
    kept = lowest([*questions, q(again, "new")], 7)
    assert [x.reference for x in kept if x.key == expected[0].key] == ["new"]


def test_exam_digest_changes_with_a_reference_not_with_order() -> None:
    """The exam digest covers prompts and references, not the order they were read in."""
    a = ExamSet.of([q(1), q(2)], "sample")
    assert ExamSet.of([q(2), q(1)], "sample").digest == a.digest
    assert ExamSet.of([q(1), q(2, "b")], "sample").digest != a.digest


def test_parse_example_splits_prompt_and_reference() -> None:
    """The prompt is every message before the final assistant turn, the reference its text."""
    got = parse_example({"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}]})
    assert got is not None
    assert [m["role"] for m in got.prompt] == ["system", "user"]
    assert got.reference == "hello"
    assert parse_example({"messages": [{"role": "user", "content": "hi"}]}) is None
    assert parse_example({"text": "x"}) is None


def test_an_example_with_a_blank_reference_is_no_exam_question() -> None:
    """An example whose final assistant turn is empty or whitespace is left out of the exam:
    chrF and BLEU score every answer 0 against it, so it could never tell two models apart."""
    for blank in ("", "   ", "\n"):
        assert parse_example({"messages": [{"role": "user", "content": "hi"},
                                           {"role": "assistant", "content": blank}]}) is None
