"""The run ledger on Azure Table storage: one entity per run, moved forward only, ETag-guarded.

Layout (every operation touches what it needs, never the history; docs/scale.md):

* runs: ``PartitionKey`` = the line, ``RowKey`` = the run id (= the Azure ML job name), so a
  line's status reads one partition and a run is a point read;
* the **in-flight index**: partition ``_index`` of the **active table** (a second table named
  ``<ledger table>active``, :func:`active_table_name`), one row ``a:<line>:<run>`` per run in
  :data:`IN_FLIGHT` (SUBMITTED … DEPLOYED). The reconciler reads this key range and then each
  run by its key, so a pass costs 1 + (runs in flight) requests whatever the history; the
  active table holds only active work, so even a store that scans a whole table per query
  (Azurite) answers the index query in the time the active work costs;
* the **run directory**: ``_runs-<h>`` (16 partitions by the run id's hash), ``RowKey`` = the
  run id, column ``line``: ``find(run_id)`` is two point reads;
* **claims** (idempotency keys, leases, counters): ``_claims-<h>``, 16 partitions by the key's
  hash, so a burst of drops is spread instead of queued on one partition; a claim inserted
  with ``done=False`` also has an **open-claims** row in ``_open`` (active table) until it is
  done, so the stale-claims sweep reads the open claims, not every claim ever made.

Every write is conditional: ``create`` fails if the row exists, ``advance``/``update`` fail
with :class:`LedgerConflictError` if someone else wrote since we read. Callers re-read and
decide again; that is what makes duplicate and concurrent deliveries safe.

Table storage has entity group transactions only within one partition, so a run and its index
row are two writes, ordered so that a crash between them never hides a run in flight: entering
flight writes the index row first, leaving it writes the run first (open-claims rows likewise:
row before the claim, claim done before the row goes). An index row whose run is
not in flight is removed by the next reader of the index (at once when the run is past flight,
after :data:`INDEX_GRACE` when it is not yet in flight or missing: its writer may be between
the two writes). Tables written before the index existed are indexed once, by a full scan, by
the first reader of the index (the reconciler), which then writes the marker row
``_index/schema`` (in the ledger table); until then ``find``, claims and lists fall back to
the old layout. Tables of schema 2 (index and open claims inside the ledger table) have those
two partitions moved to the active table by the first reader (two partition reads).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias

from azure.core import MatchConditions
from azure.core.pipeline import Pipeline
from azure.data.tables import TableClient, UpdateMode
from azure.data.tables._base_client import TransportWrapper

from shared import telemetry
from shared.errors import (
    AlreadyExistsError,
    InvalidTransitionError,
    LedgerConflictError,
    NotFoundError,
    StorageError,
    TransientError,
    TuneloopError,
    map_azure_errors,
    translate_azure_error,
)

if TYPE_CHECKING:
    from shared.lifecycle import Origin

__all__ = [
    "ACTIVE_SUFFIX",
    "CLAIMS_PARTITION",
    "INDEX_GRACE",
    "INDEX_PARTITION",
    "IN_FLIGHT",
    "IN_RELEASE",
    "OPEN_PARTITION",
    "OUTBOX_PARTITION",
    "RELEASE_COLUMNS",
    "SHARDS",
    "TERMINAL",
    "Claim",
    "InvalidTransitionError",
    "Ledger",
    "LedgerPort",
    "Outbox",
    "ReleaseRecord",
    "RunRecord",
    "RunState",
    "active_table_name",
    "can_move",
    "claim_partition",
    "directory_partition",
]

log = logging.getLogger(__name__)

# The partition every claim lived in before claims were spread (still read until migrated).
CLAIMS_PARTITION = "_claims"
INDEX_PARTITION = "_index"
_SCHEMA_ROW = "schema"  # in INDEX_PARTITION: the table has the index, directory and claim shards
# 2: index, directory and claim shards (index and open claims inside the ledger table);
# 3: index and open claims in the active table. 0: no marker (the first layout).
_SCHEMA_VERSION = 3
# The active table: ``<ledger table>active``. Table names are 3-63 letters and digits, a letter
# first (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model#table-names),
# so the ledger table's name may have at most 57.
ACTIVE_SUFFIX = "active"
# How long an index row whose run is not (yet) in flight is kept: its writer may be between
# the index write and the run write (milliseconds apart; the longest invocation is 10 min).
INDEX_GRACE = timedelta(minutes=10)
# Table storage targets (https://learn.microsoft.com/azure/storage/tables/scalability-targets):
# one partition ~2,000 entities/s, one account 20,000 transactions/s (1 KiB entities); an
# entity group transaction holds at most 100 entities of ONE partition (< 4 MiB). A drop writes
# its claim ~6 times (insert, a heartbeat per step, done); with all claims in one partition a
# burst queued behind ~300 drops/s. 16 hash shards give 16 x 2,000 = 32,000 entities/s, more
# than the account's 20,000: the account, not a partition, is the bound. Same for the directory.
SHARDS = 16
# Open (unfinished) claims: one partition, so the stale-claims sweep is one partition read (a
# range over several partitions may page at each partition boundary). Written twice per drop
# (insert, delete): ~300 entities/s at the ~160 concurrent ingests the Functions app allows
# (4 per instance x 40 instances), well inside the partition's ~2,000/s.
OPEN_PARTITION = "_open"
# The outbox (docs/events.md): a run's undelivered lifecycle events live in its own row (column
# ``outbox``), written in the same entity write as the state change; partition ``_outbox`` of
# the active table has one row ``o:<line>:<run>`` per run with events to deliver, so the
# drain on the reconciler timer reads 1 + (runs with undelivered events), not the history.
# Same ordering as the index: the outbox row before the run, the run (drained) before the row.
OUTBOX_PARTITION = "_outbox"
# Bounds on one run's outbox column (a Table property holds 64 KiB; an event is ~1 KiB): a run
# emits ~10 events in its life, so these bound only an endpoint that refuses for long.
OUTBOX_KEEP = 40
FAILED_KEEP = 10


class RunState(StrEnum):
    RECEIVED = "RECEIVED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    DUPLICATE = "DUPLICATE"
    SUBMITTED = "SUBMITTED"
    TRAINING = "TRAINING"
    TRAINED = "TRAINED"
    REGISTERED = "REGISTERED"
    DEPLOYING = "DEPLOYING"
    DEPLOYED = "DEPLOYED"
    PROMOTED = "PROMOTED"
    HELD = "HELD"
    FAILED = "FAILED"
    RETIRED = "RETIRED"


# The main line of progress; a run only ever moves to a higher rank.
_RANK: dict[RunState, int] = {
    RunState.RECEIVED: 0,
    RunState.ACCEPTED: 1,
    RunState.SUBMITTED: 2,
    RunState.TRAINING: 3,
    RunState.TRAINED: 4,
    RunState.REGISTERED: 5,
    RunState.DEPLOYING: 6,
    RunState.DEPLOYED: 7,
    RunState.PROMOTED: 8,
    RunState.RETIRED: 9,
}

# Runs whose job or release is under way: what the reconciler polls and advances.
IN_FLIGHT = frozenset(
    {
        RunState.SUBMITTED, RunState.TRAINING, RunState.TRAINED,
        RunState.REGISTERED, RunState.DEPLOYING, RunState.DEPLOYED,
    }
)
# States a run may still leave for IN_FLIGHT (an index row for such a run may be young).
_BEFORE_FLIGHT = frozenset({RunState.RECEIVED, RunState.ACCEPTED})

TERMINAL = frozenset(
    {RunState.REJECTED, RunState.DUPLICATE, RunState.FAILED, RunState.RETIRED}
)
# States in which a release is under way on the run's line (the sweeper keeps away).
IN_RELEASE = frozenset(
    {RunState.TRAINED, RunState.REGISTERED, RunState.DEPLOYING, RunState.DEPLOYED}
)


def can_move(current: RunState, target: RunState) -> bool:
    """Whether the ledger allows ``current -> target`` (forward only; terminal stays put)."""
    if current in TERMINAL or current == target:
        return False
    if target in (RunState.REJECTED, RunState.DUPLICATE):
        return current in (RunState.RECEIVED, RunState.ACCEPTED)
    if target == RunState.FAILED:
        return True
    if target == RunState.HELD:
        return _RANK.get(current, -1) >= _RANK[RunState.TRAINED]
    if current == RunState.HELD:
        # A held run can be promoted by hand (manual gate) or retired.
        return target in (RunState.PROMOTED, RunState.RETIRED)
    return _RANK[target] > _RANK[current]


@dataclass(frozen=True)
class ReleaseRecord:
    """What the release records on a run, typed: the job's outcome, the model, endpoint and
    deployment, retries, and the promotion.

    Stored as plain columns of the run's entity under these names (``metrics`` as JSON), as
    before they were typed, so rows written by earlier versions read the same. Reading is
    lenient (:meth:`from_columns`); an unset value (None, False, 0) is not stored.
    """

    # the fine-tune job's outcome
    job_status: str | None = None
    studio_url: str | None = None
    metrics: dict[str, float] | None = None
    eval_loss: float | None = None
    # registration (TRAINED)
    model_name: str | None = None
    model_version: str | None = None
    model_id: str | None = None
    # endpoint and deployment (REGISTERED, DEPLOYING); the states are what the run waits on
    endpoint: str | None = None
    deployment: str | None = None
    endpoint_state: str | None = None
    deployment_state: str | None = None
    scoring_uri: str | None = None
    instance_checked: bool = False
    # retries of the current step (reset when the run moves on)
    failures: int = 0
    last_error: str | None = None
    smoke_attempts: int = 0
    # promotion (DEPLOYED, or a HELD run promoted by hand)
    promoting: bool = False
    gate: str | None = None
    previous_run: str | None = None
    previous_deployment: str | None = None
    promoted_at: datetime | None = None
    held_reason: str | None = None
    # the exam (DEPLOYED, promotion=exam): its outcome as shared.release.exam records it
    # (metric, both scores, decision, digest, calls, report; JSON), and its transient tries
    exam: dict[str, Any] | None = None
    exam_attempts: int = 0

    def to_columns(self) -> dict[str, Any]:
        """The entity columns of the set values (``promoted_at`` as ISO 8601 text)."""
        out: dict[str, Any] = {}
        for f in dataclass_fields(self):
            value = getattr(self, f.name)
            if value is None or value is False or (value == 0 and f.name in _COUNTS):
                continue
            out[f.name] = value.isoformat() if isinstance(value, datetime) else value
        return out

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> ReleaseRecord:
        """Read the release's columns from an entity (other keys are ignored)."""
        return cls().with_columns(columns)

    def with_columns(self, columns: Mapping[str, Any]) -> ReleaseRecord:
        """A copy with the release columns in ``columns`` set (None clears one)."""
        changes = {
            name: _READ_COLUMN[name](value)
            for name, value in columns.items()
            if name in _READ_COLUMN
        }
        return replace(self, **changes) if changes else self


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _numbers(value: Any) -> dict[str, float] | None:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping) or not value:
        return None
    out = {str(k): _number(v) for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not None}


