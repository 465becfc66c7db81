"""`tuneloop status [--line L] [--json]` — each run's state, timeline and reason (ledger)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from shared.clients import Clients
    from shared.ledger import RunRecord

__all__ = ["add_arguments", "format_runs", "run"]

_COLUMNS = ("run", "line", "state", "version", "updated", "reason")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--line", help="only the runs of this line")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")


def _row(rec: RunRecord) -> tuple[str, ...]:
    return (
        rec.run_id,
        rec.line,
        rec.state.value,
        rec.release.model_version or "-",
        str(rec.get("updated") or "-"),
        rec.reason or "",
    )


def format_runs(runs: Sequence[RunRecord]) -> str:
    """A table of runs, each followed by its timeline (time, state, note)."""
    if not runs:
        return "no runs"
    rows = [_COLUMNS, *(_row(r) for r in runs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]

    def line(row: tuple[str, ...]) -> str:
        cells = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True))
        return f"{cells}  {row[-1]}".rstrip()

    out = [line(rows[0])]
    for rec, row in zip(runs, rows[1:], strict=True):
        out.append(line(row))
        for event in rec.timeline:
            note = f"  {event['note']}" if event.get("note") else ""
            out.append(f"    {event.get('at', '?')}  {event['state']}{note}")
        r = rec.release
        if r.scoring_uri and rec.state.value == "PROMOTED":
            out.append(f"    serving: {r.endpoint}/{r.deployment} {r.scoring_uri}")
    return "\n".join(out)


def run(
    args: argparse.Namespace, *, clients: Clients | None = None, out: TextIO | None = None
) -> int:
    from cli.storage import cli_clients, fail
    from shared.errors import TuneloopError

    stream = out or sys.stdout
    try:
        if clients is None:
            with cli_clients() as own:
                runs = own.ledger.list(line=args.line)
        else:
            runs = clients.ledger.list(line=args.line)
    except TuneloopError as exc:
        return fail("status", exc)
    if args.json:
        json.dump([r.to_dict() for r in runs], stream, indent=2, default=str)
        stream.write("\n")
    else:
        stream.write(format_runs(runs) + "\n")
    return 0
