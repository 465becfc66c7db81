"""Fault injection and call counting shared by the in-memory stores (table and blob fakes).

``fail_next(exc, method=..., times=1)`` makes the next calls (of one method, if given) raise
``exc``; ``calls`` counts every call by method and ``faults_fired`` the faults raised, so a
test can assert that its fault fired. Each store calls ``_enter(method)`` first in every
method of its service surface and draws ETag numbers from ``_etags``.
"""

from __future__ import annotations

import itertools
from collections import Counter

__all__ = ["FaultInjection"]


class FaultInjection:
    """Call counting and one-shot faults for an in-memory fake of an Azure service client."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.faults_fired = 0
        self._faults: list[tuple[str | None, Exception]] = []
        self._etags = itertools.count(1)

    def fail_next(self, exc: Exception, *, method: str | None = None, times: int = 1) -> None:
        """The next ``times`` calls (of ``method``, if given) raise ``exc``."""
        self._faults.extend([(method, exc)] * times)

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        for i, (wanted, exc) in enumerate(self._faults):
            if wanted in (None, method):
                del self._faults[i]
                self.faults_fired += 1
                raise exc
