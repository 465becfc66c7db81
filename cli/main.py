"""The ``tuneloop`` command (also ``python -m cli``).

Each subcommand lives in ``cli/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; modules import heavy libraries inside ``run`` only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

# name -> one-line help; the module is cli.commands.<name>
COMMANDS: dict[str, str] = {
    "validate": "validate a JSONL chat dataset and print its report",
    "plan": "plan a fine-tune job offline and print it as it would be submitted",
    "submit": "plan and submit a fine-tune job",
    "status": "show each run's state, timeline and reason",
    "promote": "promote a HELD run: its deployment takes 100 % of the line's endpoint",
    "sweep": "decide (and by default delete) idle endpoints",
    "up": "run the app locally (Azurite, local platform, triggers) until Ctrl-C",
    "demo": "run the whole loop once on the embedded local platform",
    "upload": "drop a dataset into incoming/<line>/ (starts the loop)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneloop", description="Continuous fine-tuning of chat models on Azure ML."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"cli.commands.{name}")
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    code: int = args._module.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
