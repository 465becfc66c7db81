"""`tuneloop validate`: output and exit codes 0 (valid), 1 (invalid), 2 (unreadable)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from shared.settings import load_settings


def write(path: Path, n: int, *extra: str) -> Path:
    rows = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                     {"role": "assistant", "content": "a" * 40}]})
            for i in range(n)]
    path.write_text("\n".join([*rows, *extra]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings are read once per process; each test reads them anew from its environment."""
    for name in ("TUNELOOP_MIN_EXAMPLES", "TUNELOOP_MAX_SEQ_LENGTH", "TUNELOOP_MAX_LINE_BYTES",
                 "TUNELOOP_TOKENIZER_PATH", "TUNELOOP_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    load_settings.cache_clear()


def test_valid_dataset_prints_the_summary_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid file: Markdown summary on stdout, exit status 0, no storage needed."""
    assert main(["validate", str(write(tmp_path / "ok.jsonl", 10))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Dataset `ok.jsonl`: ✅ valid")


def test_invalid_dataset_exits_1_with_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints the v1 report; an invalid file exits 1."""
    assert main(["validate", "--json", str(write(tmp_path / "bad.jsonl", 10, "{oops"))]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "tuneloop.validation/v1"
    assert report["errors"][0]["line"] == 11
    assert report["errors"][0]["code"] == "invalid_json"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_path_exits_2_with_a_message_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A missing file or a directory exits 2 and says why on stderr."""
    path = tmp_path / "nope.jsonl"
    if kind == "directory":
        path.mkdir()
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "dataset_unreadable" in captured.err
    assert "nope.jsonl" in captured.err


def test_limits_from_flags_override_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defaults come from TUNELOOP_* settings; --min-examples, --max-seq-length and
    --max-line-bytes override them."""
    path = write(tmp_path / "d.jsonl", 5)
    monkeypatch.setenv("TUNELOOP_MIN_EXAMPLES", "5")
    assert main(["validate", str(path)]) == 0
    assert main(["validate", "--min-examples", "6", str(path)]) == 1
    capsys.readouterr()
    assert main(["validate", "--json", "--max-seq-length", "10", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["warning_counts"] == {"exceeds_max_tokens": 5}
    assert report["stats"]["max_seq_length"] == 10
    assert main(["validate", "--json", "--max-line-bytes", "20", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["error_counts"]["line_too_long"] == 5


def test_bad_setting_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid TUNELOOP_* value is reported, not a traceback."""
    monkeypatch.setenv("TUNELOOP_MIN_EXAMPLES", "many")
    assert main(["validate", str(write(tmp_path / "d.jsonl", 10))]) == 2
    assert "TUNELOOP_" in capsys.readouterr().err


def test_flag_must_be_a_positive_number(tmp_path: Path) -> None:
    """argparse refuses --max-seq-length 0 (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        main(["validate", "--max-seq-length", "0", str(tmp_path / "x.jsonl")])
    assert info.value.code == 2


def test_python_dash_m_shared_runs_the_same_command(tmp_path: Path) -> None:
    """`python -m cli validate` is the same command with the same exit codes."""
    good = write(tmp_path / "ok.jsonl", 10)
    bad = write(tmp_path / "bad.jsonl", 10, "[]")
    run = [sys.executable, "-m", "cli", "validate"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "✅ valid" in ok.stdout
    assert subprocess.run([*run, str(bad)], capture_output=True, check=False).returncode == 1
    missing = subprocess.run([*run, str(tmp_path / "none")], capture_output=True, check=False)
    assert missing.returncode == 2
