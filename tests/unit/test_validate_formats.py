"""Wrong file formats are one dataset-level error with the fix; the Markdown report escapes
user text; messages are worded right (defect 9)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from cli.main import main
from shared.dataset import ValidationConfig, ValidationReport, validate_stream
from shared.settings import load_settings

ROWS = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                      {"role": "assistant", "content": f"{2 * i}."}]} for i in range(12)]
JSONL = "".join(json.dumps(row) + "\n" for row in ROWS)


def validate(data: bytes, chunk: int | None = None, **config: int) -> ValidationReport:
    chunks = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    return validate_stream(chunks, name="data.jsonl", config=ValidationConfig(**config))


def _zip(text: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("data.jsonl", text)
    return out.getvalue()


WRONG_FORMATS: list[tuple[str, bytes, str, str]] = [
    ("utf16le-bom", JSONL.encode("utf-16"), "wrong_encoding", "iconv -f UTF-16LE"),
    ("utf16be-bom", b"\xfe\xff" + JSONL.encode("utf-16-be"), "wrong_encoding", "UTF-16BE"),
    ("utf32-bom", JSONL.encode("utf-32"), "wrong_encoding", "iconv -f UTF-32LE"),
    ("utf32be-bom", b"\x00\x00\xfe\xff" + JSONL.encode("utf-32-be"), "wrong_encoding",
     "UTF-32BE"),
    ("utf16le", JSONL.encode("utf-16-le"), "wrong_encoding", "UTF-16LE"),
    ("utf16be", JSONL.encode("utf-16-be"), "wrong_encoding", "UTF-16BE"),
    ("gzip", gzip.compress(JSONL.encode()), "compressed_file", "gunzip"),
    ("zip", _zip(JSONL), "compressed_file", "unzip"),
    ("bzip2", bz2.compress(JSONL.encode()), "compressed_file", "bunzip2"),
    ("binary", bytes(range(256)) * 40, "binary_file", "binary"),
    ("array-one-line", json.dumps(ROWS).encode(), "not_json_lines", "jq -c '.[]'"),
    ("array-pretty", json.dumps(ROWS, indent=2).encode(), "not_json_lines", "jq -c '.[]'"),
    ("array-row-per-line", ("[\n" + ",\n".join(json.dumps(r) for r in ROWS) + "\n]\n").encode(),
     "not_json_lines", "JSON array"),
    ("pretty-objects", "\n".join(json.dumps(r, indent=2) for r in ROWS).encode(),
     "not_json_lines", "jq -c ."),
    ("pretty-brace-first", "\n".join(json.dumps(r, indent=1)[1:].join(["{", ""])
                                     for r in ROWS).encode(), "not_json_lines", "pretty"),
    ("cr-only", JSONL.replace("\n", "\r").encode(), "cr_line_endings", "tr '\\r' '\\n'"),
    ("cr-only-bom", b"\xef\xbb\xbf" + JSONL.replace("\n", "\r").encode(), "cr_line_endings",
     "lone CR"),
]


@pytest.mark.parametrize(("data", "code", "fix"), [case[1:] for case in WRONG_FORMATS],
                         ids=[case[0] for case in WRONG_FORMATS])
def test_a_wrong_format_is_one_dataset_error_with_the_fix(data: bytes, code: str,
                                                          fix: str) -> None:
    """UTF-16/32, compressed, binary, a JSON array, pretty-printed JSON and CR-only line
    endings are each one dataset-level error naming the format and the fix."""
    for chunk in (None, 7):  # the head may arrive in small chunks
        report = validate(data, chunk)
        assert not report.valid
        assert [(i.line, i.code) for i in report.errors] == [(None, code)]
        assert report.error_counts == {code: 1}
        assert report.warnings == []
        assert fix in report.errors[0].message
        assert report.dataset.bytes == len(data)
        assert report.dataset.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("text", [
    JSONL,
    JSONL.replace("\n", "\r\n"),
    "[1, 2]\n" + JSONL,
    '{"messages": "x"\n' + JSONL,
    "\n\n" + JSONL,
    '{"messages": [{"role": "user", "content": "a\\rb"}, {"role": "assistant", '
    '"content": "c"}]}\n' + JSONL,
])
def test_json_lines_with_odd_lines_are_still_judged_line_by_line(text: str) -> None:
    """A JSONL file whose first line is an array, broken, blank or holds an escaped CR is not
    taken for a wrong format."""
    report = validate(text.encode())
    assert all(issue.line is not None for issue in report.errors), report.errors


def test_a_long_first_line_is_not_taken_for_a_wrong_format() -> None:
    """A valid first line longer than the sniffed head is judged like any other."""
    long_row = {"messages": [{"role": "user", "content": "x" * 100_000},
                             {"role": "assistant", "content": "ok"}]}
    report = validate((json.dumps(long_row) + "\n" + JSONL).encode(), chunk=4096)
    assert report.valid, report.errors


# --- the Markdown report ------------------------------------------------------------------

HOSTILE = "ev`il|na``me &amp; **b** _i_ [x](javascript:alert(1))\n# h1 <script>alert(1)</script>"


def _markdown(name: str, rows: list[str]) -> str:
    data = (JSONL + "\n".join(rows) + "\n").encode()
    return validate_stream([data], name=name, config=ValidationConfig()).to_markdown()


def _hostile_report() -> str:
    role = json.dumps({"messages": [{"role": HOSTILE, "content": "hi"},
                                    {"role": "assistant", "content": "ok"}]})
    key = json.dumps({"messages": [{"role": "user", "content": "hi", HOSTILE: 1},
                                   {"role": "assistant", "content": "ok"}]})
    return _markdown(HOSTILE, [role, key, '{"messages": [' + HOSTILE])


def test_markdown_escapes_user_text() -> None:
    """File names and user values quoted in messages cannot inject Markdown or HTML: one
    heading, one row per issue, no tag, link, emphasis or code span of theirs."""
    lines = _hostile_report().splitlines()
    assert lines[0].startswith("# Dataset ```ev`il|na``me &amp; **b** _i_ [x](javascript")
    assert [line for line in lines if line.startswith("#")][1:] == ["## Errors (first 4 of 4)",
                                                                    "## Stats"]
    rows = [line for line in lines if re.match(r"\| (\d+|—) \|", line)]
    assert [row.split(" | ")[0] for row in rows] == ["| 13", "| 14", "| 15", "| 16"]
    body = "\n".join(lines[1:])
    assert re.search(r"(?<!\\)<[A-Za-z/]", body) is None  # no tag
    assert "\\<script>" in body
    assert "\\&amp;" in body
    assert "\\*\\*b\\*\\*" in body
    assert "[x]\\(javas" in body
    assert "\\_i\\_" in body
    for row in rows:  # every unescaped pipe is a cell border: 4 per row
        assert len(re.findall(r"(?<!\\)\|", row)) == 4, row


def test_markdown_renders_user_text_as_text() -> None:
    """Rendered by a CommonMark + GFM-tables renderer, the hostile report has no tag, link,
    emphasis or code of the user's, one table row per issue, and shows their text as typed."""
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(
        _hostile_report())
    assert "<script" not in html
    assert "<a " not in html
    assert "<em>" not in html
    assert html.count("<strong>") == 2  # ours: the error and warning totals
    assert "<s>" not in html
    assert html.count("<h1>") == 1
    assert html.count("<code>") == 1 + 1 + 3 + 4  # name, sha256, the 3 codes counted, 4 rows
    assert html.count("<tr>") == 1 + 4 + 1 + 11  # errors header + rows, stats header + rows
    assert "&lt;script&gt;alert(1)" in html  # shown, escaped by the renderer itself
    assert "**b** _i_ [x](javascript:alert(1))" in html.replace("&amp;", "&")


