"""The deterministic train/validation split: the side is a function of the prompt (messages
before the final assistant turn), duplicates (whole examples) dropped."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dataset import (
    SplitInputError,
    ValidationConfig,
    bucket_of,
    prompt_digest,
    prompt_of,
    split_stream,
    split_to,
    validate_stream,
)


def example(i: int, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"question {i}"},
                         {"role": "assistant", "content": f"answer {i} — ok"}], **extra}


def jsonl(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def split(data: bytes, fraction: float = 0.2) -> list[tuple[str, bytes]]:
    return list(split_stream([data], validation_fraction=fraction, max_line_bytes=1 << 20))


def sides(out: list[tuple[str, bytes]]) -> dict[str, set[bytes]]:
    result: dict[str, set[bytes]] = {"train": set(), "validation": set()}
    for side, line in out:
        result[side].add(line)
    return result


def test_each_distinct_example_once_as_a_canonical_messages_line() -> None:
    """Output lines hold only messages, end with a newline, and parse back to the input."""
    rows = [example(i, prompt_id=i, prompt="p") for i in range(50)]
    out = split(jsonl(rows))
    assert len(out) == 50
    def first_content(row: dict[str, Any]) -> str:
        return str(row["messages"][0]["content"])

    parsed = sorted((json.loads(line) for _, line in out), key=first_content)
    expected = sorted(({"messages": r["messages"]} for r in rows), key=first_content)
    assert parsed == expected
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for _, line in out)
    assert all(line.startswith(b'{"messages":[{"role":"user","content":') for _, line in out)


def test_same_example_same_side_whatever_the_order_or_file() -> None:
    """Buckets depend only on an example's messages: shuffling or splitting the file again
    puts each example on the same side."""
    rows = [example(i) for i in range(200)]
    first = sides(split(jsonl(rows)))
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert sides(split(jsonl(shuffled))) == first
    half = sides(split(jsonl(rows[:100])))
    assert half["train"] <= first["train"]
    assert half["validation"] <= first["validation"]
    assert 20 <= len(first["validation"]) <= 60  # about 20 % of 200


def test_bucket_follows_the_digest_of_the_prompt() -> None:
    """Every example lands where bucket_of(prompt_digest(prompt)) says (no exception)."""
    out = split(jsonl([example(i) for i in range(100)]), fraction=0.3)
    assert len(out) == 100
    for side, line in out:
        prompt, _ = prompt_of(json.loads(line)["messages"])
        assert side == bucket_of(prompt_digest(prompt), 0.3)


def test_the_same_prompt_answered_differently_stays_on_its_side() -> None:
    """Two answers to one question are two examples (dedup is by the whole example), both on
    the side of the question."""
    rows = []
    for i in range(60):
        for answer in ("first answer", "second answer"):
            rows.append({"messages": [{"role": "user", "content": f"question {i}"},
                                      {"role": "assistant", "content": f"{answer} {i}"}]})
    out = split(jsonl(rows), fraction=0.4)
    assert len(out) == 120
    by_prompt: dict[str, set[str]] = {}
    for side, line in out:
        by_prompt.setdefault(json.loads(line)["messages"][0]["content"], set()).add(side)
    assert all(len(found) == 1 for found in by_prompt.values())
    assert {side for found in by_prompt.values() for side in found} == {"train", "validation"}


def test_the_prompt_is_everything_before_the_last_assistant_turn() -> None:
    """A trailing user message and earlier turns: the prompt ends before the last assistant
    message; the reference is that message's content; key order does not change the digest."""
    messages: list[dict[str, Any]] = [
                {"content": "be brief", "role": "system"}, {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a2", "weight": 1},
                {"role": "user", "content": "thanks"}]
    prompt, reference = prompt_of(messages)
    assert reference == "a2"
    assert [m["content"] for m in prompt] == ["be brief", "q1", "a1", "q2"]
    assert list(prompt[0]) == ["role", "content"]
    assert prompt_digest(prompt) == prompt_digest(messages[:4])
    assert prompt_digest(prompt) != prompt_digest(messages[:2])
    with pytest.raises(ValueError, match="assistant"):
        prompt_of([{"role": "user", "content": "q"}])


def test_duplicates_blank_lines_bom_and_crlf() -> None:
    """Duplicates (same messages, any key order or extra keys) are dropped; BOM, CRLF and
    blank lines are handled."""
    one = example(1)
    reordered = {"messages": [{"content": m["content"], "role": m["role"]}
                              for m in one["messages"]], "prompt_id": 7}
    data = (b"\xef\xbb\xbf" + json.dumps(one).encode() + b"\r\n\r\n"
            + json.dumps(reordered).encode() + b"\r\n" + jsonl([example(2), example(2)]))
    train, validation = io.BytesIO(), io.BytesIO()
    counts = split_to([data], train.write, validation.write, validation_fraction=0.5,
                      max_line_bytes=1 << 20)
    assert counts.train + counts.validation == 2
    assert counts.duplicates == 2
    assert counts.blank_lines == 1
    assert counts.bytes == len(data)


def test_split_reads_the_bytes_the_validator_read() -> None:
    """split_to reports the same sha256 and byte count as the validation report."""
    data = jsonl([example(i) for i in range(30)])
    report = validate_stream([data], name="d.jsonl", config=ValidationConfig())
    counts = split_to([data[:7], data[7:]], io.BytesIO().write, io.BytesIO().write,
                      validation_fraction=0.1, max_line_bytes=1 << 20)
    assert (counts.sha256, counts.bytes) == (report.dataset.sha256, report.dataset.bytes)
    assert counts.train + counts.validation == report.stats["distinct_examples"]
    assert counts.to_dict()["train"] == counts.train


def test_split_output_validates_clean() -> None:
    """Each output file is itself a valid dataset with no warnings."""
    rows = [example(i) for i in range(60)] + [example(3)]
    train, validation = io.BytesIO(), io.BytesIO()
    split_to([jsonl(rows)], train.write, validation.write, validation_fraction=0.25,
             max_line_bytes=1 << 20)
    for buffer in (train, validation):
        report = validate_stream([buffer.getvalue()], name="part",
                                 config=ValidationConfig(min_examples=1))
        assert report.valid
        assert report.warnings == []


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=25), st.floats(min_value=0.01, max_value=0.99),
       st.integers(min_value=0, max_value=10**6))
