"""One line → one verdict: the fast path for clean examples, the reference for everything else.

Both the validator and the split judge lines here, so they can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.dataset import _json
from shared.dataset._lines import BOM
from shared.dataset.rules import inspect_example

__all__ = [
    "Example",
    "LineVerdict",
    "clean_sizes",
    "fast_example",
    "fast_messages",
    "judge_line",
]

Finding = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Example:
    """A valid example: identity (per process), canonical messages JSON, message count, and
    the size of all content and of assistant content, in the counter's units (characters
    for the estimate, tokens with a tokenizer)."""

    identity: int
    canonical: bytes
    messages: int
    content_size: int
    assistant_size: int


@dataclass(slots=True)
class LineVerdict:
    """The reference's verdict on one line: errors, warnings, the example when there are none."""

    example: Example | None = None
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    blank: bool = False


def fast_messages(line: bytes) -> list[Any] | None:
    """The decoded messages of a structurally sound line, or None (the reference decides).

    Sound: valid UTF-8, nested at most MAX_DEPTH levels, no key that matters repeated.
    """
    decode = _json.decode_example
    whole = _json.decode_whole
    if decode is None or whole is None:
        return None
    messages: list[Any]
    others: int | None = None
    try:
        decoded = whole(line)  # every byte seen, at most 3 levels deep
        messages = decoded.messages
        others = (decoded.prompt is not _json.UNSET) + (decoded.prompt_id is not _json.UNSET)
    except _json.FAST_ERRORS:
        try:
            messages = decode(line).messages
        except _json.FAST_ERRORS:
            return None
        if not line.isascii():  # msgspec does not check the UTF-8 of keys it skips
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return None
        if _json.maybe_too_deep(line):  # nor how deep the values it skips nest
            return None
    return messages if _json.keys_unique(line, messages, others) else None


def clean_sizes(messages: list[Any]) -> tuple[int, int] | None:
    """(content characters, assistant characters) of fast-decoded messages with no finding.

    Returns None unless the reference would find nothing at all: a non-empty list, no two
    roles alike in a row, system only first, weight only on assistant messages, non-blank
    content, ending with an assistant reply (role values, key names, value types and weight
    values were already checked by the typed decoder). The validator inlines this loop.
    """
    unset = _json.UNSET
    previous = None
    size = 0
    assistant = 0
    for message in messages:
        role = message.role
        content = message.content
        if not content or role == previous or content.isspace():
            return None
        n = len(content)
        if role == "assistant":
            assistant += n
        elif (role == "system" and previous is not None) or message.weight is not unset:
            return None
        size += n
        previous = role
    if previous != "assistant":
        return None
    return size, assistant


def fast_example(line: bytes) -> Example | None:
    """The example on a line with no finding at all, or None when the reference must decide."""
    messages = fast_messages(line)
    if messages is None:
        return None
    sizes = clean_sizes(messages)
    if sizes is None:
        return None
    return Example(hash(tuple(messages)), _json.encode(messages), len(messages), *sizes)


def judge_line(line: bytes, count: Callable[[str], int] = len) -> LineVerdict:
    """The reference verdict on one line (blank, undecodable, unparsable or checked)."""
    verdict = LineVerdict()
    try:
        obj = _json.loads(line)
    except (ValueError, RecursionError) as exc:
        if not line.strip():
            verdict.blank = True
            verdict.warnings.append(("blank_line", "blank line (skipped); remove it"))
        else:
            verdict.errors.append(_unparsable(line, exc))
        return verdict
    if _json.too_deep(line):
        verdict.errors.append(_TOO_DEEP)
        return verdict
    verdict.errors, verdict.warnings = inspect_example(obj)
    if verdict.errors:
        return verdict
    messages = _json.canonical_dicts(obj["messages"])
    try:
        canonical = _json.encode(messages)
    except UnicodeEncodeError:
        verdict.errors.append(("invalid_json", "the line holds an unpaired surrogate escape "
                               "(like \\ud800), which is not valid Unicode; fix the text "
                               "encoding"))
        return verdict
    size = 0
    assistant = 0
    for message in messages:
        n = count(message["content"])
        size += n
        if message["role"] == "assistant":
            assistant += n
    verdict.example = Example(
        _json.identity(messages), canonical, len(messages), size, assistant
    )
    return verdict


_TOO_DEEP: Finding = (
    "invalid_json", f"arrays/objects nest more than {_json.MAX_DEPTH} levels deep on this line "
    "(an example needs 3); flatten or remove the deeply nested value",
)


def _unparsable(line: bytes, exc: BaseException) -> Finding:
    if isinstance(exc, UnicodeDecodeError):
        bad = line[exc.start : exc.start + 1].hex()
        return ("invalid_utf8", f"byte 0x{bad} at byte {exc.start + 1} of the line is not "
                "valid UTF-8; save the file as UTF-8 text")
    if line.startswith(BOM):
        return ("invalid_json", "the line starts with a byte-order mark (files concatenated?); "
                "only the start of the file may hold one — remove it")
    if isinstance(exc, RecursionError):
        return _TOO_DEEP
    if isinstance(exc, json.JSONDecodeError):
        snippet = json.dumps(exc.doc[max(0, exc.pos - 20) : exc.pos + 20].strip(),
                             ensure_ascii=False)
        # Some messages end in "at" ("Unterminated string starting at"): no "at at column".
        where = f"column {exc.colno}" if exc.msg.endswith(" at") else f"at column {exc.colno}"
        return ("invalid_json", f"not valid JSON: {exc.msg} {where} (near {snippet}); each "
                "line must be one complete JSON object")
    return ("invalid_json", f"not valid JSON: {exc}; each line must be one complete JSON object")
