"""One user-assigned identity for the trigger and the code (issue 10, defect 7).

On Azure Functions a managed identity token comes from the App Service identity endpoint
(IDENTITY_ENDPOINT + IDENTITY_HEADER); a user-assigned identity is chosen by the ``client_id``
query parameter. These tests stand in for that endpoint on loopback and look at what the
app's credential asks it for.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from shared.clients import Clients
from shared.settings import Settings

CLIENT_ID = "11111111-2222-3333-4444-555555555555"


class _IdentityEndpoint(BaseHTTPRequestHandler):
    asked: list[dict[str, list[str]]] = []  # noqa: RUF012 - one list per test, reset by the fixture

    def do_GET(self) -> None:
        type(self).asked.append(parse_qs(urlparse(self.path).query))
        body = json.dumps({
            "access_token": "token",
            "expires_on": "4102444800",
            "resource": "https://storage.azure.com",
            "token_type": "Bearer",
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def identity_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, list[str]]]]:
    """An App Service identity endpoint on loopback; yields the query of every token request."""
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "TUNELOOP_")):
            monkeypatch.delenv(key)
    _IdentityEndpoint.asked = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IdentityEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_port}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header")
    try:
        yield _IdentityEndpoint.asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _token_request(settings: Settings, asked: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    with Clients(settings) as clients:
        clients.credential.get_token("https://storage.azure.com/.default")
    assert asked, "the credential never asked the identity endpoint"
    return asked[-1]


def test_the_credential_asks_for_the_configured_user_assigned_identity(
    identity_endpoint: list[dict[str, list[str]]],
) -> None:
    """The app's credential asks for the identity in the settings, not the default one."""
    asked = _token_request(Settings(azure_client_id=CLIENT_ID), identity_endpoint)
    assert asked.get("client_id") == [CLIENT_ID]


def test_without_a_client_id_the_credential_asks_for_the_default_identity(
    identity_endpoint: list[dict[str, list[str]]],
) -> None:
    """No client id configured: the token request names no identity (system-assigned)."""
    asked = _token_request(Settings(), identity_endpoint)
    assert "client_id" not in asked


def test_the_client_id_is_read_from_azure_client_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """AZURE_CLIENT_ID (azure-identity's own variable, set by infra/) is the setting."""
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("TUNELOOP_AZURE_CLIENT_ID", "not-this-one")
    assert Settings().azure_client_id == CLIENT_ID
