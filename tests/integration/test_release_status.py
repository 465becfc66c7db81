"""`tuneloop status`: each run's state, timeline and reason, read from the ledger."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from cli.commands import status
from shared.clients import Clients
from shared.ledger import RunState

pytestmark = pytest.mark.integration


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    status.add_arguments(parser)
    return parser.parse_args(list(argv))


def seed(clients: Clients) -> None:
    ledger = clients.ledger
    rec = ledger.create("chat", "tl-chat-a", RunState.SUBMITTED, name="a")
    rec = ledger.advance(rec, RunState.TRAINED, note="job completed")
    ledger.advance(rec, RunState.HELD, reason="smoke test failed: v01 answered no text")
    ledger.create("faq", "tl-faq-b", RunState.SUBMITTED, name="b")


def test_table_shows_state_reason_and_timeline(clients: Clients) -> None:
    """The table lists each run with its state and reason, then its timeline with notes."""
    seed(clients)
    out = io.StringIO()
    assert status.run(parse(), clients=clients, out=out) == 0
    text = out.getvalue()
    assert "tl-chat-a" in text
    assert "HELD" in text
    assert "smoke test failed: v01 answered no text" in text
    assert "TRAINED  job completed" in text
    assert "tl-faq-b" in text


def test_json_for_one_line(clients: Clients) -> None:
    """--line filters; --json prints the records with their timelines."""
    seed(clients)
    out = io.StringIO()
    assert status.run(parse("--line", "chat", "--json"), clients=clients, out=out) == 0
    runs = json.loads(out.getvalue())
    assert [r["run_id"] for r in runs] == ["tl-chat-a"]
    assert runs[0]["state"] == "HELD"
    assert [e["state"] for e in runs[0]["timeline"]] == ["SUBMITTED", "TRAINED", "HELD"]


def test_no_runs(clients: Clients) -> None:
    """An empty ledger says so."""
    out = io.StringIO()
    assert status.run(parse(), clients=clients, out=out) == 0
    assert out.getvalue().strip() == "no runs"
