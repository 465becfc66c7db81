"""Bytes in arbitrary chunks → lines, hashing the whole input on the way.

Memory stays bounded by one chunk plus one line of at most ``max_line_bytes``: a longer line
is dropped as soon as it is known to be too long and the rest of it is skipped unread, so a
multi-gigabyte line costs no more memory than a short one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

__all__ = ["BOM", "LineSplitter"]

BOM = b"\xef\xbb\xbf"


class LineSplitter:
    """Split a byte stream on ``\\n`` into batches of lines; ``None`` stands for a too-long line.

    Lines keep a trailing ``\\r`` (JSON parsers treat it as whitespace). A UTF-8 byte-order
    mark at the very start of the stream is removed. After iteration ``bytes`` and ``sha256``
    describe the whole input, and ``lines`` is the number of lines (a final line without a
    newline counts; the empty remainder after a final newline does not).
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.bytes = 0
        self.lines = 0
        self._sha = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def batches(self, chunks: Iterable[bytes]) -> Iterator[list[bytes | None]]:
        limit = self.max_line_bytes
        update = self._sha.update
        parts: list[bytes] = []  # pieces of the unfinished line that started in earlier chunks
        held = 0  # their total length
        skipping = False  # inside a too-long line: drop bytes until its newline
        head = b""  # the first bytes of the stream until we know whether they hold a BOM
        started = False
        for chunk in chunks:
            if not chunk:
                continue
            chunk = bytes(chunk)
            update(chunk)
            self.bytes += len(chunk)
            if not started:
                head += chunk
                if len(head) < len(BOM) and BOM.startswith(head):
                    continue
                chunk = head[len(BOM) :] if head.startswith(BOM) else head
                started = True
                head = b""
                if not chunk:
                    continue
            start = 0
            if skipping or parts:
                newline = chunk.find(b"\n")
                if newline < 0:
                    if not skipping:
                        held += len(chunk)
                        if held > limit:
                            parts.clear()
                            skipping = True
                        else:
                            parts.append(chunk)
                    continue
                if skipping:
                    first: bytes | None = None
                    skipping = False
                else:
                    held += newline
                    parts.append(chunk[:newline])
                    first = b"".join(parts) if held <= limit else None
                    parts.clear()
                held = 0
                start = newline + 1
                batch: list[bytes | None] = [first]
            else:
                batch = []
            lines = chunk[start:].split(b"\n") if start else chunk.split(b"\n")
            tail = lines.pop()
            if len(chunk) > limit:
                batch.extend(None if len(line) > limit else line for line in lines)
            else:
                batch.extend(lines)
            if len(tail) > limit:
                skipping = True
            elif tail:
                parts.append(tail)
                held = len(tail)
            if batch:
                self.lines += len(batch)
                yield batch
        if not started and head:  # the whole stream was shorter than a BOM
            parts.append(head[len(BOM) :] if head.startswith(BOM) else head)
            held = len(parts[0])
        if skipping:
            self.lines += 1
            yield [None]
        elif held:
            self.lines += 1
            yield [b"".join(parts)]
