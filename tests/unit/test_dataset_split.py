"""The deterministic train/validation split: stable buckets, duplicates dropped, both sides
filled."""

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
    example_digest,
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


def test_bucket_follows_the_digest_of_the_canonical_messages() -> None:
    """Every example but the one held back lands where bucket_of(example_digest(...)) says."""
    out = split(jsonl([example(i) for i in range(100)]), fraction=0.3)
    for side, line in out[:-1]:
        canonical = line[len(b'{"messages":') : -len(b"}\n")]
        assert side == bucket_of(example_digest(canonical), 0.3)


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
    assert (counts.train, counts.validation) == (1, 1)
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
@given(st.integers(min_value=2, max_value=25), st.floats(min_value=0.01, max_value=0.99),
       st.integers(min_value=0, max_value=10**6))
def test_both_sides_get_an_example_from_two_distinct_examples(
    n: int, fraction: float, seed: int
) -> None:
    """With two or more distinct examples and a fraction above 0, neither side is empty."""
    rows = [example(seed + i) for i in range(n)]
    out = split(jsonl(rows), fraction)
    counted = {side: sum(1 for s, _ in out if s == side) for side in ("train", "validation")}
    assert counted["train"] >= 1
    assert counted["validation"] >= 1
    assert sum(counted.values()) == n


def test_fraction_zero_puts_everything_in_train() -> None:
    """validation_fraction 0 means no validation examples at all."""
    assert {side for side, _ in split(jsonl([example(i) for i in range(20)]), 0.0)} == {"train"}


def test_a_single_example_goes_to_train() -> None:
    """One distinct example (however often repeated) trains."""
    assert [side for side, _ in split(jsonl([example(1)] * 3), 0.9)] == ["train"]


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
