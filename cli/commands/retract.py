"""`tuneloop retract --line L DATASET [--reason TEXT] [--json]` — take a drop out of a line.

DATASET is the name it was dropped under (``incoming/<line>/<name>.jsonl``; with or without
``.jsonl``) or its sha256 (or a prefix of 8+ hex digits), as ``tuneloop status --line L``
shows. The retraction is recorded, the drop's stored copies deleted, the models trained on it
tagged ``tuneloop_retracted``, and the line retrained without it through the same gate
(:mod:`shared.retract`). Retracting again finishes what an interrupted retract left undone,
or says there is nothing left to do.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from shared.clients import Clients

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", metavar="DATASET",
        help="the drop's name (as dropped under incoming/<line>/), its sha256 or a prefix of "
        "it (8+ hex digits)",
    )
    parser.add_argument("--line", required=True, help="the line the drop belongs to")
    parser.add_argument("--reason", help="why (recorded with the retraction)")
    parser.add_argument("--json", action="store_true", help="print what was done as JSON")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name here (a container's uid): still a retraction
        return "cli"


def run(
    args: argparse.Namespace, *, clients: Clients | None = None, out: TextIO | None = None
) -> int:
    """Retract and print what was done; one clear line and exit 1 or 2 when it cannot be."""
    from cli.commands.upload import check_line
    from cli.storage import cli_clients, fail
    from shared.errors import ConfigError, TuneloopError
    from shared.retract import Retraction

    stream = out or sys.stdout
    # The Azure ML SDK's pollers print progress dots to stdout: keep ``out`` clean.
    with contextlib.redirect_stdout(sys.stderr), contextlib.ExitStack() as stack:
        try:
            check_line(args.line)  # before touching storage: a typo costs nothing
            if not args.dataset.strip():
                raise ConfigError(
                    "DATASET is empty", hint="give the drop's name or sha256 (tuneloop status)"
                )
            if clients is None:
                clients = stack.enter_context(cli_clients())
            result = Retraction.from_clients(clients).retract(
                args.line, args.dataset, by=_who(), reason=args.reason
            )
            clients.publish_events()  # its lifecycle events (never raises; else the timer's)
        except TuneloopError as exc:
            return fail("retract", exc)
    if args.json:
        json.dump(result.to_dict(), stream, indent=2, default=str)
        stream.write("\n")
    else:
        stream.write("\n".join(result.summary()) + "\n")
    return 0
