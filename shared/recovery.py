"""A run whose job the platform lost (its host died) is trained again as the next attempt.

Nothing was wrong with the data: the local platform's trainer dies with the devhost that
runs it (a crash, ``kill -9``, Ctrl-C). Training it again works exactly like dropping the
data of a FAILED run again (see ``Ingest._attempt``): the lost run moves forward to FAILED,
saying which attempt replaces it, and the deterministic next attempt ``<run>-r<n+1>``
(:func:`shared.finetune.retry_plan`) is created, given a copy of the lost run's prepared
split, and submitted. The ledger only moves forward; every step is idempotent, so a devhost
that dies while retrying finishes the retry on its next start. A later re-drop of the same
data is a duplicate of the new attempt, as usual.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from shared.errors import NotFoundError
from shared.finetune import retry_plan
from shared.ledger import RunRecord, RunState
from shared.reports import write_run_report
from shared.storage import BlobRef

if TYPE_CHECKING:
    from shared.ledger import Ledger
    from shared.platform.port import FinetunePlan, Platform
    from shared.settings import Settings
    from shared.storage import Storage

__all__ = ["attempt_of", "retry_lost_run"]

log = logging.getLogger(__name__)

# The fields of a run that describe its data (the new attempt has the same data).
_DATA_FIELDS = (
    "blob", "name", "etag", "delivery", "report_prefix", "dataset_sha256", "dataset_bytes",
    "examples", "reports", "fingerprint", "base_model",
)
# Before the job reports a result: a lost job leaves its run in one of these.
_UNFINISHED = frozenset({RunState.ACCEPTED, RunState.SUBMITTED, RunState.TRAINING})
_ATTEMPT = re.compile(r"^(?P<base>.+)-r(?P<n>[0-9]+)$")


def attempt_of(run_id: str) -> tuple[str, int]:
    """(the first attempt's run id, this attempt's number): ``x-r3`` -> (``x``, 3).

    Run ids end in a hex fingerprint (``shared.naming.run_id``), so ``-r<n>`` is unambiguous.
    """
    match = _ATTEMPT.match(run_id)
    if match is None:
        return run_id, 1
    return match["base"], int(match["n"])


def retry_lost_run(
    *,
    settings: Settings,
    ledger: Ledger,
    storage: Storage,
    platform: Platform,
    lost: FinetunePlan,
    error: str,
    max_attempts: int,
) -> str:
    """Retry the run of the lost job ``lost`` as its next attempt; what became of it.

    Returns a one-line note for the platform's record: the new attempt's run id, or why
    nothing was retried (not a ledger run, already finished, out of attempts, data gone).
    """
    error = " ".join(error.split())  # one line in the ledger's reason
    try:
        run = ledger.get(lost.line, lost.run_id)
    except NotFoundError:
        return "not retried: no run in the ledger (a job submitted by hand)"
    base_id, attempt = attempt_of(lost.run_id)
    if attempt >= max_attempts:
        _fail(settings, ledger, storage, run,
              f"job lost: {error}; not retried: {attempt} attempts is the most")
        return f"not retried: attempt {attempt} of {max_attempts}"
    if run.state not in _UNFINISHED and not (
        run.state == RunState.FAILED and run.get("job_status") in (None, "Failed")
    ):
        return f"not retried: run {run.run_id} is {run.state.value}"
    nxt = retry_plan(replace(lost, run_id=base_id), attempt + 1)
    split = run.get("split")
    container = lost.data_container
    sources = [BlobRef(container, lost.train_blob), BlobRef(container, lost.validation_blob)]
    if not isinstance(split, dict) or not all(storage.exists(ref) for ref in sources):
        _fail(settings, ledger, storage, run,
              f"job lost: {error}; not retried: its prepared data is gone; drop the data again")
        return "not retried: prepared data gone"
    _fail(settings, ledger, storage, run,
          f"job lost: {error}; retried as {nxt.run_id}", retried_as=nxt.run_id)
    new = _create_attempt(ledger, run, nxt)
    if new.state == RunState.RECEIVED:
        targets = [BlobRef(container, nxt.train_blob), BlobRef(container, nxt.validation_blob)]
        shas = [storage.copy_verified(src, dst) for src, dst in zip(sources, targets, strict=True)]
        new = ledger.advance(
            new, RunState.ACCEPTED, note=f"split copied from {run.run_id}",
            split={**split, "train_blob": str(targets[0]), "validation_blob": str(targets[1]),
                   "train_sha256": shas[0], "validation_sha256": shas[1]},
        )
        write_run_report(storage, settings, new)
    if new.state == RunState.ACCEPTED:
        job = platform.submit_finetune(nxt)
        new = ledger.advance(new, RunState.SUBMITTED, job_name=job.name,
                             studio_url=job.studio_url, note=f"job {job.name} submitted")
        write_run_report(storage, settings, new)
    log.warning("run %s line %s: its job was lost (%s); retried as %s (%s)",
                run.run_id, run.line, error, nxt.run_id, new.state.value)
    return f"retried as {nxt.run_id}"


def _fail(
    settings: Settings, ledger: Ledger, storage: Storage, run: RunRecord, reason: str,
    **fields: Any,
) -> None:
    """The lost run moves forward to FAILED with ``reason`` (or, FAILED already, notes it)."""
    if run.state in _UNFINISHED:
        run = ledger.advance(run, RunState.FAILED, reason=reason, job_status="Failed", **fields)
    elif fields and not all(run.get(k) == v for k, v in fields.items()):
        run = ledger.update(run, note=reason, **fields)
    else:
        return
    write_run_report(storage, settings, run)


def _create_attempt(ledger: Ledger, lost: RunRecord, nxt: FinetunePlan) -> RunRecord:
    """The next attempt's record, created RECEIVED with the lost run's data (or found)."""
    try:
        return ledger.get(lost.line, nxt.run_id)
    except NotFoundError:
        pass
    fields = {k: lost.get(k) for k in _DATA_FIELDS if lost.get(k) is not None}
    fields.update(
        train_blob=f"{nxt.data_container}/{nxt.train_blob}",
        validation_blob=f"{nxt.data_container}/{nxt.validation_blob}",
        retry_of=lost.run_id,
    )
    try:
        return ledger.create(
            lost.line, nxt.run_id, RunState.RECEIVED,
            note=f"retry of {lost.run_id}, whose job was lost with its host", **fields,
        )
    except Exception as exc:  # created meanwhile by another devhost: use theirs
        try:
            return ledger.get(lost.line, nxt.run_id)
        except NotFoundError:
            raise exc from None
