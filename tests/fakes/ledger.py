"""An in-memory ledger: the real :class:`shared.ledger.Ledger` over an in-memory table.

Only the storage is faked (cosmicpython's ``FakeRepository`` fakes the repository's store):
``InMemoryTable`` keeps entities in a dict and answers like Azure Table storage — inserts
fail with 409 when the row exists, a replace with an ETag that is not the stored one fails
with 412, reads of a missing row with 404 — by raising the same azure-core exceptions the
SDK raises, so the ledger's record logic and the one error mapper run unchanged. The ledger
contract suite (tests/contract/test_ledger_contract.py) runs against it and against the
ledger on Azurite.

Also ``upsert_entity``, ``delete_entity`` (ETag-guarded when asked), ``list_entities`` and
``submit_transaction`` (one partition, at most 100 entities, all or nothing), for the
in-flight index, the run directory and the claim shards. ``FakeLedger`` has two tables, as
the ledger does: ``table`` and ``active`` (the in-flight index and open claims).

Fault injection: ``fail_next(exc, method=..., times=1)`` makes the next table calls (of one
method) raise ``exc``; ``faults_fired`` and ``calls`` let a test assert that it fired.
"""

from __future__ import annotations

import copy
import operator
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableEntity

from shared.ledger import Ledger, active_table_name
from shared.lifecycle import Origin
from tests.fakes.faults import FaultInjection

__all__ = ["FakeLedger", "InMemoryTable"]

_CONDITION = re.compile(r"^(\w+) (eq|ne|ge|gt|le|lt) @(\w+)$")


