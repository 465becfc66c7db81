"""`tuneloop promote RUN_ID [--line L] [--json]` — promote a HELD run by hand.

A run held by ``TUNELOOP_PROMOTION=manual`` keeps its smoke-tested deployment at 0 % traffic;
this gives it 100 %, deletes the previous deployment and retires the previous live run.
Promoting a PROMOTED run again changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from shared.clients import Clients

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", help="the HELD run (see `tuneloop status`)")
    parser.add_argument("--line", help="the run's line (found from the run id if left out)")
    parser.add_argument("--json", action="store_true", help="print the promoted run as JSON")


def run(
    args: argparse.Namespace, *, clients: Clients | None = None, out: TextIO | None = None
) -> int:
    """Promote and print where the run serves; 1 with one clear line when it cannot be."""
    from cli.storage import cli_clients, fail
    from shared.errors import TuneloopError
    from shared.release import ReleaseContext, promote_held

    stream = out or sys.stdout
    # The Azure ML SDK's pollers print progress dots to stdout: keep ``out`` clean.
    with contextlib.redirect_stdout(sys.stderr), contextlib.ExitStack() as stack:
        try:
            if clients is None:
                clients = stack.enter_context(cli_clients())
            rec = promote_held(ReleaseContext.from_clients(clients), args.run_id, line=args.line)
            clients.publish_events()  # its lifecycle events (never raises; else the timer's)
        except TuneloopError as exc:
            return fail("promote", exc)
    if args.json:
        json.dump(rec.to_dict(), stream, indent=2, default=str)
        stream.write("\n")
    else:
        stream.write(
            f"{rec.run_id} PROMOTED: {rec.release.deployment} takes 100 % of "
            f"{rec.release.endpoint} ({rec.release.scoring_uri or 'no scoring URI'})\n"
        )
    return 0
