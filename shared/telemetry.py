"""Tuneloop's own telemetry: OpenTelemetry spans and metrics, one trace per run.

Where it goes (decided per call from the settings, installed once per process, lazily — no
module here imports OpenTelemetry at import time, so ``import function_app`` stays light):

- ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set (and ``TUNELOOP_TELEMETRY`` auto): the Azure
  Monitor OpenTelemetry distro's ``configure_azure_monitor()``, once per worker. It reads the
  connection string from that variable, sets the global tracer, meter and logger providers
  (the root logger's records, with their structured message, go to App Insights) and turns on
  the Azure SDK instrumentation (``instrumentation_options`` "azure_sdk", enabled by default),
  so every Azure SDK call is a child span (azure-monitor-opentelemetry 1.8.10,
  ``azure/monitor/opentelemetry/_configure.py``: ``configure_azure_monitor``'s docstring).
- On the local platform (``tuneloop up``/the devhost, the CLI; ``TUNELOOP_TELEMETRY`` auto or
  local): an SDK ``TracerProvider`` and ``MeterProvider`` whose exporters are the SDK's own
  ``ConsoleSpanExporter``/``ConsoleMetricExporter`` writing one JSON object a line to
  ``<home>/telemetry/spans.jsonl`` and ``metrics.jsonl``. Azure SDK calls (Azurite) are child
  spans through azure-core's plugin setting ``settings.tracing_implementation =
  "opentelemetry"`` (azure-core 1.41 ``azure/core/settings.py``: the value selects
  ``azure.core.tracing.ext.opentelemetry_span`` from azure-core-tracing-opentelemetry).
- Otherwise (``TUNELOOP_TELEMETRY=off``, or Azure without a connection string): nothing; a span
  is a no-op and no trace context is stored.

One trace per run: the ingest span starts it; :func:`traceparent` (W3C ``traceparent``) is
stored on the run (ledger column ``traceparent``) and tagged on the fine-tune job
(:data:`TRACE_TAG`); release, reconciler, exam and retract spans pass it as ``parent`` and
join that trace. Spans carry ``tuneloop.line``, ``tuneloop.run`` and ``tuneloop.state``.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    from shared.ledger import RunRecord
    from shared.platform.port import FinetunePlan
    from shared.settings import Settings

__all__ = [
    "CONNECTION_STRING", "METRICS_FILE", "SPANS_FILE", "TRACE_TAG", "current_traceparent",
    "flush", "mode", "record", "run_entered", "span", "spans_path", "telemetry_dir",
    "with_trace_tag",
]

log = logging.getLogger(__name__)

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
TRACE_TAG = "tuneloop_traceparent"  # the fine-tune job's tag carrying the run's trace
SPANS_FILE = "spans.jsonl"
METRICS_FILE = "metrics.jsonl"
_TRACER = "tuneloop"

Mode = Literal["azure", "local", "off"]

_lock = threading.Lock()
_installed: Mode | None = None  # what this process installed ("azure" is for good)
_home: Path | None = None  # the local files' home (the settings of the latest call)
_providers: list[Any] = []
_instruments: dict[str, Any] = {}


def telemetry_dir(home: Path) -> Path:
    return Path(home) / "telemetry"


def spans_path(home: Path) -> Path:
    return telemetry_dir(home) / SPANS_FILE


class _HomeFile(io.StringIO):
    """The console exporters' ``out``: each write is appended to the current home's file (a
    test or a CLI process may change homes; the devhost and a CLI append to the same file)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def write(self, text: str) -> int:
        home = _home
        if home is None or not text:
            return 0
        path = telemetry_dir(home) / self._name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            return out.write(text)


def mode(settings: Settings) -> Mode:
    """Where telemetry goes for these settings (installs the providers on first use)."""
    wanted = settings.telemetry
    if wanted == "off":
        return "off"
    if wanted == "auto" and os.environ.get(CONNECTION_STRING):
        return _install("azure", None)
    if _installed == "azure":
        return "azure"
    if wanted == "local" or settings.platform_kind == "local":
        return _install("local", Path(settings.home))
    return "off"


def _install(kind: Mode, home: Path | None) -> Mode:
    global _installed, _home
    with _lock:
        if _installed is None:
            if kind == "azure":
                _install_azure()
            else:
                _install_local()
            _installed = kind
        if _installed == "local" and home is not None and home != _home:
            if _home is not None:
                _flush()  # what was recorded for the previous home goes to its files
            _home = home
        return _installed


