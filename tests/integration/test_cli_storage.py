"""Storage commands (status, promote, sweep, upload): they find the home's Azurite like
upload does, a refused connection fails after one retry with one CLI line (exit 2), and
upload checks --line before touching storage."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline.transport import RequestsTransport

from cli.commands import sweep as sweep_command
from cli.main import main
from cli.storage import cli_clients
from shared.clients import Clients
from shared.errors import UnreachableError
from shared.ledger import RunState
from shared.platform.local.azurite import free_port
from shared.settings import Settings, load_settings
from tests.fakes.platform import FakePlatform

pytestmark = pytest.mark.integration


class CountingTransport(RequestsTransport):
    """The SDK's own HTTP transport, counting every attempt it is asked to send."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attempts = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.attempts += 1
        return super().send(request, **kwargs)


def _closed_storage() -> str:
    """A connection string whose blob and table endpoints are a closed localhost port."""
    port = free_port()
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each command reads the environment of its test (load_settings is read once a process)."""
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def _env_changed() -> None:
    load_settings.cache_clear()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    """The test's settings as the environment a user's shell has, without storage configured."""
    monkeypatch.delenv("TUNELOOP_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("TUNELOOP_STORAGE_ACCOUNT_URL", raising=False)
    monkeypatch.setenv("TUNELOOP_HOME", str(settings.home))
    monkeypatch.setenv("TUNELOOP_LEDGER_TABLE", settings.ledger_table)
    monkeypatch.setenv("TUNELOOP_REPORTS_CONTAINER", settings.reports_container)
    monkeypatch.setenv("TUNELOOP_INCOMING_CONTAINER", settings.incoming_container)
    monkeypatch.setenv("TUNELOOP_PLATFORM", "local")
    return settings


def _record_devhost(home: Path, azurite: str) -> None:
    ports = [
        int(azurite.split(f"{kind}Endpoint=http://127.0.0.1:")[1].split("/")[0])
        for kind in ("Blob", "Queue", "Table")
    ]
    home.mkdir(parents=True, exist_ok=True)
    (home / "devhost.json").write_text(json.dumps({
        "azurite_ports": ports, "azurite_connection_string": azurite,
    }))


def test_status_finds_the_homes_azurite_like_upload(
    env: Settings, clients: Clients, azurite: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no storage configured, `tuneloop status` reads the ledger of the home's Azurite."""
    clients.ledger.create("chat", "tl-chat-1", RunState.SUBMITTED)
    _record_devhost(env.home, azurite)
    assert main(["status"]) == 0
    assert "tl-chat-1" in capsys.readouterr().out


def test_sweep_and_promote_find_the_homes_azurite(
    env: Settings, azurite: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tuneloop sweep --dry-run` and `tuneloop promote` use the home's Azurite as well."""
    _record_devhost(env.home, azurite)
    seen: list[str | None] = []

    def fake_platform(self: Clients) -> FakePlatform:
        seen.append(self.settings.storage_connection_string)
        return FakePlatform()

    monkeypatch.setattr(Clients, "platform", property(fake_platform))
    assert main(["sweep", "--dry-run"]) == 0
    assert main(["promote", "tl-nope", "--line", "chat"]) == 1  # not in the ledger
    err = capsys.readouterr().err
    assert "tuneloop promote: not_found:" in err
    assert seen == [azurite, azurite]


def test_no_storage_at_all_is_one_line_and_exit_2(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """No storage configured and no devhost: exit 2, one line naming what to start or set."""
    for command in (["status"], ["sweep", "--dry-run"], ["promote", "r1"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert "no storage configured" in err[0]
        assert "tuneloop up" in err[0]


def test_a_refused_connection_fails_after_one_retry_with_a_cli_message(
    env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Storage on a closed port: exit 2 after at most 2 attempts per call (the SDK default
    retries blob calls 3 times with 15 s+ backoffs), and the message says what to do."""
    closed = _closed_storage()
    settings = env.model_copy(update={"storage_connection_string": closed})
    transport = CountingTransport(connection_timeout=5)
    with cli_clients(settings, transport=transport) as c:
        c.use_platform(FakePlatform())
        code = sweep_command.run(argparse.Namespace(dry_run=True, json=False), clients=c)
    assert code == 2
    assert 1 <= transport.attempts <= 2  # one try and one retry of the first blob call
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("tuneloop sweep: unreachable: storage: creating container")
    assert "tuneloop up" in err[0]
    assert "host will retry" not in err[0]

    monkeypatch.setenv("TUNELOOP_STORAGE_CONNECTION_STRING", closed)
    _env_changed()
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("tuneloop status: unreachable: ledger:")


def test_the_cli_clients_retry_less_than_the_functions_clients(env: Settings) -> None:
    """A refused blob call from CLI clients is tried twice (the SDK default, which the
    Functions host keeps, is 4 tries over about a minute)."""
    settings = env.model_copy(update={"storage_connection_string": _closed_storage()})
    transport = CountingTransport(connection_timeout=5)
    with cli_clients(settings, transport=transport) as c, pytest.raises(UnreachableError):
        c.storage.ensure_containers("x")
    assert transport.attempts == 2
    assert Clients(settings).sdk_options == {}  # the host keeps the SDK's defaults


def test_upload_checks_the_line_before_touching_storage(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad --line is refused (exit 2) even when storage is unreachable: no storage call."""
    monkeypatch.setenv("TUNELOOP_STORAGE_CONNECTION_STRING", _closed_storage())
    _env_changed()
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    assert main(["upload", str(data), "--line", "../etc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--line '../etc' is not a valid line name" in err[0]
    assert "unreachable" not in err[0]
