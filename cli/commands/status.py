"""`tuneloop status [--line L] [--json]` — each run's state, timeline and reason (ledger).

``--json`` is a contract (issue 11): a list of runs, each the ledger record (``run_id``,
``line``, ``state``, ``reason``, ``timeline``, ...) with two keys always present:

* ``exam``: ``{metric, candidate, champion, examples, decision, ...}`` once the run was
  examined at the gate (the release's exam record), else null;
* ``data``: what the run trains on, ``{drops: [{name, sha256, train_examples, ...}],
  train_examples, eval_examples, start_model, ...}``; a run recorded before lines had a corpus
  shows its own dataset as the one drop; null for a run that never trained (rejected,
  duplicate, or not split yet).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from shared.clients import Clients
    from shared.ledger import RunRecord

__all__ = ["add_arguments", "format_runs", "run", "run_json"]

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


_EXAM_KEYS = ("metric", "candidate", "champion", "examples", "decision")


def _exam(rec: RunRecord) -> dict[str, Any] | None:
    """The run's exam record (``release.exam``), its contract keys always present."""
    exam = getattr(rec.release, "exam", None) or rec.get("exam")
    if isinstance(exam, str):  # a column read back as text
        try:
            exam = json.loads(exam)
        except ValueError:
            return None
    if not isinstance(exam, Mapping) or not exam:
        return None
    return {**{k: exam.get(k) for k in _EXAM_KEYS}, **exam}


def _data(rec: RunRecord) -> dict[str, Any] | None:
    """What the run trains on (see the module), the contract keys always present."""
    from shared.retract import corpus_drops

    raw = rec.get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if not data and not rec.get("split"):
        return None
    drops = [
        {"name": d.get("name"), "sha256": d.get("sha256"),
         "train_examples": d.get("train_examples"), **d}
        for d in corpus_drops(rec)
    ]
    split = rec.get("split") if isinstance(rec.get("split"), Mapping) else {}
    return {
        **data,
        "drops": drops,
        "train_examples": data.get("train_examples", split.get("train_examples")),
        "eval_examples": data.get("eval_examples", split.get("validation_examples")),
        "start_model": data.get("start_model", rec.get("base_model")),
    }


_MAX_NAMES = 10  # drop names the table prints per run (--json prints every drop)


def _summary(rec: RunRecord) -> list[str]:
    """The run's data and exam in a line each (the table's view of the --json contract)."""
    out = []
    data = _data(rec)
    if data is not None and data["drops"]:
        shown = [str(d.get("name") or str(d.get("sha256"))[:12]) for d in data["drops"]]
        if len(shown) > _MAX_NAMES:  # a long-lived line: the first and the newest drops
            shown = [*shown[:3], f"... {len(shown) - 5} more ...", *shown[-2:]]
        names = ", ".join(shown)
        out.append(
            f"data: {names} ({data['train_examples']} train / {data['eval_examples']} eval), "
            f"start {data['start_model'] or 'base'}"
        )
    exam = _exam(rec)
    if exam is not None:
        champion = exam["champion"]
        versus = f" vs champion {champion}" if champion is not None else " (no champion)"
        out.append(
            f"exam: {exam['metric']} {exam['candidate']}{versus} on {exam['examples']} "
            f"examples -> {exam['decision']}"
        )
    return out


def run_json(rec: RunRecord) -> dict[str, Any]:
    """One run as ``status --json`` prints it (the contract in the module docstring)."""
    return {**rec.to_dict(), "exam": _exam(rec), "data": _data(rec)}


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
        out.extend(f"    {text}" for text in _summary(rec))
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
    gone: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            if clients is None:
                clients = stack.enter_context(cli_clients())
            runs = clients.ledger.list(line=args.line)
            from shared.corpus import drops_in_manifest, hydrated

            # a long drop list is in its run's manifest: storage only for those runs
            runs = [hydrated(clients.storage, r) if drops_in_manifest(r) else r for r in runs]
            if args.line and not args.json:
                from shared.corpus import retractions

                gone = retractions(clients.ledger, args.line)
    except TuneloopError as exc:
        return fail("status", exc)
    if args.json:
        json.dump([run_json(r) for r in runs], stream, indent=2, default=str)
        stream.write("\n")
    else:
        stream.write(format_runs(runs) + "\n")
        for entry in gone:  # the line's retracted drops (tuneloop retract)
            why = f": {entry['reason']}" if entry.get("reason") else ""
            stream.write(
                f"retracted: {entry.get('name') or '?'} ({str(entry['sha256'])[:12]}) by "
                f"{entry.get('by') or '?'} at {entry.get('at') or '?'}{why}\n"
            )
    return 0
