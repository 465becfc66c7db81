"""JSON parsing and the canonical encoding of an example's messages.

orjson is used when it is installed (about three times faster than the standard library on
chat data); otherwise :mod:`json` is configured to accept and reject the same documents as
orjson does on everything a valid example can hold, and to produce byte-identical canonical
encodings, so digests (and therefore duplicate detection and split buckets) do not depend on
which parser is installed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

__all__ = ["BACKEND", "JSONError", "canonical_messages", "loads"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is too large for a double")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _std_loads(data: bytes) -> Any:
    # Decode explicitly: json.loads(bytes) would sniff UTF-16/32 and accept a BOM.
    return _decoder.decode(data.decode("utf-8"))


def _std_canonical(messages: list[Any]) -> bytes:
    # Raises UnicodeEncodeError for an unpaired surrogate escape such as "\ud800".
    return _encoder.encode(messages).encode("utf-8")


loads: Callable[[bytes], Any]
canonical_messages: Callable[[list[Any]], bytes]
JSONError: tuple[type[Exception], ...]

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    BACKEND = "json"
    loads = _std_loads
    canonical_messages = _std_canonical
    JSONError = (ValueError,)
else:
    BACKEND = "orjson"
    loads = orjson.loads
    _SORT = orjson.OPT_SORT_KEYS
    _dumps = orjson.dumps

    def _orjson_canonical(messages: list[Any]) -> bytes:
        return _dumps(messages, option=_SORT)

    canonical_messages = _orjson_canonical
    JSONError = (orjson.JSONDecodeError, ValueError)

# Both backends raise ValueError subclasses for malformed input; UnicodeError is one too.
std_loads = _std_loads
std_canonical = _std_canonical
