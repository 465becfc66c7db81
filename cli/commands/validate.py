"""`tuneloop validate PATH`: validate a local JSONL chat dataset and print its report.

Exit status: 0 valid, 1 invalid, 2 the file (or the configuration) cannot be used.
Needs no storage: only the validation settings are read.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the .jsonl dataset to validate")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead")
    parser.add_argument("--max-seq-length", type=_positive, metavar="N",
                        help="token limit per example (default: TUNELOOP_MAX_SEQ_LENGTH)")
    parser.add_argument("--max-line-bytes", type=_positive, metavar="N",
                        help="byte limit per line (default: TUNELOOP_MAX_LINE_BYTES)")
    parser.add_argument("--min-examples", type=_positive, metavar="N",
                        help="fewest distinct examples (default: TUNELOOP_MIN_EXAMPLES)")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="local Hugging Face tokenizer for exact token counts")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    from shared.dataset import ValidationConfig, validate_path
    from shared.settings import load_settings

    # An invalid setting or an unreadable file raises; cli.main prints the one line and exits 2.
    config = ValidationConfig.from_settings(load_settings())
    overrides = {
        "max_seq_length": args.max_seq_length,
        "max_line_bytes": args.max_line_bytes,
        "min_examples": args.min_examples,
        "tokenizer_path": args.tokenizer,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    report = validate_path(args.path, config=config)
    sys.stdout.write(report.to_json() + "\n" if args.json else report.to_markdown())
    return 0 if report.valid else 1
