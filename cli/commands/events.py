"""`tuneloop events [--line L] [--follow] [--json]` — the lifecycle events the local topic got.

The devhost (``tuneloop up``, ``tuneloop demo``) serves the home's Event Grid-compatible topic
(:mod:`shared.platform.local.topic`) and its app publishes tuneloop's CloudEvents there; the
topic stores each as received in ``<home>/events/received.jsonl``. This command prints them,
oldest first: a line each, or with ``--json`` the JSON list of the events as received
(``specversion``, ``type``, ``source``, ``subject``, ``id``, ``time``, ``data``, ...).
``--follow`` keeps printing new ones until Ctrl-C (with ``--json``: one JSON object per line).
It reads the home's files only: no storage, no running devhost needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_arguments", "format_event", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--line", help="only the events of this line")
    parser.add_argument(
        "--follow", "-f", action="store_true",
        help="keep printing events as they arrive, until Ctrl-C",
    )
    parser.add_argument(
        "--json", action="store_true",
        help="print the JSON list of the events as received (with --follow: one per line)",
    )


def format_event(event: Mapping[str, Any]) -> str:
    """One line: time, type, subject, id, and the data's reason when there is one."""
    data = event.get("data")
    reason = data.get("reason") if isinstance(data, dict) else None
    parts = [str(event.get("time") or "-"), str(event.get("type")),
             str(event.get("subject") or event.get("source")), str(event.get("id"))]
    line = "  ".join(parts)
    return f"{line}  {' '.join(str(reason).split())}" if reason else line


def _print(events: Iterable[Mapping[str, Any]], stream: TextIO, *, as_json: bool) -> None:
    for event in events:
        stream.write((json.dumps(event) if as_json else format_event(event)) + "\n")
        stream.flush()


def run(
    args: argparse.Namespace, *, home: Path | None = None, out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Print the stored events (then follow them); one clear line and exit 2 on bad input."""
    from cli.commands.upload import check_line
    from cli.storage import fail
    from shared.errors import ConfigError, TuneloopError
    from shared.platform.local.topic import events_file, follow_events, read_events
    from shared.settings import load_settings

    stream = out or sys.stdout
    try:
        if args.line is not None:
            check_line(args.line)
        where = Path(home if home is not None else load_settings().home)
        try:
            events = read_events(where, args.line)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {events_file(where)}: {exc}",
                              hint="check its permissions") from None
    except TuneloopError as exc:
        return fail("events", exc)
    if args.follow:
        _print(follow_events(where, args.line, stop=stop), stream, as_json=args.json)
        return 0
    if args.json:
        json.dump(events, stream, indent=2)
        stream.write("\n")
    elif events:
        _print(events, stream, as_json=False)
    else:
        scope = f" for line {args.line}" if args.line else ""
        stream.write(f"no events received{scope} yet in {events_file(where)} (the devhost's "
                     "local topic stores them: `tuneloop up` or `tuneloop demo`)\n")
    return 0
