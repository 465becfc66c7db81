"""Request counts per endpoint, persisted in SQLite at one-second resolution.

The endpoint routers add to it (one row per endpoint and second, incremented); the sweeper's
``endpoint_requests`` sums it over a window, so the count is exact to the second, unlike
Azure Monitor's per-minute buckets.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

__all__ = ["RequestCounts"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    endpoint TEXT NOT NULL,
    second INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, second)
)
"""


class RequestCounts:
    """A thread-safe handle on ``requests.db`` (WAL mode: readers never block the router)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def add(self, endpoint: str, when: datetime, n: int = 1) -> None:
        second = int(when.timestamp())
        with self._lock:
            self._db.execute(
                "INSERT INTO requests (endpoint, second, count) VALUES (?, ?, ?) "
                "ON CONFLICT (endpoint, second) DO UPDATE SET count = count + excluded.count",
                (endpoint, second, n),
            )

    def total(self, endpoints: Iterable[str], start: datetime, end: datetime) -> dict[str, int]:
        """Requests per endpoint with ``start <= time <= end`` (0 for an endpoint with none)."""
        names = list(endpoints)
        out = dict.fromkeys(names, 0)
        if not names:
            return out
        marks = ",".join("?" for _ in names)
        with self._lock:
            rows = self._db.execute(
                f"SELECT endpoint, SUM(count) FROM requests WHERE endpoint IN ({marks}) "  # noqa: S608 -- placeholders only
                "AND second >= ? AND second <= ? GROUP BY endpoint",
                (*names, int(start.timestamp()), int(end.timestamp())),
            ).fetchall()
        for name, count in rows:
            out[name] = int(count)
        return out

    def forget(self, endpoint: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM requests WHERE endpoint = ?", (endpoint,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
