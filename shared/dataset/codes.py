"""Every report code and what it means (the report's vocabulary; stable across versions)."""

from __future__ import annotations

__all__ = ["ERROR_CODES", "WARNING_CODES"]

ERROR_CODES: dict[str, str] = {
    "invalid_utf8": "the line is not valid UTF-8 text",
    "invalid_json": "the line is not one valid JSON document (or nests deeper than 128 "
    "levels)",
    "not_an_object": "the line is JSON but not an object",
    "missing_messages": 'the object has no "messages" key',
    "messages_not_a_list": '"messages" is not a list',
    "empty_messages": '"messages" is an empty list',
    "message_not_an_object": "a message is not an object",
    "missing_role": 'a message has no "role" (or it is null)',
    "unknown_role": "a message's role is not system, user or assistant",
    "missing_content": 'a message has no "content" (or it is null)',
    "content_not_a_string": "a message's content is not a string",
    "unknown_message_key": "a message has a key other than role, content, name, weight",
    "invalid_weight": "a weight is not 0 or 1, or sits on a non-assistant message",
    "invalid_name": "a message's name is not a string",
    "duplicate_key": "a key that matters (messages, role, content, name, weight) appears twice "
    "in one object, so which copy counts is undefined",
    "no_assistant_message": "the example has no assistant message to learn from",
    "system_not_first": "a system message appears after the first message",
    "line_too_long": "the line is longer than the line limit; skipped unread",
    "wrong_encoding": "the file is UTF-16 or UTF-32 text, not UTF-8",
    "compressed_file": "the file is compressed (gzip, zip, bzip2, xz or zstd), not JSON Lines",
    "binary_file": "the file is binary data, not JSON Lines text",
    "not_json_lines": "the file is one JSON array or pretty-printed JSON, not one object per "
    "line",
    "cr_line_endings": "lines end in a lone CR (old Mac style), so the file reads as one line",
    "empty_dataset": "the dataset holds no examples",
    "too_few_examples": "fewer distinct valid examples than the minimum",
}

WARNING_CODES: dict[str, str] = {
    "duplicate_example": "the same messages as an earlier line; dropped from the split",
    "exceeds_max_tokens": "more tokens than max_seq_length; training truncates it",
    "consecutive_same_role": "two messages in a row have the same role",
    "empty_content": "a message's content is empty or whitespace",
    "trailing_user_message": "the example ends with a user message that is never answered",
    "blank_line": "a blank line (skipped)",
}
