"""Deterministic train/validation split of a valid dataset, streaming, duplicates dropped.

Each distinct example (identity: BLAKE2b-128 of its canonical messages, the digest the
validator uses for duplicates) goes to ``validation`` when the first 8 bytes of its digest,
read as a big-endian integer, fall below ``validation_fraction × 2⁶⁴``; otherwise to
``train``. So an example lands on the same side whatever file or position it comes in.

One exception keeps both sides non-empty: the first distinct example is held back (the only
example ever held) and emitted last; if by then one side is still empty and there are at least
two distinct examples, it goes to that side. With ``validation_fraction == 0`` everything goes
to train and nothing is forced into validation. A single distinct example goes to train.

Output lines are ``{"messages":[...]}\\n`` with the canonical messages JSON (keys in the order
role, content, name, weight; no spaces; UTF-8);
other top-level keys are dropped because training reads only the messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from shared.dataset._lines import LineSplitter
from shared.dataset.judge import fast_example, judge_line
from shared.errors import TuneloopError

__all__ = [
    "Bucket",
    "SplitCounts",
    "SplitInputError",
    "bucket_of",
    "example_digest",
    "split_stream",
    "split_to",
]

Bucket = Literal["train", "validation"]


class SplitInputError(TuneloopError):
    """The stream given to the split is not a valid dataset (it changed since validation?)."""

    code = "split_input_invalid"


@dataclass(frozen=True)
class SplitCounts:
    """What a split wrote, and the identity (bytes, sha256) of the input it read."""

    train: int
    validation: int
    duplicates: int
    blank_lines: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def example_digest(canonical: bytes) -> bytes:
    """The stable 16-byte identity of an example: BLAKE2b of its canonical messages JSON."""
    return hashlib.blake2b(canonical, digest_size=16).digest()


def bucket_of(digest: bytes, validation_fraction: float) -> Bucket:
    """The side an example with this digest belongs to."""
    threshold = int(validation_fraction * 2**64)
    return "validation" if int.from_bytes(digest[:8], "big") < threshold else "train"


class _Split:
    def __init__(self, validation_fraction: float, max_line_bytes: int) -> None:
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in [0, 1)")
        self.fraction = validation_fraction
        self.threshold = int(validation_fraction * 2**64)
        self.lines = LineSplitter(max_line_bytes)
        self.sent: dict[Bucket, int] = {"train": 0, "validation": 0}
        self.duplicates = 0
        self.blank = 0

    def run(self, chunks: Iterable[bytes]) -> Iterator[tuple[Bucket, bytes]]:
        seen: set[bytes] = set()
        held: tuple[Bucket, bytes] | None = None
        threshold = self.threshold
        lineno = 0
        for batch in self.lines.batches(chunks):
            for line in batch:
                lineno += 1
                canonical = self._canonical(lineno, line)
                if canonical is None:
                    continue
                digest = example_digest(canonical)
                if digest in seen:
                    self.duplicates += 1
                    continue
                seen.add(digest)
                side: Bucket = (
                    "validation" if int.from_bytes(digest[:8], "big") < threshold else "train"
                )
                out = b'{"messages":' + canonical + b"}\n"
                if held is None and len(seen) == 1:
                    held = (side, out)
                    continue
                self.sent[side] += 1
                yield side, out
        if held is not None:
            side = held[0]
            if self.fraction > 0 and len(seen) >= 2:
                if not self.sent["validation"]:
                    side = "validation"
                elif not self.sent["train"]:
                    side = "train"
            elif len(seen) == 1:
                side = "train"
            self.sent[side] += 1
            yield side, held[1]

    def _canonical(self, lineno: int, line: bytes | None) -> bytes | None:
        if line is None:
            raise SplitInputError(f"line {lineno} is longer than the line limit",
                                  hint="validate the dataset before splitting it")
        example = fast_example(line)
        if example is None:
            verdict = judge_line(line)
            if verdict.blank:
                self.blank += 1
                return None
            if verdict.example is None:
                code, message = verdict.errors[0]
                raise SplitInputError(f"line {lineno} is invalid: {code}: {message}",
                                      hint="validate the dataset before splitting it")
            example = verdict.example
        return example.canonical

    def counts(self) -> SplitCounts:
        return SplitCounts(train=self.sent["train"], validation=self.sent["validation"],
                           duplicates=self.duplicates, blank_lines=self.blank,
                           bytes=self.lines.bytes, sha256=self.lines.sha256)


def split_stream(
    chunks: Iterable[bytes], *, validation_fraction: float, max_line_bytes: int
) -> Iterator[tuple[Bucket, bytes]]:
    """Yield (side, canonical JSONL line) once per distinct example of a valid dataset.

    Raises SplitInputError on a line the validator would reject (validate first).
    """
    return _Split(validation_fraction, max_line_bytes).run(chunks)


def split_to(
    chunks: Iterable[bytes],
    write_train: Callable[[bytes], object],
    write_validation: Callable[[bytes], object],
    *,
    validation_fraction: float,
    max_line_bytes: int,
) -> SplitCounts:
    """Split into two writers (e.g. ``file.write``) and return the counts and input identity.

    Compare ``sha256`` with the validation report's to prove the split read the validated bytes.
    """
    split = _Split(validation_fraction, max_line_bytes)
    for side, line in split.run(chunks):
        (write_train if side == "train" else write_validation)(line)
    return split.counts()
