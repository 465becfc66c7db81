"""Tuneloop's own telemetry on Azurite + FakePlatform (shared/telemetry.py): one trace per run
across ingest, job event, release, reconciler and exam, Azure SDK calls as child spans, the
SDK exporters' JSON-lines files in the home, the metrics, `tuneloop trace`, and no secret in
anything emitted during a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from cli.commands.trace import load_spans
from cli.main import main
from shared import telemetry
from shared.clients import Clients
from shared.events import JobEvent
from shared.ingest import Ingest, Outcome
from shared.ledger import IN_RELEASE, RunState
from shared.platform.local.topic import LocalTopic, read_events
from shared.release import ReleaseContext, handle_job_event, reconcile
from shared.settings import Settings, load_settings
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform
from tests.integration.test_ingest import invalid_dataset, valid_dataset
from tests.integration.test_ingest_resume import Clock, SimplePlanner
from tests.isolation import isolated_settings

pytestmark = pytest.mark.integration

LINE = "chat"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def make_clients(settings: Settings) -> tuple[Clients, FakePlatform]:
    clients = Clients(settings)
    clients.storage.ensure_containers()
    clients.ledger.ensure_table()
    fake = FakePlatform()
    clients.use_platform(fake)
    return clients, fake


def drop_and_release(clients: Clients, fake: FakePlatform, name: str, data: bytes) -> str:
    """Drop ``data`` as ``chat/<name>``, ingest it, complete its job and release it to the
    end (job event, then the reconciler); returns the run id."""
    s = clients.settings
    ingest = Ingest(settings=s, storage=clients.storage, ledger=clients.ledger, platform=fake,
                    planner=SimplePlanner(s), clock=Clock())
    clients.storage.write_bytes(BlobRef(s.incoming_container, f"{LINE}/{name}"), data)
    result = ingest.handle(s.incoming_container, f"{LINE}/{name}")
    assert result.run_id is not None
    if result.outcome is Outcome.SUBMITTED:
        fake.set_job(result.run_id, "Completed", metrics={"eval_loss": 0.5})
        ctx = ReleaseContext.from_clients(clients)
        handle_job_event(ctx, JobEvent(
            event_id=f"evt-{result.run_id}", event_type="RunCompleted", run_id=result.run_id,
            status="Completed", tags={"tuneloop_line": LINE},
        ))
        for _ in range(10):
            if not clients.ledger.list(states=IN_RELEASE):
                break
            reconcile(ctx)
    telemetry.flush()
    return result.run_id


def trace_of(traceparent: str) -> str:
    """The trace id of a W3C traceparent (``00-<trace>-<span>-<flags>``), as spans store it."""
    return "0x" + traceparent.split("-")[1]


def metric_points(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Metric name -> every data point of every line (delta temporality: one line per export)."""
    points: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        for rm in json.loads(line)["resource_metrics"]:
            for sm in rm["scope_metrics"]:
                for metric in sm["metrics"]:
                    points.setdefault(metric["name"], []).extend(metric["data"]["data_points"])
    return points


@pytest.fixture
def promoted(azurite: str, home: Path) -> tuple[Clients, FakePlatform, str]:
    settings = isolated_settings(azurite, home, min_examples=10, telemetry="local")
    clients, fake = make_clients(settings)
    run_id = drop_and_release(clients, fake, "first.jsonl", valid_dataset())
    assert clients.ledger.get(LINE, run_id).state is RunState.PROMOTED
    return clients, fake, run_id


def test_one_trace_per_run_from_ingest_to_promotion(
    promoted: tuple[Clients, FakePlatform, str], home: Path,
) -> None:
    """The ingest span starts the run's trace; its traceparent is on the run and the job's
    tags; the job event, release, reconciler and exam spans join it; Azure SDK calls are
    child spans in it."""
    clients, fake, run_id = promoted
    rec = clients.ledger.get(LINE, run_id)
    traceparent = rec.get("traceparent")
    assert traceparent
    assert fake.jobs[run_id].tags[telemetry.TRACE_TAG] == traceparent
    spans = load_spans(telemetry.spans_path(home))
    ours = [s for s in spans if s["attributes"].get("tuneloop.run") == run_id]
    names = {s["name"] for s in ours}
    assert {"tuneloop.ingest", "tuneloop.job_event", "tuneloop.release",
            "tuneloop.exam"} <= names
    assert {s["context"]["trace_id"] for s in ours} == {trace_of(traceparent)}
    ingest = next(s for s in ours if s["name"] == "tuneloop.ingest")
    assert ingest["parent_id"] is None  # the root of the run's trace
    assert ingest["attributes"]["tuneloop.line"] == LINE
    last = max((s for s in ours if s["name"] == "tuneloop.release"), key=lambda s: s["end_time"])
    (exam,) = [s for s in ours if s["name"] == "tuneloop.exam"]
    releases = {s["context"]["span_id"] for s in ours if s["name"] == "tuneloop.release"}
    assert exam["parent_id"] in releases  # nested under the release step that ran it
    assert last["attributes"]["tuneloop.state"] == "PROMOTED"
    in_trace = [s for s in spans if s["context"]["trace_id"] == trace_of(traceparent)]
    ids = {s["context"]["span_id"] for s in in_trace}
    sdk = [s for s in in_trace if not s["name"].startswith("tuneloop.")]
    assert sdk, "no Azure SDK span in the run's trace"
    assert all(s["parent_id"] in ids for s in sdk)
    sdk_names = {s["name"] for s in sdk}  # the SDK's operation spans and their HTTP calls
    assert {"BlobClient.upload_blob", "TableClient.update_entity", "PUT"} <= sdk_names


