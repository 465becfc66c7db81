"""A devhost killed with SIGKILL while a job trains, then started again, for real.

The first devhost is a subprocess on a fresh home: it starts the home's Azurite, ingests a
dataset and starts training. It is killed with SIGKILL mid-training. A new devhost on the
same home adopts the Azurite, retries the lost job as the run's next attempt by itself, and
stops the Azurite when it stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.commands.demo import DEMO_DATASET
from cli.commands.upload import upload_dataset
from functions.devhost import DevHost
from shared.clients import Clients
from shared.ledger import RunRecord, RunState
from shared.platform.local.azurite import local_storage, read_host_state
from shared.platform.local.procs import REPO_ROOT, pid_alive
from shared.settings import Settings
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINE = "crash"
# Long enough that the job is still training when the devhost is killed (never waited for).
OVERRIDES = {LINE: {"num_train_epochs": 100}}
DEVHOST = """
from functions.devhost import DevHost
from shared.settings import load_settings
DevHost(load_settings(), poll_every=0.2, reconcile_every=1.0, sweep_every=10**9).run_forever()
"""


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh home; whatever Azurite it recorded is stopped afterwards, whatever happened."""
    path = tmp_path / "home"
    yield path
    try:
        state = read_host_state(path)
    except Exception:
        state = None
    if state is not None and state.azurite_pid and pid_alive(state.azurite_pid, "azurite"):
        os.kill(state.azurite_pid, signal.SIGKILL)


def run_of(clients: Clients, run_id: str) -> RunRecord | None:
    return next((r for r in clients.ledger.list(line=LINE) if r.run_id == run_id), None)


def test_a_job_lost_with_its_killed_devhost_is_retried_and_the_adopted_azurite_stopped(
    home: Path,
) -> None:
    """kill -9 of the devhost mid-training, then a new devhost: the lost run is FAILED saying
    it was retried, its next attempt <run>-r2 is submitted and trains, and the Azurite the
    dead devhost started is stopped when the new devhost stops."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELOOP_")}
    env.update(TUNELOOP_HOME=str(home), TUNELOOP_LINE_OVERRIDES=json.dumps(OVERRIDES),
               OMP_NUM_THREADS="1")
    first = subprocess.Popen(
        [sys.executable, "-c", DEVHOST], cwd=REPO_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        conn = wait_until(lambda: _storage(home) if first.poll() is None else None, timeout=120,
                        what="the first devhost's Azurite")
        state = read_host_state(home)
        assert state is not None
        assert state.pid == first.pid
        azurite_pid = state.azurite_pid
        assert azurite_pid is not None
        settings = Settings(home=home, platform="local", storage_connection_string=conn,
                            line_overrides=OVERRIDES)
        clients = Clients(settings)
        clients.storage.ensure_containers()
        upload_dataset(clients, DEMO_DATASET.read_bytes(), line=LINE, name="support")
        lost = wait_until(lambda: _submitted(clients), timeout=180, what="the run submitted")
        job_dir = home / "local" / "jobs" / lost.run_id
        wait_until(lambda: '"step"' in _read(job_dir / "log.jsonl"), timeout=300,
                 what="the first training step")
        trainer = json.loads((job_dir / "job.json").read_text())["pid"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)

    assert pid_alive(azurite_pid, "azurite")  # the crash left the home's Azurite running
    wait_until(lambda: not pid_alive(trainer), timeout=30, what="the trainer dies with its host")

    host = DevHost(Settings(home=home, platform="local"), poll_every=0.2, sweep_every=10**9,
                   run_timers=False)
    try:
        host.start()
        storage = host.local_storage
        assert storage is not None
        assert (storage.pid, storage.owned, storage.process) == (azurite_pid, True, None)
        assert host.settings.storage_connection_string == conn  # adopted, not a new one
        failed = clients.ledger.get(LINE, lost.run_id)
        retry_id = f"{lost.run_id}-r2"
        assert failed.state == RunState.FAILED
        assert failed.get("retried_as") == retry_id
        assert f"retried as {retry_id}" in (failed.reason or "")
        retry = clients.ledger.get(LINE, retry_id)
        assert retry.state == RunState.SUBMITTED
        assert retry.get("retry_of") == lost.run_id
        assert retry.get("dataset_sha256") == lost.get("dataset_sha256")
        assert retry.get("split", {})["train_sha256"] == lost.get("split", {})["train_sha256"]
        assert [e["state"] for e in retry.timeline] == ["RECEIVED", "ACCEPTED", "SUBMITTED"]
        platform = host.local_platform
        wait_until(lambda: '"step"' in _read(platform.job_log(retry_id)), timeout=300,
                 what="the retry trains")
        assert platform.lost_jobs() == []  # settled: a later start does not retry it again
        host.step()  # the lost job's Failed event arrives: the run stays as it is
        assert clients.ledger.get(LINE, lost.run_id).state == RunState.FAILED
        assert run_of(clients, f"{lost.run_id}-r3") is None
    finally:
        host.stop()
    wait_until(lambda: not pid_alive(azurite_pid, "azurite"), timeout=30,
             what="the adopted Azurite stops with the devhost that owns it")
    state = read_host_state(home)
    assert state is not None
    assert state.azurite_connection_string is None


def _submitted(clients: Clients) -> RunRecord | None:
    for rec in clients.ledger.list(line=LINE):
        if rec.state in (RunState.SUBMITTED, RunState.TRAINING):
            return rec
        assert rec.state in (RunState.RECEIVED, RunState.ACCEPTED), (rec.state, rec.reason)
    return None


def _storage(home: Path) -> str | None:
    try:
        return local_storage(home)
    except Exception:  # the file is being written, or its Azurite is still starting
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
