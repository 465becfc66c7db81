"""JSON decoding and the canonical encoding of an example's messages.

Two decoders work together:

* the **reference** decoder (:func:`loads`, the standard library, strict UTF-8, no
  NaN/Infinity) parses a line generically; :func:`shared.dataset.rules.inspect_example` then
  names every problem. It decides every line the fast path does not accept.
* the **fast** decoder (:data:`decode_example`, msgspec with a typed schema, when msgspec is
  installed) parses and checks the structure of a well-formed example in C, skipping
  unknown top-level keys without building them. It is about 3.5× faster than ``json.loads``
  on chat data. It only ever *accepts* what the reference accepts; anything it rejects, or is
  unsure about, goes to the reference. msgspec checks the UTF-8 of every string it builds but
  not of the keys and values it skips, so a non-ASCII line it accepts still needs that check —
  unless :data:`decode_whole` accepted it: that typed decoder allows only the top-level keys
  ``messages``, ``prompt`` (a string) and ``prompt_id`` (a string or an integer) and builds
  them all, so it has seen every byte, and nothing on the line nests deeper than 3 levels.

Identity (duplicate detection within one run): Python's ``hash`` of the tuple of messages —
for the fast path, ``hash(tuple(messages))`` of the decoded frozen structs, computed in C;
for the reference, :func:`identity` of the canonical dicts, equal to it for equal messages.
It is 64-bit SipHash-based and randomised per process, so it is only ever compared within
one process (the split, which must be stable across processes, uses BLAKE2b of the canonical
bytes). Two different examples collide with probability about n² / 2⁶⁵ (3·10⁻⁸ at a
million examples); a collision would only mislabel one example as a duplicate.

Canonical messages: each message as an object with keys in the order role, content, name,
weight (absent ones left out), no spaces, UTF-8, non-ASCII unescaped. Both encoders produce
the same bytes, so digests (duplicates, split buckets) do not depend on msgspec being present.

What a line *is* never depends on which path judges it (one verdict per line):

* **Large integers** are JSON numbers like any other. The reference keeps an integer literal
  too long for ``int()`` (CPython's 4,300-digit limit) as a :class:`LargeInt`, so one in an
  ignored key changes nothing, and one as a ``weight`` is an ``invalid_weight``.
* **Nesting**: a line nesting arrays/objects more than :data:`MAX_DEPTH` (128) levels deep
  is ``invalid_json`` wherever the deep value sits — serde_json's default recursion limit
  ("more than 128 layers deep", serde-rs/json src/error.rs ``RecursionLimitExceeded``);
  an example needs 3. Both parsers here recurse, and where they give up depends on the
  caller's stack, so the limit is checked explicitly (:func:`too_deep`), never left to them.
* **Duplicate keys**: RFC 8259 §4 leaves the meaning of a repeated name to each parser
  ("many implementations report the last name/value pair only"), and neither decoder can
  report one (msgspec keeps the last silently: msgspec issue #648). The reference records
  repeated keys (:class:`RepeatedKeys`); the fast path counts the keys that matter
  (:func:`keys_unique`) and hands any line it is unsure about to the reference.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

__all__ = [
    "BACKEND",
    "FAST_ERRORS",
    "MAX_DEPTH",
    "UNSET",
    "LargeInt",
    "RepeatedKeys",
    "canonical_dicts",
    "decode_example",
    "decode_whole",
    "encode",
    "identity",
    "keys_unique",
    "loads",
    "maybe_too_deep",
    "too_deep",
]

MAX_DEPTH = 128


class LargeInt:
    """An integer literal longer than ``int()`` accepts, kept as its digits (never a weight)."""

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"LargeInt({self.digits[:12]}…, {len(self.digits)} digits)"


class RepeatedKeys(dict[str, Any]):
    """A JSON object in which ``repeated`` keys appear more than once (the last value kept)."""

    repeated: frozenset[str] = frozenset()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int | LargeInt:
    try:
        return int(text)
    except ValueError:  # longer than sys.get_int_max_str_digits() (JSON syntax is checked)
        return LargeInt(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    again: set[str] = set()
    for key, _ in pairs:
        (again if key in seen else seen).add(key)
    repeated = RepeatedKeys(obj)
    repeated.repeated = frozenset(again)
    return repeated


_decoder = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_parse_int, object_pairs_hook=_object
)
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def loads(line: bytes) -> Any:
    """The reference parse; raises ValueError (incl. UnicodeDecodeError) or RecursionError."""
    # Decode explicitly: json.loads(bytes) would sniff UTF-16/32 and accept a BOM.
    return _decoder.decode(line.decode("utf-8"))


# A JSON string (valid JSON: every quote inside one is escaped) and the bytes of a line that are
# not brackets; each bracket's step in nesting depth.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _open, _close in (b"[]", b"{}"):
    _STEP[_open], _STEP[_close] = 1, -1


def maybe_too_deep(line: bytes) -> bool:
    """Whether a line has enough brackets to nest deeper than MAX_DEPTH (cheap, conservative)."""
    return line.count(b"[") + line.count(b"{") > MAX_DEPTH


def too_deep(line: bytes) -> bool:
    """Whether a line of valid JSON nests arrays/objects more than MAX_DEPTH levels deep."""
    if not maybe_too_deep(line):
        return False
    skeleton = _STRING.sub(b"", line).translate(None, _NOT_BRACKET)
    return max(itertools.accumulate(map(_STEP.__getitem__, skeleton)), default=0) > MAX_DEPTH


# The keys that matter, each occurrence of a key among "messages", "role", "content", "name"
# and "weight": written plainly (then followed by its colon), or with an escaped letter
# ("rol\u0065" — the first escape of a key made of lowercase letters is \u006X or \u007X).
# Every such key on a line gives at least one match (more only for look-alikes in other keys
# and strings), so as many matches as keys the decoded example has means none is repeated.
_KEYS = re.compile(
    rb'"(?:(?:messages|role|content|name|weight)"[ \t\r\n]*+:|[a-z]*+\\u00[67])'
)
KEYS_FINDALL = _KEYS.findall


# The colons that end a key on a line whose every key ends in a letter or hex digit (as on
# a line decode_whole accepted: its keys are the usual names, plainly written or escaped): a
# colon right after `<letter or digit>"` (only a closing quote can follow a letter, and then
# the string is a key), or after whitespace. Each key is counted once; text adds a match only
# where a colon follows whitespace ("a : b"), so as many matches as keys means none repeated.
_KEY_COLONS = re.compile(rb":(?:(?<=[0-9A-Za-z]\":)|(?<=[ \t\r\n]:))")
KEY_COLONS_FINDALL = _KEY_COLONS.findall


def keys_unique(
    line: bytes, messages: Sequence[Any], others: int | None = None, colons: int | None = None
) -> bool:
    """Whether no key that matters is repeated on a fast-decoded line (False: not sure).

    ``others``: how many other top-level keys the line has, when the decoder saw them all
    (``decode_whole``); then every key is counted by its colon (:data:`_KEY_COLONS`, about
    half the cost of the search for the keys that matter, which decides the other lines).
    ``colons``: that count, when the caller already made it (the line is not scanned again).
    """
    expected = 1 + 2 * len(messages)
    extra: int | None = None
    if others is not None:
        found = len(KEY_COLONS_FINDALL(line)) if colons is None else colons
        if found == expected + others:
            return True
        extra = 0
        for message in messages:
            extra += (message.name is not UNSET) + (message.weight is not UNSET)
        if found == expected + others + extra:
            return True
    found = len(KEYS_FINDALL(line))
    if found == expected:
        return True
    if extra is None:
        extra = 0
        for message in messages:
            extra += (message.name is not UNSET) + (message.weight is not UNSET)
    return found == expected + extra


def _std_encode(value: Any) -> bytes:
    return _encoder.encode(value).encode("utf-8")


def canonical_dicts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Valid messages rebuilt with their keys in canonical order (role, content, name, weight)."""
    out = []
    for message in messages:
        canonical = {"role": message["role"], "content": message["content"]}
        if "name" in message:
            canonical["name"] = message["name"]
        if "weight" in message:
            canonical["weight"] = message["weight"]
        out.append(canonical)
    return out