def test_every_distinct_example_once_and_a_side_may_be_empty(
    n: int, fraction: float, seed: int
) -> None:
    """Each distinct example is written once, on its prompt's side, even when that leaves one
    side empty (no example is moved to fill a side)."""
    rows = [example(seed + i) for i in range(n)]
    out = split(jsonl(rows), fraction)
    assert len(out) == n
    for side, line in out:
        prompt, _ = prompt_of(json.loads(line)["messages"])
        assert side == bucket_of(prompt_digest(prompt), fraction)


def test_fraction_zero_puts_everything_in_train() -> None:
    """validation_fraction 0 means no validation examples at all."""
    assert {side for side, _ in split(jsonl([example(i) for i in range(20)]), 0.0)} == {"train"}


def test_a_single_example_goes_to_its_prompts_side() -> None:
    """One distinct example (however often repeated) is written once, on its prompt's side,
    even when that is validation (the old rule forced it to train)."""
    rows = [example(i) for i in range(40)]
    lone = next(r for r in rows if bucket_of(prompt_digest(r["messages"][:1]), 0.5)
                == "validation")
    assert [side for side, _ in split(jsonl([lone] * 3), 0.5)] == ["validation"]


def test_output_is_identical_on_a_second_run() -> None:
    """The split is a pure function of the input bytes."""
    data = jsonl([example(i) for i in range(40)])
    assert split(data) == split(data)


@pytest.mark.parametrize("bad", [b"[1]", b'{"messages": []}', b"{oops", b'"' + b"y" * 200 + b'"'])
def test_invalid_input_raises(bad: bytes) -> None:
    """The split refuses lines the validator rejects (it expects a validated dataset)."""
    data = jsonl([example(1)]) + bad + b"\n"
    with pytest.raises(SplitInputError) as info:
        list(split_stream([data], validation_fraction=0.1, max_line_bytes=150))
    assert "line 2" in str(info.value)
    assert info.value.code == "split_input_invalid"


def test_invalid_fraction_is_refused() -> None:
    """A fraction outside [0, 1) is a programming error."""
    with pytest.raises(ValueError, match="validation_fraction"):
        split(jsonl([example(1)]), 1.0)


_prompts = st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_prompts, st.integers(min_value=0, max_value=3)), min_size=1,
                max_size=5),
       st.floats(min_value=0.0, max_value=0.9))
def test_no_prompt_on_any_drops_validation_side_is_trained_on_in_any_drop(
    drops: list[tuple[list[int], int]], fraction: float
) -> None:
    """Leakage property over a line's drops that ask the same questions with other answers:
    the prompts on the validation side of any drop never appear on the train side of any."""
    train_prompts: set[str] = set()
    validation_prompts: set[str] = set()
    for questions, style in drops:
        rows = [{"messages": [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": f"question {q}"},
                              {"role": "assistant", "content": f"answer {q} in style {style}"}]}
                for q in questions]
        for side, line in split(jsonl(rows), fraction):
            prompt = json.dumps(prompt_of(json.loads(line)["messages"])[0])
            (train_prompts if side == "train" else validation_prompts).add(prompt)
    assert not train_prompts & validation_prompts
