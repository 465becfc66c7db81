"""shared/telemetry.py on in-memory ports: where telemetry goes per setting, the sweeper's
metrics, and nothing recorded when it is off."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared import telemetry
from shared.ingest import Ingest, Outcome
from shared.ledger import RunState
from shared.platform.port import EndpointInfo
from shared.settings import Settings
from shared.storage import BlobRef
from shared.sweep import run_sweep
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform
from tests.fakes.storage import FakeStorage
from tests.integration.test_ingest import valid_dataset
from tests.integration.test_ingest_resume import Clock, SimplePlanner

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def points(home: Path, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    path = telemetry.telemetry_dir(home) / telemetry.METRICS_FILE
    for line in path.read_text(encoding="utf-8").splitlines():
        for rm in json.loads(line)["resource_metrics"]:
            for sm in rm["scope_metrics"]:
                for metric in sm["metrics"]:
                    if metric["name"] == name:
                        out.extend(metric["data"]["data_points"])
    return out


def test_the_sweeper_records_each_deleted_endpoint_and_the_idle_hours_it_saves(
    tmp_path: Path,
) -> None:
    """A deleted endpoint counts once in tuneloop.sweep.endpoints_deleted and adds its idle
    hours (now - idle_since, here 5 days) to tuneloop.sweep.idle_hours_saved; a kept one adds
    nothing."""
    home = tmp_path / "home"
    settings = Settings(platform="local", home=home, telemetry="local",
                        idle_after=timedelta(days=1))
    platform = FakePlatform(now=NOW)
    for name, requests in (("tl-idle", 0), ("tl-busy", 40)):
        platform.add_endpoint(EndpointInfo(
            name=name, id=f"/x/onlineEndpoints/{name}",
            tags={"tuneloop_line": "support", "tuneloop_managed": "true"},
            created=NOW - timedelta(days=8), modified=NOW - timedelta(days=5),
            provisioning_state="Succeeded", traffic={"v01": 100}, location="eastus",
        ), requests=requests)
    run_sweep(platform=platform, ledger=FakeLedger(), storage=None, settings=settings, now=NOW)
    telemetry.flush()
    assert platform.deleted_endpoints == ["tl-idle"]
    (deleted,) = points(home, "tuneloop.sweep.endpoints_deleted")
    assert deleted["value"] == 1
    assert deleted["attributes"] == {"tuneloop.line": "support"}
    (saved,) = points(home, "tuneloop.sweep.idle_hours_saved")
    assert saved["value"] == pytest.approx(5 * 24)


def test_telemetry_off_writes_no_file_and_stores_no_trace(tmp_path: Path) -> None:
    """TUNELOOP_TELEMETRY=off: the run has no traceparent, its job no trace tag, the home no
    telemetry directory."""
    home = tmp_path / "home"
    settings = Settings(platform="local", home=home, telemetry="off", min_examples=10)
    storage, ledger, platform = FakeStorage(settings), FakeLedger(), FakePlatform()
    ingest = Ingest(settings=settings, storage=storage, ledger=ledger, platform=platform,
                    planner=SimplePlanner(settings), clock=Clock())
    storage.write_bytes(BlobRef(settings.incoming_container, "chat/a.jsonl"), valid_dataset())
    result = ingest.handle(settings.incoming_container, "chat/a.jsonl")
    assert result.outcome is Outcome.SUBMITTED
    assert result.run_id is not None
    assert ledger.get("chat", result.run_id).get("traceparent") is None
    assert telemetry.TRACE_TAG not in platform.jobs[result.run_id].tags
    assert not telemetry.telemetry_dir(home).exists()


def test_a_local_run_stores_its_trace_on_the_run_and_the_job(tmp_path: Path) -> None:
    """On the local platform (auto) the ingest's traceparent is on the run and the job tag."""
    settings = Settings(platform="local", home=tmp_path / "home", min_examples=10)
    storage, ledger, platform = FakeStorage(settings), FakeLedger(), FakePlatform()
    ingest = Ingest(settings=settings, storage=storage, ledger=ledger, platform=platform,
                    planner=SimplePlanner(settings), clock=Clock())
    storage.write_bytes(BlobRef(settings.incoming_container, "chat/a.jsonl"), valid_dataset())
    result = ingest.handle(settings.incoming_container, "chat/a.jsonl")
    assert result.run_id is not None
    rec = ledger.get("chat", result.run_id)
    assert rec.state is RunState.SUBMITTED
    traceparent = str(rec.get("traceparent"))
    assert len(traceparent.split("-")) == 4
    assert platform.jobs[result.run_id].tags[telemetry.TRACE_TAG] == traceparent