def test_metrics_are_json_lines_with_the_facts_of_the_run(
    promoted: tuple[Clients, FakePlatform, str], home: Path,
) -> None:
    """metrics.jsonl (the SDK console exporter, one JSON object a line) holds the run's final
    state, the gate decision, exam scores, drop→promoted seconds, and a rejected drop's
    validation errors by code."""
    clients, fake, _ = promoted
    rejected = drop_and_release(clients, fake, "bad.jsonl", invalid_dataset())
    assert clients.ledger.get(LINE, rejected).state is RunState.REJECTED
    points = metric_points(telemetry.telemetry_dir(home) / telemetry.METRICS_FILE)
    runs = {p["attributes"]["tuneloop.state"]: p["value"] for p in points["tuneloop.runs"]}
    assert runs == {"PROMOTED": 1, "REJECTED": 1}
    gate = points["tuneloop.gate.decisions"]
    assert [(p["attributes"]["tuneloop.decision"], p["value"]) for p in gate] == [("promote", 1)]
    scores = {p["attributes"]["tuneloop.metric"] for p in points["tuneloop.exam.score"]}
    assert "chrf" in scores
    (waited,) = points["tuneloop.drop_to_promoted"]
    assert waited["count"] == 1
    assert waited["sum"] >= 0
    codes = {p["attributes"]["tuneloop.code"] for p in points["tuneloop.validation.errors"]}
    assert len(codes) >= 2  # the invalid drop has an empty and an unparsable line
    for line in (telemetry.spans_path(home)).read_text(encoding="utf-8").splitlines():
        assert isinstance(json.loads(line), dict)


