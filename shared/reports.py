"""Where a dataset's reports live and the run report (``run.json``) every stage rewrites.

Layout in the reports container, per dataset dropped as ``incoming/<line>/<name>.jsonl``::

    <line>/<name>/validation.json   the validator's report (+ an ``ingest`` section)
    <line>/<name>/validation.md     the same, for people
    <line>/<name>/run.json          the run's state and timeline, rewritten at each step

Ingest stores the prefix on the ledger record (field ``report_prefix``), so later stages
(release, reconciler) call :func:`write_run_report` with just the record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.storage import BlobRef

if TYPE_CHECKING:
    from shared.ledger import RunRecord
    from shared.settings import Settings
    from shared.storage import Storage

__all__ = [
    "RUN_SCHEMA",
    "report_prefix",
    "run_report",
    "run_report_ref",
    "validation_refs",
    "write_run_report",
]

RUN_SCHEMA = "tuneloop.run/v1"

# Ledger bookkeeping that means nothing to a reader of the report.
_PRIVATE_FIELDS = frozenset({"delivery", "etag"})


def report_prefix(line: str, name: str) -> str:
    """The folder of a dataset's reports inside the reports container."""
    return f"{line}/{name}"


def validation_refs(settings: Settings, prefix: str) -> tuple[BlobRef, BlobRef]:
    """``validation.json`` and ``validation.md`` under ``prefix``."""
    container = settings.reports_container
    return (
        BlobRef(container, f"{prefix}/validation.json"),
        BlobRef(container, f"{prefix}/validation.md"),
    )


def run_report_ref(settings: Settings, record: RunRecord) -> BlobRef:
    """Where ``record``'s ``run.json`` lives: its dataset's folder, else ``<line>/runs/<id>``."""
    prefix = record.get("report_prefix")
    if not prefix:
        name = record.get("name")
        prefix = report_prefix(record.line, name) if name else f"{record.line}/runs/{record.run_id}"
    return BlobRef(settings.reports_container, f"{prefix}/run.json")


def run_report(record: RunRecord) -> dict[str, Any]:
    """The ``tuneloop.run/v1`` document for a ledger record: state, reason, fields, timeline."""
    body = {k: v for k, v in record.to_dict().items() if k not in _PRIVATE_FIELDS}
    return {"schema": RUN_SCHEMA, **body}


def write_run_report(storage: Storage, settings: Settings, record: RunRecord) -> BlobRef:
    """(Re)write ``run.json`` for ``record``; idempotent, last writer wins. Returns its ref."""
    ref = run_report_ref(settings, record)
    storage.write_json(ref, run_report(record))
    return ref
