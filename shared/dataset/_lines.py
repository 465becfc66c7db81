"""Bytes in arbitrary chunks → lines, hashing the whole input on the way.

Memory stays bounded by two chunks plus one line of at most ``max_line_bytes``: a longer line
is dropped as soon as it is known to be too long and the rest of it is skipped unread, so a
multi-gigabyte line costs no more memory than a short one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

__all__ = ["BOM", "LineSplitter"]

BOM = b"\xef\xbb\xbf"

# Chunks at least this big are hashed on a worker thread while the caller parses lines, when a
# core looks idle: hashlib releases the GIL while it hashes, so SHA-256 then costs no wall time.
# Without an idle core the thread only adds hand-offs (measured on a loaded 2-core machine:
# 7 % more CPU time and no wall time saved), so the hash is computed inline.
_THREADED_HASH_BYTES = 256 * 1024


def _spare_core() -> bool:
    """Whether another core is likely idle now (at least two usable and load below cores - 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - load average unavailable
        return False
    return cores >= 2 and load < cores - 1


class _Sha256:
    """SHA-256 of a stream, big chunks hashed in order on one worker thread."""

    def __init__(self, threaded: bool | None = None) -> None:
        self._sha = hashlib.sha256()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._threaded = _spare_core() if threaded is None else threaded

    def update(self, chunk: bytes) -> None:
        self._wait()
        if not self._threaded or len(chunk) < _THREADED_HASH_BYTES:
            self._sha.update(chunk)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tuneloop-sha256")
        self._pending = self._pool.submit(self._sha.update, chunk)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def close(self) -> None:
        self._wait()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def hexdigest(self) -> str:
        self._wait()
        return self._sha.hexdigest()


# bytes.split scans byte by byte (~1 ns/byte here) while bytes.find uses memchr, so for long
# lines a find loop is about twice as fast despite its per-line Python overhead (~0.5 µs, the
# cost of splitting ~500 bytes); below about a kilobyte per line split wins.
_LONG_LINE_BYTES = 1024


def _split_long(chunk: bytes) -> list[bytes]:
    """``chunk.split(b"\\n")``, faster when lines are long."""
    pieces: list[bytes] = []
    append = pieces.append
    find = chunk.find
    start = 0
    end = find(b"\n")
    while end >= 0:
        append(chunk[start:end])
        start = end + 1
        end = find(b"\n", start)
    append(chunk[start:])
    return pieces


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
        self._sha = _Sha256()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def batches(self, chunks: Iterable[bytes]) -> Iterator[list[bytes | None]]:
        try:
            yield from self._batches(chunks)
        finally:
            self._sha.close()

    def _batches(self, chunks: Iterable[bytes]) -> Iterator[list[bytes | None]]:
        limit = self.max_line_bytes
        parts: list[bytes] = []  # pieces of the unfinished line that started in earlier chunks
        held = 0  # their total length
        skipping = False  # inside a too-long line: drop bytes until its newline
        head = b""  # the first bytes of the stream until we know whether they hold a BOM
        started = False
        long_lines = False  # the last chunk's lines averaged _LONG_LINE_BYTES or more
        for chunk in chunks:
            if not chunk:
                continue
            chunk = bytes(chunk)
            self._sha.update(chunk)
            self.bytes += len(chunk)
            if not started:
                head += chunk
                if len(head) < len(BOM) and BOM.startswith(head):
                    continue
                chunk = head[len(BOM) :] if head.startswith(BOM) else head
                started = True
                head = b""
            pieces = _split_long(chunk) if long_lines else chunk.split(b"\n")
            long_lines = len(chunk) >= _LONG_LINE_BYTES * len(pieces)
            tail = pieces.pop()
            if not pieces:  # no newline: the chunk continues the unfinished line
                if not skipping:
                    held += len(tail)
                    if held > limit:
                        parts = []
                        skipping = True
                    else:
                        parts.append(tail)
                continue
            # A too-long line becomes None in place; list is invariant, hence the cast.
            lines = cast("list[bytes | None]", pieces)
            if skipping:
                lines[0] = None
                skipping = False
            elif parts:
                held += len(pieces[0])
                parts.append(pieces[0])
                lines[0] = b"".join(parts) if held <= limit else None
                parts = []
            if len(chunk) > limit:  # only then can a line inside the chunk be too long
                lines = [None if line is None or len(line) > limit else line for line in lines]
            held = len(tail)
            if held > limit:
                skipping = True
            elif held:
                parts = [tail]
            self.lines += len(lines)
            yield lines
        if not started and head:  # the whole stream was shorter than a BOM
            parts = [head[len(BOM) :] if head.startswith(BOM) else head]
            held = len(parts[0])
        if skipping:
            self.lines += 1
            yield [None]
        elif held:
            self.lines += 1
            yield [b"".join(parts)]

