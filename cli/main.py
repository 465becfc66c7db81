"""The ``tuneloop`` command (also ``python -m cli``).

Each subcommand lives in ``cli/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; modules import heavy libraries inside ``run`` only.

Errors are reported here, once, for every command: a :class:`~shared.errors.TuneloopError`
(an invalid ``TUNELOOP_*`` setting included) becomes one line per problem on stderr,
``tuneloop <command>: <code>: <what> (<what to do>)``, and the exit code of its type
(:data:`EXIT_CODES`); anything else is a bug, shown as one such line (code
``internal_error``), with the traceback under ``-v``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from shared.errors import (
    ConfigError,
    DatasetUnreadableError,
    PermissionDeniedError,
    PlanError,
    TuneloopError,
    UnreachableError,
)

__all__ = [
    "COMMANDS",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "build_parser",
    "exit_code",
    "main",
    "report_error",
]

EXIT_FAILED = 1  # the data, the run or the platform failed (also: a bug, see main)
EXIT_USAGE = 2  # configuration or usage: fix a setting, a flag, a spec or a path and run again
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (`| head`), as shells report SIGPIPE

# Error type -> exit code, for every command; the first match in this order wins (subclasses
# before bases). 2: the user fixes what they set or gave; 1: the operation itself failed.
EXIT_CODES: tuple[tuple[type[TuneloopError], int], ...] = (
    (ConfigError, EXIT_USAGE),  # a setting or file is missing or invalid
    (PlanError, EXIT_USAGE),  # flags, overrides, specs or compute do not make a valid plan
    (DatasetUnreadableError, EXIT_USAGE),  # the path given is missing or not a file
    (UnreachableError, EXIT_USAGE),  # no connection at all: storage or service not running/set
    (PermissionDeniedError, EXIT_USAGE),  # 401/403: a role to grant
    (TuneloopError, EXIT_FAILED),  # the platform, the ledger, a release step, transient faults
)

# name -> one-line help; the module is cli.commands.<name>
COMMANDS: dict[str, str] = {
    "validate": "validate a JSONL chat dataset and print its report",
    "plan": "plan a fine-tune job offline and print it as it would be submitted",
    "submit": "plan and submit a fine-tune job",
    "status": "show each run's state, timeline and reason",
    "promote": "promote a HELD run: its deployment takes all of the line's endpoint traffic",
    "retract": "take a dataset drop out of a line: delete its copies, tag its models, retrain",
    "sweep": "decide (and by default delete) idle endpoints",
    "up": "run the app locally (Azurite, local platform, triggers) until Ctrl-C",
    "demo": "three drops on the embedded local platform: one promoted, one held by the exam, "
            "one promoted on drops 1 + 3 (--quick: one drop)",
    "upload": "drop a dataset into incoming/<line>/ (starts the loop)",
    "doctor": "check the configured environment (Azure or the local home) before dropping data",
    "trace": "print a run's spans (the local telemetry file) as a timeline",
    "events": "print the lifecycle events (CloudEvents) the local topic received",
}


_VERBOSE_HELP = "log at DEBUG level; show the traceback of an unexpected error"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneloop", description="Continuous fine-tuning of chat models on Azure ML."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"cli.commands.{name}")
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        # -v after the command too; SUPPRESS keeps a -v given before it.
        cmd.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def exit_code(exc: TuneloopError) -> int:
    """The stable exit code of an error's type (:data:`EXIT_CODES`)."""
    return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


def report_error(exc: TuneloopError, command: str, *, stream: TextIO | None = None) -> int:
    """One line per problem, ``tuneloop <command>: <code>: <problem>``; the hint on the same
    line when there is one problem, else on a last ``hint:`` line. Returns the exit code."""
    out = stream or sys.stderr
    problems = exc.problems if isinstance(exc, PlanError) else [exc.message]
    if exc.hint and len(problems) == 1:
        problems = [f"{problems[0]} ({exc.hint})"]
    for problem in problems:
        print(f"tuneloop {command}: {exc.code}: {_one_line(problem)}", file=out)
    if exc.hint and len(problems) > 1:
        print(f"tuneloop {command}: hint: {_one_line(exc.hint)}", file=out)
    return exit_code(exc)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `tuneloop`: the commands, as a usage error
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(args)
    except TuneloopError as exc:
        return report_error(exc, args.command)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tuneloop plan ... | head`: not an error worth a line
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(
            f"tuneloop {args.command}: internal_error: unexpected {type(exc).__name__}: "
            f"{_one_line(str(exc))} (run `tuneloop -v {args.command} ...` for the traceback; "
            "please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor
        pass


def _run(args: argparse.Namespace) -> int:
    from shared.settings import load_settings

    # Read once, before any command: an invalid TUNELOOP_* stops every command alike
    # (load_settings raises it as one ConfigError; the commands reuse the cached settings).
    load_settings()
    code: int = args._module.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