def _install_azure() -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics, trace
    from opentelemetry._logs import get_logger_provider

    options: dict[str, Any] = {}
    if not os.environ.get("OTEL_TRACES_SAMPLER"):
        # The distro's default sampler is rate-limited, 5 traces/s (azure-monitor-opentelemetry
        # 1.8.10 `_utils/configurations.py::_default_sampling_ratio`); its estimate starts from
        # the time since it was configured, so a root span right after that - here a worker's
        # first span, a run's ingest, since we configure lazily at the first span - is dropped
        # nearly always, and with it the run's trace. Keep every trace (ApplicationInsights
        # sampler at 1.0: a run is one trace of ~200 spans over hours); an operator still
        # chooses with OTEL_TRACES_SAMPLER/OTEL_TRACES_SAMPLER_ARG (e.g.
        # microsoft.rate_limited). Pinned by tests/integration/test_telemetry_azure.py.
        options["sampling_ratio"] = 1.0
    # The connection string is read by the distro from the environment variable (never
    # passed, logged or put on a span here).
    configure_azure_monitor(**options)
    # The distro's log handler sits on the root logger; at INFO (the Functions worker's level)
    # the exporter's own posts log through azure-core's HTTP logging policy and "Transmission
    # succeeded", which the handler exports, which logs again: an endless loop (a flush never
    # returns; a worker posts for ever). The maintainers' known pitfall (Azure/azure-sdk-for-
    # python#39104, #34787); drop those two loggers' records from the export (the console keeps
    # them; Azure SDK calls are spans anyway). Pinned by tests/integration/test_telemetry_azure.py.
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, LoggingHandler):
            handler.addFilter(_not_the_exporters_own)
    # flush() pushes the distro's batches too (spans every 5 s, metrics every 60 s otherwise).
    _providers[:] = [provider for provider in (trace.get_tracer_provider(),
                                               metrics.get_meter_provider(),
                                               get_logger_provider())
                     if hasattr(provider, "force_flush")]


_EXPORTER_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy",
                     "azure.monitor.opentelemetry")


def _not_the_exporters_own(record: logging.LogRecord) -> bool:
    return not record.name.startswith(_EXPORTER_LOGGERS)


def _private_id_generator() -> IdGenerator:
    """Span and trace ids from the OS's generator (``secrets``), not the global ``random``.

    The SDK's RandomIdGenerator draws from the global ``random`` module: a span started in any
    thread (an Azure SDK call is one) then moves the global random state under whoever else
    uses it, and a process that seeds ``random`` (or a forked worker that inherits its state)
    would repeat trace ids. Same contract as the SDK's: non-zero ids, the trace id random.
    """
    import secrets

    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class PrivateIdGenerator(IdGenerator):
        def generate_span_id(self) -> int:
            while not (span_id := secrets.randbits(64)):
                pass
            return span_id

        def generate_trace_id(self) -> int:
            while not (trace_id := secrets.randbits(128)):
                pass
            return trace_id

        def is_trace_id_random(self) -> bool:
            return True

    return PrivateIdGenerator()


def _install_local() -> None:
    from azure.core.settings import settings as azure_settings
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    resource = Resource.create({"service.name": "tuneloop"})
    tracer_provider = TracerProvider(resource=resource, id_generator=_private_id_generator())
    # Synchronous: a span is in the file when it ends (`tuneloop trace` reads it at once).
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
        out=cast(Any, _HomeFile(SPANS_FILE)),
        formatter=lambda span: span.to_json(indent=None) + "\n",
    )))
    # Delta: each line holds what was recorded since the previous export, so summing the
    # lines of one home's file gives its totals (a process that changes homes flushes first).
    delta = AggregationTemporality.DELTA
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(
            out=cast(Any, _HomeFile(METRICS_FILE)),
            formatter=lambda data: data.to_json(indent=None) + "\n",
            preferred_temporality={Counter: delta, Histogram: delta, UpDownCounter: delta},
        ),
        export_interval_millis=30_000,
    )
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _providers[:] = [tracer_provider, meter_provider]
    azure_settings.tracing_implementation = "opentelemetry"


def flush() -> None:
    """Write what is pending (metrics are exported every 30 s and at exit otherwise)."""
    with _lock:
        _flush()


def _flush() -> None:
    for provider in _providers:
        provider.force_flush()