def _document(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return dict(value) if isinstance(value, Mapping) and value else None


def _time(value: Any) -> datetime | None:
    when: datetime | None = value if isinstance(value, datetime) else None
    if when is None and value:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # the release always wrote UTC
    return when


_COUNTS = frozenset({"failures", "smoke_attempts", "exam_attempts"})
_READ_COLUMN: dict[str, Callable[[Any], Any]] = {
    **{f.name: _text for f in dataclass_fields(ReleaseRecord)},
    "metrics": _numbers,
    "eval_loss": _number,
    "instance_checked": _flag,
    "failures": _count,
    "smoke_attempts": _count,
    "promoting": _flag,
    "promoted_at": _time,
    "exam": _document,
    "exam_attempts": _count,
}
RELEASE_COLUMNS = frozenset(_READ_COLUMN)


@dataclass
class Outbox:
    """A run's lifecycle events (shared/lifecycle.py) not yet delivered, the ones the endpoint
    refused for good (``failed``: ``{"event", "error", "at"}``), how many of each kind the run
    emitted (``counts``: the events' attempt numbers) and the back-off of the current failure
    (``attempts``, ``retry_at``). Stored as one JSON column, ``outbox``, of the run's row."""

    pending: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    retry_at: str | None = None

    def to_column(self) -> str | None:
        if not (self.pending or self.failed or self.counts):
            return None
        doc: dict[str, Any] = {"pending": self.pending, "counts": self.counts}
        if self.failed:
            doc["failed"] = self.failed
        if self.attempts or self.retry_at:  # a retry_at alone: a writer's hold (put_events)
            doc["attempts"] = self.attempts
            doc["retry_at"] = self.retry_at
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_column(cls, value: Any) -> Outbox:
        doc = _document(value) or {}
        return cls(
            pending=builtins.list(doc.get("pending") or []),
            failed=builtins.list(doc.get("failed") or []),
            counts={str(k): _count(v) for k, v in (doc.get("counts") or {}).items()},
            attempts=_count(doc.get("attempts")),
            retry_at=_text(doc.get("retry_at")),
        )


@dataclass
class OutboxRow:
    """Events that belong to no run (a sweep pass's ``tuneloop.sweep.decided``): a row of its
    own in the ``_outbox`` partition (RowKey ``s:<key>``) holding them in its ``outbox`` column,
    so the reconciler's range read of that partition finds them with no further read."""

    key: str
    outbox: Outbox = field(default_factory=Outbox)
    etag: str | None = field(default=None, compare=False, repr=False)

    @property
    def run_id(self) -> str:  # what the drain's log lines name
        return self.key


@dataclass
class RunRecord:
    """One run as stored. ``release`` holds what the release records, typed; ``fields``
    everything else but the keys, state and timeline.

    Release columns given in ``fields`` (as ``Ledger.update(run, deployment=...)`` or an old
    row does) are moved into ``release``, so each value lives in one place.
    """

    line: str
    run_id: str
    state: RunState
    fields: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    etag: str | None = None
    release: ReleaseRecord = field(default_factory=ReleaseRecord)
    outbox: Outbox = field(default_factory=Outbox)
    # The ETag of the run's outbox row as this process last wrote or read it (not stored):
    # the drain deletes the row guarded by it, so a row rewritten since stays.
    outbox_etag: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        columns = {k: self.fields.pop(k) for k in list(self.fields) if k in RELEASE_COLUMNS}
        if columns:
            self.release = self.release.with_columns(columns)

    @property
    def reason(self) -> str | None:
        value = self.fields.get("reason")
        return str(value) if value is not None else None

    def get(self, key: str, default: Any = None) -> Any:
        """A stored value by its column name (release columns as stored: ISO text for times)."""
        if key in RELEASE_COLUMNS:
            return self.release.to_columns().get(key, default)
        return self.fields.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "run_id": self.run_id,
            "state": self.state.value,
            **self.fields,
            **self.release.to_columns(),
            "timeline": self.timeline,
        }


