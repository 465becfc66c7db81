"""The composition root: uniform keyword overrides, lazy creation, close() closes only what
it created."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from functions import _root
from shared.clients import CLI_SDK_OPTIONS, Clients
from shared.errors import ConfigError
from shared.settings import Settings
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform
from tests.fakes.transport import FakeTransport

CONN = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:1/devstoreaccount1;"
)


class CountsClose:
    """Counts how often something closed it (mixed in before the fake it counts for)."""

    closed = 0

    def close(self) -> None:
        self.closed += 1


class ClosingTransport(CountsClose, FakeTransport):
    """A fake transport that counts how often something closed it."""

    def __exit__(self, *args: Any) -> None:
        self.close()


class ClosingPlatform(CountsClose, FakePlatform):
    """The fake platform, counting how often something closed it."""


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(storage_connection_string=CONN, home=tmp_path, platform="local", **changes)


def test_every_port_can_be_handed_in_by_keyword(tmp_path: Path) -> None:
    """ledger, storage, platform, clock and transport are overrides of the same kind."""
    ledger, platform = FakeLedger(), FakePlatform()
    storage: Any = object()
    transport = FakeTransport()

    def clock() -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    c = Clients(
        _settings(tmp_path), ledger=ledger, storage=storage, platform=platform, clock=clock,
        transport=transport,
    )
    assert c.ledger is ledger
    assert c.storage is storage
    assert c.platform is platform
    assert c.clock() == datetime(2026, 1, 1, tzinfo=UTC)
    assert c.transport is transport
    assert "blob_service" not in c.__dict__  # nothing was created for the given ports
    with pytest.raises(TypeError):
        Clients(_settings(tmp_path), FakeLedger())  # type: ignore[misc]  # keyword-only


def test_close_spares_what_it_was_given(tmp_path: Path) -> None:
    """close() leaves a given platform open; a given transport is not the clients' either."""
    platform = ClosingPlatform()
    c = Clients(_settings(tmp_path), ledger=FakeLedger(), platform=platform)
    c.close()
    assert platform.closed == 0
    assert c.platform is platform  # still wired


def test_close_closes_what_it_created_and_forgets_it(tmp_path: Path) -> None:
    """The SDK clients it created are closed (their transport with them) and made again later."""
    transport = ClosingTransport()
    with Clients(_settings(tmp_path), transport=transport) as c:
        first = c.blob_service
        _ = c.table_service
        storage = c.storage
    assert transport.closed >= 1  # the SDK clients closed their pipeline
    assert "blob_service" not in c.__dict__
    assert "storage" not in c.__dict__
    assert c.blob_service is not first
    assert c.storage is not storage
    c.close()
    c.close()  # idempotent


def test_close_closes_a_platform_it_created(tmp_path: Path) -> None:
    """A platform built from settings is closed with the clients; use_platform's is not."""
    c = Clients(_settings(tmp_path))
    created = ClosingPlatform()
    c.__dict__["platform"] = created  # as if built by the cached property
    given = ClosingPlatform()
    c.use_platform(given)  # replacing a created platform closes it
    assert created.closed == 1
    c.close()
    assert given.closed == 0


def test_no_storage_configured_is_a_config_error(tmp_path: Path) -> None:
    """Without a connection string or account URL, using storage is a ConfigError."""
    c = Clients(Settings(home=tmp_path, platform="local"))
    with pytest.raises(ConfigError, match="no storage configured"):
        _ = c.blob_service


def test_sdk_options_reach_the_storage_clients(tmp_path: Path) -> None:
    """CLI options (few retries) are passed to the SDK clients; the default passes none."""
    cli = Clients(_settings(tmp_path), sdk_options=CLI_SDK_OPTIONS)
    assert cli._kwargs()["retry_total"] == 1
    assert Clients(_settings(tmp_path))._kwargs() == {}


def test_the_root_closes_only_clients_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """functions._root.close() closes the default clients; set_clients' are the caller's."""
    monkeypatch.setenv("TUNELOOP_STORAGE_CONNECTION_STRING", CONN)
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path))
    given = Clients(_settings(tmp_path), platform=ClosingPlatform())
    _root.set_clients(given)
    try:
        assert _root.clients() is given
        _root.close()
        assert "platform" in given.__dict__
    finally:
        _root.set_clients(None)
    made = _root.clients()
    assert made is not given
    _root.close()
    assert _root.clients() is not made  # a fresh one after close
    _root.close()
