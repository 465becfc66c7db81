"""The validation report (``tuneloop.validation/v1``): JSON for machines, Markdown for people."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SCHEMA",
    "DatasetInfo",
    "Issue",
    "ValidationReport",
    "markdown_code",
    "markdown_text",
    "plural",
]

SCHEMA = "tuneloop.validation/v1"

# How many problems of each severity the Markdown summary shows.
_SUMMARY_ROWS = 10


@dataclass(frozen=True)
class Issue:
    """One problem: where (1-based line, ``None`` for the whole dataset), what code, what to do."""

    line: int | None
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Issue:
        return cls(line=data["line"], code=data["code"], message=data["message"])


@dataclass(frozen=True)
class DatasetInfo:
    """Identity of the validated bytes: name, size, SHA-256 (hex) and line count."""

    name: str
    bytes: int
    sha256: str
    lines: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetInfo:
        return cls(
            name=data["name"], bytes=data["bytes"], sha256=data["sha256"], lines=data["lines"]
        )


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one dataset.

    ``errors``/``warnings`` list the first ``max_listed`` issues in line order;
    ``error_counts``/``warning_counts`` count every issue by code (a line counts once per code).
    The report is immutable: :meth:`with_split` returns a copy carrying the split summary.
    """

    valid: bool
    dataset: DatasetInfo
    errors: list[Issue] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[Issue] = field(default_factory=list)
    warning_counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] | None = None

    @property
    def error_total(self) -> int:
        return sum(self.error_counts.values())

    @property
    def warning_total(self) -> int:
        return sum(self.warning_counts.values())

    def with_split(self, split: dict[str, Any]) -> ValidationReport:
        """A copy of this report with ``split`` set (e.g. train/validation counts and paths)."""
        return dataclasses.replace(self, split=dict(split))

    # --- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "valid": self.valid,
            "dataset": self.dataset.to_dict(),
            "errors": [issue.to_dict() for issue in self.errors],
            "error_counts": dict(self.error_counts),
            "warnings": [issue.to_dict() for issue in self.warnings],
            "warning_counts": dict(self.warning_counts),
            "stats": self.stats,
            "split": self.split,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Rebuild a report from :meth:`to_dict` output (raises ValueError on another schema)."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} report: schema is {data.get('schema')!r}")
        return cls(
            valid=bool(data["valid"]),
            dataset=DatasetInfo.from_dict(data["dataset"]),
            errors=[Issue.from_dict(item) for item in data["errors"]],
            error_counts=dict(data["error_counts"]),
            warnings=[Issue.from_dict(item) for item in data["warnings"]],
            warning_counts=dict(data["warning_counts"]),
            stats=dict(data["stats"]),
            split=None if data.get("split") is None else dict(data["split"]),
        )

    @classmethod
    def from_json(cls, text: str) -> ValidationReport:
        return cls.from_dict(json.loads(text))

    # --- Markdown --------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """A short human summary: verdict, the top problems with line numbers, a stats table."""
        info = self.dataset
        verdict = "✅ valid" if self.valid else "❌ invalid"
        out = [
            f"# Dataset {markdown_code(info.name)}: {verdict}",
            "",
            f"{_size(info.bytes)}, {plural(info.lines, 'line')}, sha256 `{info.sha256}`.",
            "",
            f"**{plural(self.error_total, 'error')}**{_by_code(self.error_counts)}, "
            f"**{plural(self.warning_total, 'warning')}**{_by_code(self.warning_counts)}.",
        ]
        for title, issues, total in (
            ("Errors", self.errors, self.error_total),
            ("Warnings", self.warnings, self.warning_total),
        ):
            if not issues:
                continue
            shown = issues[:_SUMMARY_ROWS]
            out += ["", f"## {title} (first {len(shown)} of {total:,})", ""]
            out += ["| line | code | message |", "| ---: | --- | --- |"]
            out += [
                f"| {'—' if i.line is None else i.line} | {markdown_code(i.code, cell=True)} | "
                f"{markdown_text(i.message)} |"
                for i in shown
            ]
        out += ["", "## Stats", "", "| | |", "| --- | ---: |"]
        out += [f"| {label} | {value} |" for label, value in _stat_rows(self.stats)]
        if self.split:
            out += ["", "## Split", "", "| | |", "| --- | ---: |"]
            out += [f"| {markdown_text(str(k))} | {markdown_text(str(v))} |"
                    for k, v in self.split.items()]
        return "\n".join(out) + "\n"