@dataclass
class Claim:
    key: str
    fields: dict[str, Any]
    etag: str | None
    partition: str | None = None  # where it is stored (None: its shard)


def _shard(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[0]  # 16 shards (SHARDS)


def claim_partition(key: str) -> str:
    """The partition of the claim ``key``: ``_claims-<first hex digit of sha256(key)>``."""
    return f"_claims-{_shard(key)}"


def directory_partition(run_id: str) -> str:
    """The partition of the run directory row of ``run_id``: ``_runs-<hex digit>``."""
    return f"_runs-{_shard(run_id)}"


def active_table_name(ledger_table: str) -> str:
    """The table that holds the ledger's active rows (in-flight index, open claims)."""
    return f"{ledger_table}{ACTIVE_SUFFIX}"


def _sibling(table: TableClient, name: str) -> TableClient:
    """A client for table ``name`` of the same account, sharing ``table``'s transport and
    policies (credential, retries, hooks): what ``TableServiceClient.get_table_client`` builds
    (azure-data-tables 12.x, _table_service_client.py), from a ``TableClient``."""
    pipeline = Pipeline(
        transport=TransportWrapper(  # type: ignore[no-untyped-call]
            table._client._client._pipeline._transport
        ),
        policies=table._policies,
    )
    return TableClient(
        table.url, table_name=name, credential=table.credential,
        api_version=table.api_version, pipeline=pipeline,
        location_mode=table._location_mode, _hosts=table._hosts,
    )


def _index_key(line: str, run_id: str) -> str:
    return f"a:{line}:{run_id}"  # lines never contain ':' (shared.naming)


_RUN_OUTBOX = "o:"  # a run's outbox row; "s:" a standalone one (OutboxRow)
_STANDALONE = "s:"


def _outbox_key(line: str, run_id: str) -> str:
    return f"o:{line}:{run_id}"


def _examined(old: RunRecord, new: RunRecord) -> builtins.list[str]:
    """``["examined"]`` when ``new`` records an exam outcome ``old`` did not have."""
    exam = new.release.exam
    if exam and exam.get("decision") and exam != old.release.exam:
        return ["examined"]
    return []


def _is_run_partition(pk: str) -> bool:
    return not pk.startswith("_")  # lines start with a letter or digit


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# The role a managed identity needs for the ledger table (Azure built-in roles).
_ROLE = "Storage Table Data Contributor on the storage account"


def _mapped(what: str) -> AbstractContextManager[None]:
    """The one error mapper with the ledger's meanings: 412 is a lost race, 404 a missing row."""
    return map_azure_errors(
        f"ledger: {what}", role=_ROLE, modified=LedgerConflictError, other=StorageError
    )


_RESERVED = {"PartitionKey", "RowKey", "state", "timeline", "Timestamp", "outbox"}


def _to_entity(rec: RunRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": rec.line,
        "RowKey": rec.run_id,
        "state": rec.state.value,
        "timeline": json.dumps(rec.timeline, separators=(",", ":")),
    }
    for key, value in {**rec.fields, **rec.release.to_columns()}.items():
        if key in _RESERVED:
            raise ValueError(f"{key} is reserved in ledger entities")
        if value is None:
            continue
        if isinstance(value, dict | list):
            entity[f"{key}__json"] = json.dumps(value, separators=(",", ":"), sort_keys=True)
        else:
            entity[key] = value
    outbox = rec.outbox.to_column()
    if outbox is not None:
        entity["outbox"] = outbox
    return entity


def _from_entity(entity: Mapping[str, Any]) -> RunRecord:
    fields: dict[str, Any] = {}
    for key, value in entity.items():
        if key in _RESERVED:
            continue
        if key.endswith("__json"):
            fields[key[: -len("__json")]] = json.loads(value)
        else:
            fields[key] = value
    etag = getattr(entity, "metadata", {}).get("etag")
    return RunRecord(
        line=entity["PartitionKey"],
        run_id=entity["RowKey"],
        state=RunState(entity["state"]),
        fields=fields,
        timeline=json.loads(entity.get("timeline") or "[]"),
        etag=etag,
        outbox=Outbox.from_column(entity.get("outbox")),
    )


class Ledger:
    """Run records on an Azure table, with its active rows (in-flight index, open claims) in
    a second table. All methods raise TransientError on storage outages.

    ``active`` is the client of the active table (default: :func:`active_table_name` of
    ``table``'s, on the same account and pipeline). ``clock`` dates index rows (tests inject
    one to age them past :data:`INDEX_GRACE`). ``events``: where lifecycle events come from;
    given, every state change (and exam result) also writes its event to the run's outbox in
    the same entity write (shared/lifecycle.py, shared/outbox.py); None (no events endpoint
    configured): no event is recorded.
    """

    def __init__(
        self,
        table: TableClient,
        *,
        active: TableClient | None = None,
        clock: Callable[[], datetime] | None = None,
        events: Origin | None = None,
    ) -> None:
        self._table = table
        self._events = events
        self._local = threading.local()  # per invocation thread: runs written with events
        self._active = (
            active if active is not None
            else _sibling(table, active_table_name(table.table_name))
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        self._schema = 0  # the schema marker's version, once seen (it only ever goes up)

    def ensure_table(self) -> None:
        """Create the active table and the ledger table where missing (a new ledger table is
        marked with the current schema: it has no history to index)."""
        for table in (self._active, self._table):
            try:
                with _mapped(f"creating table {table.table_name}"):
                    table.create_table()
            except AlreadyExistsError:
                continue
            if table is self._table:
                self._mark_indexed()

    # -- runs ---------------------------------------------------------------------------
    def create(
        self, line: str, run_id: str, state: RunState, *, note: str | None = None, **fields: Any
    ) -> RunRecord:
        """Create a run; raises ``AlreadyExistsError`` if the run exists (callers decide)."""
        now = _now()
        rec = RunRecord(
            line=line, run_id=run_id, state=state, fields={"created": now, "updated": now, **fields}
        )
        rec.timeline.append(_event(state, note))
        self._emit(rec, [state.value.lower()], reason=fields.get("reason") or note, at=now)
        # Directory, index and outbox rows first: a crash before the run leaves a row that
        # points at nothing (harmless, removed later), never a run that cannot be found.
        self._put_directory(line, run_id)
        if state in IN_FLIGHT:
            self._put_index(line, run_id)
        if rec.outbox.pending:
            self._put_outbox(rec)
        with _mapped(f"creating run {run_id} on line {line}"):
            meta = self._table.create_entity(_to_entity(rec))
        rec.etag = meta.get("etag")
        self._remember(rec)
        log.info("ledger create run=%s line=%s state=%s", run_id, line, state.value)
        telemetry.run_entered(rec, previous="")  # the span's state; final states' metrics
        return rec

    def get(self, line: str, run_id: str) -> RunRecord:
        try:
            with _mapped(f"reading run {run_id} on line {line}"):
                return _from_entity(self._table.get_entity(line, run_id))
        except NotFoundError as exc:
            raise NotFoundError(f"run {run_id!r} on line {line!r} is not in the ledger") from exc

    def find(self, run_id: str) -> RunRecord:
        """The run with this id on any line (two point reads). Raises NotFoundError."""
        try:
            with _mapped(f"looking up run {run_id}"):
                entry = self._table.get_entity(directory_partition(run_id), run_id)
        except NotFoundError:
            entry = None
        if entry is not None:
            try:
                return self.get(str(entry["line"]), run_id)
            except NotFoundError:
                pass  # a directory row whose create never happened
        if not self._is_indexed():  # written before the directory existed: scan, as before
            rows = [
                r for r in self._query("RowKey eq @rk", rk=run_id) if _is_run_partition(r.line)
            ]
            if rows:
                return rows[0]
        raise NotFoundError(f"run {run_id!r} is not in the ledger")

    def list(
        self, *, line: str | None = None, states: Iterable[RunState] | None = None
    ) -> builtins.list[RunRecord]:
        """Runs, oldest first by creation time, optionally for one line / some states.

        One line: one partition. Only in-flight states on all lines: the in-flight index
        (1 + runs in flight requests). Anything else reads the whole table."""
        wanted = set(states) if states is not None else None
        if line is not None:
            rows = self._query("PartitionKey eq @pk", pk=line)
        elif wanted is not None and wanted <= IN_FLIGHT:
            rows = self.in_flight()
        else:
            with _mapped("listing runs"):
                rows = [
                    _from_entity(e) for e in self._table.list_entities()
                    if _is_run_partition(str(e["PartitionKey"]))
                ]
        out = [r for r in rows if wanted is None or r.state in wanted]
        out.sort(key=lambda r: (str(r.fields.get("created", "")), r.run_id))
        return out

    def in_flight(self) -> builtins.list[RunRecord]:
        """The runs in :data:`IN_FLIGHT` on every line, read through the index (which this
        builds on first use after an upgrade, and repairs as it reads)."""
        self._build_index()
        with _mapped("reading the in-flight index"):
            entries = builtins.list(self._active.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": INDEX_PARTITION, "lo": "a:", "hi": "a;"},
            ))
        out: builtins.list[RunRecord] = []
        for entry in entries:
            line, _, run_id = str(entry["RowKey"])[2:].partition(":")
            try:
                run: RunRecord | None = self.get(line, run_id)
            except NotFoundError:
                run = None
            if run is not None and run.state in IN_FLIGHT:
                out.append(run)
            elif (run is not None and run.state not in _BEFORE_FLIGHT) or self._aged(entry):
                self._drop_entry(entry)
        out.sort(key=lambda r: (str(r.fields.get("created", "")), r.run_id))
        return out

    def advance(
        self,
        rec: RunRecord,
        state: RunState,
        *,
        note: str | None = None,
        reason: str | None = None,
        release: ReleaseRecord | None = None,
        events: Sequence[str] = (),
        **fields: Any,
    ) -> RunRecord:
        """Move ``rec`` to ``state`` if the ledger allows it, guarded by the record's ETag.

        ``release`` replaces the run's release fields (release columns in ``fields`` are
        applied on top). Raises InvalidTransitionError for a backward move and
        LedgerConflictError when the stored run changed since ``rec`` was read. With events
        on, the same write adds the state's event (after ``examined`` if the exam's outcome
        changed, before the extra kinds in ``events``, e.g. ``swept``) to the outbox.
        """
        if not can_move(rec.state, state):
            raise InvalidTransitionError(
                f"run {rec.run_id} cannot move {rec.state.value} -> {state.value}",
                hint="runs only move forward; re-read the run",
            )
        new = RunRecord(
            line=rec.line,
            run_id=rec.run_id,
            state=state,
            fields={**rec.fields, **fields, "updated": _now()},
            timeline=[*rec.timeline, _event(state, note or reason)],
            etag=rec.etag,
            release=rec.release if release is None else release,
            outbox=rec.outbox,
            outbox_etag=rec.outbox_etag,
        )
        if reason is not None:
            new.fields["reason"] = reason
        kinds = [*_examined(rec, new), state.value.lower(), *events]
        self._emit(new, kinds, reason=reason or note, at=new.timeline[-1]["at"])
        entering = state in IN_FLIGHT and rec.state not in IN_FLIGHT
        leaving = rec.state in IN_FLIGHT and state not in IN_FLIGHT
        if entering:  # index first: a crash after it leaves a row the reader removes
            self._put_index(rec.line, rec.run_id)
        if new.outbox.pending and not rec.outbox.pending:  # outbox row first, likewise
            self._put_outbox(new)
        out = self._replace(new)
        self._remember(out)
        if leaving:  # run first: a crash after it leaves a row the reader removes
            self._drop_index(rec.line, rec.run_id)
        log.info(
            "ledger advance run=%s line=%s %s->%s reason=%s",
            rec.run_id, rec.line, rec.state.value, state.value, reason or "",
        )
        telemetry.run_entered(out, previous=rec.state.value)  # span state; final-state metrics
        return out

    def update(
        self,
        rec: RunRecord,
        *,
        note: str | None = None,
        release: ReleaseRecord | None = None,
        events: Sequence[str] = (),
        **fields: Any,
    ) -> RunRecord:
        """Record fields (and optionally a timeline note) without changing state; ETag-guarded.

        ``release`` replaces the run's release fields, as in :meth:`advance`; a new exam
        outcome in it adds the ``examined`` event to the outbox, then the kinds in
        ``events`` (e.g. ``retracted``), in the same write (events on)."""
        timeline = [*rec.timeline, _event(rec.state, note)] if note else list(rec.timeline)
        new = RunRecord(
            line=rec.line,
            run_id=rec.run_id,
            state=rec.state,
            fields={**rec.fields, **fields, "updated": _now()},
            timeline=timeline,
            etag=rec.etag,
            release=rec.release if release is None else release,
            outbox=rec.outbox,
            outbox_etag=rec.outbox_etag,
        )
        kinds = [*_examined(rec, new), *events]
        self._emit(new, kinds, reason=note, at=timeline[-1]["at"] if note else None)
        if new.outbox.pending and not rec.outbox.pending:
            self._put_outbox(new)
        out = self._replace(new)
        self._remember(out)
        return out

    # -- the outbox (lifecycle events) ----------------------------------------------------
    @property
    def events_origin(self) -> Origin | None:
        """Where the events come from (None: events are off)."""
        return self._events

    @property
    def records_events(self) -> bool:
        """Whether state changes write lifecycle events (an events endpoint is configured)."""
        return self._events is not None

    def _emit(
        self, rec: RunRecord, kinds: Sequence[str], *, reason: str | None, at: str | None
    ) -> None:
        """Append the events of ``kinds`` for ``rec`` (as it will be stored) to its outbox,
        dated ``at`` (the timeline entry of the change; None: now)."""
        if self._events is None or not kinds:
            return
        from shared.lifecycle import build

        when = _time(at)
        box = replace(rec.outbox, pending=[*rec.outbox.pending], counts=dict(rec.outbox.counts))
        for kind in kinds:
            attempt = box.counts.get(kind, 0) + 1
            box.counts[kind] = attempt
            box.pending.append(build(
                self._events, rec, kind, attempt=attempt, time=when or self._clock(),
                reason=reason,
            ))
        if len(box.pending) > OUTBOX_KEEP:
            dropped = box.pending[: len(box.pending) - OUTBOX_KEEP]
            log.warning("ledger: outbox of run %s full; oldest events dropped: %s", rec.run_id,
                        ", ".join(str(e.get("id")) for e in dropped))
            box.pending = box.pending[-OUTBOX_KEEP:]
        rec.outbox = box

    def _remember(self, rec: RunRecord) -> None:
        """Keep the latest record this thread wrote with events pending (for take_written)."""
        if self._events is None:
            return
        written: dict[tuple[str, str], RunRecord] = self._local.__dict__.setdefault("runs", {})
        if rec.outbox.pending:
            written[(rec.line, rec.run_id)] = rec
        else:
            written.pop((rec.line, rec.run_id), None)

    def take_written(self) -> builtins.list[RunRecord]:
        """The runs this thread wrote with events still pending since the last call (the
        step that just ran: what the drain after it sends); no Table request."""
        written: dict[tuple[str, str], RunRecord] = self._local.__dict__.setdefault("runs", {})
        out = builtins.list(written.values())
        written.clear()
        return out

    def _put_outbox(self, rec: RunRecord) -> None:
        entity = {
            "PartitionKey": OUTBOX_PARTITION, "RowKey": _outbox_key(rec.line, rec.run_id),
            "line": rec.line, "run_id": rec.run_id, "since": self._clock().isoformat(),
        }
        with _mapped(f"recording the outbox of run {rec.run_id}"):
            meta = self._active.upsert_entity(entity, mode=UpdateMode.REPLACE)
        rec.outbox_etag = (meta or {}).get("etag")

    def undelivered(self) -> builtins.list[RunRecord]:
        """Runs with events to deliver, on every line, through the outbox rows (1 + such
        runs requests; each returned run carries its row's ETag). Repairs as it reads: a row
        whose run has nothing pending is removed once older than :data:`INDEX_GRACE` (its
        writer may be between the row and the run), guarded by the row's ETag."""
        with _mapped("reading the outbox rows"):
            entries = builtins.list(self._active.query_entities(
                "PartitionKey eq @pk", parameters={"pk": OUTBOX_PARTITION}
            ))
        out: builtins.list[RunRecord] = []
        for entry in entries:
            if not str(entry["RowKey"]).startswith(_RUN_OUTBOX):  # a standalone row (outbox_rows)
                continue
            line, _, run_id = str(entry["RowKey"])[2:].partition(":")
            try:
                run: RunRecord | None = self.get(line, run_id)
            except NotFoundError:
                run = None
            if run is not None and run.outbox.pending:
                run.outbox_etag = getattr(entry, "metadata", {}).get("etag")
                out.append(run)
            elif self._aged(entry):
                self._drop_entry(entry, "outbox row")
        out.sort(key=lambda r: (str(r.fields.get("created", "")), r.run_id))
        return out

    def settle_events(
        self,
        rec: RunRecord,
        *,
        sent: Iterable[str] = (),
        failed: Mapping[str, str] | None = None,
        retry_at: datetime | None = None,
    ) -> RunRecord:
        """Record a drain of ``rec``'s outbox: the ids ``sent`` leave it, the ids in
        ``failed`` (id → why) move to its failed list, ``retry_at`` (a transient failure)
        counts an attempt and delays the next; ETag-guarded, re-read and re-applied when the
        run changed meanwhile. Once nothing is pending the outbox row is deleted, guarded
        by its ETag (a writer that added an event since rewrote it: the row stays)."""
        done, refused = set(sent), dict(failed or {})
        for _ in range(5):
            box = rec.outbox
            now = self._clock().isoformat()
            gone = [
                {"event": e, "error": refused[str(e.get("id"))], "at": now}
                for e in box.pending if str(e.get("id")) in refused
            ]
            pending = [e for e in box.pending if str(e.get("id")) not in done | set(refused)]
            attempts = box.attempts + 1 if retry_at is not None else 0
            new_box = replace(
                box, pending=pending, failed=[*box.failed, *gone][-FAILED_KEEP:],
                attempts=attempts if pending else 0,
                retry_at=retry_at.isoformat() if retry_at is not None and pending else None,
            )
            if new_box == box:
                break
            candidate = replace(rec, outbox=new_box)
            try:
                rec = self._replace(candidate)
                break
            except LedgerConflictError:
                etag = rec.outbox_etag
                rec = self.get(rec.line, rec.run_id)
                rec.outbox_etag = etag
        else:
            raise LedgerConflictError(
                f"run {rec.run_id} kept changing while its events were settled",
                hint="the next drain sends what is left",
            )
        if not rec.outbox.pending and rec.outbox_etag is not None:
            entry = {
                "PartitionKey": OUTBOX_PARTITION, "RowKey": _outbox_key(rec.line, rec.run_id),
            }
            try:
                with _mapped(f"closing the outbox of run {rec.run_id}"):
                    self._active.delete_entity(
                        OUTBOX_PARTITION, entry["RowKey"], etag=rec.outbox_etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                rec.outbox_etag = None
            except TuneloopError as exc:
                log.info("ledger: outbox row of run %s kept (%s)", rec.run_id, exc)
        self._remember(rec)
        return rec

    # -- standalone outbox rows (events of no run: a sweep pass) -----------------------------
    def put_events(
        self, key: str, events: Sequence[dict[str, Any]], *, hold_until: datetime | None = None
    ) -> OutboxRow | None:
        """Record ``events`` (wire form) durably in the row ``s:<key>`` of ``_outbox``,
        replacing what it held (the same ids again: a later, fuller version of them); None
        when events are off (nothing recorded). ``hold_until``: drains leave the row until
        then (its writer will rewrite it; a crash leaves it to the reconciler after that)."""
        if self._events is None:
            return None
        row = OutboxRow(key, Outbox(
            pending=[dict(e) for e in events],
            retry_at=hold_until.isoformat() if hold_until is not None else None,
        ))
        entity = {
            "PartitionKey": OUTBOX_PARTITION, "RowKey": _STANDALONE + key,
            "since": self._clock().isoformat(), **_row_columns(row.outbox),
        }
        with _mapped(f"recording the events of {key}"):
            meta = self._active.upsert_entity(entity, mode=UpdateMode.REPLACE)
        row.etag = (meta or {}).get("etag")
        rows: dict[str, OutboxRow] = self._local.__dict__.setdefault("rows", {})
        rows[key] = row
        return row

    def take_written_rows(self) -> builtins.list[OutboxRow]:
        """The standalone rows this thread wrote since the last call (no Table request)."""
        rows: dict[str, OutboxRow] = self._local.__dict__.setdefault("rows", {})
        out = builtins.list(rows.values())
        rows.clear()
        return out

    def outbox_rows(self) -> builtins.list[OutboxRow]:
        """Every standalone outbox row with events to deliver (one range read of the ``s:``
        keys of ``_outbox``; a row with nothing pending is removed, ETag-guarded), oldest key
        first."""
        with _mapped("reading the outbox rows"):
            entries = builtins.list(self._active.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": OUTBOX_PARTITION, "lo": _STANDALONE, "hi": "s;"},
            ))
        out: builtins.list[OutboxRow] = []
        for entry in entries:
            key = str(entry["RowKey"])
            if not key.startswith(_STANDALONE):
                continue
            chunks = [str(entry.get(f"outbox{i}") or "") for i in range(_ROW_CHUNKS)]
            row = OutboxRow(key[len(_STANDALONE):], Outbox.from_column("".join(chunks)),
                            getattr(entry, "metadata", {}).get("etag"))
            if row.outbox.pending:
                out.append(row)
            else:
                self._drop_entry(entry, "outbox row")
        out.sort(key=lambda r: r.key)
        return out

    def settle_row(
        self,
        row: OutboxRow,
        *,
        sent: Iterable[str] = (),
        failed: Mapping[str, str] | None = None,
        retry_at: datetime | None = None,
    ) -> OutboxRow:
        """:meth:`settle_events` for a standalone row: sent and refused ids leave it (refused
        ones are logged by the drain; a row of no run is not kept for ``--failed``); when
        nothing is left the row is deleted, else rewritten with the back-off. Both guarded by
        the row's ETag: a row its writer rewrote meanwhile stays, and its events go again."""
        gone = set(sent) | set(failed or {})
        pending = [e for e in row.outbox.pending if str(e.get("id")) not in gone]
        attempts = row.outbox.attempts + 1 if retry_at is not None and pending else 0
        new = OutboxRow(row.key, replace(
            row.outbox, pending=pending, attempts=attempts,
            retry_at=retry_at.isoformat() if retry_at is not None and pending else None,
        ), row.etag)
        rowkey = _STANDALONE + row.key
        try:
            if not pending:
                with _mapped(f"closing the events of {row.key}"):
                    self._active.delete_entity(
                        OUTBOX_PARTITION, rowkey, etag=row.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                new.etag = None
            else:
                entity = {
                    "PartitionKey": OUTBOX_PARTITION, "RowKey": rowkey,
                    "since": self._clock().isoformat(), **_row_columns(new.outbox),
                }
                with _mapped(f"updating the events of {row.key}"):
                    meta = self._active.update_entity(
                        entity, mode=UpdateMode.REPLACE, etag=row.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                new.etag = (meta or {}).get("etag")
        except TuneloopError as exc:
            log.info("ledger: outbox row %s kept (%s)", row.key, exc)
        return new

    # -- claims -------------------------------------------------------------------------
    def claim(self, key: str, **fields: Any) -> Claim | None:
        """Insert the claim ``key``; returns None if it exists already (someone has it)."""
        if not self._is_indexed() and self._legacy_claim(key) is not None:
            return None
        partition = claim_partition(key)
        entity = {"PartitionKey": partition, "RowKey": key, "claimed": _now(), **fields}
        if fields.get("done") is False:  # open-claims row first (see list_claims)
            self._put_open(key)
        try:
            with _mapped(f"claiming {key}"):
                meta = self._table.create_entity(entity)
        except AlreadyExistsError:
            return None
        fields = dict(fields) | {"claimed": entity["claimed"]}
        return Claim(key=key, fields=fields, etag=meta.get("etag"), partition=partition)

    def get_claim(self, key: str) -> Claim:
        try:
            with _mapped(f"reading claim {key}"):
                entity = self._table.get_entity(claim_partition(key), key)
        except NotFoundError as exc:
            legacy = None if self._is_indexed() else self._legacy_claim(key)
            if legacy is None:
                raise NotFoundError(f"claim {key!r} not found") from exc
            return legacy
        return _claim(entity)

    def update_claim(self, claim: Claim, **fields: Any) -> Claim:
        """Replace the claim's fields, guarded by its ETag (LedgerConflictError if stale)."""
        merged = {**claim.fields, **fields}
        partition = claim.partition or claim_partition(claim.key)
        entity = {"PartitionKey": partition, "RowKey": claim.key, **merged}
        meta = self._conditional_update(entity, claim.etag, what=f"claim {claim.key}")
        if claim.fields.get("done") is False and merged.get("done"):  # claim first, then row
            self._drop_open(claim.key)
        return Claim(key=claim.key, fields=merged, etag=meta.get("etag"), partition=partition)

    def list_claims(self, **equals: str | bool) -> Sequence[Claim]:
        """Claims whose fields equal ``equals`` (e.g. ``kind="ingest", done=False``), for
        sweeps that resume work whose handler died.

        ``done=False``: through the open-claims rows (1 + open claims requests, whatever the
        history); otherwise one query over the claim shards (grows with the claims)."""
        if equals.get("done") is False and self._is_indexed():
            self._build_index()  # schema 2: moves the open-claims rows to the active table
            return self._open_claims(equals)
        conditions = "".join(f" and {k} eq @{k}" for k in equals)
        queries = [(
            "PartitionKey ge @lo and PartitionKey lt @hi" + conditions,
            {"lo": "_claims-", "hi": "_claims."},
        )]
        if not self._is_indexed():
            queries.append(("PartitionKey eq @pk" + conditions, {"pk": CLAIMS_PARTITION}))
        found: dict[str, Claim] = {}
        with _mapped("listing claims"):
            for query, params in queries:
                for e in self._table.query_entities(query, parameters={**params, **equals}):
                    found.setdefault(str(e["RowKey"]), _claim(e))
        return builtins.list(found.values())

    def _open_claims(self, equals: Mapping[str, str | bool]) -> builtins.list[Claim]:
        with _mapped("reading the open claims"):
            rows = builtins.list(self._active.query_entities(
                "PartitionKey eq @pk", parameters={"pk": OPEN_PARTITION}
            ))
        out = []
        for row in rows:
            key = str(row["RowKey"])
            try:
                claim: Claim | None = self.get_claim(key)
            except NotFoundError:
                claim = None
            if claim is not None and claim.fields.get("done") is False:
                if all(claim.fields.get(k) == v for k, v in equals.items()):
                    out.append(claim)
            elif claim is not None or self._aged(row):  # finished, or never inserted
                self._drop_entry(row, "open claim")
        out.sort(key=lambda c: c.key)
        return out

    def _put_open(self, key: str) -> None:
        entity = {
            "PartitionKey": OPEN_PARTITION, "RowKey": key,
            "since": self._clock().isoformat(),
        }
        with _mapped(f"recording open claim {key}"):
            self._active.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def _drop_open(self, key: str) -> None:
        try:
            with _mapped(f"closing open claim {key}"):
                self._active.delete_entity(OPEN_PARTITION, key)
        except TuneloopError as exc:
            log.warning("ledger: open-claim row %s left behind (%s); repaired later", key, exc)

    # -- the index, the directory and the upgrade ---------------------------------------
    def _put_index(self, line: str, run_id: str) -> None:
        entity = {
            "PartitionKey": INDEX_PARTITION, "RowKey": _index_key(line, run_id),
            "line": line, "run_id": run_id, "since": self._clock().isoformat(),
        }
        with _mapped(f"indexing run {run_id}"):
            self._active.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def _drop_index(self, line: str, run_id: str) -> None:
        """Best effort: the run already moved on; a row left behind is removed by the reader."""
        try:
            with _mapped(f"unindexing run {run_id}"):
                self._active.delete_entity(INDEX_PARTITION, _index_key(line, run_id))
        except TuneloopError as exc:
            log.warning("ledger: index row of run %s left behind (%s); repaired later", run_id, exc)

    def _drop_entry(self, entry: Mapping[str, Any], what: str = "index row") -> None:
        """Remove a stale index / open-claim row unless it was rewritten since read (ETag)."""
        etag = getattr(entry, "metadata", {}).get("etag")
        try:
            with _mapped(f"repairing {what} {entry['RowKey']}"):
                self._active.delete_entity(
                    str(entry["PartitionKey"]), str(entry["RowKey"]),
                    etag=etag, match_condition=MatchConditions.IfNotModified,
                )
            log.info("ledger: stale %s %s removed", what, entry["RowKey"])
        except TuneloopError as exc:
            log.info("ledger: %s %s kept (%s)", what, entry["RowKey"], exc)

    def _aged(self, entry: Mapping[str, Any]) -> bool:
        since = _time(entry.get("since"))
        return since is None or self._clock() - since > INDEX_GRACE

    def _put_directory(self, line: str, run_id: str) -> None:
        entity = {"PartitionKey": directory_partition(run_id), "RowKey": run_id, "line": line}
        with _mapped(f"recording run {run_id} in the directory"):
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def _legacy_claim(self, key: str) -> Claim | None:
        try:
            with _mapped(f"reading claim {key}"):
                return _claim(self._table.get_entity(CLAIMS_PARTITION, key))
        except NotFoundError:
            return None

    def _schema_version(self) -> int:
        """The schema marker's version (0: none), read until it says 2 or later (a reader that
        saw 2 moves the active rows once more at worst: idempotent, two empty queries)."""
        if self._schema < 2:
            try:
                with _mapped("reading the ledger schema"):
                    marker = self._table.get_entity(INDEX_PARTITION, _SCHEMA_ROW)
                self._schema = max(self._schema, _count(marker.get("version")))
            except NotFoundError:
                pass
        return self._schema

    def _is_indexed(self) -> bool:
        """The directory and the claim shards exist (schema 2 or later)."""
        return self._schema_version() >= 2

    def _mark_indexed(self) -> None:
        entity = {
            "PartitionKey": INDEX_PARTITION, "RowKey": _SCHEMA_ROW, "version": _SCHEMA_VERSION,
        }
        with _mapped("recording the ledger schema"):
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        self._schema = _SCHEMA_VERSION

    def _build_index(self) -> None:
        """Bring the table to the current schema, once: schema 2 moves its ``_index`` and
        ``_open`` partitions to the active table; an older table is indexed by one full scan."""
        version = self._schema_version()
        if version >= _SCHEMA_VERSION:
            return
        if version == 2:
            self._move_active_rows()
            return
        log.warning("ledger: indexing table %s (one full scan after an upgrade)",
                    self._table.table_name)
        now = self._clock().isoformat()
        batches: dict[str, builtins.list[tuple[str, dict[str, Any]]]] = {}
        active: dict[str, builtins.list[tuple[str, dict[str, Any]]]] = {}
        with _mapped("indexing the ledger"):
            for e in self._table.list_entities():
                pk, rk = str(e["PartitionKey"]), str(e["RowKey"])
                if pk == CLAIMS_PARTITION:
                    copy = {k: v for k, v in e.items() if k not in ("PartitionKey", "RowKey")}
                    row = {"PartitionKey": claim_partition(rk), "RowKey": rk, **copy}
                    batches.setdefault(row["PartitionKey"], []).append(("create", row))
                    if e.get("done") is False:
                        row = {"PartitionKey": OPEN_PARTITION, "RowKey": rk, "since": now}
                        active.setdefault(OPEN_PARTITION, []).append(("upsert", row))
                    continue
                if not _is_run_partition(pk):
                    continue
                row = {"PartitionKey": directory_partition(rk), "RowKey": rk, "line": pk}
                batches.setdefault(row["PartitionKey"], []).append(("upsert", row))
                if e.get("state") in IN_FLIGHT:
                    row = {
                        "PartitionKey": INDEX_PARTITION, "RowKey": _index_key(pk, rk),
                        "line": pk, "run_id": rk, "since": now,
                    }
                    active.setdefault(INDEX_PARTITION, []).append(("upsert", row))
            self._submit_all(self._active, active)  # active rows first, as in every write
            self._submit_all(self._table, batches)
        self._mark_indexed()

    def _move_active_rows(self) -> None:
        """Schema 2 to 3: copy the ``_index`` and ``_open`` rows of the ledger table to the
        active table, mark the schema, then delete the old rows (best effort: a row left
        behind is never read again). Two partition reads: bounded by the active work."""
        log.warning("ledger: moving the in-flight index and open claims of %s to %s",
                    self._table.table_name, self._active.table_name)
        old: dict[str, builtins.list[tuple[str, dict[str, Any]]]] = {}
        with _mapped("moving the active rows"):
            for pk in (INDEX_PARTITION, OPEN_PARTITION):
                for e in self._table.query_entities("PartitionKey eq @pk", parameters={"pk": pk}):
                    if str(e["RowKey"]) != _SCHEMA_ROW:
                        old.setdefault(pk, []).append(("upsert", dict(e)))
            self._submit_all(self._active, old)
        self._mark_indexed()
        for ops in old.values():
            for _, row in ops:
                try:
                    with _mapped("removing a moved row"):
                        self._table.delete_entity(str(row["PartitionKey"]), str(row["RowKey"]))
                except TuneloopError as exc:
                    log.info("ledger: moved row %s left behind (%s)", row["RowKey"], exc)

    def _submit_all(
        self, table: TableClient, batches: Mapping[str, builtins.list[tuple[str, dict[str, Any]]]]
    ) -> None:
        for ops in batches.values():
            for i in range(0, len(ops), 100):  # an entity group transaction: <= 100
                self._submit(table, ops[i : i + 100])

    def _submit(self, table: TableClient, ops: builtins.list[tuple[str, dict[str, Any]]]) -> None:
        try:
            table.submit_transaction(ops)
            return
        except Exception as exc:  # a claim copied already fails the whole batch
            if isinstance(translate_azure_error(exc, "indexing"), TransientError):
                raise
        for op, row in ops:  # one by one, skipping what exists
            try:
                if op == "create":
                    table.create_entity(row)
                else:
                    table.upsert_entity(row, mode=UpdateMode.REPLACE)
            except Exception as exc:
                if not isinstance(translate_azure_error(exc, "indexing"), AlreadyExistsError):
                    raise

    # -- internals ----------------------------------------------------------------------
    def _replace(self, rec: RunRecord) -> RunRecord:
        meta = self._conditional_update(_to_entity(rec), rec.etag, what=f"run {rec.run_id}")
        rec.etag = meta.get("etag")
        return rec

    def _conditional_update(
        self, entity: dict[str, Any], etag: str | None, *, what: str
    ) -> Mapping[str, Any]:
        try:
            with _mapped(f"updating {what}"):
                return self._table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (LedgerConflictError, NotFoundError) as exc:
            # A replace guarded by an ETag on a row that is gone is a lost race as well.
            raise LedgerConflictError(
                f"{what} changed since it was read", hint="re-read and decide again"
            ) from exc

    def _query(self, query: str, **params: str) -> builtins.list[RunRecord]:
        with _mapped("querying runs"):
            entities = self._table.query_entities(query, parameters=params)
            return [_from_entity(e) for e in entities]


# A standalone row's outbox JSON is split over columns of 30,000 characters (a Table string
# property holds 64 KiB of UTF-16: 32K characters,
# https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model#property-types);
# 4 of them hold a 60 KiB sweep event (shared.lifecycle.SWEEP_EVENT_BUDGET: 61,440 characters
# of ASCII JSON, non-ASCII text counted as its \uXXXX escapes) with room to spare.
_ROW_CHUNK = 30_000
_ROW_CHUNKS = 4


def _row_columns(box: Outbox) -> dict[str, str]:
    text = box.to_column() or ""
    if len(text) > _ROW_CHUNK * _ROW_CHUNKS:
        raise ValueError(f"outbox row of {len(text)} characters exceeds {_ROW_CHUNK * _ROW_CHUNKS}")
    return {
        f"outbox{i}": text[i * _ROW_CHUNK:(i + 1) * _ROW_CHUNK]
        for i in range(_ROW_CHUNKS) if text[i * _ROW_CHUNK:(i + 1) * _ROW_CHUNK]
    }


def _claim(entity: Mapping[str, Any]) -> Claim:
    return Claim(
        key=str(entity["RowKey"]),
        fields={k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")},
        etag=getattr(entity, "metadata", {}).get("etag"),
        partition=str(entity["PartitionKey"]),
    )


def _event(state: RunState, note: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"at": _now(), "state": state.value}
    if note:
        event["note"] = note
    return event


# What the ingest and the release type against. The port of the ledger is the table: the
# ``TableClient`` surface ``Ledger`` uses, which tests/fakes/ledger.py's ``InMemoryTable``
# answers like Table storage; ``FakeLedger`` is this class over it and both run
# tests/contract/test_ledger_contract.py. (A Protocol here repeated every signature below.)
#
# Runs: ``create`` raises AlreadyExistsError for an existing run, ``get``/``find`` raise
# NotFoundError; ``advance`` moves forward only (InvalidTransitionError) and, like ``update``,
# is guarded by the record's ETag (LedgerConflictError when the stored run changed). Claims:
# ``claim`` inserts or returns None when taken; ``update_claim`` is ETag-guarded. Storage
# outages raise TransientError.
LedgerPort: TypeAlias = Ledger