def test_our_advice_stays_readable() -> None:
    """Escaping touches only what could be markup: the fix commands read as typed."""
    text = validate(gzip.compress(JSONL.encode())).to_markdown()
    assert "gunzip -c FILE.gz > FILE.jsonl" in text
    text = validate(json.dumps(ROWS).encode()).to_markdown()
    assert "jq -c '.[]' in.json > out.jsonl" in text


# --- wording ------------------------------------------------------------------------------


def test_wording_plurals_at_and_json_values() -> None:
    """No "1 lines", "at at column", "example(s)" or Python reprs like True/None."""
    one = validate(JSONL.splitlines()[0].encode() + b"\n")
    assert "1 line," in one.to_markdown()
    assert "only 1 distinct valid example;" in one.errors[0].message
    unterminated = validate(b'{"messages": [{"role": "user", "content": "hi}\n')
    message = next(i.message for i in unterminated.errors if i.code == "invalid_json")
    assert "at at" not in message
    assert "starting at column" in message
    weight = validate(b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", '
                      b'"content": "a", "weight": true, "x": null}]}\n')
    messages = " ".join(i.message for i in weight.errors)
    assert "weight true;" in messages
    assert "True" not in messages
    assert "the unknown key \"x\"" in messages
    assert validate(b"", min_examples=1).errors[0].code == "empty_dataset"
    few = validate(JSONL.splitlines()[0].encode() + b"\n", min_examples=2)
    assert "at least 2 are needed" in few.errors[0].message


