"""The composition root the triggers share: settings and clients, built once per worker.

The Functions host's clients keep the Azure SDK's default retries and timeouts (a trigger
that fails transiently is retried by the host anyway, and a blip should not cost a delivery).
"""

from __future__ import annotations

import atexit
from functools import lru_cache

from shared.clients import Clients
from shared.settings import load_settings

__all__ = ["clients", "close", "set_clients"]

_override: list[Clients] = []


@lru_cache(maxsize=1)
def _default() -> Clients:
    created = Clients(load_settings())
    atexit.register(close)  # the worker's SDK sessions end with it
    return created


def clients() -> Clients:
    """The clients the triggers use: the devhost's or a test's if set, else from settings."""
    return _override[-1] if _override else _default()


def set_clients(value: Clients | None) -> None:
    """Wire clients for the devhost or a test (None restores the default).

    The root never closes clients it was given: whoever made them closes them.
    """
    _override.clear()
    if value is not None:
        _override.append(value)


def close() -> None:
    """Close the clients the root created from settings (if any) and forget them."""
    if _default.cache_info().currsize:
        _default().close()
        _default.cache_clear()
