"""Every command that reads ``<home>/devhost.json`` turns a corrupt one into one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.platform.local.procs import REPO_ROOT

pytestmark = pytest.mark.integration


def tuneloop(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELOOP_")}
    env["TUNELOOP_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env,
        cwd=REPO_ROOT, timeout=120, check=False,
    )


@pytest.mark.parametrize(
    "command", ["up", "demo", "upload", "status", "promote", "retract", "sweep"]
)
@pytest.mark.parametrize(
    ("content", "what"),
    [("{not json", "not JSON"), ('{"azurite_ports": "10000"}', "azurite_ports must be")],
)
def test_a_corrupt_devhost_json_is_one_line_and_exit_2(
    tmp_path: Path, command: str, content: str, what: str
) -> None:
    """Each command names the file, what is wrong and what to do; nothing is started."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "devhost.json").write_text(content, encoding="utf-8")
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": []}\n', encoding="utf-8")
    args = {
        "upload": ["upload", str(data), "--line", "support"],
        "promote": ["promote", "tl-support-0123456789ab-89abcdef"],
        "retract": ["retract", "support-1", "--line", "support"],
    }.get(command, [command])
    out = tuneloop(home, *args)
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr
    assert len(errors) == 1, out.stderr
    assert str(home / "devhost.json") in errors[0]
    assert what in errors[0]
    assert "delete the file" in errors[0]
    assert "Traceback" not in out.stderr
    assert not (home / "azurite").exists()  # no Azurite was started on a corrupt record
