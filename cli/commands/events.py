"""`tuneloop events [--line L] [--follow] [--json]` — the lifecycle events the local topic got.

The devhost (``tuneloop up``, ``tuneloop demo``) serves the home's Event Grid-compatible topic
(:mod:`shared.platform.local.topic`) and its app publishes tuneloop's CloudEvents there; the
topic stores each as received in ``<home>/events/received.jsonl``. This command prints them,
oldest first: a line each, or with ``--json`` the JSON list of the events as received
(``specversion``, ``type``, ``source``, ``subject``, ``id``, ``time``, ``data``, ...).
``--follow`` keeps printing new ones until Ctrl-C (with ``--json``: one JSON object per line).
It reads the home's files only: no storage, no running devhost needed.

``--failed`` instead lists, from the ledger, the events the topic refused for good (an HTTP
4xx other than 408/429; :func:`shared.outbox.failed_events`): line, run, id, type, when and
why, oldest first (``--json``: a list of ``{line, run, id, type, error, at, event}``). With
``--line`` it reads that line's partition; without, the whole ledger.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from shared.clients import Clients

__all__ = ["add_arguments", "format_event", "run", "run_failed"]


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
    parser.add_argument(
        "--failed", action="store_true",
        help="list the events the topic refused for good, from the ledger (not the local topic)",
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
    if getattr(args, "failed", False):
        return run_failed(args, out=stream)
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


def run_failed(
    args: argparse.Namespace, *, clients: Clients | None = None, out: TextIO | None = None
) -> int:
    """``--failed``: the refused events kept on their runs' rows in the ledger."""
    import contextlib

    from cli.commands.upload import check_line
    from cli.storage import cli_clients, fail
    from shared.errors import ConfigError, TuneloopError
    from shared.outbox import failed_events

    stream = out or sys.stdout
    try:
        if args.follow:
            raise ConfigError("--failed lists what the ledger holds; it cannot --follow",
                              hint="drop --follow")
        if args.line is not None:
            check_line(args.line)
        with contextlib.ExitStack() as stack:
            if clients is None:
                clients = stack.enter_context(cli_clients())
            failed = failed_events(clients.ledger, args.line)
    except TuneloopError as exc:
        return fail("events", exc)
    if args.json:
        json.dump([f.to_dict() for f in failed], stream, indent=2)
        stream.write("\n")
        return 0
    for f in failed:
        stream.write(f"{f.at}  {f.type}  lines/{f.line}/runs/{f.run}  {f.id}  "
                     f"{' '.join(f.error.split())}\n")
    if not failed:
        scope = f" on line {args.line}" if args.line else ""
        stream.write(f"no refused events{scope}\n")
    return 0
