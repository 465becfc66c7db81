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
  ``messages``, ``prompt`` and ``prompt_id`` and builds them all, so it has seen every byte.

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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

__all__ = [
    "BACKEND",
    "FAST_ERRORS",
    "UNSET",
    "canonical_dicts",
    "decode_example",
    "decode_whole",
    "encode",
    "identity",
    "loads",
]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def loads(line: bytes) -> Any:
    """The reference parse; raises ValueError (incl. UnicodeDecodeError) or RecursionError."""
    # Decode explicitly: json.loads(bytes) would sniff UTF-16/32 and accept a BOM.
    return _decoder.decode(line.decode("utf-8"))


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
    try:
        return hash(tuple((m["role"], m["content"], m.get("name"), m.get("weight"))
                          for m in messages))
    except TypeError:  # an unhashable "name" (the rules leave its type open)
        return hash(_std_encode(messages))


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
        """An example with only the usual top-level keys, every value built (UTF-8 checked)."""

        messages: tuple[Message, ...]
        prompt: Any = None
        prompt_id: Any = None

    UNSET = msgspec.UNSET
    encode = msgspec.json.Encoder().encode
    decode_example = msgspec.json.Decoder(Example).decode
    decode_whole = msgspec.json.Decoder(WholeExample).decode

    def _struct_identity(messages: list[dict[str, Any]]) -> int:
        try:
            return hash(tuple(Message(**message) for message in messages))
        except TypeError:  # an unhashable "name" (the rules leave its type open)
            return hash(encode(messages))

    identity = _struct_identity
    FAST_ERRORS = (msgspec.DecodeError, ValueError, RecursionError)
