"""Streaming validation of a JSONL chat dataset: one pass, bounded memory, every rule.

Memory: one chunk, one line of at most ``max_line_bytes``, the stats histogram (bounded) and,
for duplicate detection, one 64-bit identity (see :mod:`shared.dataset._json`) plus the line
number per distinct example, about 130 bytes each in CPython (a dict entry and two ints) —
the only part that grows with the dataset: O(distinct examples). Measured: 84 MB peak RSS
for 1 GiB of 2.5 KB examples (425k); a gigabyte of 300-byte examples would need ~450 MB.

Speed: lines are split per 1 MiB chunk (``bytes.split``, or a memchr ``find`` loop when lines
are long: :mod:`shared.dataset._lines`); a clean example is accepted by the fast path (the
inlined equivalent of :func:`shared.dataset.judge.fast_example`; a non-ASCII line is first
decoded whole, every byte seen, so it needs no separate UTF-8 check); every other line goes to
the reference (:func:`shared.dataset.judge.judge_line`), which names every problem. The fast
path also counts the keys that matter (a regular expression over the line: no repeated one)
and, for lines with other top-level keys, the brackets (no nesting past 128 levels). The
SHA-256 of the input is computed inline, or on a second thread when a core looks idle.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.dataset import _json
from shared.dataset._lines import LineSplitter
from shared.dataset.config import ValidationConfig
from shared.dataset.judge import Example, judge_line
from shared.dataset.report import DatasetInfo, Issue, ValidationReport, plural
from shared.dataset.sniff import HEAD_BYTES, sniff
from shared.dataset.tokens import (
    EXAMPLE_OVERHEAD,
    MESSAGE_OVERHEAD,
    Histogram,
    load_tokenizer_counter,
)
from shared.errors import DatasetUnreadableError

__all__ = ["READ_CHUNK_BYTES", "validate_path", "validate_stream"]

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024


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
    head, stream = _head(chunks)
    wrong_format = sniff(head, whole=len(head) < HEAD_BYTES)
    if wrong_format is None:
        run.consume(splitter.batches(stream))
    else:  # one dataset-level error; the input is still hashed and counted
        for _ in splitter.batches(stream):
            pass
    info = DatasetInfo(name=name, bytes=splitter.bytes, sha256=splitter.sha256,
                       lines=splitter.lines)
    report = run.report(info, wrong_format)
    logger.info("validated dataset=%s bytes=%s valid=%s errors=%s warnings=%s", name,
                info.bytes, report.valid, report.error_total, report.warning_total)
    return report


def _head(chunks: Iterable[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """The first HEAD_BYTES of the stream (fewer if it is shorter), and the whole stream."""
    rest = iter(chunks)
    taken: list[bytes] = []
    size = 0
    for chunk in rest:
        if chunk:
            taken.append(chunk)
            size += len(chunk)
            if size >= HEAD_BYTES:
                break
    head = taken[0] if len(taken) == 1 else b"".join(taken)
    return bytes(head[:HEAD_BYTES]), itertools.chain(taken, rest)


class _Run:
    """The state of one validation pass; ``consume`` is the hot loop."""

    def __init__(self, config: ValidationConfig, counter: Callable[[str], int] | None) -> None:
        self.config = config
        self.counter = counter
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.error_counts: dict[str, int] = {}
        self.warning_counts: dict[str, int] = {}
        self.seen: dict[int, int] = {}  # identity -> first line
        self.hist = Histogram()
        self.invalid = 0
        self.blank = 0
        self.too_long = 0
        self.over_max = 0
        self.duplicates = 0
        self.messages_hist: dict[int, int] = {}  # messages per example -> distinct examples
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
        """Judge every line (the hot loop: judge.fast_messages and clean_sizes are inlined)."""
        decode = _json.decode_example if self.counter is None else None
        # First the decoder that sees every byte (no separate UTF-8 check) and allows no
        # nesting (no depth check), unless it keeps missing because the lines carry other
        # top-level keys.
        whole = _json.decode_whole if decode is not None else None
        whole_tries = 0
        whole_misses = 0
        messages: Any = None
        fast_errors = _json.FAST_ERRORS
        unset = _json.UNSET
        keys_unique = _json.keys_unique
        key_colons = _json.KEY_COLONS_FINDALL
        others: int | None = None
        max_depth = _json.MAX_DEPTH
        count = self.counter or len
        estimate = self.counter is None
        setdefault = self.seen.setdefault
        hist = self.hist
        bins = hist.bins
        exact_below = hist.exact_below
        per_message = self.messages_hist
        max_seq = self.config.max_seq_length
        duplicates = 0
        tokens_total = 0
        assistant_total = 0
        lineno = 0
        for batch in batches:
            for line in batch:
                lineno += 1
                if line is None:
                    self.too_long += 1
                    self.error(lineno, "line_too_long", self._too_long_message())
                    continue
                clean = False
                if decode is not None:
                    messages = None
                    others = None
                    if whole is not None:
                        whole_tries += 1
                        try:
                            decoded = whole(line)
                            messages = decoded.messages
                            others = (decoded.prompt is not unset) + (
                                decoded.prompt_id is not unset
                            )
                        except fast_errors:
                            whole_misses += 1
                            if whole_tries >= 64 and whole_misses * 4 > whole_tries:
                                whole = None  # mostly other keys here: stop trying
                    if messages is None:
                        try:
                            messages = decode(line).messages
                        except fast_errors:
                            messages = None
                        # msgspec checks neither the UTF-8 of what it skips nor its depth
                        if messages is not None and (
                            (not line.isascii() and not _is_utf8(line))
                            or line.count(b"[") + line.count(b"{") > max_depth
                        ):
                            messages = None
                    if messages is not None:
                        previous = None
                        size = 0
                        assistant = 0
                        for message in messages:
                            role = message.role
                            content = message.content
                            if not content or role == previous or content.isspace():
                                break
                            n = len(content)
                            if role == "assistant":
                                assistant += n
                            elif (role == "system" and previous is not None) or (
                                message.weight is not unset
                            ):
                                break
                            size += n
                            previous = role
                        else:
                            # and no key that matters repeated (the common case inlined;
                            # the colon count is handed on, not made twice)
                            if previous != "assistant":
                                clean = False
                            elif others is None:
                                clean = keys_unique(line, messages)
                            else:
                                colons = len(key_colons(line))
                                clean = colons == 1 + 2 * len(messages) + others or keys_unique(
                                    line, messages, others, colons
                                )
                if clean:
                    identity = hash(messages)  # a tuple of frozen structs
                    n_messages = len(messages)
                else:
                    example = self._judge(lineno, line, count)
                    if example is None:
                        continue
                    identity = example.identity
                    n_messages = example.messages
                    size = example.content_size
                    assistant = example.assistant_size
                first = setdefault(identity, lineno)
                if first != lineno:
                    duplicates += 1
                    self.warn(lineno, "duplicate_example", f"same messages as line {first}; "
                              "this copy is dropped from training (remove it to silence this)")
                    continue
                if estimate:
                    size = (size + 3) >> 2  # chars_to_tokens, inlined
                    assistant = (assistant + 3) >> 2
                tokens = size + MESSAGE_OVERHEAD * n_messages + EXAMPLE_OVERHEAD
                if tokens > max_seq:
                    self._over_max(lineno, tokens)
                if tokens < exact_below:
                    bins[tokens] = bins.get(tokens, 0) + 1
                else:
                    hist.add(tokens)
                per_message[n_messages] = per_message.get(n_messages, 0) + 1
                tokens_total += tokens
                assistant_total += assistant
        self.duplicates = duplicates
        self.tokens_total = tokens_total
        self.assistant_total = assistant_total

    def _judge(self, lineno: int, line: bytes, count: Callable[[str], int]) -> Example | None:
        """Record the reference's findings on a line; its example when it has no error."""
        verdict = judge_line(line, count)
        for code, message in verdict.errors:
            self.error(lineno, code, message)
        for code, message in verdict.warnings:
            self.warn(lineno, code, message)
        if verdict.blank:
            self.blank += 1
        elif verdict.errors:
            self.invalid += 1
        return verdict.example

    def _over_max(self, lineno: int, tokens: int) -> None:
        max_seq = self.config.max_seq_length
        self.over_max += 1
        self.warn(lineno, "exceeds_max_tokens", f"about {tokens:,} tokens, above max_seq_length "
                  f"{max_seq:,}; training truncates it — shorten the conversation or raise "
                  "TUNELOOP_MAX_SEQ_LENGTH")

    def _too_long_message(self) -> str:
        limit = self.config.max_line_bytes
        return (f"the line is longer than {limit:,} bytes (TUNELOOP_MAX_LINE_BYTES) and was "
                "skipped unread; shorten the example or raise the limit")

    def report(
        self, info: DatasetInfo, wrong_format: tuple[str, str] | None = None
    ) -> ValidationReport:
        config = self.config
        distinct = len(self.seen)
        dataset_errors: list[Issue] = []
        if wrong_format is not None:
            dataset_errors.append(Issue(None, *wrong_format))
        elif info.lines - self.blank == 0:
            dataset_errors.append(Issue(None, "empty_dataset", "the dataset holds no examples; "
                                        "upload a JSONL file with one example per line"))
        elif distinct < config.min_examples:
            need = config.min_examples
            dataset_errors.append(Issue(None, "too_few_examples", f"only "
                                        f"{plural(distinct, 'distinct valid example')}; at "
                                        f"least {need:,} {'is' if need == 1 else 'are'} needed "
                                        "(TUNELOOP_MIN_EXAMPLES): add examples or fix the "
                                        "invalid lines"))
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
        per_message = self.messages_hist
        messages_total = sum(n * k for n, k in per_message.items())
        return {
            "examples": distinct + self.duplicates,
            "distinct_examples": distinct,
            "duplicates": self.duplicates,
            "invalid_lines": self.invalid,
            "too_long": self.too_long,
            "blank_lines": self.blank,
            "messages_per_example": {
                "min": min(per_message, default=0),
                "mean": round(messages_total / distinct, 3) if distinct else 0.0,
                "max": max(per_message, default=0),
            },
            "tokens_per_example": {
                "min": hist.minimum(),
                "p50": hist.percentile(50),
                "p95": hist.percentile(95),
                "max": hist.maximum(),
                "total": self.tokens_total,
            },
            "assistant_tokens_total": self.assistant_total,
            "token_count_method": "tokenizer" if self.counter else "estimate",
            "max_seq_length": self.config.max_seq_length,
            "over_max_seq_length": self.over_max,
            "percentile_method": "nearest-rank; exact below 16,384 tokens, 1% bins above",
        }


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
