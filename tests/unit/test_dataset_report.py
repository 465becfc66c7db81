"""The report: JSON schema and round trip, the Markdown summary, stats helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.dataset import SCHEMA, ValidationConfig, ValidationReport, validate_stream
from shared.dataset.tokens import Histogram


def dataset(extra_lines: list[str]) -> bytes:
    rows = [json.dumps({"messages": [{"role": "user", "content": f"q {i}"},
                                     {"role": "assistant", "content": "a | b"}]})
            for i in range(10)]
    return ("\n".join(rows + extra_lines) + "\n").encode()


def report_of(extra_lines: list[str], **config: Any) -> ValidationReport:
    return validate_stream([dataset(extra_lines)], name="my|data.jsonl",
                           config=ValidationConfig(**config))


def test_to_dict_has_the_v1_schema_keys() -> None:
    """The JSON report carries exactly the documented top-level keys."""
    data = report_of(["[1]"]).to_dict()
    assert list(data) == ["schema", "valid", "dataset", "errors", "error_counts", "warnings",
                          "warning_counts", "stats", "split"]
    assert data["schema"] == SCHEMA == "tuneloop.validation/v1"
    assert data["valid"] is False
    assert set(data["dataset"]) == {"name", "bytes", "sha256", "lines"}
    assert data["errors"] == [{"line": 11, "code": "not_an_object",
                               "message": data["errors"][0]["message"]}]
    assert data["error_counts"] == {"not_an_object": 1}
    assert data["split"] is None


def test_json_round_trip() -> None:
    """from_json(to_json()) gives back an equal report, split included."""
    report = report_of(["", "[1]"]).with_split({"train": 9, "validation": 1})
    again = ValidationReport.from_json(report.to_json())
    assert again == report
    assert json.loads(report.to_json())["split"] == {"train": 9, "validation": 1}


def test_with_split_returns_a_new_report() -> None:
    """with_split leaves the original untouched (reports are immutable)."""
    report = report_of([])
    updated = report.with_split({"train": 9})
    assert report.split is None
    assert updated.split == {"train": 9}
    assert updated.dataset == report.dataset


def test_from_dict_refuses_another_schema() -> None:
    """A document of another schema is not silently read as a report."""
    data = report_of([]).to_dict() | {"schema": "something/v2"}
    with pytest.raises(ValueError, match="schema"):
        ValidationReport.from_dict(data)


def test_markdown_has_verdict_problems_with_lines_and_stats() -> None:
    """The summary states the verdict, lists problems with line numbers, and has a stats
    table; table cells escape pipes."""
    text = report_of(["", '{"messages": [{"role": "bot", "content": "x|y"}]}']).to_markdown()
    assert text.startswith("# Dataset `my|data.jsonl`: ❌ invalid")  # a heading: no table
    assert "| 12 | `unknown_role` |" in text
    assert "| 11 | `blank_line` |" in text
    assert "## Stats" in text
    assert "| distinct examples | 10 |" in text
    assert "tokens per example, estimate" in text


def test_markdown_for_a_valid_dataset() -> None:
    """A valid dataset's summary says so and shows no problem tables."""
    text = report_of([]).with_split({"train": 9, "validation": 1}).to_markdown()
    assert "✅ valid" in text
    assert "## Errors" not in text
    assert "## Warnings" not in text
    assert "| train | 9 |" in text


def test_histogram_percentiles_are_exact_for_small_values() -> None:
    """Nearest-rank percentiles over exact bins."""
    hist = Histogram()
    for value in [5, 1, 3, 2, 4, 100, 7, 7, 9, 10]:
        hist.add(value)
    assert hist.percentile(50) == 5
    assert hist.percentile(95) == 100
    assert hist.minimum() == 1
    assert hist.maximum() == 100
    assert hist.count == 10


def test_histogram_stays_bounded_and_close_for_huge_values() -> None:
    """Values past exact_below share 1 % bins: few bins, percentiles within 1 %."""
    hist = Histogram(exact_below=100)
    values = list(range(100, 1_000_000, 7))
    for value in values:
        hist.add(value)
    assert len(hist.bins) < 1000
    true_p50 = sorted(values)[len(values) // 2 - 1]
    assert abs(hist.percentile(50) - true_p50) <= 0.011 * true_p50
    assert hist.maximum() == max(values)


def test_empty_histogram() -> None:
    """No values: every figure is 0."""
    hist = Histogram()
    assert (hist.percentile(50), hist.minimum(), hist.maximum()) == (0, 0, 0)


def test_bidi_controls_in_user_text_are_shown_not_obeyed() -> None:
    """A right-to-left override in a prompt or answer cannot reorder a report's text: each
    Bidi_Control character is written as its code point, in prose and in code spans."""
    from shared.dataset.report import markdown_code, markdown_text

    hostile = "refund \u202eyas\u202c ok \u2066x\u2069"
    for rendered in (markdown_text(hostile), markdown_code(hostile, cell=True)):
        assert not any(c in rendered for c in "\u202e\u202c\u2066\u2069")
        assert "<U+202E>" in rendered
        assert "<U+2066>" in rendered
    assert markdown_text("שלום עולם") == "שלום עולם"  # right-to-left text itself is kept
