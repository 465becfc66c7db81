"""Deliver the ledger's outbox: publish each run's pending lifecycle events, mark what was sent.

The ledger writes a run's event in the same entity write as its state change (shared/ledger.py,
``Outbox``); this module drains it through the :class:`EventPublisher` port (the Event Grid
adapter is shared/eventgrid.py; tests/fakes/events.py a fake), after each step and on the
reconciler timer. Guarantees (docs in /work/notes/events.md):

* at least once, with stable ids: an event leaves the outbox only after the publisher
  accepted it; a crash in between sends it again with the same id;
* nothing blocks the loop: :func:`drain_after` never raises; a transient failure (408, 429,
  5xx, a connection or credential failure) keeps the events pending and backs off
  (:func:`backoff`: 30 s doubling to 1 h, on the run's row);
* a permanent refusal (any other 4xx) moves the refused events to the run's failed list
  (``tuneloop events --failed``); a refused batch is retried event by event first, so one bad
  event does not take its neighbours with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import TransientError, TuneloopError

if TYPE_CHECKING:
    from azure.core.messaging import CloudEvent

    from shared.ledger import Ledger, OutboxRow, RunRecord

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "DrainReport",
    "EventPublisher",
    "FailedEvent",
    "backoff",
    "drain",
    "drain_after",
    "failed_events",
    "is_refusal",
]

log = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)


class EventPublisher(Protocol):
    """Publishes CloudEvents to a topic. Raises TuneloopError (mapped by the one mapper):
    TransientError when a retry can cure it, another error caused by an HTTP 4xx when the
    topic refused the events."""

    def send(self, events: Sequence[CloudEvent[Any]]) -> None: ...


@dataclass(frozen=True)
class DrainReport:
    """What one drain did: runs drained, events sent, refused for good, left pending."""

    runs: int = 0
    sent: int = 0
    failed: int = 0
    pending: int = 0

    def __add__(self, other: DrainReport) -> DrainReport:
        return DrainReport(
            self.runs + other.runs, self.sent + other.sent,
            self.failed + other.failed, self.pending + other.pending,
        )


@dataclass(frozen=True)
class FailedEvent:
    """An event the topic refused for good, as kept on its run's row."""

    line: str
    run: str
    id: str
    type: str
    error: str
    at: str
    event: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line, "run": self.run, "id": self.id, "type": self.type,
            "error": self.error, "at": self.at, "event": self.event,
        }


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th transient failure in a row (1 → 30 s … ≤ 1 h)."""
    wait: timedelta = BACKOFF_BASE * (2 ** min(max(attempts - 1, 0), 10))
    return min(wait, BACKOFF_MAX)


def is_refusal(exc: BaseException) -> bool:
    """A permanent refusal: an HTTP 4xx other than 408/429 (those map to TransientError).
    A failure with no HTTP status (no credential, no connection) is not one: kept pending."""
    if isinstance(exc, TransientError):
        return False
    status = getattr(exc.__cause__, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500


def _due(rec: RunRecord | OutboxRow, now: datetime) -> bool:
    retry_at = rec.outbox.retry_at
    return retry_at is None or datetime.fromisoformat(retry_at) <= now


def _publish(
    publisher: EventPublisher, pending: Sequence[dict[str, Any]]
) -> tuple[list[str], dict[str, str], TuneloopError | None]:
    """Send ``pending``: (ids sent, ids refused → why, the transient error that stopped it)."""
    from shared.lifecycle import from_wire

    try:
        publisher.send([from_wire(e) for e in pending])
        return [str(e["id"]) for e in pending], {}, None
    except TuneloopError as exc:
        if not is_refusal(exc):
            return [], {}, exc
        if len(pending) == 1:
            return [], {str(pending[0]["id"]): str(exc)}, None
    sent: list[str] = []
    refused: dict[str, str] = {}
    for event in pending:  # the batch was refused: find which events
        try:
            publisher.send([from_wire(event)])
            sent.append(str(event["id"]))
        except TuneloopError as exc:
            if not is_refusal(exc):
                return sent, refused, exc
            refused[str(event["id"])] = str(exc)
    return sent, refused, None


def drain_run(
    ledger: Ledger, publisher: EventPublisher, rec: RunRecord | OutboxRow, *, now: datetime
) -> DrainReport:
    """Publish ``rec``'s pending events (one batch) and record the outcome on its row (a
    run's, or a standalone outbox row's: a sweep pass)."""
    pending = list(rec.outbox.pending)
    if not pending:
        return DrainReport()
    sent, refused, error = _publish(publisher, pending)
    retry_at = None
    if error is not None:
        retry_at = now + backoff(rec.outbox.attempts + 1)
        log.warning("events: run %s: %d event(s) kept pending, retry after %s: %s",
                    rec.run_id, len(pending) - len(sent) - len(refused),
                    retry_at.isoformat(), error)
    for event_id, why in refused.items():
        log.error("events: run %s: event %s refused for good: %s", rec.run_id, event_id, why)
    from shared.ledger import OutboxRow

    try:
        if isinstance(rec, OutboxRow):
            ledger.settle_row(rec, sent=sent, failed=refused, retry_at=retry_at)
        else:
            ledger.settle_events(rec, sent=sent, failed=refused, retry_at=retry_at)
    except TuneloopError as exc:  # sent again by the next drain, same ids
        log.warning("events: run %s: outcome not recorded (%s); resent later", rec.run_id, exc)
    return DrainReport(1, len(sent), len(refused), len(pending) - len(sent) - len(refused))


def drain(
    ledger: Ledger,
    publisher: EventPublisher,
    runs: Iterable[RunRecord] | None = None,
    *,
    now: datetime,
    rows: Iterable[OutboxRow] = (),
) -> DrainReport:
    """Drain ``runs`` and standalone ``rows`` (as just written by a step), or every run and
    standalone row with undelivered events (the outbox rows: 2 range reads + 1 read per such
    run). Runs and rows backing off (or held by their writer) are left for later."""
    records: list[RunRecord | OutboxRow] = []
    if runs is None:
        records.extend(ledger.undelivered())
        records.extend(ledger.outbox_rows())
    else:
        records.extend(r for r in runs if r.outbox.pending)
        records.extend(r for r in rows if r.outbox.pending)
    report = DrainReport()
    for rec in records:
        if not _due(rec, now):
            report += DrainReport(pending=len(rec.outbox.pending))
            continue
        report += drain_run(ledger, publisher, rec, now=now)
    return report


def drain_after(
    ledger: Ledger,
    publisher: EventPublisher | None,
    runs: Iterable[RunRecord] | None = None,
    *,
    now: datetime,
    undelivered: bool = False,
) -> DrainReport:
    """:func:`drain` that never raises (what is not sent stays in the outbox for the next
    drain): of ``runs``; by default of the runs this thread wrote with events since the last
    drain (``Ledger.take_written``: the step that just ran, no Table read); with
    ``undelivered`` of every run with undelivered events (the reconciler timer). No
    publisher (no endpoint configured): nothing to do."""
    if publisher is None or not ledger.records_events:
        return DrainReport()
    try:
        if undelivered:
            return drain(ledger, publisher, now=now)
        if runs is None:
            return drain(ledger, publisher, ledger.take_written(), now=now,
                         rows=ledger.take_written_rows())
        return drain(ledger, publisher, list(runs), now=now)
    except Exception:  # the step succeeded; its events wait in the outbox
        log.warning("events: drain after the step failed; the reconciler sends them",
                    exc_info=True)
        return DrainReport()


def failed_events(ledger: Ledger, line: str | None = None) -> list[FailedEvent]:
    """The events the topic refused for good, oldest first: of ``line`` (one partition
    read), or of every line (a scan of the ledger: a command run by hand)."""
    out: list[FailedEvent] = []
    for rec in ledger.list(line=line):
        for entry in rec.outbox.failed:
            event = dict(entry.get("event") or {})
            out.append(FailedEvent(
                line=rec.line, run=rec.run_id, id=str(event.get("id", "")),
                type=str(event.get("type", "")), error=str(entry.get("error", "")),
                at=str(entry.get("at", "")), event=event,
            ))
    out.sort(key=lambda f: (f.at, f.id))
    return out
