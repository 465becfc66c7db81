"""`tuneloop doctor` on the local platform, for real: the session's Azurite, a real home.

The home's devhost.json is written with the local platform's own writer shape; storage is
probed through the real SDKs; the MLflow store is created by the local platform itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.doctor import Check, Outcome, Report, run_checks
from shared.platform.local.azurite import STATE_FILE, free_port
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def ports_of(connection_string: str) -> list[int]:
    """Blob, queue, table ports of an Azurite connection string."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    return [int(parts[f"{kind}Endpoint"].split(":")[2].split("/")[0])
            for kind in ("Blob", "Queue", "Table")]


def local_settings(home: Path, **changes: object) -> Settings:
    values: dict[str, object] = {"platform": "local", "home": home}
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def check(report: Report, name: str) -> Check:
    found = [c for c in report.checks if c.name == name]
    assert len(found) == 1, [c.name for c in report.checks]
    return found[0]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def record(home: Path, *, ports: list[int], connection_string: str,
           azurite_pid: int | None = None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    state = {"pid": dead_pid(), "started": "2026-12-01T22:00:00+00:00",
             "azurite_ports": ports, "azurite_connection_string": connection_string}
    if azurite_pid is not None:
        state["azurite_pid"] = azurite_pid
    (home / STATE_FILE).write_text(json.dumps(state))


@pytest.fixture
def listener() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_configured_azurite_and_a_fresh_home_are_ready(azurite: str, tmp_path: Path) -> None:
    """The configured Azurite answers, the store is created on the first job: ready (the
    devhost not running is only a warning)."""
    report = run_checks(local_settings(tmp_path / "home", storage_connection_string=azurite))
    assert check(report, "azurite").outcome == Outcome.OK
    assert "answers at http://127.0.0.1:" in check(report, "azurite").what
    assert check(report, "mlflow").outcome == Outcome.OK
    assert "does not exist yet" in check(report, "mlflow").what
    assert check(report, "devhost").outcome == Outcome.WARN
    assert check(report, "home").outcome == Outcome.OK
    assert report.passed


def test_configured_storage_that_does_not_answer_fails(tmp_path: Path) -> None:
    """A connection string to a closed port: the azurite row fails (refused), not ready."""
    port = free_port()
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    report = run_checks(local_settings(tmp_path / "home", storage_connection_string=conn))
    row = check(report, "azurite")
    assert row.outcome == Outcome.FAIL
    assert "cannot connect" in row.what
    assert not report.passed


def test_azure_storage_with_the_local_platform_is_not_probed_but_said(tmp_path: Path) -> None:
    """An account URL with the local platform: the row says Azurite is not what is used."""
    settings = local_settings(tmp_path / "home",
                              storage_account_url="https://stx.blob.core.windows.net")
    row = check(run_checks(settings), "azurite")
    assert row.outcome == Outcome.WARN
    assert "TUNELOOP_STORAGE_ACCOUNT_URL" in row.what


def test_the_homes_recorded_azurite_is_found_and_owns_its_ports(
    azurite: str, tmp_path: Path
) -> None:
    """devhost.json recording a running Azurite: it answers and its ports are the home's."""
    home = tmp_path / "home"
    record(home, ports=ports_of(azurite), connection_string=azurite)
    report = run_checks(local_settings(home))
    assert "the home's Azurite answers" in check(report, "azurite").what
    for service in ("blob", "queue", "table"):
        row = check(report, f"port.{service}")
        assert row.outcome == Outcome.OK
        assert "is the home's Azurite" in row.what
    assert check(report, "devhost").outcome == Outcome.WARN  # its devhost is gone
    assert report.passed


def test_a_recorded_azurite_that_is_not_running_fails(tmp_path: Path) -> None:
    """devhost.json naming an Azurite whose pid is gone: fail, start `tuneloop up`."""
    home = tmp_path / "home"
    ports = [free_port(), free_port(), free_port()]
    record(home, ports=ports, connection_string="UseDevelopmentStorage=true",
           azurite_pid=dead_pid())
    row = check(run_checks(local_settings(home)), "azurite")
    assert row.outcome == Outcome.FAIL
    assert "that is not running" in row.what
    assert "tuneloop up" in row.fix


def test_a_port_taken_by_another_program_is_a_warning(tmp_path: Path, listener: int) -> None:
    """A recorded Azurite port held by another program: `up` will pick free ports (warn)."""
    home = tmp_path / "home"
    ports = [listener, free_port(), free_port()]
    record(home, ports=ports, connection_string="UseDevelopmentStorage=true",
           azurite_pid=dead_pid())
    report = run_checks(local_settings(home))
    assert check(report, "port.blob").outcome == Outcome.WARN
    assert f"blob port {listener} is taken by another program" in check(report, "port.blob").what
    assert check(report, "port.queue").outcome == Outcome.OK


def test_a_corrupt_devhost_json_fails_with_the_local_platforms_fix(tmp_path: Path) -> None:
    """devhost.json that is not JSON: the devhost row fails with `tuneloop up`'s own fix."""
    home = tmp_path / "home"
    home.mkdir()
    (home / STATE_FILE).write_text("{not json")
    row = check(run_checks(local_settings(home)), "devhost")
    assert row.outcome == Outcome.FAIL
    assert "is corrupt: not JSON" in row.what
    assert "delete the file" in row.fix


def test_an_initialised_mlflow_store_is_ok_and_a_broken_one_fails(tmp_path: Path) -> None:
    """The store the local platform creates reads as initialised; a non-store file fails."""
    from shared.platform.local.registry import ensure_store

    home = tmp_path / "home"
    home.mkdir()
    ensure_store(home)
    assert check(run_checks(local_settings(home)), "mlflow").outcome == Outcome.OK
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "mlflow.db").write_bytes(b"not a database")
    row = check(run_checks(local_settings(broken)), "mlflow")
    assert row.outcome == Outcome.FAIL
    assert "not an initialised MLflow store" in row.what


def test_an_unwritable_home_fails(tmp_path: Path) -> None:
    """TUNELOOP_HOME under a read-only directory cannot be created: fail."""
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):  # running as root: permissions do not bind
            pytest.skip("the file system lets this user write anywhere")
        row = check(run_checks(local_settings(parent / "home")), "home")
        assert row.outcome == Outcome.FAIL
    finally:
        parent.chmod(0o700)


def _tuneloop(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUNELOOP_")}
    return subprocess.run([sys.executable, "-m", "cli", "doctor", *args], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_the_command_exits_0_when_ready_and_1_when_not(azurite: str, tmp_path: Path) -> None:
    """`tuneloop doctor --json` on the local platform: 0 ready, 1 with a failed check, and
    an invalid setting is exit 2 like every command."""
    ready = _tuneloop({"TUNELOOP_HOME": str(tmp_path / "a"),
                       "TUNELOOP_STORAGE_CONNECTION_STRING": azurite}, "--json")
    assert ready.returncode == 0, ready.stderr
    assert json.loads(ready.stdout)["platform"] == "local"
    broken = tmp_path / "b"
    broken.mkdir()
    (broken / STATE_FILE).write_text("[]")
    failed = _tuneloop({"TUNELOOP_HOME": str(broken)})
    assert failed.returncode == 1, failed.stderr
    assert "✗ devhost" in failed.stdout
    assert failed.stderr == ""
    invalid = _tuneloop({"TUNELOOP_HOME": str(broken), "TUNELOOP_PROMOTION": "yolo"})
    assert invalid.returncode == 2
    assert invalid.stderr.startswith("tuneloop doctor: config_error: TUNELOOP_PROMOTION")