def run_cli(argv: list[str], home: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setenv("TUNELOOP_HOME", str(home))
    load_settings.cache_clear()
    try:
        code = main(argv)
    finally:
        load_settings.cache_clear()
    out, err = capsys.readouterr()
    return code, out, err


def test_trace_prints_the_run_as_a_timeline(
    promoted: tuple[Clients, FakePlatform, str], home: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tuneloop trace RUN`: one trace header, the ingest span first at +0, children indented
    under their parent, the run's attributes; --json: the same spans with offsets."""
    clients, _, run_id = promoted
    traceparent = str(clients.ledger.get(LINE, run_id).get("traceparent"))
    code, out, _ = run_cli(["trace", run_id], home, monkeypatch, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"trace {traceparent.split('-')[1]} (")
    assert lines[1].startswith("+    0.000s")
    assert "  tuneloop.ingest  " in lines[1]
    assert f" line={LINE} " in lines[1]
    assert f" run={run_id} " in lines[1]
    assert any(line.split("s  ", 1)[1].startswith("  ") for line in lines[2:])  # a child
    assert any("tuneloop.release" in line and "state=PROMOTED" in line for line in lines)
    code, out, _ = run_cli(["trace", run_id, "--json"], home, monkeypatch, capsys)
    rows = json.loads(out)
    assert code == 0
    assert len(rows) == len(lines) - 1
    assert rows[0]["name"] == "tuneloop.ingest"
    assert rows[0]["depth"] == 0
    assert all(r["offset_s"] >= 0 and r["duration_s"] >= 0 for r in rows)


def test_trace_of_an_unknown_run_or_without_spans_is_one_line(
    promoted: tuple[Clients, FakePlatform, str], home: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown run: exit 1, one line; a home without a spans file: exit 2, one line."""
    code, out, err = run_cli(["trace", "tl-nope"], home, monkeypatch, capsys)
    assert (code, out) == (1, "")
    assert err.splitlines() == [err.strip()]
    assert err.startswith("tuneloop trace: not_found: no span of run tl-nope in ")
    code, out, err = run_cli(["trace", "tl-nope"], tmp_path / "empty", monkeypatch, capsys)
    assert (code, out) == (2, "")
    assert err.startswith("tuneloop trace: config_error: no spans file at ")
    assert len(err.strip().splitlines()) == 1


def test_no_secret_in_logs_spans_metrics_or_the_home(
    azurite: str, home: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    """With a storage key, an App Insights connection string and an events key set, a run from
    drop to promotion (and a rejected drop), its lifecycle events published to the local topic
    with that key, emits none of them: not in the logs, the console, the spans, the metrics or
    any file of the home (the received events included)."""
    instrumentation_key = "5e3f7a1c-0d2b-4c8e-9f61-7a2b3c4d5e6f"
    app_insights = (f"InstrumentationKey={instrumentation_key};IngestionEndpoint="
                    "https://westeurope-5.in.applicationinsights.azure.com/")
    events_key = "tEsTeVeNtSkEy0123456789abcdefABCDEF=="
    monkeypatch.setenv(telemetry.CONNECTION_STRING, app_insights)
    monkeypatch.setenv("TUNELOOP_EVENTS_KEY", events_key)
    # The run's lifecycle events go to the local topic (H) with the key, into the home.
    topic = LocalTopic(home, events_key).start()
    try:
        settings = isolated_settings(azurite, home, min_examples=10, telemetry="local",
                                     events_endpoint=topic.url, events_key=events_key)
        assert settings.storage_connection_string
        account_key = settings.storage_connection_string.split("AccountKey=")[1].split(";")[0]
        secrets = [account_key, settings.storage_connection_string, instrumentation_key,
                   app_insights, events_key]
        caplog.set_level(logging.DEBUG)
        clients, fake = make_clients(settings)
        run_id = drop_and_release(clients, fake, "first.jsonl", valid_dataset())
        drop_and_release(clients, fake, "bad.jsonl", invalid_dataset())
        clients.publish_events(undelivered=True)
    finally:
        topic.stop()
    assert clients.ledger.get(LINE, run_id).state is RunState.PROMOTED
    assert {e["type"] for e in read_events(home, LINE)} >= {"tuneloop.run.promoted",
                                                            "tuneloop.run.rejected"}
    out, err = capsys.readouterr()
    files = [p for p in home.rglob("*") if p.is_file()]
    assert telemetry.spans_path(home) in files
    emitted = {"logs": caplog.text, "stdout": out, "stderr": err}
    emitted.update({str(p): p.read_text(encoding="utf-8", errors="replace") for p in files})
    assert len(caplog.records) > 10  # the run did log (a scan of nothing would pass)
    leaks = [(where, secret[:12]) for where, text in emitted.items()
             for secret in secrets if secret in text]
    assert leaks == []


def test_a_retraction_joins_the_trace_of_the_run_its_drop_came_in_with(
    promoted: tuple[Clients, FakePlatform, str], home: Path,
) -> None:
    """`tuneloop retract` of a drop: its span is in the trace of the run that ingested it."""
    from shared.retract import Retraction

    clients, _, run_id = promoted
    rec = clients.ledger.get(LINE, run_id)
    Retraction.from_clients(clients).retract(LINE, str(rec.get("dataset_sha256")), by="test")
    telemetry.flush()
    spans = load_spans(telemetry.spans_path(home))
    (retract,) = [s for s in spans if s["name"] == "tuneloop.retract"]
    assert retract["context"]["trace_id"] == trace_of(str(rec.get("traceparent")))
    assert retract["attributes"]["tuneloop.run"] == run_id


def test_a_manual_promotion_joins_the_runs_trace_and_counts_it(
    azurite: str, home: Path,
) -> None:
    """`tuneloop promote` of a run HELD by TUNELOOP_PROMOTION=manual: the tuneloop.promote
    span is in the run's trace, and the run counts as HELD, then PROMOTED, with its
    drop→promoted time."""
    from shared.release import promote_held

    settings = isolated_settings(azurite, home, min_examples=10, telemetry="local",
                                 promotion="manual")
    clients, fake = make_clients(settings)
    run_id = drop_and_release(clients, fake, "first.jsonl", valid_dataset())
    assert clients.ledger.get(LINE, run_id).state is RunState.HELD
    promote_held(ReleaseContext.from_clients(clients), run_id)
    telemetry.flush()
    rec = clients.ledger.get(LINE, run_id)
    assert rec.state is RunState.PROMOTED
    (promote,) = [s for s in load_spans(telemetry.spans_path(home))
                  if s["name"] == "tuneloop.promote"]
    assert promote["context"]["trace_id"] == trace_of(str(rec.get("traceparent")))
    assert promote["attributes"]["tuneloop.state"] == "PROMOTED"
    points = metric_points(telemetry.telemetry_dir(home) / telemetry.METRICS_FILE)
    runs = sorted((p["attributes"]["tuneloop.state"], p["value"]) for p in points["tuneloop.runs"])
    assert runs == [("HELD", 1), ("PROMOTED", 1)]
    assert [p["count"] for p in points["tuneloop.drop_to_promoted"]] == [1]
