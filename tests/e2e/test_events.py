"""Tuneloop's lifecycle events through the local loop, all real: the app's publisher
(azure-eventgrid's EventGridPublisherClient) posts to the devhost's local Event Grid topic,
which stores them in the home; `tuneloop events` prints them; `tuneloop demo --quick` leaves
them in its TUNELOOP_HOME.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.commands import events as events_command
from shared.lifecycle import event_id
from shared.platform.local.procs import REPO_ROOT
from shared.platform.local.topic import read_events
from tests.e2e.conftest import Loop, running_loop
from tests.polling import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LINE = "events"
# The run of one drop through the local loop, in the order the topic receives them.
SEQUENCE = [
    "tuneloop.run.received",
    "tuneloop.run.accepted",
    "tuneloop.run.submitted",
    "tuneloop.run.training",
    "tuneloop.run.trained",
    "tuneloop.run.registered",
    "tuneloop.run.deploying",
    "tuneloop.run.deployed",
    "tuneloop.run.examined",
    "tuneloop.run.promoted",
]


@pytest.fixture(scope="module")
def loop(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    with running_loop(azurite, tmp_path_factory.mktemp("e2e-events") / "home", LINE) as started:
        assert started.first is not None
        home = Path(started.settings.home)
        run = started.first.run_id
        # The drain after the PROMOTED step may still be on its way.
        wait_until(
            lambda: any(e["id"] == event_id(run, "promoted", 1) for e in read_events(home)),
            timeout=120, what="the promoted event at the local topic",
        )
        yield started


def _events(loop: Loop) -> list[dict[str, Any]]:
    return read_events(Path(loop.settings.home), LINE)


def test_one_run_publishes_the_exact_event_sequence(loop: Loop) -> None:
    """received, accepted, submitted, training, trained, registered, deploying, deployed,
    examined, promoted: each once, in that order, about the run, with stable ids
    (run.kind.attempt)."""
    assert loop.first is not None
    run = loop.first.run_id
    events = [e for e in _events(loop) if e["subject"] == f"lines/{LINE}/runs/{run}"]
    assert [e["type"] for e in events] == SEQUENCE, [(e["type"], e["id"]) for e in events]
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert ids == [event_id(run, t.rsplit(".", 1)[1], 1) for t in SEQUENCE]
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["source"].endswith(f"/lines/{LINE}")
        assert event["data"]["line"] == LINE
        assert event["data"]["run"] == run
    assert events[-1]["data"]["state"] == "PROMOTED"
    examined = events[SEQUENCE.index("tuneloop.run.examined")]
    assert examined["data"]["exam"] is not None


def test_the_timeline_and_the_events_agree(loop: Loop) -> None:
    """Every state the run's ledger timeline entered was published once, in its order."""
    assert loop.first is not None
    run = loop.first.run_id
    rec = loop.clients.ledger.get(LINE, run)
    states: list[str] = []
    for entry in rec.timeline:  # a state's progress notes repeat it: entered once
        state = str(entry["state"]).lower()
        if state not in states:
            states.append(state)
    published = [e["type"].rsplit(".", 1)[1] for e in _events(loop)
                 if e["subject"].endswith(f"/runs/{run}") and e["type"].startswith("tuneloop.run.")
                 and not e["type"].endswith(".examined")]
    assert published == states, rec.timeline


def test_every_received_event_validates_against_the_schema(loop: Loop) -> None:
    """The data of each event the topic received is tuneloop.event/v1 (schemas/)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO_ROOT / "schemas" / "tuneloop.event.v1.json").read_text("utf-8"))
    events = _events(loop)
    assert events
    for event in events:
        jsonschema.validate(event["data"], schema)
        assert event["dataschema"] == schema["$id"]


def test_the_events_command_prints_them_as_received(loop: Loop) -> None:
    """`tuneloop events --line L --json` is the JSON list the topic stored for L."""
    import argparse

    out = io.StringIO()
    args = argparse.Namespace(line=LINE, follow=False, json=True, failed=False)
    assert events_command.run(args, home=Path(loop.settings.home), out=out) == 0
    assert json.loads(out.getvalue()) == _events(loop)


def test_the_quick_demo_leaves_its_events_in_its_home(tmp_path: Path) -> None:
    """`tuneloop demo --quick` with TUNELOOP_HOME set: the home's topic received the run's
    events, promoted last, and `tuneloop events --json` prints them from that home."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELOOP_")}
    env["TUNELOOP_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--quick"], capture_output=True, text=True,
        env=env, cwd=REPO_ROOT, timeout=1500, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stored = read_events(home)
    # the run's events; a sweep pass the devhost's timer ran meanwhile (:00/:30) adds its own
    types = [e["type"] for e in stored if e["type"].startswith("tuneloop.run.")]
    assert "tuneloop.run.accepted" in types
    assert types[-1] == "tuneloop.run.promoted", types
    printed = subprocess.run(
        [sys.executable, "-m", "cli", "events", "--json"], capture_output=True, text=True,
        env=env, cwd=REPO_ROOT, timeout=120, check=False,
    )
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == stored