def test_a_connection_string_configures_azure_monitor_once_unless_local_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """APPLICATIONINSIGHTS_CONNECTION_STRING + auto: configure_azure_monitor once per process,
    however many calls; TUNELOOP_TELEMETRY=local keeps the home's files; off: nothing."""
    calls: list[str] = []
    monkeypatch.setattr(telemetry, "_installed", None)
    monkeypatch.setattr(telemetry, "_install_azure", lambda: calls.append("azure"))
    monkeypatch.setenv(telemetry.CONNECTION_STRING, "InstrumentationKey=00000000-0000-0000")
    home = tmp_path / "home"
    assert telemetry.mode(Settings(platform="local", home=home, telemetry="off")) == "off"
    assert calls == []
    auto = Settings(platform="azureml", home=home)
    assert telemetry.mode(auto) == "azure"
    assert telemetry.mode(auto) == "azure"
    assert calls == ["azure"]
    # (once Azure Monitor is installed it is the process's telemetry; asking for local is
    # honoured only before: the secret scan test runs with local and a connection string)
    monkeypatch.setattr(telemetry, "_installed", None)
    monkeypatch.setattr(telemetry, "_install_local", lambda: calls.append("local"))
    assert telemetry.mode(Settings(platform="local", home=home, telemetry="local")) == "local"
    assert calls == ["azure", "local"]


def test_no_telemetry_without_a_connection_string_on_azure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Azure ML platform without a connection string: no telemetry (no local files)."""
    monkeypatch.delenv(telemetry.CONNECTION_STRING, raising=False)
    monkeypatch.setattr(telemetry, "_installed", None)
    settings = Settings(platform="azureml", home=tmp_path / "home")
    assert telemetry.mode(settings) == "off"
    with telemetry.span(settings, "tuneloop.ingest", line="chat") as current:
        assert current is None


def test_with_trace_tag_adds_the_tag_only_with_a_trace() -> None:
    """A plan keeps its tags and gains tuneloop_traceparent only when there is a trace."""
    from tests.integration.test_ingest_resume import SimplePlanner as Planner

    plan = Planner(Settings(platform="local"))(line="chat", dataset_sha256="ab" * 32)
    assert telemetry.with_trace_tag(plan, None) is plan
    tagged = telemetry.with_trace_tag(plan, "00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert tagged.tags[telemetry.TRACE_TAG].startswith("00-111")
    assert {k: v for k, v in tagged.tags.items() if k != telemetry.TRACE_TAG} == dict(plan.tags)
    assert replace(tagged, tags=plan.tags) == plan


def test_spans_leave_the_global_random_state_alone(tmp_path: Path) -> None:
    """Span and trace ids come from the OS, not the global ``random`` module: before, every
    span (an Azure SDK call in any thread is one) moved random's state, which Hypothesis
    reported as a flaky failure of unrelated property tests running meanwhile."""
    import random
    import threading

    from opentelemetry import trace

    settings = Settings(platform="local", home=tmp_path / "home")
    with telemetry.span(settings, "tuneloop.warmup"):
        pass
    state = random.getstate()

    def spans() -> None:
        for _ in range(20):
            with trace.get_tracer("tests").start_as_current_span("work"):
                pass

    worker = threading.Thread(target=spans)
    worker.start()
    worker.join()
    with telemetry.span(settings, "tuneloop.ingest", line="chat") as current:
        assert current is not None
        assert current.get_span_context().span_id != 0
    assert random.getstate() == state
