"""Recognise the common wrong formats from the first bytes of a dataset.

A file in one of these formats is not JSON Lines at all, so judging it line by line would
only bury the one useful fact under an error per line. :func:`sniff` looks at the head of the
stream (the first :data:`HEAD_BYTES`) and names the format and the fix, as one dataset-level
finding; the validator then reports only that (it still hashes and counts the whole input).

* ``wrong_encoding``: UTF-16 or UTF-32 text — a byte-order mark (``FF FE``, ``FE FF``,
  ``FF FE 00 00``, ``00 00 FE FF``), or none but the NUL bytes every ASCII character has in
  those encodings (``{\\0"\\0`` …).
* ``compressed_file``: gzip (``1F 8B``, RFC 1952 §2.3.1), zip (``PK\\3\\4``), bzip2 (``BZh``),
  xz (``FD 37 7A 58 5A 00``) or zstd (``28 B5 2F FD``) magic bytes.
* ``binary_file``: other binary data — control bytes (NUL and the like, never valid in JSON
  text) make up at least 1 % of the head.
* ``not_json_lines``: one JSON array (``[`` first, the first line ``[`` alone or an array of
  objects) or pretty-printed JSON (the first line ``{`` alone, or an object that continues on
  indented lines).
* ``cr_line_endings``: lines end in a lone CR (classic Mac OS): the head holds a CR followed
  by more text and no LF, so the whole file would read as a single line.
"""

from __future__ import annotations

import json
import re

__all__ = ["HEAD_BYTES", "sniff"]

HEAD_BYTES = 64 * 1024

_UTF8_BOM = b"\xef\xbb\xbf"
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16 (little-endian)", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16 (big-endian)", "UTF-16BE"),
)
# An opening bracket or brace, as the first character in each encoding without a mark.
_NO_BOM = (
    (re.compile(rb"[\[{]\x00\x00\x00"), "UTF-32 (little-endian)", "UTF-32LE"),
    (re.compile(rb"\x00\x00\x00[\[{]"), "UTF-32 (big-endian)", "UTF-32BE"),
    (re.compile(rb"[\[{]\x00[^\x00]\x00"), "UTF-16 (little-endian)", "UTF-16LE"),
    (re.compile(rb"\x00[\[{]\x00[^\x00]"), "UTF-16 (big-endian)", "UTF-16BE"),
)
_MAGIC = (
    (b"\x1f\x8b", "gzip", "gunzip it first: gunzip -c FILE.gz > FILE.jsonl"),
    (b"PK\x03\x04", "zip", "unzip it first and give the .jsonl inside"),
    (b"BZh", "bzip2", "decompress it first: bunzip2 -c FILE.bz2 > FILE.jsonl"),
    (b"\xfd7zXZ\x00", "xz", "decompress it first: xz -dc FILE.xz > FILE.jsonl"),
    (b"\x28\xb5\x2f\xfd", "zstd", "decompress it first: zstd -dc FILE.zst > FILE.jsonl"),
)
# Bytes that JSON text never holds raw (in strings they must be escaped; outside them only
# space, tab, LF and CR are whitespace).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LONE_CR = re.compile(rb"\r[^\r\n]")
_ONE_PER_LINE = "write one example object per line"


def sniff(head: bytes, *, whole: bool = False) -> tuple[str, str] | None:
    """(code, message) when the head of a dataset shows a wrong format, else None.

    ``whole``: the head is the whole input (so its last line is complete).
    """
    for bom, name, codec in _BOMS:
        if head.startswith(bom):
            return _encoding(f"{name} text (it starts with a {name} byte-order mark)", codec)
    for pattern, name, codec in _NO_BOM:
        if pattern.match(head):
            return _encoding(f"{name} text (every ASCII character is followed or preceded by "
                             "NUL bytes)", codec)
    for magic, name, fix in _MAGIC:
        if head.startswith(magic):
            return ("compressed_file", f"the file is {name}-compressed, not JSON Lines text; "
                    f"{fix}")
    controls = len(_CONTROL.findall(head))
    if controls and controls * 100 >= len(head):
        return ("binary_file", f"the file is binary data, not JSON Lines text ({controls:,} "
                f"control bytes in its first {len(head):,}); give the .jsonl dataset itself")
    text = head[len(_UTF8_BOM) :] if head.startswith(_UTF8_BOM) else head
    if b"\n" not in text and _LONE_CR.search(text):
        return ("cr_line_endings", "lines end in a lone CR (classic Mac OS line endings), so "
                "the whole file reads as one line; convert them to LF, e.g. "
                "tr '\\r' '\\n' < in.jsonl > out.jsonl")
    return _not_json_lines(text, whole)


def _encoding(what: str, codec: str) -> tuple[str, str]:
    return ("wrong_encoding", f"the file is {what}; JSON Lines must be UTF-8 — re-save it as "
            f"UTF-8, e.g. iconv -f {codec} -t UTF-8 in.jsonl > out.jsonl")


def _not_json_lines(text: bytes, whole: bool) -> tuple[str, str] | None:
    lines = [line.strip() for line in text.split(b"\n")]
    complete = len(lines) if whole else len(lines) - 1  # the head may cut off the last one
    first = next((i for i, line in enumerate(lines) if line), None)
    if first is None:
        return None
    line = lines[first]
    if line.startswith(b"["):
        if line == b"[" or (first < complete and _array_of_objects(line)):
            return ("not_json_lines", "the file is one JSON array, not JSON Lines; "
                    f"{_ONE_PER_LINE}, e.g. jq -c '.[]' in.json > out.jsonl")
    elif line == b"{" or (
        line.startswith(b"{")
        and first < complete
        and not _parses(line)
        and any(lines[first + 1 :])
        and _indented_next(text, first)
    ):
        return ("not_json_lines", "the file is pretty-printed JSON (one object spread over "
                f"several lines), not JSON Lines; {_ONE_PER_LINE}, e.g. jq -c . in.json > "
                "out.jsonl")
    return None


def _parses(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return True


def _array_of_objects(line: bytes) -> bool:
    """An array line that does not parse alone (it goes on) or holds objects."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return True
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _indented_next(text: bytes, first: int) -> bool:
    """Whether the line after the first non-blank one starts with whitespace (indentation)."""
    raw = text.split(b"\n")
    for line in raw[first + 1 :]:
        if line.strip():
            return line[:1] in (b" ", b"\t")
    return False
