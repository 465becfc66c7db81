"""`tuneloop events`: what the home's local topic received, as posted by the real client."""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from cli.commands import events as events_command
from cli.main import EXIT_USAGE, main
from shared.platform.local.topic import LocalTopic, events_file, topic_key
from tests.polling import wait_until


def _event(line: str, run: str, state: str, reason: str | None = None) -> CloudEvent[Any]:
    return CloudEvent(
        source=f"/tuneloop/local/lines/{line}", type=f"tuneloop.run.{state}",
        subject=f"lines/{line}/runs/{run}", id=f"{run}.{state}.1",
        time=datetime(2026, 12, 2, 1, 0, tzinfo=UTC), datacontenttype="application/json",
        data={"schema": "tuneloop.event/v1", "line": line, "run": run, "state": state.upper(),
              "reason": reason},
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from shared.settings import load_settings

    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path))
    load_settings.cache_clear()
    yield tmp_path
    load_settings.cache_clear()


@pytest.fixture
def topic(home: Path) -> Iterator[LocalTopic]:
    with LocalTopic(home, topic_key(home)) as running:
        yield running


def _publish(topic: LocalTopic, *events: CloudEvent[Any]) -> None:
    EventGridPublisherClient(topic.url, AzureKeyCredential(topic.key)).send(list(events))


def test_json_for_a_line_is_the_list_of_its_events_oldest_first_as_received(
    topic: LocalTopic, capsys: pytest.CaptureFixture[str]
) -> None:
    """The contract: `events --line L --json` = the JSON list of L's CloudEvents as received."""
    _publish(topic, _event("support", "r1", "accepted"), _event("billing", "r2", "accepted"))
    _publish(topic, _event("support", "r1", "submitted"))
    assert main(["events", "--line", "support", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = [json.loads(raw) for raw in events_file(topic.home).read_text().splitlines()]
    assert printed == [stored[0], stored[2]]
    assert [e["type"] for e in printed] == ["tuneloop.run.accepted", "tuneloop.run.submitted"]
    for event in printed:
        assert {"specversion", "type", "source", "subject", "id", "time", "data"} <= set(event)


def test_text_is_one_line_per_event_with_the_reason(
    topic: LocalTopic, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json: time, type, subject, id and the reason, one line each, every line."""
    _publish(topic, _event("support", "r1", "accepted"),
             _event("billing", "r2", "held", reason="exam: 34.5 <\n 60.6"))
    assert main(["events"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "2026-12-02T01:00:00.000Z  tuneloop.run.accepted  lines/support/runs/r1  r1.accepted.1",
        "2026-12-02T01:00:00.000Z  tuneloop.run.held  lines/billing/runs/r2  r2.held.1  "
        "exam: 34.5 < 60.6",
    ]


def test_no_events_yet_is_said_and_json_is_an_empty_list(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty home: a line naming the store (exit 0); --json prints []."""
    assert main(["events", "--line", "support"]) == 0
    out = capsys.readouterr().out
    assert "no events received for line support yet" in out
    assert str(events_file(home)) in out
    assert main(["events", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_bad_line_name_is_one_line_and_exit_2(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--line is checked like everywhere else."""
    assert main(["events", "--line", "no/such"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.startswith("tuneloop events: config_error: --line 'no/such'")
    assert captured.out == ""


def test_follow_prints_new_events_as_they_arrive(topic: LocalTopic) -> None:
    """--follow --json: the stored events, then each new one, one JSON object per line."""
    _publish(topic, _event("support", "r1", "accepted"))
    out = io.StringIO()
    stop = threading.Event()
    args = argparse.Namespace(line="support", follow=True, json=True)
    reader = threading.Thread(
        target=events_command.run, args=(args,), kwargs={"out": out, "stop": stop}
    )
    reader.start()
    try:
        wait_until(lambda: out.getvalue().count("\n") == 1, timeout=30, what="the first")
        _publish(topic, _event("support", "r1", "submitted"), _event("other", "r3", "accepted"))
        wait_until(lambda: out.getvalue().count("\n") == 2, timeout=30, what="the second")
    finally:
        stop.set()
        reader.join(10)
    ids = [json.loads(raw)["id"] for raw in out.getvalue().splitlines()]
    assert ids == ["r1.accepted.1", "r1.submitted.1"]
