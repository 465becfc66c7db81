"""`tuneloop events --failed [--line L] [--json]`: the refused events, from the ledger."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from datetime import UTC, datetime

from cli.commands.events import run_failed
from shared.clients import Clients
from shared.ledger import RunState
from shared.lifecycle import Origin
from shared.outbox import drain
from shared.settings import Settings
from tests.fakes.events import FakePublisher
from tests.fakes.ledger import FakeLedger

NOW = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"line": None, "json": False, "follow": False, "failed": True,
                                 **given})


def ledger_with_a_refusal() -> FakeLedger:
    ledger = FakeLedger(events=Origin("0a1b2c3d"))
    rec = ledger.create("chat", "r1", RunState.ACCEPTED)
    ledger.advance(rec, RunState.SUBMITTED)
    ledger.create("other", "r2", RunState.ACCEPTED)
    publisher = FakePublisher()
    publisher.refuse["r1.submitted.1"] = 400
    drain(ledger, publisher, now=NOW)
    return ledger


def test_failed_lists_the_refused_events_of_a_line_as_json() -> None:
    """--failed --line L --json: the JSON list of the line's refused events with the reason
    and the event as it was to be sent."""
    c = Clients(Settings(), ledger=ledger_with_a_refusal())
    out = io.StringIO()
    assert run_failed(args(line="chat", json=True), clients=c, out=out) == 0
    [entry] = json.loads(out.getvalue())
    assert (entry["line"], entry["run"], entry["id"]) == ("chat", "r1", "r1.submitted.1")
    assert entry["type"] == "tuneloop.run.submitted"
    assert "HTTP 400" in entry["error"]
    assert entry["event"]["subject"] == "lines/chat/runs/r1"


def test_failed_prints_one_line_each_or_says_there_are_none() -> None:
    c = Clients(Settings(), ledger=ledger_with_a_refusal())
    out = io.StringIO()
    assert run_failed(args(), clients=c, out=out) == 0
    assert out.getvalue().count("\n") == 1
    assert "tuneloop.run.submitted  lines/chat/runs/r1  r1.submitted.1  " in out.getvalue()
    none = io.StringIO()
    assert run_failed(args(line="other"), clients=c, out=none) == 0
    assert none.getvalue() == "no refused events on line other\n"


def test_failed_refuses_follow_and_a_bad_line_with_one_line_exit_2() -> None:
    """Bad input: one clear line on stderr, exit 2, no traceback."""
    c = Clients(Settings(), ledger=FakeLedger())
    for bad in (args(follow=True), args(line="no/such line")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = run_failed(bad, clients=c)
        assert code == 2
        assert err.getvalue().count("\n") == 1, err.getvalue()
