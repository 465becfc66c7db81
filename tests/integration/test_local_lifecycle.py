"""Local endpoints outlive nothing: children die with their parent and come back on restore.

Only the endpoint router is used here (no model, no torch), so these tests are quick.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.platform.local import LocalPlatform
from shared.platform.local.procs import REPO_ROOT, get_json, pid_alive
from shared.settings import Settings
from tests.plans import placeholder_plan
from tests.polling import wait_until

pytestmark = pytest.mark.integration

ORPHAN = """
import json, os, sys
from shared.platform.local import LocalPlatform
from shared.settings import Settings
settings = Settings(platform="local", home=sys.argv[1])
platform = LocalPlatform(settings, tie_children=sys.argv[2] == "tied")
info = platform.ensure_endpoint("tl-orphan", tags={"tuneloop_managed": "true"})
print(json.dumps({"uri": info.scoring_uri}), flush=True)
os._exit(0)  # the devhost dies without close()
"""


def test_children_exit_with_their_parent_and_restore_brings_them_back(tmp_path: Path) -> None:
    """A router whose parent died stops by itself; a new platform restores it, same port and key."""
    home = tmp_path / "home"
    out = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(home), "tied"], capture_output=True, text=True,
        cwd=REPO_ROOT, timeout=120, check=True,
    )
    uri = json.loads(out.stdout.strip().splitlines()[-1])["uri"]
    record = json.loads((home / "local" / "endpoints" / "tl-orphan" / "endpoint.json").read_text())
    wait_until(lambda: not pid_alive(record["pid"]), timeout=15,
               what="the orphaned router stops by itself")

    platform = LocalPlatform.from_settings(Settings(platform="local", home=home))
    try:
        assert platform.restore() == []
        wait_until(
            lambda: platform.get_endpoint("tl-orphan").provisioning_state == "Succeeded",
            timeout=30, what="the restored endpoint Succeeded",
        )
        assert platform.get_endpoint("tl-orphan").scoring_uri == uri
        assert platform.endpoint_key("tl-orphan") == record["key"]
        assert get_json(int(record["port"]), "/")[0] == 200
        assert platform.restore() == []  # restoring again changes nothing
    finally:
        platform.delete_endpoint("tl-orphan")
        platform.close()
    assert get_json(int(record["port"]), "/")[0] == 0


def test_close_stops_every_child(tmp_path: Path) -> None:
    """close() stops the routers this instance started; the state stays for a later restore."""
    platform = LocalPlatform.from_settings(Settings(platform="local", home=tmp_path / "home"))
    info = platform.ensure_endpoint("tl-closing", tags={})
    port = int((info.scoring_uri or "").split(":")[2].split("/")[0])
    wait_until(lambda: get_json(port, "/")[0] == 200, timeout=30, what="the router answers")
    platform.close()
    assert get_json(port, "/")[0] == 0
    again = LocalPlatform.from_settings(Settings(platform="local", home=tmp_path / "home"))
    assert [e.name for e in again.list_endpoints()] == ["tl-closing"]
    again.delete_endpoint("tl-closing")
    again.delete_endpoint("tl-closing")
    assert again.list_endpoints() == []
    again.close()


def test_untied_children_outlive_their_parent(tmp_path: Path) -> None:
    """tie_children=False (a one-shot CLI) leaves the router running; a later platform stops it."""
    home = tmp_path / "home"
    subprocess.run(
        [sys.executable, "-c", ORPHAN, str(home), "untied"], capture_output=True, text=True,
        cwd=REPO_ROOT, timeout=120, check=True,
    )
    record = json.loads((home / "local" / "endpoints" / "tl-orphan" / "endpoint.json").read_text())
    time.sleep(2.5)  # longer than the parent watch interval
    assert pid_alive(record["pid"])
    platform = LocalPlatform.from_settings(Settings(platform="local", home=home))
    assert platform.restore() == []  # alive: nothing to restart
    wait_until(lambda: get_json(int(record["port"]), "/")[0] == 200, timeout=30,
               what="the router answers")
    platform.delete_endpoint("tl-orphan")
    wait_until(lambda: not pid_alive(record["pid"]), timeout=15, what="the router stops")
    platform.close()


def test_close_fails_the_jobs_it_stops_and_says_so(tmp_path: Path) -> None:
    """A job still training at close() ends Failed with a reason and a Failed event."""
    platform = LocalPlatform.from_settings(Settings(platform="local", home=tmp_path / "home"))
    plan = placeholder_plan("tl-chat-000000000000-00000000")
    assert platform.submit_finetune(plan).status == "NotStarted"
    platform.close()
    job = platform.get_job(plan.run_id)
    assert job.status == "Failed"
    assert job.error is not None
    assert "ended without reporting" in job.error
    statuses = [e["data"].get("runStatus") for e in platform.pending_events()
                if e["data"]["runId"] == plan.run_id]
    assert statuses[-1] == "Failed"


def test_a_job_stopped_with_its_host_is_listed_as_lost_until_settled(tmp_path: Path) -> None:
    """A job that close() stopped is lost (not the data's fault): listed with its plan, for
    the devhost to retry, until settled; a job whose trainer failed by itself is not."""
    home = tmp_path / "home"
    platform = LocalPlatform.from_settings(Settings(platform="local", home=home))
    plan = placeholder_plan("tl-chat-000000000000-00000001")
    platform.submit_finetune(plan)
    platform.close()
    again = LocalPlatform.from_settings(Settings(platform="local", home=home))
    lost = again.lost_jobs()
    assert [job.plan for job in lost] == [plan]
    assert "lost with its host" in lost[0].error
    again.settle_lost(plan.run_id, "retried as x-r2")
    assert again.lost_jobs() == []
    assert again.get_job(plan.run_id).status == "Failed"


def test_a_trainer_that_dies_while_its_host_lives_is_failed_not_lost(tmp_path: Path) -> None:
    """A trainer killed under a live host failed by itself: Failed, and not retried."""
    platform = LocalPlatform.from_settings(Settings(platform="local", home=tmp_path / "home"))
    plan = placeholder_plan("tl-chat-000000000000-00000002")
    platform.submit_finetune(plan)
    pid = json.loads((platform.paths.job(plan.run_id) / "job.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: platform.get_job(plan.run_id).status == "Failed", timeout=30,
               what="the killed trainer's job Failed")
    assert platform.lost_jobs() == []
    platform.close()
    assert platform.lost_jobs() == []

