"""One verdict per line: the fast path and the reference agree on hostile lines, whatever
warnings the line also has (large integers, deep nesting, repeated keys, escaped keys)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dataset import ValidationConfig, ValidationReport, _json, validate_stream
from shared.dataset.judge import fast_example, judge_line

USER = '{"role": "user", "content": "What is 2 + 2?"}'
ASSISTANT = '{"role": "assistant", "content": "4."}'
GOOD = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                 {"role": "assistant", "content": f"a{i}"}]}) for i in range(10)]


def line_of(messages: list[str], *extra: str) -> str:
    """An example line from raw JSON messages and raw extra top-level members."""
    return "{" + ", ".join([*extra, '"messages": [' + ", ".join(messages) + "]"]) + "}"


def report(line: str) -> ValidationReport:
    data = "\n".join([*GOOD, line]).encode() + b"\n"
    return validate_stream([data], name="d.jsonl", config=ValidationConfig())


def line_errors(line: str) -> list[str]:
    return sorted(issue.code for issue in report(line).errors if issue.line == 11)


def with_warning(messages: list[str]) -> list[str]:
    """The same conversation with an unanswered user turn at the end (a warning, no error)."""
    return [*messages, USER]


HUGE = "9" * 5000
DEEP = "[" * 990 + "]" * 990


@pytest.mark.parametrize("extra", [f'"meta": {HUGE}', f'"meta": {{"n": -{HUGE}}}',
                                   f'"prompt_id": {HUGE}'], ids=["int", "nested", "prompt_id"])
def test_large_integer_in_an_ignored_key_is_valid_with_or_without_a_warning(extra: str) -> None:
    """A 5000-digit integer in a key the validator ignores is fine, alone or with a warning."""
    assert line_errors(line_of([USER, ASSISTANT], extra)) == []
    assert line_errors(line_of(with_warning([USER, ASSISTANT]), extra)) == []
    warned = report(line_of(with_warning([USER, ASSISTANT]), extra))
    assert (11, "trailing_user_message") in [(i.line, i.code) for i in warned.warnings]


@pytest.mark.parametrize("depth", [129, 500, 990, 5000])
def test_deep_nesting_in_an_ignored_key_is_invalid_with_or_without_a_warning(depth: int) -> None:
    """Nesting past 128 levels is invalid_json wherever it is, alone or with a warning."""
    extra = '"meta": ' + "[" * depth + "]" * depth
    assert line_errors(line_of([USER, ASSISTANT], extra)) == ["invalid_json"]
    assert line_errors(line_of(with_warning([USER, ASSISTANT]), extra)) == ["invalid_json"]
    message = next(i.message for i in report(line_of([USER, ASSISTANT], extra)).errors
                   if i.line == 11)
    assert "128 levels" in message


def test_nesting_up_to_the_limit_is_valid() -> None:
    """128 levels in all (the object itself and 127 inside it) is still a valid line."""
    extra = '"meta": ' + "[" * 127 + "]" * 127
    assert line_errors(line_of([USER, ASSISTANT], extra)) == []
    assert line_errors(line_of(with_warning([USER, ASSISTANT]), extra)) == []
    brackets_in_text = '"prompt": "' + "[" * 300 + '"'
    assert line_errors(line_of([USER, ASSISTANT], brackets_in_text)) == []


def test_large_integer_weight_is_invalid_weight_without_python_advice() -> None:
    """A 5000-digit weight is invalid_weight, shown as a number, with no interpreter advice."""
    bad = '{"role": "assistant", "content": "4.", "weight": ' + HUGE + "}"
    rep = report(line_of([USER, bad]))
    [issue] = [i for i in rep.errors if i.line == 11]
    assert issue.code == "invalid_weight"
    assert "sys.set_int_max_str_digits" not in issue.message
    assert "weight 9999" in issue.message


@pytest.mark.parametrize("name", ["5", "null", "true", '["a"]', '{"a": 1}'])
def test_name_must_be_a_string(name: str) -> None:
    """A message name that is not a string is invalid_name (the fast path already refused it)."""
    assert line_errors(line_of([USER.replace("}", f', "name": {name}}}'), ASSISTANT])) == [
        "invalid_name"
    ]


@pytest.mark.parametrize("value", ["true", "null", "1.0", "2", '"1"'])
def test_weight_values_are_shown_as_json(value: str) -> None:
    """The message shows the weight as it is written in JSON (true, not Python's True)."""
    bad = '{"role": "assistant", "content": "4.", "weight": ' + value + "}"
    [issue] = [i for i in report(line_of([USER, bad])).errors if i.line == 11]
    assert f"weight {value};" in issue.message


@pytest.mark.parametrize("repeated", [
    '{"role": "user", "content": "a", "content": "b"}',
    '{"role": "user", "role": "user", "content": "a"}',
    '{"role": "user", "content": "a", "name": "x", "name": "y"}',
    '{"role": "user", "content": "a", "rol\\u0065": "user"}',
    '{"role": "user", "content": "a", "role" : "user"}',
    '{"role": "user", "content": "a", "\\u0063ontent": "b"}',
])
def test_a_repeated_message_key_is_duplicate_key(repeated: str) -> None:
    """role, content, name or weight twice in one message (however written) is duplicate_key."""
    assert line_errors(line_of([repeated, ASSISTANT])) == ["duplicate_key"]
    weight = '{"role": "assistant", "content": "x", "weight": 1, "weight": 0}'
    assert line_errors(line_of([USER, weight])) == ["duplicate_key"]


def test_a_repeated_messages_key_is_duplicate_key() -> None:
    """Two "messages" keys on one line is duplicate_key (which one a trainer reads is undefined)."""
    line = '{"messages": [' + USER + "], " + line_of([USER, ASSISTANT])[1:]
    assert line_errors(line) == ["duplicate_key"]


def test_repeated_keys_that_do_not_matter_are_allowed() -> None:
    """Repeated keys elsewhere (top-level extras, nested values) change nothing."""
    line = line_of([USER, ASSISTANT], '"prompt": "a"', '"prompt": "b"',
                   '"meta": {"role": 1, "role": 2, "content": 3, "content": 4}')
    assert line_errors(line) == []
    if _json.decode_example is not None:  # and a repeated extra key keeps the fast path
        assert fast_example(line_of([USER, ASSISTANT], '"id": 1', '"id": 2').encode())



def test_the_key_count_scans_a_named_line_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean line with a name and a prompt_id has its key colons counted once, not twice."""
    if _json.decode_whole is None:
        pytest.skip("the key count belongs to the msgspec fast path")
    scans: list[bytes] = []
    count_colons = _json.KEY_COLONS_FINDALL

    def counting(line: bytes) -> list[bytes]:
        scans.append(line)
        return count_colons(line)

    monkeypatch.setattr(_json, "KEY_COLONS_FINDALL", counting)
    named = '{"role": "user", "content": "q%d", "name": "bob"}'
    lines = [line_of([named % i, ASSISTANT], f'"prompt_id": {i}') for i in range(10)]
    result = validate_stream([("\n".join(lines) + "\n").encode()], name="d.jsonl",
                             config=ValidationConfig())
    assert result.valid
    assert result.error_total == 0
    assert len(scans) == len(lines)

# --- the property: a verdict never depends on an added warning --------------------------

_hostile = st.sampled_from([
    "", f'"meta": {HUGE}', '"meta": ' + "[" * 127 + "]" * 127,
    '"meta": ' + "[" * 129 + "]" * 129, '"meta": ' + DEEP, '"meta": {"a": 1, "a": 2}',
    '"prompt": "x", "prompt": "y"', '"prompt_id": 12345678901234567890123',
    '"meta": {"role": "x"}', '"me\\u0074a": 1', '"meta": "\\ud800"', '"meta": 1e999',
])
_message = st.sampled_from([
    USER, ASSISTANT, '{"role": "system", "content": "Be brief."}',
    '{"role": "user", "content": "hi", "name": "al"}', '{"role": "user", "content": "hi", '
    '"name": 7}', '{"role": "assistant", "content": "ok", "weight": 0}',
    '{"role": "assistant", "content": "ok", "weight": ' + HUGE + "}",
    '{"role": "user", "content": "a", "content": "b"}', '{"role": "user", "content": "a", '
    '"rol\\u0065": "user"}', '{"role": "assistant", "content": "x", "weight": 1, "weight": 1}',
    '{"role" : "assistant" , "content" : "spaced"}', '{"role": "user", "content": "\\"role\\": 1"}',
    '{"role": "user", "content": "x", "meta": 1}',
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_message, min_size=1, max_size=4), st.lists(_hostile, max_size=2),
       st.booleans())
def test_a_line_has_the_same_verdict_with_and_without_a_warning(
    messages: list[str], extras: list[str], repeat_messages: bool
) -> None:
    """Adding a warning (an unanswered user turn) to a line never changes whether it is valid,
    and wherever the fast path accepts a line the reference agrees."""
    extras = [e for e in extras if e]
    if repeat_messages:
        extras.append('"messages": []')
    plain = line_of([*messages, ASSISTANT], *extras)
    warned = line_of([*messages, ASSISTANT, USER], *extras)
    assert (line_errors(plain) == []) == (line_errors(warned) == [])
    for line in (plain, warned):
        fast = fast_example(line.encode())
        verdict = judge_line(line.encode())
        if fast is not None:
            assert verdict.errors == []
            assert verdict.warnings == []
            assert verdict.example == fast


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_message, min_size=1, max_size=3), min_size=1, max_size=6),
       st.lists(_hostile, max_size=1))
def test_reports_are_the_same_with_and_without_the_fast_path(
    conversations: list[list[str]], extras: list[str]
) -> None:
    """The validator's inlined fast path and the reference give identical reports on lines
    with hostile features."""
    lines = [line_of([*m, ASSISTANT], *[e for e in extras if e]) for m in conversations]
    data = "\n".join(GOOD + lines).encode()
    config = ValidationConfig(min_examples=3)
    fast = validate_stream([data], name="g", config=config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_json, "decode_example", None)
        reference = validate_stream([data], name="g", config=config)
    assert fast == reference
