"""`tuneloop doctor [--json]` — check the configured environment before dropping data.

Runs every check of the configured platform (:mod:`shared.doctor`) and prints one row per
finding: ``✓`` ok, ``!`` warning, ``✗`` failure, what was found and the fix. Exit 0 when no
check failed (warnings allowed), 1 when any failed; a configuration error that stops the
doctor itself (an invalid ``TUNELOOP_*`` setting) is exit 2 like every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from cli.main import EXIT_FAILED

if TYPE_CHECKING:
    from shared.doctor import Report

__all__ = ["MARKS", "add_arguments", "format_report", "run"]

MARKS = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def format_report(report: Report) -> str:
    """One row per check (mark, name, what), the fix indented below; a summary line."""
    from shared.doctor import Outcome

    width = max((len(c.name) for c in report.checks), default=0)
    out = []
    for check in report.checks:
        out.append(f"{MARKS[check.outcome.value]} {check.name.ljust(width)}  {check.what}")
        if check.fix and check.outcome != Outcome.OK:
            out.append(f"  {' ' * width}  fix: {check.fix}")
    failed, warned = report.count(Outcome.FAIL), report.count(Outcome.WARN)
    verdict = "ready" if report.passed else "not ready"
    skipped = f", {report.count(Outcome.SKIP)} not checked" if report.count(Outcome.SKIP) else ""
    out.append(f"{report.platform}: {verdict}: {report.count(Outcome.OK)} ok, "
               f"{warned} warning(s), {failed} failed{skipped}")
    return "\n".join(out)


def run(
    args: argparse.Namespace, *, out: TextIO | None = None, **ports: Any
) -> int:
    """``ports`` (credential, transport, environ, now) are for tests; the CLI passes none."""
    from shared.doctor import run_checks
    from shared.settings import load_settings

    settings = load_settings()
    stream = out or sys.stdout
    if settings.platform_kind == "azureml" and "credential" not in ports:
        from shared.clients import Clients

        # The composition root's credential: the identity (AZURE_CLIENT_ID) the app uses.
        with Clients(settings) as clients:
            report = run_checks(settings, credential=clients.credential, **ports)
    else:
        report = run_checks(settings, **ports)
    if args.json:
        json.dump(report.to_dict(), stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    else:
        print(format_report(report), file=stream)
    return 0 if report.passed else EXIT_FAILED