# -- spans ------------------------------------------------------------------------------------
@contextmanager
def span(
    settings: Settings,
    name: str,
    *,
    run: RunRecord | None = None,
    line: str | None = None,
    parent: str | None = None,
    **attributes: str | int | float | bool | None,
) -> Iterator[Any]:
    """A span named ``name``; with ``parent`` (a stored traceparent, e.g. the run's) it joins
    that trace, else the current one (or starts a trace). Yields the span (None when off)."""
    if run is not None and parent is None:
        parent = run_traceparent(run)
    if mode(settings) == "off":
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = None
    if parent:
        # The stored trace is the parent unless a span of that trace is current (the exam
        # inside a release step nests under the step, not under the ingest span).
        stored = TraceContextTextMapPropagator().extract({"traceparent": parent})
        here = trace.get_current_span().get_span_context()
        if not (here.is_valid
                and here.trace_id == trace.get_current_span(stored).get_span_context().trace_id):
            context = stored
    attrs: dict[str, Any] = {f"tuneloop.{k}": v for k, v in attributes.items() if v is not None}
    if line is not None:
        attrs["tuneloop.line"] = line
    if run is not None:
        attrs.update(_run_attributes(run))
    tracer = trace.get_tracer(_TRACER)
    with tracer.start_as_current_span(name, context=context, attributes=attrs) as current:
        yield current


def mark(current: Any, run: RunRecord | None) -> None:
    """Set the run's line, id and state on ``current`` (a span from :func:`span`, or None)."""
    if current is not None and run is not None:
        current.set_attributes(_run_attributes(run))


def _run_attributes(run: RunRecord) -> dict[str, str]:
    return {"tuneloop.line": run.line, "tuneloop.run": run.run_id,
            "tuneloop.state": run.state.value}


def current_traceparent() -> str | None:
    """The current span's W3C traceparent, or None (no span, or telemetry off)."""
    if _installed is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def run_traceparent(run: RunRecord) -> str | None:
    """The trace context stored on the run at ingest (None for runs from before it)."""
    value = run.get("traceparent")
    return str(value) if value else None


def with_trace_tag(plan: FinetunePlan, traceparent: str | None) -> FinetunePlan:
    """The plan with the run's trace context as a job tag (no tag without a trace)."""
    if not traceparent:
        return plan
    return replace(plan, tags=MappingProxyType({**plan.tags, TRACE_TAG: traceparent}))


# -- metrics ----------------------------------------------------------------------------------
_METRICS: Mapping[str, tuple[str, str, str]] = {
    # name: (kind, unit, description)
    "tuneloop.runs": ("counter", "{run}", "Runs that reached a final state, by state."),
    "tuneloop.validation.errors": ("counter", "{error}", "Validation errors, by code."),
    "tuneloop.exam.score": ("histogram", "1", "Exam scores (candidate and live), by metric."),
    "tuneloop.gate.decisions": ("counter", "{decision}", "Promotion gate decisions."),
    "tuneloop.drop_to_promoted": ("histogram", "s", "Seconds from a drop to its promotion."),
    "tuneloop.sweep.endpoints_deleted": ("counter", "{endpoint}", "Endpoints the sweeper "
                                         "deleted."),
    "tuneloop.sweep.idle_hours_saved": ("counter", "h", "Estimated idle endpoint hours saved "
                                        "by the sweeper's deletions."),
}

# The states a run's loop ends in, for tuneloop.runs.
# RETIRED is left out: it follows PROMOTED (a run would count twice).
_FINAL = frozenset({"REJECTED", "DUPLICATE", "PROMOTED", "HELD", "FAILED"})


def record(name: str, value: float, **attributes: str | int | float | bool | None) -> None:
    """Add ``value`` to the metric ``name`` (one of :data:`_METRICS`); nothing when no
    telemetry is installed in this process."""
    if _installed is None:
        return
    instrument = _instruments.get(name)
    if instrument is None:
        from opentelemetry import metrics

        kind, unit, description = _METRICS[name]
        meter = metrics.get_meter(_TRACER)
        make = meter.create_counter if kind == "counter" else meter.create_histogram
        instrument = _instruments.setdefault(name, make(name, unit=unit,
                                                        description=description))
    attrs = {f"tuneloop.{k}": v for k, v in attributes.items() if v is not None}
    if hasattr(instrument, "add"):
        instrument.add(value, attrs)
    else:
        instrument.record(value, attrs)


def run_entered(run: RunRecord, previous: str) -> None:
    """A run entered a state (the ledger recorded it): the current span's state; a final
    state counts in tuneloop.runs; PROMOTED records the seconds since the drop arrived."""
    if _installed is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(_run_attributes(run))
        current.add_event("tuneloop.state", {"from": previous, "to": run.state.value})
    state = run.state.value
    if state in _FINAL:
        record("tuneloop.runs", 1, line=run.line, state=state)
    if state == "PROMOTED":
        created = _when(run.get("created"))
        promoted = run.release.promoted_at or _when(run.get("updated"))
        if created is not None and promoted is not None:
            seconds = (promoted - created).total_seconds()
            record("tuneloop.drop_to_promoted", max(seconds, 0.0), line=run.line)


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
