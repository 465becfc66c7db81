"""How a terminal command reaches storage, and how it reports a storage failure.

Every command that reads or writes storage (``status``, ``promote``, ``sweep``, ``upload``)
finds it the same way: the configured account (``TUNELOOP_STORAGE_CONNECTION_STRING`` /
``TUNELOOP_STORAGE_ACCOUNT_URL``), else the Azurite that ``tuneloop up`` runs for
``TUNELOOP_HOME`` (recorded in ``<home>/devhost.json``). Its SDK clients make one retry with
a short connection timeout, so a storage that is not there fails in seconds; the Functions
host keeps the SDK's patient defaults.

A failure is one line on stderr, ``tuneloop <command>: <code>: <what> (<what to do>)``, exit 2
for configuration (no storage configured or reachable, a permission missing, a bad setting)
and 1 when the operation itself failed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from shared.errors import ConfigError, TuneloopError, UnreachableError

if TYPE_CHECKING:
    from shared.clients import Clients
    from shared.settings import Settings

__all__ = ["cli_clients", "fail", "storage_settings"]

_START = "start `tuneloop up` for this TUNELOOP_HOME in another shell, or set " \
    "TUNELOOP_STORAGE_CONNECTION_STRING"


def storage_settings(settings: Settings) -> Settings:
    """``settings`` with the home's running Azurite filled in when no storage is configured,
    and the devhost's local Event Grid topic when the storage is the home's Azurite and no
    events endpoint is configured (both recorded in ``<home>/devhost.json``).

    Raises ConfigError when there is neither (what to start or set is in the hint).
    """
    if settings.storage_account_url:
        return settings
    if settings.storage_connection_string:
        return _with_home_topic(settings, quiet=True)
    from shared.platform.local.azurite import local_storage

    home = Path(settings.home)
    found = local_storage(home)
    if found is None:
        raise ConfigError(
            f"no storage configured and no `tuneloop up` running for home {home.resolve()}",
            hint=_START,
        )
    return _with_home_topic(settings.model_copy(update={"storage_connection_string": found}))


def _with_home_topic(settings: Settings, *, quiet: bool = False) -> Settings:
    """The devhost's local topic as the events settings, when ``settings`` use the home's
    Azurite and configure no events endpoint: a step a command runs against the devhost's
    storage (retract, promote) publishes its lifecycle events where the devhost's own go.
    ``quiet``: a corrupt ``devhost.json`` changes nothing (the storage was configured)."""
    from pydantic import SecretStr

    from shared.platform.local.azurite import read_host_state

    fields = type(settings).model_fields
    if "events_endpoint" not in fields or getattr(settings, "events_endpoint", None):
        return settings
    try:
        state = read_host_state(Path(settings.home))
    except ConfigError:
        if quiet:
            return settings
        raise
    if (
        state is None or not state.events_endpoint or not state.events_key
        or state.azurite_connection_string != settings.storage_connection_string
    ):
        return settings
    update: dict[str, Any] = {"events_endpoint": state.events_endpoint}
    if "events_key" in fields:
        update["events_key"] = SecretStr(state.events_key)
    return settings.model_copy(update=update)


def cli_clients(settings: Settings | None = None, *, transport: Any = None) -> Clients:
    """Clients for a terminal command: the storage found as above, short SDK retries."""
    from shared.clients import CLI_SDK_OPTIONS, Clients
    from shared.settings import load_settings

    found = storage_settings(settings if settings is not None else load_settings())
    return Clients(found, sdk_options=CLI_SDK_OPTIONS, transport=transport)


def fail(command: str, exc: TuneloopError, *, stream: TextIO | None = None) -> int:
    """Report ``exc`` for ``tuneloop <command>`` as every command does
    (:func:`cli.main.report_error`: one line, exit code by type), a storage or ledger that
    does not answer with what to start or set; returns the exit code."""
    from cli.main import report_error

    if isinstance(exc, UnreachableError) and exc.message.startswith(("storage:", "ledger:")):
        exc = copy.copy(exc)  # same type and code, the hint says what to start
        exc.hint = f"is the storage running? {_START}"
    return report_error(exc, command, stream=stream)
