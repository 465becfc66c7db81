"""`tuneloop demo` — not built yet (see the open issue that owns it)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    print("tuneloop demo is not available yet", file=sys.stderr)
    return 2