# --- the command on hostile files ---------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TUNELOOP_MIN_EXAMPLES", "TUNELOOP_MAX_SEQ_LENGTH", "TUNELOOP_MAX_LINE_BYTES",
                 "TUNELOOP_TOKENIZER_PATH"):
        monkeypatch.delenv(name, raising=False)
    load_settings.cache_clear()


@pytest.mark.parametrize(("kind", "status", "code"), [
    ("gzip", 1, "compressed_file"), ("utf16", 1, "wrong_encoding"),
    ("binary", 1, "binary_file"), ("empty", 1, "empty_dataset"),
    ("directory", 2, "dataset_unreadable"), ("missing", 2, "dataset_unreadable"),
])
def test_validate_command_on_hostile_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           kind: str, status: int, code: str) -> None:
    """tuneloop validate answers a hostile file with its code and exit status, no traceback."""
    path = tmp_path / "data.jsonl"
    content = {"gzip": gzip.compress(JSONL.encode()), "utf16": JSONL.encode("utf-16"),
               "binary": bytes(range(256)) * 10, "empty": b""}
    if kind == "directory":
        path.mkdir()
    elif kind in content:
        path.write_bytes(content[kind])
    assert main(["validate", "--json", str(path)]) == status
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    if status == 1:
        report = json.loads(captured.out)
        assert [e["code"] for e in report["errors"]] == [code]
    else:
        assert code in captured.err
        assert len(captured.err.strip().splitlines()) == 1


def test_ingest_section_escapes_blob_names_and_messages() -> None:
    """The ingest section of validation.md escapes user blob names and messages too."""
    from shared.ingest import _ingest_markdown

    rejected = _ingest_markdown({"outcome": "rejected", "quarantined": "rejected/c/a`b\n# x.jsonl"})
    assert rejected.count("\n#") == 1  # only our "## Ingest" heading
    assert "``rejected/c/a`b # x.jsonl``" in rejected
    duplicate = _ingest_markdown({"outcome": "duplicate", "duplicate_of": "tl-1",
                                  "duplicate_of_blob": "incoming/<img src=x onerror=alert(1)>"})
    assert "\\<img" in duplicate
    failed = _ingest_markdown({"outcome": "failed", "error": {
        "code": "plan_error", "message": "bad *line* [x](y)", "hint": "fix it"}})
    assert "(`plan_error`): bad \\*line\\* [x]\\(y). fix it" in failed