def _stat_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    simple = (
        ("examples", "examples (valid lines)"),
        ("distinct_examples", "distinct examples"),
        ("duplicates", "duplicates"),
        ("invalid_lines", "invalid lines"),
        ("too_long", "lines over the byte limit"),
        ("blank_lines", "blank lines"),
    )
    for key, label in simple:
        if key in stats:
            rows.append((label, f"{stats[key]:,}"))
    mpe = stats.get("messages_per_example")
    if mpe:
        rows.append(("messages per example (min / mean / max)",
                     f"{mpe['min']} / {mpe['mean']:.1f} / {mpe['max']}"))
    tpe = stats.get("tokens_per_example")
    if tpe:
        method = stats.get("token_count_method", "estimate")
        rows.append((f"tokens per example, {method} (min / p50 / p95 / max)",
                     f"{tpe['min']:,} / {tpe['p50']:,} / {tpe['p95']:,} / {tpe['max']:,}"))
        rows.append((f"tokens total, {method}", f"{tpe['total']:,}"))
    if "assistant_tokens_total" in stats:
        rows.append(("assistant tokens total", f"{stats['assistant_tokens_total']:,}"))
    if "over_max_seq_length" in stats:
        rows.append((f"examples over max_seq_length ({stats.get('max_seq_length', '?')})",
                     f"{stats['over_max_seq_length']:,}"))
    return rows


# User text (file names, values quoted in messages) must not turn into Markdown or HTML: line
# breaks would end a table row or the heading, "|" split a cell, and tags, links, emphasis and
# code spans would render. Prose and cells get a backslash before each character that could
# start markup (CommonMark 2.4: any ASCII punctuation may be escaped so; GFM 4.10: "\\|" is a
# literal pipe in a table), and only there, so our own advice stays readable in a terminal
# ("gunzip -c FILE.gz > FILE.jsonl"). A code span shows its text literally.
_MARKUP = re.compile(
    r"\\(?=[!-/:-@\[-`{-~])"  # a backslash that would escape what follows
    r"|[`*|~]"  # code spans, emphasis, cell borders, strikethrough
    r"|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])"  # emphasis with "_" (inside words it is none)
    r"|<(?=[A-Za-z/!?])"  # a tag, comment, declaration or autolink
    r"|&(?=#?[0-9A-Za-z]+;)"  # an entity
    r"|(?<=\])[(\[]"  # what makes "[text]" a link or an image
)


# Unicode's Bidi_Control characters: in user text they can reorder what a reader sees around
# them (a table cell rendered reversed, "Trojan Source"); shown as their code point instead.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _one_line(text: str) -> str:
    if not text:
        return text
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", " ".join(text.splitlines()))


def markdown_text(text: str) -> str:
    """Plain text for Markdown prose or a table cell: no markup, no HTML, one line."""
    return _MARKUP.sub(lambda m: "\\" + m.group(), _one_line(text))


def markdown_code(text: str, *, cell: bool = False) -> str:
    """Text as one inline code span (fenced by more backticks than it holds in a row)."""
    text = _one_line(text)
    if cell:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plural(n: int, word: str) -> str:
    """``n`` and the word, pluralised by adding "s" unless n is 1 ("1 line", "2 lines")."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _by_code(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return " (" + ", ".join(f"{n:,} × `{code}`" for code, n in top) + ")"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return plural(n, "byte") if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