def _tuple_identity(messages: list[dict[str, Any]]) -> int:
    return hash(tuple((m["role"], m["content"], m.get("name"), m.get("weight"))
                      for m in messages))


encode: Callable[[Any], bytes]
identity: Callable[[list[dict[str, Any]]], int]
decode_example: Callable[[bytes], Any] | None
decode_whole: Callable[[bytes], Any] | None
FAST_ERRORS: tuple[type[BaseException], ...]
UNSET: Any  # msgspec's marker for a field absent from the input

try:
    import msgspec
except ImportError:  # pragma: no cover - exercised where msgspec is absent
    BACKEND = "json"
    encode = _std_encode
    decode_example = None
    decode_whole = None
    identity = _tuple_identity
    FAST_ERRORS = ()
    UNSET = object()
else:
    BACKEND = "msgspec"

    class Message(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
        """A message that passes every structural rule (the order of fields is canonical)."""

        role: Literal["system", "user", "assistant"]
        content: str
        name: str | msgspec.UnsetType = msgspec.UNSET
        weight: Literal[0, 1] | msgspec.UnsetType = msgspec.UNSET

    class Example(msgspec.Struct, gc=False):
        """An example; other top-level keys are skipped unbuilt."""

        messages: tuple[Message, ...]  # a tuple: hashable as it is

    class WholeExample(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        """An example with only the usual top-level keys, every value built (UTF-8 checked),
        none nested: a line it accepts is at most 3 levels deep."""

        messages: tuple[Message, ...]
        prompt: str | msgspec.UnsetType | None = msgspec.UNSET
        prompt_id: str | int | msgspec.UnsetType | None = msgspec.UNSET

    UNSET = msgspec.UNSET
    encode = msgspec.json.Encoder().encode
    decode_example = msgspec.json.Decoder(Example).decode
    decode_whole = msgspec.json.Decoder(WholeExample).decode

    def _struct_identity(messages: list[dict[str, Any]]) -> int:
        return hash(tuple(Message(**message) for message in messages))

    identity = _struct_identity
    FAST_ERRORS = (msgspec.DecodeError, ValueError, RecursionError)
