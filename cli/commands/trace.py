"""`tuneloop trace RUN [--json]` — the run's spans as a timeline.

Reads ``<home>/telemetry/spans.jsonl`` (``TUNELOOP_HOME``), where :mod:`shared.telemetry`
writes every span on the local platform (the devhost and the CLI), one JSON object a line as
the OpenTelemetry SDK's console exporter formats it. The run's trace is every trace that has a
span with ``tuneloop.run`` = RUN (one, since the ingest span starts it and the release, the
reconciler, the exam and retractions join it), Azure SDK child spans included. Each span is
one line: the offset from the trace's first span, its duration, its name (indented under its
parent) and its ``tuneloop.*`` attributes. ``--json`` prints the spans as stored, oldest
first, each with ``offset_s``, ``duration_s`` and ``depth`` added.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_arguments", "load_spans", "run", "run_spans", "timeline"]

_EARLIEST = datetime.min.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN", help="the run (see `tuneloop status`)")
    parser.add_argument("--json", action="store_true",
                        help="print the run's spans as a JSON list (oldest first)")


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from shared.errors import ConfigError, NotFoundError
    from shared.settings import load_settings
    from shared.telemetry import spans_path

    stream = out or sys.stdout
    settings = load_settings()
    path = spans_path(settings.home)
    if not path.is_file():
        raise ConfigError(
            f"no spans file at {path}",
            hint="spans are written there on the local platform (TUNELOOP_TELEMETRY auto or "
            "local); set TUNELOOP_HOME to the home `tuneloop up` uses",
        )
    spans = run_spans(load_spans(path), args.run_id)
    if not spans:
        raise NotFoundError(
            f"no span of run {args.run_id} in {path}",
            hint="check the run id with `tuneloop status`; runs from before telemetry have none",
        )
    rows = timeline(spans)
    if args.json:
        json.dump(rows, stream, indent=2)
        stream.write("\n")
        return 0
    trace = None
    for row in rows:
        if row["context"]["trace_id"] != trace:
            trace = row["context"]["trace_id"]
            count = sum(1 for r in rows if r["context"]["trace_id"] == trace)
            stream.write(f"trace {_hex(trace)} ({count} spans)\n")
        stream.write(_line(row) + "\n")
    return 0


def load_spans(path: Path) -> list[dict[str, Any]]:
    """The spans of the file (a line that is not a span, e.g. cut by a crash, is skipped)."""
    spans = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                span = json.loads(line)
            except ValueError:
                continue
            if isinstance(span, dict) and isinstance(span.get("context"), dict):
                spans.append(span)
    return spans


def run_spans(spans: Iterable[Mapping[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """Every span of the traces in which one span names ``run_id``."""
    every = [dict(s) for s in spans]
    traces = {s["context"].get("trace_id") for s in every
              if (s.get("attributes") or {}).get("tuneloop.run") == run_id}
    return [s for s in every if s["context"].get("trace_id") in traces]


def timeline(spans: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The spans in tree order per trace (a parent before its children, siblings by start),
    traces by their first span, each with ``offset_s`` (from its trace's first span),
    ``duration_s`` and ``depth``."""
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(str(span["context"].get("trace_id")), []).append(dict(span))
    rows: list[dict[str, Any]] = []
    for members in sorted(by_trace.values(), key=lambda m: min(_start(s) for s in m)):
        first = min(_start(s) for s in members)
        ids = {s["context"].get("span_id") for s in members}
        children: dict[Any, list[dict[str, Any]]] = {}
        for s in members:
            parent = s.get("parent_id")
            children.setdefault(parent if parent in ids else None, []).append(s)
        _walk(children, None, 0, first, rows)
    return rows


def _walk(
    children: Mapping[Any, list[dict[str, Any]]], parent: Any, depth: int, first: datetime,
    rows: list[dict[str, Any]],
) -> None:
    for s in sorted(children.get(parent, []), key=_start):
        end = _time(s.get("end_time")) or _start(s)
        rows.append({
            **s,
            "offset_s": round((_start(s) - first).total_seconds(), 6),
            "duration_s": round((end - _start(s)).total_seconds(), 6),
            "depth": depth,
        })
        _walk(children, s["context"].get("span_id"), depth + 1, first, rows)


def _line(row: Mapping[str, Any]) -> str:
    attrs = row.get("attributes") or {}
    shown = [f"{k.removeprefix('tuneloop.')}={v}" for k, v in attrs.items()
             if k.startswith("tuneloop.")]
    status = (row.get("status") or {}).get("status_code")
    if status == "ERROR":
        shown.append("ERROR")
    name = "  " * int(row["depth"]) + str(row.get("name"))
    text = f"+{row['offset_s']:9.3f}s {row['duration_s']:9.3f}s  {name}"
    return f"{text}  {' '.join(shown)}" if shown else text


def _hex(trace_id: Any) -> str:
    return str(trace_id).removeprefix("0x")


def _start(span: Mapping[str, Any]) -> datetime:
    return _time(span.get("start_time")) or _EARLIEST


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
