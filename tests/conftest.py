"""Shared fixtures: one in-memory Azurite per test session, fresh containers/table per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.clients import Clients
from shared.settings import Settings
from tests.isolation import isolated_settings


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Connection string of an Azurite started for this session (or TUNELOOP_TEST_AZURITE)."""
    existing = os.environ.get("TUNELOOP_TEST_AZURITE")
    if existing:
        yield existing
        return
    from shared.platform.local.azurite import start_azurite

    server = start_azurite()
    try:
        yield server.connection_string
    finally:
        server.stop()


@pytest.fixture
def settings(azurite: str, tmp_path: Path) -> Settings:
    """Settings on the session's Azurite with per-test container and table names."""
    return isolated_settings(azurite, tmp_path / "home", min_examples=10)


@pytest.fixture
def clients(settings: Settings) -> Clients:
    """Clients on Azurite with the containers and the ledger table created."""
    c = Clients(settings)
    c.storage.ensure_containers()
    c.ledger.ensure_table()
    return c
