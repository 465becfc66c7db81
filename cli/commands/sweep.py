"""`tuneloop sweep [--dry-run] [--json]` — decide (and by default delete) idle endpoints."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from shared.clients import Clients
    from shared.sweep import SweepReport

__all__ = ["add_arguments", "format_table", "run"]

_COLUMNS = ("endpoint", "line", "requests", "age", "decision", "reason")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and report only; delete nothing (overrides TUNELOOP_SWEEP_MODE)",
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def _row(decision: dict[str, Any]) -> tuple[str, ...]:
    requests = decision["requests"]
    action = decision["action"]
    if decision.get("outcome") and decision["outcome"] not in ("dry-run",):
        action = f"{action} ({decision['outcome']})"
    elif decision.get("outcome") == "dry-run":
        action = f"{action} (dry-run)"
    reason = decision["reason"]
    if decision.get("error"):
        reason = f"{reason} [error: {decision['error']}]"
    return (
        decision["endpoint"],
        decision["line"] or "-",
        "?" if requests is None else str(requests),
        decision.get("age") or "?",
        action,
        reason,
    )


def format_table(report: dict[str, Any]) -> str:
    """The decision table (name, line, requests, age, decision, reason) as plain text."""
    rows = [_COLUMNS, *(_row(d) for d in report["decisions"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    summary = report["summary"]
    lines.append("")
    lines.append(
        f"{summary['endpoints']} endpoints: {summary['delete']} to delete, {summary['keep']} kept,"
        f" {summary['skip-over-cap']} over the cap; mode {report['mode']}"
        f"; {summary['deletion_started']} deletions started, {summary['failed']} failed"
    )
    if report["metrics"]["error"]:
        lines.append(f"metrics unavailable, nothing deleted: {report['metrics']['error']}")
    return "\n".join(lines)


def _sweep(args: argparse.Namespace, clients: Clients | None) -> SweepReport:
    from shared.sweep import run_sweep

    if clients is None:
        from cli.storage import cli_clients

        with cli_clients() as own:
            return _sweep(args, own)
    settings = clients.settings
    clients.storage.ensure_containers(settings.reports_container)
    try:
        # --dry-run is a person's what-if, answered on the terminal: no sweep event
        return run_sweep(
            platform=clients.platform,
            ledger=clients.ledger,
            storage=clients.storage,
            settings=settings,
            mode="dry-run" if args.dry_run else None,
            publish=not args.dry_run,
        )
    finally:
        clients.publish_events()  # the sweep's event and retired runs' events (never raises)


def run(
    args: argparse.Namespace, *, out: TextIO | None = None, clients: Clients | None = None
) -> int:
    """Sweep once and print the decision table (or the JSON report); 1 if a deletion failed."""
    from cli.storage import fail
    from shared.errors import TuneloopError

    out = out or sys.stdout
    # The Azure ML SDK's deletion pollers print progress dots to stdout from background
    # threads: send those to stderr so that the table / JSON on ``out`` stays clean.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            report = _sweep(args, clients)
        except TuneloopError as exc:
            return fail("sweep", exc)
        data = report.to_dict()
        if args.json:
            out.write(json.dumps(data, indent=2, default=_default) + "\n")
        else:
            out.write(format_table(data) + "\n")
            if report.blob:
                out.write(f"report: {report.blob}\n")
        out.flush()
    return 1 if report.failed else 0


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
