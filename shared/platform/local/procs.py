"""Child processes of the local platform: spawning them, checking them, stopping them.

Every child (trainer, deployment server, endpoint router) is started with
``--parent-pid`` and runs :func:`watch_parent`, so it exits when the process that started
it (the devhost, a test) goes away: nothing is left running. After a restart
``LocalPlatform.restore`` starts the servers again from the recorded state.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "get_json",
    "pid_alive",
    "spawn",
    "stop_pid",
    "tail",
    "watch_parent",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]


def spawn(
    module: str,
    args: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    tie_to_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``python -m <module> <args> --parent-pid <us>``; output goes to ``log_file``.

    With ``tie_to_parent=False`` the child gets ``--parent-pid 0`` and outlives us.
    """
    child_env = dict(os.environ if env is None else env)
    python_path = child_env.get("PYTHONPATH", "")
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), python_path) if p)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args,
             "--parent-pid", str(os.getpid() if tie_to_parent else 0)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            cwd=str(REPO_ROOT),
        )


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when given, its command line holds ``marker``."""
    if not pid or pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if state in {"Z", "X"}:
                return False
            if marker is not None:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace"
                )
                return marker in cmdline
            return True
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return marker is None


def stop_pid(pid: int | None, marker: str | None, *, timeout: float = 10.0) -> None:
    """SIGTERM a child we recorded (only if it is still ours), then SIGKILL after ``timeout``."""
    if not pid_alive(pid, marker):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def watch_parent(parent_pid: int, on_exit: Callable[[], None], *, every: float = 1.0) -> None:
    """Call ``on_exit`` (in a daemon thread) once the parent process has gone."""

    def loop() -> None:
        while os.getppid() == parent_pid and pid_alive(parent_pid):
            time.sleep(every)
        log.warning("parent process %s has gone; stopping", parent_pid)
        on_exit()

    threading.Thread(target=loop, name="watch-parent", daemon=True).start()


def get_json(port: int, path: str, *, timeout: float = 1.0) -> tuple[int, Any]:
    """GET ``http://127.0.0.1:<port><path>``: (status, parsed body); (0, None) if unreachable."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        try:
            return resp.status, json.loads(body) if body else None
        except ValueError:
            return resp.status, None
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        conn.close()


def tail(path: Path, *, lines: int = 5) -> str:
    """The last lines of a log file (for error messages), or '' when there is none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
