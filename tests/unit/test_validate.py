"""The validator's rules: every error and warning code, with its line number."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.dataset import (
    ERROR_CODES,
    WARNING_CODES,
    ValidationConfig,
    ValidationReport,
    validate_path,
    validate_stream,
)
from shared.errors import DatasetUnreadableError


def example(i: int = 0, **extra: Any) -> dict[str, Any]:
    """A clean two-turn example; ``i`` makes it distinct."""
    return {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"What is {i} + {i}?"},
            {"role": "assistant", "content": f"{i} + {i} = {2 * i}."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You're welcome."},
        ],
        **extra,
    }


def jsonl(*rows: Any) -> bytes:
    """Lines from dicts (JSON-encoded), str (UTF-8) or bytes (as they are)."""
    out = []
    for row in rows:
        if isinstance(row, bytes):
            out.append(row)
        elif isinstance(row, str):
            out.append(row.encode())
        else:
            out.append(json.dumps(row, ensure_ascii=False).encode())
    return b"\n".join(out) + b"\n"


def validate(data: bytes, **config: Any) -> ValidationReport:
    return validate_stream([data], name="data.jsonl", config=ValidationConfig(**config))


def good(n: int = 10, start: int = 0) -> list[dict[str, Any]]:
    return [example(i) for i in range(start, start + n)]


def codes_at(issues: list[Any]) -> list[tuple[int | None, str]]:
    return [(issue.line, issue.code) for issue in issues]


# Each bad line is placed as line 3, between clean examples.
ASSISTANT = {"role": "assistant", "content": "ok"}
USER = {"role": "user", "content": "hi"}
ERROR_CASES: list[tuple[str, Any]] = [
    ("invalid_utf8", b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'),
    ("invalid_utf8", b'{"prompt": "\xff", "messages": [{"role": "assistant", "content": "x"}]}'),
    ("invalid_json", '{"messages": [{"role": "user", "content": "hi"}'),
    ("invalid_json", '{"messages": [], "x": NaN}'),
    ("invalid_json", '{"messages": [{"role": "assistant", "content": "\\ud800"}]}'),
    ("invalid_json", b"\xef\xbb\xbf" + json.dumps(example(99)).encode()),
    ("not_an_object", "[1, 2, 3]"),
    ("not_an_object", '"just text"'),
    ("not_an_object", "null"),
    ("missing_messages", {"prompt": "hello", "completion": "world"}),
    ("messages_not_a_list", {"messages": {"role": "user", "content": "hi"}}),
    ("messages_not_a_list", {"messages": None}),
    ("empty_messages", {"messages": []}),
    ("message_not_an_object", {"messages": ["hi", ASSISTANT]}),
    ("missing_role", {"messages": [{"content": "hi"}, ASSISTANT]}),
    ("missing_role", {"messages": [{"role": None, "content": "hi"}, ASSISTANT]}),
    ("unknown_role", {"messages": [{"role": "bot", "content": "hi"}, ASSISTANT]}),
    ("unknown_role", {"messages": [{"role": ["user"], "content": "hi"}, ASSISTANT]}),
    ("missing_content", {"messages": [{"role": "user"}, ASSISTANT]}),
    ("missing_content", {"messages": [{"role": "user", "content": None}, ASSISTANT]}),
    ("content_not_a_string", {"messages": [{"role": "user", "content": ["hi"]}, ASSISTANT]}),
    ("content_not_a_string", {"messages": [USER, {"role": "assistant", "content": 42}]}),
    ("unknown_message_key", {"messages": [USER, {**ASSISTANT, "function_call": {}}]}),
    ("invalid_weight", {"messages": [USER, {**ASSISTANT, "weight": 2}]}),
    ("invalid_weight", {"messages": [USER, {**ASSISTANT, "weight": True}]}),
    ("invalid_weight", {"messages": [USER, {**ASSISTANT, "weight": 1.0}]}),
    ("invalid_weight", {"messages": [USER, {**ASSISTANT, "weight": None}]}),
    ("invalid_weight", {"messages": [{**USER, "weight": 1}, ASSISTANT]}),
    ("invalid_weight", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
     '"content": "ok", "weight": 1' + "0" * 5000 + "}]}"),
    ("invalid_name", {"messages": [{**USER, "name": 5}, ASSISTANT]}),
    ("invalid_name", {"messages": [{**USER, "name": None}, ASSISTANT]}),
    ("duplicate_key", '{"messages": [{"role": "user", "content": "hi", "role": "assistant"}, '
     '{"role": "assistant", "content": "ok"}]}'),
    ("duplicate_key", '{"messages": [], "messages": [{"role": "user", "content": "hi"}, '
     '{"role": "assistant", "content": "ok"}]}'),
    ("duplicate_key", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
     '"content": "ok", "rol\\u0065": "assistant"}]}'),
    ("invalid_json", '{"x": ' + "[" * 129 + "]" * 129 + ', "messages": [{"role": "user", '
     '"content": "hi"}, {"role": "assistant", "content": "ok"}]}'),
    ("no_assistant_message", {"messages": [{"role": "system", "content": "be nice"}, USER]}),
    ("system_not_first", {"messages": [USER, {"role": "system", "content": "be nice"}, ASSISTANT]}),
]

WARNING_CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("consecutive_same_role", {"messages": [USER, USER, ASSISTANT]}, {}),
    ("empty_content", {"messages": [{"role": "user", "content": ""}, ASSISTANT]}, {}),
    ("empty_content", {"messages": [USER, {"role": "assistant", "content": " \n\t"}]}, {}),
    ("trailing_user_message", {"messages": [USER, ASSISTANT, USER]}, {}),
    ("exceeds_max_tokens", {"messages": [USER, {"role": "assistant", "content": "x" * 400}]},
     {"max_seq_length": 100}),
    ("blank_line", "", {}),
    ("blank_line", "  \t\r", {}),
]


def test_every_code_has_a_case() -> None:
    """The cases below exercise every error and warning code the report can carry (the
    file-format codes in tests/unit/test_validate_formats.py)."""
    covered = {code for code, _ in ERROR_CASES} | {"line_too_long", "empty_dataset",
                                                    "too_few_examples", "wrong_encoding",
                                                    "compressed_file", "binary_file",
                                                    "not_json_lines", "cr_line_endings"}
    assert covered == set(ERROR_CODES)
    assert {code for code, _, _ in WARNING_CASES} | {"duplicate_example"} == set(WARNING_CODES)


def test_valid_multi_turn_dataset_passes_with_exact_stats() -> None:
    """Clean multi-turn examples are valid, with no findings and stats that add up."""
    rows = good(12)
    report = validate(jsonl(*rows))
    assert report.valid
    assert report.errors == []
    assert report.warnings == []
    assert report.error_counts == {}
    assert report.warning_counts == {}
    stats = report.stats
    assert stats["examples"] == stats["distinct_examples"] == 12
    assert stats["messages_per_example"] == {"min": 5, "mean": 5.0, "max": 5}
    expected = []
    for row in rows:
        chars = sum(len(m["content"]) for m in row["messages"])
        expected.append((chars + 3) // 4 + 4 * 5 + 3)
    tokens = stats["tokens_per_example"]
    assert tokens["min"] == min(expected)
    assert tokens["max"] == max(expected)
    assert tokens["total"] == sum(expected)
    assert tokens["p50"] == sorted(expected)[5]
    assert stats["token_count_method"] == "estimate"
    assert report.dataset.lines == 12
    assert report.dataset.bytes == len(jsonl(*rows))


@pytest.mark.parametrize(("code", "row"), ERROR_CASES, ids=[c for c, _ in ERROR_CASES])
def test_error_is_reported_on_its_line(code: str, row: Any) -> None:
    """Each bad line makes the dataset invalid with its code on its 1-based line number."""
    report = validate(jsonl(*good(2), row, *good(10, start=2)))
    assert not report.valid
    assert (3, code) in codes_at(report.errors)
    assert all(issue.line == 3 for issue in report.errors)
    assert report.stats["invalid_lines"] == 1
    issue = next(i for i in report.errors if i.code == code)
    assert len(issue.message) > 20  # says what is wrong and what to do


@pytest.mark.parametrize(("code", "row", "config"), WARNING_CASES,
                         ids=[c for c, _, _ in WARNING_CASES])
def test_warning_is_reported_on_its_line_and_keeps_the_dataset_valid(
    code: str, row: Any, config: dict[str, Any]
) -> None:
    """A warning names its line and never makes the dataset invalid."""
    report = validate(jsonl(*good(2), row, *good(10, start=2)), **config)
    assert report.valid, report.errors
    assert (3, code) in codes_at(report.warnings)


def test_duplicate_example_names_the_earlier_line_and_is_not_counted_twice() -> None:
    """Same messages (other keys and key order aside) are a duplicate of the first line."""
    first = example(1)
    reordered = {"prompt_id": "x", "messages": [
        {"content": m["content"], "role": m["role"]} for m in first["messages"]]}
    report = validate(jsonl(*good(10, start=2), first, "", reordered, first))
    assert report.valid
    dupes = [i for i in report.warnings if i.code == "duplicate_example"]
    assert [i.line for i in dupes] == [13, 14]
    assert all("line 11" in i.message for i in dupes)
    assert report.stats["duplicates"] == 2
    assert report.stats["distinct_examples"] == 11
    assert report.stats["examples"] == 13


def test_line_too_long_is_skipped_and_later_lines_keep_their_numbers() -> None:
    """A line over max_line_bytes is an error on its line; the next lines still count."""
    long_row = example(100, note="x" * 5000)
    report = validate(jsonl(*good(3), long_row, *good(10, start=3), "[1]"), max_line_bytes=2000)
    assert codes_at(report.errors) == [(4, "line_too_long"), (15, "not_an_object")]
    assert report.stats["too_long"] == 1
    assert report.dataset.lines == 15


def test_a_line_exactly_at_the_limit_is_accepted() -> None:
    """max_line_bytes is inclusive: a line of exactly that many bytes is read."""
    line = json.dumps(example(1, padding="x" * 400)).encode()  # the longest line
    report = validate(jsonl(*good(10, start=2), line), max_line_bytes=len(line))
    assert report.valid, report.errors
    report = validate(jsonl(*good(10, start=2), line), max_line_bytes=len(line) - 1)
    assert codes_at(report.errors) == [(11, "line_too_long")]


def test_zero_byte_file_is_an_empty_dataset() -> None:
    """Nothing at all is the dataset-level error empty_dataset (no line number)."""
    report = validate(b"")
    assert not report.valid
    assert codes_at(report.errors) == [(None, "empty_dataset")]
    assert report.dataset.lines == 0
    assert report.dataset.bytes == 0
    assert report.dataset.sha256 == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_blank_lines_only_is_an_empty_dataset() -> None:
    """A file of blank lines holds no examples: empty_dataset plus a blank_line warning each."""
    report = validate(b"\n\r\n  \n")
    assert codes_at(report.errors) == [(None, "empty_dataset")]
    assert codes_at(report.warnings) == [(1, "blank_line"), (2, "blank_line"), (3, "blank_line")]
    assert report.stats["blank_lines"] == 3


def test_too_few_distinct_examples() -> None:
    """Fewer distinct valid examples than min_examples is too_few_examples (duplicates don't
    count)."""
    rows = [*good(9), example(0)]
    report = validate(jsonl(*rows))
    assert codes_at(report.errors) == [(None, "too_few_examples")]
    assert "9" in report.errors[0].message
    assert "10" in report.errors[0].message
    assert validate(jsonl(*rows), min_examples=9).valid


def test_byte_order_mark_at_start_and_crlf_are_accepted() -> None:
    """A UTF-8 BOM at the very start and CRLF line endings change nothing."""
    body = b"\r\n".join(json.dumps(row).encode() for row in good(10)) + b"\r\n"
    report = validate(b"\xef\xbb\xbf" + body)
    assert report.valid, report.errors
    assert report.dataset.lines == 10
    assert report.warnings == []


def test_crlf_without_final_newline() -> None:
    """The last line counts even without a final line ending."""
    body = b"\r\n".join(json.dumps(row).encode() for row in good(11))
    report = validate(body)
    assert report.valid
    assert report.dataset.lines == 11


def test_top_level_keys_other_than_messages_are_ignored() -> None:
    """prompt, prompt_id and any other top-level keys are allowed."""
    rows = [example(i, prompt="p", prompt_id=i, meta={"a": [1, 2]}) for i in range(10)]
    assert validate(jsonl(*rows)).valid


def test_name_and_weight_are_accepted_where_allowed() -> None:
    """name on any message and weight 0/1 on assistant messages are valid."""
    rows = [{"messages": [
        {"role": "system", "content": "s", "name": "sys"},
        {"role": "user", "content": f"q{i}", "name": "alice"},
        {"role": "assistant", "content": "a", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "b", "weight": 1},
    ]} for i in range(10)]
    report = validate(jsonl(*rows))
    assert report.valid, report.errors
    assert report.warnings == []


def test_all_problems_of_a_line_are_reported_once_per_code() -> None:
    """A line with several problems lists each code once, naming the first message."""
    row = {"messages": [{"role": "bot", "content": 1}, {"role": "bot", "content": 2, "x": 0}]}
    report = validate(jsonl(*good(10), row))
    assert sorted(code for _, code in codes_at(report.errors)) == [
        "content_not_a_string", "no_assistant_message", "unknown_message_key", "unknown_role"
    ]
    unknown = next(i for i in report.errors if i.code == "unknown_role")
    assert unknown.message.startswith("message 1 ")
    assert "1 more message" in unknown.message
    assert report.error_counts["unknown_role"] == 1


def test_binary_file_is_one_dataset_error_not_a_crash() -> None:
    """Random bytes are one binary_file error for the dataset, not an error per line."""
    data = random.Random(7).randbytes(300_000)
    report = validate(data, max_line_bytes=4096)
    assert not report.valid
    assert codes_at(report.errors) == [(None, "binary_file")]
    assert report.error_counts == {"binary_file": 1}
    assert report.dataset.bytes == len(data)
    assert report.dataset.lines == data.count(b"\n") + (not data.endswith(b"\n"))


def test_a_few_bad_bytes_in_text_are_line_errors() -> None:
    """Text with stray bad bytes on some lines is judged line by line (invalid_utf8 there)."""
    report = validate(jsonl(*good(12), b'{"x": "\xff\xfe"}', b"\x00"))
    assert codes_at(report.errors) == [(13, "invalid_utf8"), (14, "invalid_json")]


def test_lists_are_capped_but_counts_are_exact() -> None:
    """Only max_listed issues are listed; the counts cover every one."""
    report = validate(jsonl(*good(10), *(["[]"] * 30)), max_listed=5)
    assert len(report.errors) == 5
    assert report.error_counts["not_an_object"] == 30
    assert report.error_total == 30


def test_dataset_level_error_is_listed_even_when_the_list_is_full() -> None:
    """empty_dataset / too_few_examples come first, so a full list never hides them."""
    report = validate(jsonl(*(["[]"] * 30)), max_listed=5)
    assert report.errors[0].code == "too_few_examples"
    assert len(report.errors) == 5


def _fifty_megabyte_line() -> Iterator[bytes]:
    block = b"x" * (1024 * 1024)
    yield b'{"messages": [{"role": "user", "content": "'
    for _ in range(50):
        yield block
    yield b'"}]}\n'
    yield jsonl(*good(10))


def test_fifty_megabyte_line_is_skipped_without_being_held() -> None:
    """A single 50 MB line is line_too_long; it streams past in bounded memory."""
    tracemalloc.start()
    try:
        report = validate_stream(_fifty_megabyte_line(), name="big.jsonl",
                                 config=ValidationConfig())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert codes_at(report.errors) == [(1, "line_too_long")]
    assert report.stats["distinct_examples"] == 10
    assert report.dataset.lines == 11
    assert report.dataset.bytes > 50 * 1024 * 1024
    assert peak < 12 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"


def test_validate_path_reads_a_file(tmp_path: Path) -> None:
    """validate_path streams a local file and names the report after it."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(*good(10)))
    report = validate_path(path, config=ValidationConfig())
    assert report.valid
    assert report.dataset.name == "train.jsonl"


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_validate_path_raises_unreadable(tmp_path: Path, make: str) -> None:
    """A missing file or a directory is DatasetUnreadableError, not a report."""
    path = tmp_path / "nope.jsonl"
    if make == "directory":
        path.mkdir()
    with pytest.raises(DatasetUnreadableError) as info:
        validate_path(path, config=ValidationConfig())
    assert info.value.code == "dataset_unreadable"
    assert info.value.hint
