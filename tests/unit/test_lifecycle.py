"""Lifecycle events: every kind the code builds is a CloudEvent 1.0 whose data validates
against schemas/tuneloop.event.v1.json; ids are deterministic."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.messaging import CloudEvent
from jsonschema import Draft202012Validator

from shared import lifecycle
from shared.ledger import ReleaseRecord, RunRecord, RunState
from shared.settings import Settings

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "tuneloop.event.v1.json"
ORIGIN = lifecycle.Origin("0a1b2c3d", "reports")
WHEN = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
EXAM = {
    "metric": "chrf", "candidate": 61.5, "champion": 60.6, "examples": 40, "decision": "promote",
    "digest": "abc", "calls": 80, "scores": {"candidate": {"chrf": 61.5}},
    "report": "reports/chat/runs/tl-chat-1/exam.json",
}


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


def validator() -> Draft202012Validator:
    Draft202012Validator.check_schema(schema())
    return Draft202012Validator(schema())


def runs() -> list[RunRecord]:
    """A bare run, a run with a name and its full release record, a run with an exam."""
    bare = RunRecord("chat", "tl-chat-1", RunState.RECEIVED)
    full = RunRecord(
        "chat", "tl-chat-2", RunState.RECEIVED, fields={"name": "drop-2", "reason": "why"},
        release=ReleaseRecord(
            model_name="chat", model_version="3", endpoint="tl-chat-0a1b2c3d", deployment="v3",
        ),
    )
    examined = RunRecord(
        "chat", "tl-chat-3", RunState.RECEIVED, release=ReleaseRecord(exam=dict(EXAM))
    )
    unscored = RunRecord(
        "chat", "tl-chat-4", RunState.RECEIVED,
        release=ReleaseRecord(exam={"metric": "chrf", "candidate": None, "champion": None,
                                    "decision": "hold"}),
    )
    return [bare, full, examined, unscored]


@pytest.mark.parametrize("kind", lifecycle.event_kinds())
def test_every_event_kind_validates_against_the_schema(kind: str) -> None:
    """Each kind of event, for runs with and without model, endpoint and exam, is a CloudEvent
    1.0 whose data the JSON Schema accepts."""
    check = validator()
    for rec in runs():
        if kind.upper() in RunState.__members__:
            rec.state = RunState(kind.upper())
        wire = lifecycle.build(ORIGIN, rec, kind, attempt=1, time=WHEN, reason=rec.reason)
        errors = [e.message for e in check.iter_errors(wire["data"])]
        assert errors == [], (kind, rec.run_id, errors)
        event = lifecycle.from_wire(wire)
        assert isinstance(event, CloudEvent)
        assert event.specversion == "1.0"
        assert event.type == lifecycle.event_type(kind)
        assert event.source == f"/tuneloop/0a1b2c3d/lines/{rec.line}"
        assert event.subject == f"lines/{rec.line}/runs/{rec.run_id}"
        assert event.dataschema == schema()["$id"] == lifecycle.SCHEMA_ID
        assert event.datacontenttype == "application/json"
        assert event.time == WHEN
        assert lifecycle.to_wire(event) == wire


def test_the_types_are_the_documented_ones() -> None:
    """Run states give tuneloop.run.<state>, the exam tuneloop.run.examined, a swept endpoint
    tuneloop.endpoint.swept; the schema's state enum is exactly the ledger's states (and null,
    the state of a sweep pass's event)."""
    types = {lifecycle.event_type(k) for k in lifecycle.event_kinds()}
    assert {"tuneloop.run.promoted", "tuneloop.run.held", "tuneloop.run.rejected",
            "tuneloop.run.examined", "tuneloop.endpoint.swept"} <= types
    assert len(types) == len(RunState) + 3
    assert schema()["properties"]["state"]["enum"] == [*(s.value for s in RunState), None]


def test_ids_are_deterministic_per_run_kind_and_attempt() -> None:
    """The same run, kind and attempt give the same id (subscribers deduplicate on it); any
    of the three differing gives another."""
    rec = runs()[0]
    one = lifecycle.build(ORIGIN, rec, "accepted", attempt=1, time=WHEN)
    again = lifecycle.build(ORIGIN, rec, "accepted", attempt=1, time=datetime.now(UTC))
    assert one["id"] == again["id"] == "tl-chat-1.accepted.1"
    ids = {
        lifecycle.build(ORIGIN, r, k, attempt=a, time=WHEN)["id"]
        for r in runs()[:2] for k in ("accepted", "examined") for a in (1, 2)
    }
    assert len(ids) == 8


def test_data_carries_model_endpoint_exam_and_report_paths() -> None:
    """The data names the model version, endpoint, deployment, the exam's scores and the
    reports' paths (run.json in the dataset's folder, the exam report)."""
    full, examined = runs()[1], runs()[2]
    data = lifecycle.run_data(ORIGIN, full, reason="why")
    assert data["model"] == {"name": "chat", "version": "3"}
    assert (data["endpoint"], data["deployment"]) == ("tl-chat-0a1b2c3d", "v3")
    assert data["reason"] == "why"
    assert data["reports"] == {"run": "reports/chat/drop-2/run.json"}
    exam = lifecycle.run_data(ORIGIN, examined, reason=None)
    assert exam["exam"]["candidate"] == 61.5
    assert exam["exam"]["decision"] == "promote"
    assert "digest" not in exam["exam"]
    assert exam["reports"]["exam"] == EXAM["report"]
    assert exam["reports"]["run"] == "reports/chat/runs/tl-chat-3/run.json"


def test_the_schema_refuses_what_is_not_v1() -> None:
    """The schema is not a tautology: a wrong schema tag, an unknown state or field, a
    model without a version are refused."""
    check = validator()
    good = lifecycle.run_data(ORIGIN, runs()[1], reason=None)
    assert check.is_valid(good)
    for bad in (
        {**good, "schema": "tuneloop.event/v2"},
        {**good, "state": "RETRACTED?"},
        {**good, "extra": 1},
        {**good, "model": {"name": "chat"}},
        {k: v for k, v in good.items() if k != "reports"},
    ):
        assert not check.is_valid(bad), bad


def test_origin_from_settings_uses_the_endpoint_scope_key(tmp_path: Path) -> None:
    """Two homes (or workspaces) give two sources; one home always the same."""
    a = lifecycle.Origin.from_settings(Settings(platform_kind="local", home=tmp_path / "a"))
    b = lifecycle.Origin.from_settings(Settings(platform_kind="local", home=tmp_path / "b"))
    again = lifecycle.Origin.from_settings(Settings(platform_kind="local", home=tmp_path / "a"))
    assert a == again
    assert a.scope != b.scope
    assert len(a.scope) == 8
