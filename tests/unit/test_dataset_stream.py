"""Streaming properties: chunk boundaries never matter, and the fast path agrees with the
reference rules."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dataset import ValidationConfig, ValidationReport, _json, validate_stream
from shared.dataset._lines import LineSplitter
from shared.dataset.judge import fast_example, judge_line

# A dataset with something of everything: BOM, CRLF, blank lines, multi-byte characters,
# a too-long line (with max_line_bytes=300), invalid lines, duplicates, a missing final newline.
_ROWS: list[bytes] = [
    json.dumps({"messages": [{"role": "user", "content": f"Grüße {i} 東京 😀"},
                             {"role": "assistant", "content": "d'accord — ça va"}]},
               ensure_ascii=False).encode()
    for i in range(12)
]
MIXED = (
    b"\xef\xbb\xbf" + _ROWS[0] + b"\r\n" + _ROWS[1] + b"\n\n  \r\n" + _ROWS[2] + b"\n"
    + b'{"messages": [{"role": "bot", "content": "x"}]}\n'
    + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'
    + b'{"x": "' + b"y" * 1000 + b'"}\n'
    + b"\n".join(_ROWS[3:]) + b"\n" + _ROWS[5] + b"\n" + b"[1, 2"
)
CONFIG = ValidationConfig(max_line_bytes=300, min_examples=5)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def report_of(chunks: list[bytes]) -> ValidationReport:
    return validate_stream(chunks, name="mixed.jsonl", config=CONFIG)


REFERENCE = report_of([MIXED])


def test_reference_report_has_every_kind_of_line() -> None:
    """The mixed dataset exercises BOM, CRLF, blanks, too-long, invalid and duplicate lines."""
    assert REFERENCE.error_counts == {"invalid_json": 1, "invalid_utf8": 1, "line_too_long": 1,
                                      "unknown_role": 1, "no_assistant_message": 1}
    assert REFERENCE.warning_counts == {"blank_line": 2, "duplicate_example": 1}
    assert REFERENCE.dataset.lines == 19
    assert REFERENCE.stats["distinct_examples"] == 12


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=40))
def test_any_chunking_gives_the_same_report(cuts: list[int]) -> None:
    """Whatever the chunk boundaries (inside lines, characters, CRLF or the BOM), the report
    is the same."""
    assert report_of(chunked(MIXED, cuts)) == REFERENCE


def test_one_byte_chunks_give_the_same_report() -> None:
    """Even one byte at a time."""
    assert report_of([MIXED[i : i + 1] for i in range(len(MIXED))]) == REFERENCE


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
@settings(max_examples=150, deadline=None)
def test_splitter_lines_do_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    """The splitter yields the same lines, byte count and hash for any chunking of any bytes."""
    def split(chunks: list[bytes]) -> tuple[list[bytes | None], int, str, int]:
        splitter = LineSplitter(50)
        lines = [line for batch in splitter.batches(chunks) for line in batch]
        return lines, splitter.bytes, splitter.sha256, splitter.lines

    whole = split([data])
    assert split(chunked(data, cuts)) == whole
    assert whole[3] == len(whole[0])


def test_report_is_the_same_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With msgspec absent every line goes through the reference rules: same report."""
    monkeypatch.setattr(_json, "decode_example", None)
    assert report_of([MIXED]) == REFERENCE


# --- the fast path against the reference, on generated examples --------------------------

_text = st.one_of(st.sampled_from(["", " ", "\n\t", "hi", "Grüße 😀", "a\\b\"c"]), st.text())
_role = st.sampled_from(["system", "user", "assistant", "bot", None, 3])
_message = st.fixed_dictionaries(
    {"role": _role, "content": st.one_of(_text, st.none(), st.integers())},
    optional={"weight": st.sampled_from([0, 1, 2, True, None, 1.0]),
              "name": st.one_of(st.text(max_size=5), st.integers()),
              "extra": st.just(1)},
)
_clean_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(min_size=1)}
)
_example = st.fixed_dictionaries(
    {"messages": st.lists(st.one_of(_message, _clean_message, _clean_message), max_size=6)},
    optional={"prompt": st.text(max_size=5), "prompt_id": st.integers()},
)


@settings(max_examples=400, deadline=None)
@given(_example, st.booleans())
def test_fast_path_accepts_only_what_the_reference_finds_nothing_in(
    obj: dict[str, Any], ascii_only: bool
) -> None:
    """When the fast path accepts a line, the reference finds no error and no warning, and
    both compute the same identity, canonical bytes, counts and sizes."""
    line = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    fast = fast_example(line)
    verdict = judge_line(line)
    if fast is None:
        return
    assert verdict.errors == []
    assert verdict.warnings == []
    assert verdict.example == fast


def test_fast_path_accepts_plain_clean_examples() -> None:
    """The common clean shapes (with system, name, weight, extra top-level keys) take the
    fast path."""
    pytest.importorskip("msgspec")
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"prompt": "p", "messages": [
            {"role": "system", "content": "s", "name": "n"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "weight": 0},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2", "weight": 1}]},
    ]
    for row in rows:
        assert fast_example(json.dumps(row).encode()) is not None


def test_canonical_encoding_is_the_same_with_both_encoders() -> None:
    """msgspec and the standard library produce byte-identical canonical messages."""
    tricky = ["a\x01\x1f\x7f\u2028\"\\/é\n\t\b\f😀\r", "東京", ""]
    messages = [{"role": "user", "content": text, "name": "n"} for text in tricky]
    messages.append({"role": "assistant", "content": "x", "weight": 1})
    assert _json.encode(messages) == _json._std_encode(messages)


_turn = st.tuples(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20),
                  st.sampled_from([None, 0, 1]))
_clean_example = st.builds(
    lambda system, turns: {"messages": [
        *([{"role": "system", "content": system}] if system else []),
        *(m for user, answer, weight in turns for m in (
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer,
             **({} if weight is None else {"weight": weight})}))]},
    st.one_of(st.none(), st.text(min_size=1, max_size=10)),
    st.lists(_turn, min_size=1, max_size=3),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(_example, _clean_example, _clean_example), max_size=12),
       st.booleans())
def test_validator_reports_the_same_with_and_without_the_fast_path(
    rows: list[dict[str, Any]], ascii_only: bool
) -> None:
    """The validator's inlined fast path and the reference rules give identical reports on
    generated datasets (duplicates included)."""
    lines = [json.dumps(row, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
             for row in rows + rows[:2]]
    data = b"\n".join(lines)
    config = ValidationConfig(min_examples=3, max_seq_length=50)
    fast = validate_stream([data], name="g", config=config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_json, "decode_example", None)
        reference = validate_stream([data], name="g", config=config)
    assert fast == reference
