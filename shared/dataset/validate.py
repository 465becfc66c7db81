"""Streaming validation of a JSONL chat dataset: one pass, bounded memory, every rule.

Memory: one chunk, one line of at most ``max_line_bytes``, the stats histogram (bounded) and,
for duplicate detection, one 16-byte BLAKE2b digest plus the line number per distinct example
(about 100 bytes each in CPython) — the only part that grows with the dataset, O(examples).

Speed: lines are split with ``bytes.split`` over whole chunks, parsed with orjson when it is
installed, and checked by a tight fast path that accepts a clean example in one loop over its
messages; anything the fast path does not accept goes through :func:`inspect_example`, which
names every problem. Both give the same verdict (a property test pins this).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.dataset import _json
from shared.dataset._lines import BOM, LineSplitter
from shared.dataset.config import ValidationConfig
from shared.dataset.report import DatasetInfo, Issue, ValidationReport
from shared.dataset.rules import inspect_example
from shared.dataset.tokens import (
    EXAMPLE_OVERHEAD,
    MESSAGE_OVERHEAD,
    Histogram,
    estimate_content_tokens,
    load_tokenizer_counter,
)
from shared.errors import DatasetUnreadableError

__all__ = ["READ_CHUNK_BYTES", "example_digest", "validate_path", "validate_stream"]

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024
_PARSE_ERRORS = (ValueError, RecursionError)


def example_digest(canonical: bytes) -> bytes:
    """The 16-byte identity of an example: BLAKE2b of its canonical messages encoding."""
    return hashlib.blake2b(canonical, digest_size=16).digest()


def validate_path(path: str | os.PathLike[str], *, config: ValidationConfig) -> ValidationReport:
    """Validate a local file; raises DatasetUnreadableError when it cannot be read at all."""
    file = Path(path)
    if file.is_dir():
        raise DatasetUnreadableError(
            f"{file} is a directory, not a dataset file", hint="give the path of a .jsonl file"
        )
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise DatasetUnreadableError(
            f"cannot open {file}: {exc.strerror or exc}",
            hint="check the path exists and is readable",
        ) from exc
    with handle:
        try:
            return validate_stream(_read_chunks(handle), name=file.name, config=config)
        except OSError as exc:
            raise DatasetUnreadableError(
                f"reading {file} failed: {exc.strerror or exc}", hint="check the file and retry"
            ) from exc


def _read_chunks(handle: Any) -> Iterator[bytes]:
    while chunk := handle.read(READ_CHUNK_BYTES):
        yield chunk


def validate_stream(
    chunks: Iterable[bytes], *, name: str, config: ValidationConfig
) -> ValidationReport:
    """Validate a dataset given as byte chunks of any sizes (lines may span chunks)."""
    counter = load_tokenizer_counter(config.tokenizer_path) if config.tokenizer_path else None
    run = _Run(config, counter)
    splitter = LineSplitter(config.max_line_bytes)
    run.consume(splitter.batches(chunks))
    info = DatasetInfo(name=name, bytes=splitter.bytes, sha256=splitter.sha256,
                       lines=splitter.lines)
    report = run.report(info)
    logger.info("validated dataset=%s bytes=%s valid=%s errors=%s warnings=%s", name,
                info.bytes, report.valid, report.error_total, report.warning_total)
    return report


def _clean_tokens(messages: list[Any]) -> tuple[int, int] | None:
    """(content tokens, assistant tokens) of an example with no finding at all, else None.

    Accepts only what :func:`inspect_example` finds nothing in: object messages with exactly
    role and content, known roles, no two alike in a row, system only first, non-blank string
    content, ending with an assistant reply. Anything else returns None (the slow path decides).
    """
    previous: Any = None
    tokens = 0
    assistant = 0
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role = message.get("role")
        content = message.get("content")
        if type(content) is not str or not content or role == previous or content.isspace():
            return None
        n = (len(content) + 3) >> 2 if content.isascii() else estimate_content_tokens(content)
        if role == "assistant":
            assistant += n
        elif role != "user" and (role != "system" or previous is not None):
            return None
        tokens += n
        previous = role
    if previous != "assistant":
        return None
    return tokens, assistant


def _content_tokens(messages: list[Any], count: Callable[[str], int]) -> tuple[int, int]:
    tokens = 0
    assistant = 0
    for message in messages:
        n = count(message["content"])
        tokens += n
        if message["role"] == "assistant":
            assistant += n
    return tokens, assistant


class _Run:
    """The state of one validation pass; ``consume`` is the hot loop."""

    def __init__(self, config: ValidationConfig, counter: Callable[[str], int] | None) -> None:
        self.config = config
        self.counter = counter
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.error_counts: dict[str, int] = {}
        self.warning_counts: dict[str, int] = {}
        self.seen: dict[bytes, int] = {}
        self.hist = Histogram()
        self.examples = 0
        self.invalid = 0
        self.blank = 0
        self.too_long = 0
        self.over_max = 0
        self.messages_min = 0
        self.messages_max = 0
        self.messages_total = 0
        self.tokens_min = 0
        self.tokens_max = 0
        self.tokens_total = 0
        self.assistant_total = 0

    def error(self, line: int | None, code: str, message: str) -> None:
        self.error_counts[code] = self.error_counts.get(code, 0) + 1
        if len(self.errors) < self.config.max_listed:
            self.errors.append(Issue(line, code, message))

    def warn(self, line: int | None, code: str, message: str) -> None:
        self.warning_counts[code] = self.warning_counts.get(code, 0) + 1
        if len(self.warnings) < self.config.max_listed:
            self.warnings.append(Issue(line, code, message))

    def consume(self, batches: Iterator[list[bytes | None]]) -> None:
        loads = _json.loads
        canonical = _json.canonical_messages
        blake2b = hashlib.blake2b
        seen = self.seen
        setdefault = seen.setdefault
        bins = self.hist.bins
        exact_below = self.hist.exact_below
        counter = self.counter
        max_seq = self.config.max_seq_length
        overhead = EXAMPLE_OVERHEAD
        per_message = MESSAGE_OVERHEAD
        lineno = 0
        for batch in batches:
            for line in batch:
                lineno += 1
                if line is None:
                    self.too_long += 1
                    self.error(lineno, "line_too_long", self._too_long_message())
                    continue
                try:
                    obj = loads(line)
                except _PARSE_ERRORS:
                    self._unparsable(lineno, line)
                    continue
                messages = obj.get("messages") if type(obj) is dict else None
                clean = _clean_tokens(messages) if type(messages) is list else None
                warnings: list[tuple[str, str]] = []
                if clean is None:
                    errors, warnings = inspect_example(obj)
                    if errors:
                        self.invalid += 1
                        for code, message in errors:
                            self.error(lineno, code, message)
                        for code, message in warnings:
                            self.warn(lineno, code, message)
                        continue
                    assert messages is not None  # no errors means a list of messages
                    clean = _content_tokens(messages, estimate_content_tokens)
                try:
                    key = canonical(messages)  # type: ignore[arg-type]
                except UnicodeEncodeError:
                    self.invalid += 1
                    self.error(lineno, "invalid_json", "the line holds an unpaired surrogate "
                               "escape (like \\ud800), which is not valid Unicode; fix the "
                               "text encoding")
                    continue
                for code, message in warnings:
                    self.warn(lineno, code, message)
                self.examples += 1
                first = setdefault(blake2b(key, digest_size=16).digest(), lineno)
                if first != lineno:
                    self.warn(lineno, "duplicate_example", f"same messages as line {first}; "
                              "this copy is dropped from training (remove it to silence this)")
                    continue
                assert messages is not None
                if counter is not None:
                    clean = _content_tokens(messages, counter)
                count = len(messages)
                tokens = clean[0] + per_message * count + overhead
                if tokens > max_seq:
                    self.over_max += 1
                    self.warn(lineno, "exceeds_max_tokens", f"about {tokens:,} tokens, above "
                              f"max_seq_length {max_seq:,}; training truncates it — shorten "
                              "the conversation or raise TUNELOOP_MAX_SEQ_LENGTH")
                if tokens < exact_below:
                    bins[tokens] = bins.get(tokens, 0) + 1
                    self.hist.count += 1
                else:
                    self.hist.add(tokens)
                self._add_stats(count, tokens, clean[1])

    def _add_stats(self, messages: int, tokens: int, assistant: int) -> None:
        if len(self.seen) == 1:
            self.messages_min = self.messages_max = messages
            self.tokens_min = self.tokens_max = tokens
        else:
            self.messages_min = min(self.messages_min, messages)
            self.messages_max = max(self.messages_max, messages)
            self.tokens_min = min(self.tokens_min, tokens)
            self.tokens_max = max(self.tokens_max, tokens)
        self.messages_total += messages
        self.tokens_total += tokens
        self.assistant_total += assistant

    def _too_long_message(self) -> str:
        limit = self.config.max_line_bytes
        return (f"the line is longer than {limit:,} bytes (TUNELOOP_MAX_LINE_BYTES) and was "
                "skipped unread; shorten the example or raise the limit")

    def _unparsable(self, lineno: int, line: bytes) -> None:
        if not line.strip():
            self.blank += 1
            self.warn(lineno, "blank_line", "blank line (skipped); remove it")
            return
        self.invalid += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = line[exc.start : exc.start + 1].hex()
            self.error(lineno, "invalid_utf8", f"byte 0x{bad} at byte {exc.start + 1} of the "
                       "line is not valid UTF-8; save the file as UTF-8 text")
            return
        if line.startswith(BOM):
            self.error(lineno, "invalid_json", "the line starts with a byte-order mark (files "
                       "concatenated?); only the file may start with one — remove it")
            return
        try:
            _json.std_loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            self.error(lineno, "invalid_json", _json_problem(exc, text))
        except ValueError as exc:
            self.error(lineno, "invalid_json", f"not valid JSON: {exc}; each line must be one "
                       "complete JSON object")
        else:  # the standard parser accepts what orjson refused (e.g. a huge number)
            self.error(lineno, "invalid_json", "not valid JSON for strict parsers (a number out "
                       "of range or an invalid escape); fix the value")

    def report(self, info: DatasetInfo) -> ValidationReport:
        config = self.config
        distinct = len(self.seen)
        dataset_errors: list[Issue] = []
        if info.lines - self.blank == 0:
            dataset_errors.append(Issue(None, "empty_dataset", "the dataset holds no examples; "
                                        "upload a JSONL file with one example per line"))
        elif distinct < config.min_examples:
            dataset_errors.append(Issue(None, "too_few_examples", f"only {distinct:,} distinct "
                                        f"valid example(s); at least {config.min_examples:,} "
                                        "are needed (TUNELOOP_MIN_EXAMPLES): add examples or "
                                        "fix the invalid lines"))
        for issue in dataset_errors:
            self.error_counts[issue.code] = self.error_counts.get(issue.code, 0) + 1
        errors = dataset_errors + self.errors[: max(0, config.max_listed - len(dataset_errors))]
        return ValidationReport(
            valid=not self.error_counts,
            dataset=info,
            errors=errors,
            error_counts=dict(sorted(self.error_counts.items())),
            warnings=self.warnings,
            warning_counts=dict(sorted(self.warning_counts.items())),
            stats=self._stats(distinct),
        )

    def _stats(self, distinct: int) -> dict[str, Any]:
        hist = self.hist
        return {
            "examples": self.examples,
            "distinct_examples": distinct,
            "duplicates": self.examples - distinct,
            "invalid_lines": self.invalid,
            "too_long": self.too_long,
            "blank_lines": self.blank,
            "messages_per_example": {
                "min": self.messages_min,
                "mean": round(self.messages_total / distinct, 3) if distinct else 0.0,
                "max": self.messages_max,
            },
            "tokens_per_example": {
                "min": self.tokens_min,
                "p50": hist.percentile(50),
                "p95": hist.percentile(95),
                "max": self.tokens_max,
                "total": self.tokens_total,
            },
            "assistant_tokens_total": self.assistant_total,
            "token_count_method": "tokenizer" if self.counter else "estimate",
            "max_seq_length": self.config.max_seq_length,
            "over_max_seq_length": self.over_max,
            "percentile_method": "nearest-rank; exact below 16,384 tokens, 1% bins above",
        }


def _json_problem(exc: json.JSONDecodeError | RecursionError, text: str) -> str:
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested too deeply; each line must be one flat example object"
    snippet = text[max(0, exc.pos - 20) : exc.pos + 20].strip()
    return (f"not valid JSON: {exc.msg} at column {exc.colno} (near {snippet!r}); each line "
            "must be one complete JSON object")
