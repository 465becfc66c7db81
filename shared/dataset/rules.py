"""The per-example rules, spelled out: the reference the validator's fast path must agree with.

:func:`inspect_example` finds every problem of one parsed line. Each code is reported at most
once per line, naming the first message it concerns (1-based) and how many more share it.
"""

from __future__ import annotations

import json
from typing import Any

from shared.dataset._json import LargeInt

__all__ = ["ALLOWED_MESSAGE_KEYS", "ROLES", "Findings", "inspect_example"]

ROLES = ("system", "user", "assistant")
ALLOWED_MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
_SHAPE = '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}'

# (code, message) pairs, errors and warnings.
Findings = tuple[list[tuple[str, str]], list[tuple[str, str]]]


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | LargeInt):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(value: Any, limit: int = 40) -> str:
    """A value as JSON (``true``, ``null``, ``"text"``), cut to ``limit`` characters."""
    if isinstance(value, LargeInt):
        text = value.digits
    else:
        text = json.dumps(value, ensure_ascii=False, default=lambda v: getattr(v, "digits", "?"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _keys(keys: list[str]) -> str:
    return "key" if len(keys) == 1 else "keys"


class _Line:
    """Collects one line's findings, one per code."""

    def __init__(self) -> None:
        self.errors: dict[str, tuple[int, str]] = {}
        self.warnings: dict[str, tuple[int, str]] = {}

    def error(self, code: str, message: str) -> None:
        self._add(self.errors, code, message)

    def warn(self, code: str, message: str) -> None:
        self._add(self.warnings, code, message)

    @staticmethod
    def _add(into: dict[str, tuple[int, str]], code: str, message: str) -> None:
        if code in into:
            n, first = into[code]
            into[code] = (n + 1, first)
        else:
            into[code] = (1, message)

    def findings(self) -> Findings:
        return self._render(self.errors), self._render(self.warnings)

    @staticmethod
    def _render(found: dict[str, tuple[int, str]]) -> list[tuple[str, str]]:
        out = []
        for code, (n, message) in found.items():
            if n > 1:
                message += f" ({n - 1} more message{'s' if n > 2 else ''} on this line too)"
            out.append((code, message))
        return out


def inspect_example(obj: Any) -> Findings:
    """Every error and warning of one parsed line, as (code, message) lists."""
    line = _Line()
    if not isinstance(obj, dict):
        line.error("not_an_object", f"the line is a JSON {json_type(obj)}, but each line must "
                   f"be one example object like {_SHAPE}")
        return line.findings()
    if "messages" in getattr(obj, "repeated", ()):
        line.error("duplicate_key", 'the key "messages" appears more than once on the line; '
                   "parsers differ in which copy they keep, so the example is ambiguous — keep "
                   "one")
    if "messages" not in obj:
        keys = ", ".join(f'"{k}"' for k in list(obj)[:5]) or "none"
        line.error("missing_messages", f'the object has no "messages" key (its keys: {keys}); '
                   f"each line must look like {_SHAPE}")
        return line.findings()
    messages = obj["messages"]
    if not isinstance(messages, list):
        line.error("messages_not_a_list", f'"messages" is a JSON {json_type(messages)}; it '
                   "must be a list of message objects")
        return line.findings()
    if not messages:
        line.error("empty_messages", '"messages" is empty; add the conversation, ending with '
                   "an assistant reply")
        return line.findings()
    _inspect_messages(messages, line)
    return line.findings()


def _inspect_messages(messages: list[Any], line: _Line) -> None:
    previous: Any = None
    has_assistant = False
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            line.error("message_not_an_object", f"message {number} is a JSON "
                       f'{json_type(message)}, not an object like {{"role": "user", '
                       '"content": "..."}')
            previous = None
            continue
        role = message.get("role")
        known_role = isinstance(role, str) and role in ROLES
        if role is None:
            line.error("missing_role", f'message {number} has no "role"; set it to system, '
                       "user or assistant")
        elif not known_role:
            line.error("unknown_role", f"message {number} has role {_short(role)}; use "
                       "system, user or assistant")
        content = message.get("content")
        if content is None:
            line.error("missing_content", f'message {number} has no "content" (or it is '
                       "null); give it the message text")
        elif not isinstance(content, str):
            line.error("content_not_a_string", f"message {number} content is a JSON "
                       f"{json_type(content)}; content must be a plain string")
        elif not content or content.isspace():
            line.warn("empty_content", f"message {number} ({_short(role)}) has empty "
                      "content; fill it in or remove the message")
        repeated = [k for k in getattr(message, "repeated", ()) if k in ALLOWED_MESSAGE_KEYS]
        if repeated:
            names = ", ".join(f'"{k}"' for k in sorted(repeated))
            line.error("duplicate_key", f"message {number} has the {_keys(repeated)} {names} "
                       "more than once; parsers differ in which copy they keep, so the message "
                       "is ambiguous — keep one")
        if "name" in message and not isinstance(message["name"], str):
            line.error("invalid_name", f"message {number} has name {_short(message['name'])}; "
                       "name must be a string (who is speaking), or leave it out")
        unknown = [k for k in message if k not in ALLOWED_MESSAGE_KEYS]
        if unknown:
            names = ", ".join(_short(k) for k in unknown[:5])
            line.error("unknown_message_key", f"message {number} has the unknown "
                       f"{_keys(unknown)} {names}; allowed keys are role, content, name and "
                       "weight")
        if "weight" in message:
            weight = message["weight"]
            if type(weight) is not int or weight not in (0, 1):
                line.error("invalid_weight", f"message {number} has weight {_short(weight)}; "
                           "weight must be the integer 0 or 1")
            elif role != "assistant":
                line.error("invalid_weight", f"message {number} ({_short(role)}) has a "
                           "weight; only assistant messages may carry weight 0 or 1")
        if role == "system" and number > 1:
            line.error("system_not_first", f"message {number} is a system message; a system "
                       "message may only be the first message")
        if known_role and role == previous:
            line.warn("consecutive_same_role", f"messages {number - 1} and {number} are both "
                      f'"{role}"; merge them or add the missing turn')
        has_assistant = has_assistant or role == "assistant"
        previous = role if known_role else None
    if not has_assistant:
        line.error("no_assistant_message", "the example has no assistant message; add at least "
                   "one assistant reply for the model to learn from")
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "user":
        line.warn("trailing_user_message", "the last message is from the user and is never "
                  "answered, so it teaches nothing; end the example with an assistant reply")
