"""A fake :class:`shared.outbox.EventPublisher`: an in-memory topic that records what it
accepted and answers HTTP statuses on demand, raising what the Event Grid adapter raises (the
SDK's HttpResponseError through the one mapper). tests/unit/test_eventgrid.py runs it and the
real adapter through the same contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.messaging import CloudEvent

from shared.errors import map_azure_errors
from shared.eventgrid import ROLE
from shared.lifecycle import to_wire

__all__ = ["FakePublisher"]


class FakePublisher:
    """``received``: the wire form of every event accepted, in order. ``refuse``: event id →
    HTTP status answered for any batch holding it; ``fail_next(status)``: the next ``send``
    answers ``status`` (or raises ``exc``), whatever it holds."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refuse: dict[str, int] = {}
        self.calls = 0
        self._next: list[int | Exception] = []

    def fail_next(self, status: int | Exception, *, times: int = 1) -> None:
        self._next.extend([status] * times)

    def send(self, events: Sequence[CloudEvent[Any]]) -> None:
        self.calls += 1
        with map_azure_errors(f"events: publishing {len(events)} event(s) to fake", role=ROLE):
            if self._next:
                failure = self._next.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                _raise(failure)
            for event in events:
                if event.id in self.refuse:
                    _raise(self.refuse[event.id])
            self.received.extend(to_wire(e) for e in events)

    @property
    def ids(self) -> list[str]:
        return [str(e["id"]) for e in self.received]


def _raise(status: int) -> None:
    exc = HttpResponseError(message=f"the topic answered {status}")
    exc.status_code = status
    raise exc
