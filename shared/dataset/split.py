"""Deterministic train/validation split of a valid dataset, streaming, duplicates dropped.

The side of an example is a function of its **prompt** alone: the messages before its final
assistant turn (the last ``assistant`` message; what the model is asked). Identity of a prompt:
BLAKE2b-128 of the prompt's canonical messages JSON (:func:`prompt_digest`). An example goes to
``validation`` when the first 8 bytes of its prompt digest, read as a big-endian integer, fall
below ``validation_fraction × 2⁶⁴``; otherwise to ``train``. So a question lands on the same
side whatever file, position, drop or answer it comes with: the same prompt answered
differently in a later drop stays on its side, and no prompt on the validation side of any
drop is ever on the training side of another (issue 11's leakage property).

Duplicates are still found by the whole example (:func:`example_digest`, BLAKE2b-128 of the
canonical messages, the digest the validator uses): two answers to one prompt are two
examples, on the same side. There is no exception forcing a side to be non-empty: a small
dataset may have an empty validation side (the fine-tune then runs without a validation
file), and with ``validation_fraction == 0`` everything goes to train.

Output lines are ``{"messages":[...]}\\n`` with the canonical messages JSON (keys in the order
role, content, name, weight; no spaces; UTF-8);
other top-level keys are dropped because training reads only the messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from shared.dataset import _json
from shared.dataset._lines import LineSplitter
from shared.dataset.judge import clean_sizes, fast_messages, judge_line
from shared.errors import TuneloopError

__all__ = [
    "Bucket",
    "SplitCounts",
    "SplitInputError",
    "bucket_of",
    "example_digest",
    "prompt_digest",
    "prompt_of",
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


def _final_assistant(roles: Sequence[str]) -> int:
    """Index of the last assistant message (a valid example has one)."""
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "assistant":
            return i
    raise ValueError("the messages have no assistant turn")


def prompt_of(messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """(prompt, reference) of a valid example's messages: the canonical messages before its
    final assistant turn, and that turn's content. ValueError without an assistant turn."""
    canonical = _json.canonical_dicts([dict(m) for m in messages])
    i = _final_assistant([str(m["role"]) for m in canonical])
    return canonical[:i], str(canonical[i]["content"])


def prompt_digest(prompt: Sequence[Mapping[str, Any]]) -> bytes:
    """The stable 16-byte identity of a prompt (messages before the final assistant turn, as
    :func:`prompt_of` gives them): BLAKE2b of their canonical messages JSON."""
    encoded = _json.encode(_json.canonical_dicts([dict(m) for m in prompt]))
    return hashlib.blake2b(encoded, digest_size=16).digest()


def bucket_of(digest: bytes, validation_fraction: float) -> Bucket:
    """The side an example whose prompt has this digest belongs to."""
    threshold = int(validation_fraction * 2**64)
    return "validation" if int.from_bytes(digest[:8], "big") < threshold else "train"


class _Split:
    def __init__(self, validation_fraction: float, max_line_bytes: int) -> None:
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in [0, 1)")
        self.threshold = int(validation_fraction * 2**64)
        self.lines = LineSplitter(max_line_bytes)
        self.sent: dict[Bucket, int] = {"train": 0, "validation": 0}
        self.duplicates = 0
        self.blank = 0

    def run(self, chunks: Iterable[bytes]) -> Iterator[tuple[Bucket, bytes]]:
        seen: set[bytes] = set()
        threshold = self.threshold
        lineno = 0
        for batch in self.lines.batches(chunks):
            for line in batch:
                lineno += 1
                parts = self._canonical(lineno, line)
                if parts is None:
                    continue
                canonical, prompt = parts
                digest = example_digest(canonical)
                if digest in seen:
                    self.duplicates += 1
                    continue
                seen.add(digest)
                key = hashlib.blake2b(prompt, digest_size=16).digest()
                side: Bucket = (
                    "validation" if int.from_bytes(key[:8], "big") < threshold else "train"
                )
                self.sent[side] += 1
                yield side, b'{"messages":' + canonical + b"}\n"

    def _canonical(self, lineno: int, line: bytes | None) -> tuple[bytes, bytes] | None:
        """(canonical messages JSON, canonical prompt JSON) of a line; None for a blank one."""
        if line is None:
            raise SplitInputError(f"line {lineno} is longer than the line limit",
                                  hint="validate the dataset before splitting it")
        messages = fast_messages(line)
        if messages is not None and clean_sizes(messages) is not None:
            encode = _json.encode
            cut = _final_assistant([m.role for m in messages])
            return encode(messages), encode(messages[:cut])
        verdict = judge_line(line)
        if verdict.blank:
            self.blank += 1
            return None
        if verdict.example is None:
            code, message = verdict.errors[0]
            raise SplitInputError(f"line {lineno} is invalid: {code}: {message}",
                                  hint="validate the dataset before splitting it")
        canonical = verdict.example.canonical
        dicts: list[dict[str, Any]] = _json.loads(canonical)  # canonical order already
        cut = _final_assistant([str(m["role"]) for m in dicts])
        return canonical, _json.encode(dicts[:cut])

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