class InMemoryTable(FaultInjection):
    """The part of ``azure.data.tables.TableClient`` the ledger uses, in memory."""

    def __init__(self, name: str = "runs") -> None:
        super().__init__()
        self.table_name = name
        self.rows: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        self._created = False
        self._lock = threading.Lock()

    def _etag(self) -> str:
        return f'W/"datetime\'{next(self._etags):020d}\'"'

    def _guard(
        self, key: tuple[str, str], etag: str | None, condition: MatchConditions | None
    ) -> None:
        """412 when the write is conditional on an ETag that is not the stored row's."""
        if condition == MatchConditions.IfNotModified and etag != self.rows[key][1]:
            raise ResourceModifiedError(message="UpdateConditionNotSatisfied")

    # -- the TableClient surface ------------------------------------------------------------
    def create_table(self) -> None:
        with self._lock:
            self._enter("create_table")
            if self._created:
                raise ResourceExistsError(message="TableAlreadyExists")
            self._created = True

    def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._enter("create_entity")
            key = (str(entity["PartitionKey"]), str(entity["RowKey"]))
            if key in self.rows:
                raise ResourceExistsError(message="EntityAlreadyExists")
            etag = self._etag()
            self.rows[key] = (copy.deepcopy(dict(entity)), etag)
            return {"etag": etag}

    def get_entity(self, partition_key: str, row_key: str) -> TableEntity:
        with self._lock:
            self._enter("get_entity")
            try:
                entity, etag = self.rows[(partition_key, row_key)]
            except KeyError:
                raise ResourceNotFoundError(message="ResourceNotFound") from None
            return _entity(entity, etag)

    def update_entity(
        self,
        entity: Mapping[str, Any],
        *,
        mode: Any = None,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> dict[str, Any]:
        del mode  # the ledger always replaces
        with self._lock:
            self._enter("update_entity")
            key = (str(entity["PartitionKey"]), str(entity["RowKey"]))
            if key not in self.rows:
                raise ResourceNotFoundError(message="ResourceNotFound")
            self._guard(key, etag, match_condition)
            new = self._etag()
            self.rows[key] = (copy.deepcopy(dict(entity)), new)
            return {"etag": new}

    def upsert_entity(self, entity: Mapping[str, Any], *, mode: Any = None) -> dict[str, Any]:
        del mode  # the ledger always replaces
        with self._lock:
            self._enter("upsert_entity")
            etag = self._etag()
            key = (str(entity["PartitionKey"]), str(entity["RowKey"]))
            self.rows[key] = (copy.deepcopy(dict(entity)), etag)
            return {"etag": etag}

    def delete_entity(
        self,
        partition_key: str,
        row_key: str,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> None:
        with self._lock:
            self._enter("delete_entity")
            key = (partition_key, row_key)
            if key not in self.rows:
                return  # Table storage's delete of a missing row: the SDK swallows the 404
            self._guard(key, etag, match_condition)
            del self.rows[key]

    def submit_transaction(self, operations: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """An entity group transaction: one partition, all or nothing (create/upsert)."""
        ops = list(operations)
        with self._lock:
            self._enter("submit_transaction")
            if len({str(e["PartitionKey"]) for _, e in ops}) > 1 or len(ops) > 100:
                raise HttpResponseError(message="InvalidDuplicateRow or too many entities")
            for op, e in ops:
                if op == "create" and (str(e["PartitionKey"]), str(e["RowKey"])) in self.rows:
                    raise ResourceExistsError(message="EntityAlreadyExists")
            for _, e in ops:
                key = (str(e["PartitionKey"]), str(e["RowKey"]))
                self.rows[key] = (copy.deepcopy(dict(e)), self._etag())

    def list_entities(self) -> Iterator[TableEntity]:
        with self._lock:
            self._enter("list_entities")
            rows = [_entity(e, etag) for e, etag in self.rows.values()]
        rows.sort(key=lambda e: (e["PartitionKey"], e["RowKey"]))
        return iter(rows)

    def query_entities(
        self, query_filter: str, *, parameters: Mapping[str, Any] | None = None
    ) -> Iterator[TableEntity]:
        with self._lock:
            self._enter("query_entities")
            matches = [_entity(e, etag) for e, etag in self.rows.values()
                       if _matches(e, query_filter, parameters or {})]
        # Table storage returns rows ordered by PartitionKey, then RowKey.
        matches.sort(key=lambda e: (e["PartitionKey"], e["RowKey"]))
        return iter(matches)


def _entity(stored: Mapping[str, Any], etag: str) -> TableEntity:
    out = TableEntity(copy.deepcopy(dict(stored)))
    out._metadata = {"etag": etag}  # what the SDK fills in from the response
    return out


def _matches(entity: Mapping[str, Any], query: str, parameters: Mapping[str, Any]) -> bool:
    """The OData filters the ledger sends: ``Name <op> @p`` (eq ne ge gt le lt) joined by
    ``and``; a missing property matches only ``ne``, as in Table storage."""
    for part in query.split(" and "):
        match = _CONDITION.match(part.strip())
        if match is None:
            raise NotImplementedError(f"InMemoryTable cannot filter on {part!r}")
        name, op, param = match.groups()
        if name not in entity:
            if op != "ne":
                return False
            continue
        value, wanted = entity[name], parameters[param]
        if type(value) is not type(wanted):
            if op != "ne":
                return False
            continue
        if not _COMPARE[op](value, wanted):
            return False
    return True


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "ge": operator.ge,
    "gt": operator.gt, "le": operator.le, "lt": operator.lt,
}


class FakeLedger(Ledger):
    """The real ledger logic over two :class:`InMemoryTable`: ``table`` (runs, directory,
    claims) and ``active`` (in-flight index, open claims), for inspection and faults."""

    def __init__(
        self,
        table: InMemoryTable | None = None,
        *,
        active: InMemoryTable | None = None,
        clock: Callable[[], datetime] | None = None,
        events: Origin | None = None,
    ) -> None:
        self.table = table or InMemoryTable()
        self.active = active or InMemoryTable(active_table_name(self.table.table_name))
        # the TableClient surface used
        super().__init__(  # type: ignore[arg-type]
            self.table, active=self.active, clock=clock, events=events
        )
        self.ensure_table()
