"""The composition root the triggers share: settings and clients, built once per worker."""

from __future__ import annotations

from functools import lru_cache

from shared.clients import Clients
from shared.settings import load_settings

__all__ = ["clients", "set_clients"]

_override: list[Clients] = []


@lru_cache(maxsize=1)
def _default() -> Clients:
    return Clients(load_settings())


def clients() -> Clients:
    """The clients the triggers use: the devhost's or a test's if set, else from settings."""
    return _override[-1] if _override else _default()


def set_clients(value: Clients | None) -> None:
    """Wire clients for the devhost or a test (None restores the default)."""
    _override.clear()
    if value is not None:
        _override.append(value)
