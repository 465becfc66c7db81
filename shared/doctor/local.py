"""The local platform's checks: the home, its devhost record, Azurite, the MLflow store, ports.

Everything is read through the local platform's own readers (``read_host_state``,
``local_storage``, ``find_azurite``, the MLflow store check), so the doctor and ``tuneloop
up`` agree on what the home holds. Nothing is started or created: a store that does not exist
yet is reported as "created on the first job".
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from shared.doctor.checks import Check, attempt, fail, ok, warn
from shared.errors import map_azure_errors
from shared.settings import Settings

__all__ = ["local_checks", "storage_reachable"]

_UP = "start `tuneloop up` (it starts the home's Azurite and the triggers)"


def home_check(home: Path) -> Check:
    """The home is a writable directory, or can be created."""
    existing = home if home.exists() else next((p for p in home.parents if p.exists()), None)
    if existing is None or not existing.is_dir():
        return fail("home", f"TUNELOOP_HOME {home} is not a directory",
                    "set TUNELOOP_HOME to a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        return fail("home", f"TUNELOOP_HOME {home} is not writable ({existing})",
                    "set TUNELOOP_HOME to a directory you can write")
    if existing != home:
        return ok("home", f"TUNELOOP_HOME {home} does not exist yet; `tuneloop up` creates it")
    return ok("home", f"TUNELOOP_HOME {home} is a writable directory")


def devhost_check(home: Path) -> Check:
    """devhost.json is readable and says whether `tuneloop up` runs."""
    from shared.platform.local.azurite import read_host_state

    state = read_host_state(home)  # ConfigError (corrupt) becomes a failed check
    if state is None:
        return warn("devhost", f"no devhost recorded in {home} (`tuneloop up` is not running)",
                    f"{_UP} before `tuneloop upload`")
    if state.host_alive:
        return ok("devhost", f"`tuneloop up` runs for this home (pid {state.pid})")
    return warn("devhost", f"the devhost recorded in {state.path} (pid {state.pid}) is not "
                "running", f"{_UP} before `tuneloop upload`")


def storage_reachable(connection_string: str) -> str:
    """List one container and one table (short timeouts); returns the blob endpoint."""
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from shared.clients import CLI_SDK_OPTIONS

    blobs = BlobServiceClient.from_connection_string(connection_string, **CLI_SDK_OPTIONS)
    tables = TableServiceClient.from_connection_string(connection_string, **CLI_SDK_OPTIONS)
    with blobs, tables, map_azure_errors(f"storage at {blobs.url}"):
        next(iter(blobs.list_containers(results_per_page=1)), None)
        next(iter(tables.list_tables(results_per_page=1)), None)
    return str(blobs.url)


def azurite_check(settings: Settings) -> Check:
    """The storage the commands would use answers: the configured one, else the home's
    Azurite; with neither, Azurite must be installed for `tuneloop up` to start it."""
    from shared.platform.local.azurite import find_azurite, local_storage

    if settings.storage_connection_string:
        url = storage_reachable(settings.storage_connection_string)
        return ok("azurite", f"the configured storage (TUNELOOP_STORAGE_CONNECTION_STRING) "
                  f"answers at {url}")
    if settings.storage_account_url:
        return warn("azurite", f"storage is {settings.storage_account_url} "
                    "(TUNELOOP_STORAGE_ACCOUNT_URL), not Azurite: not probed by the local checks",
                    "configure the workspace to check Azure storage, or unset "
                    "TUNELOOP_STORAGE_ACCOUNT_URL to use the home's Azurite")
    recorded = local_storage(settings.home)  # ConfigError when recorded but not running
    if recorded is not None:
        url = storage_reachable(recorded)
        return ok("azurite", f"the home's Azurite answers at {url}")
    binary = find_azurite()  # ConfigError: not installed (npm install)
    return ok("azurite", f"no Azurite runs for this home; `tuneloop up` starts {binary}")


def mlflow_check(home: Path) -> Check:
    """The MLflow tracking store is initialised, or can be (mlflow installed)."""
    from shared.platform.local.registry import store_ready  # the one "is it ready" reader

    db = home / "mlflow.db"
    if db.exists():
        if store_ready(db):
            return ok("mlflow", f"MLflow store {db} is initialised")
        return fail("mlflow", f"{db} is not an initialised MLflow store (no schema version)",
                    "stop `tuneloop up`, move the file away; the first job creates a new one "
                    "(its runs and models are lost)")
    if importlib.util.find_spec("mlflow") is None:
        return fail("mlflow", "mlflow is not installed", "install the project's requirements")
    return ok("mlflow", f"MLflow store {db} does not exist yet; the first job creates it")


def ports_check(home: Path) -> Iterator[Check]:
    """Azurite's ports (recorded, else 10000-10002) are free or the home's own Azurite."""
    # The local platform's own probe (the one `tuneloop up` uses to pick its ports).
    from shared.platform.local.azurite import AZURITE_PORTS, read_host_state
    from shared.platform.local.azurite import _port_open as port_open

    state = read_host_state(home)
    ports = state.azurite_ports if state and state.azurite_ports else AZURITE_PORTS
    ours = bool(state and state.azurite_ports and state.azurite_running(home))
    for service, port in zip(("blob", "queue", "table"), ports, strict=True):
        name = f"port.{service}"
        if not port_open(port):
            yield ok(name, f"{service} port {port} is free for the home's Azurite")
        elif ours:
            yield ok(name, f"{service} port {port} is the home's Azurite")
        else:
            yield warn(name, f"{service} port {port} is taken by another program",
                       "`tuneloop up` then starts Azurite on free ports and prints them; free "
                       f"port {port} to keep the usual ones")


def local_checks(settings: Settings, *, environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every check of the local platform, in order; none stops the others."""
    del environ  # the local checks read only the settings
    home = Path(settings.home)
    results = [ok("platform", "local platform (no Azure ML workspace configured: "
                  "TUNELOOP_SUBSCRIPTION_ID, TUNELOOP_RESOURCE_GROUP, TUNELOOP_WORKSPACE_NAME)")]
    results += attempt("home", lambda: home_check(home))
    results += attempt("devhost", lambda: devhost_check(home))
    results += attempt("azurite", lambda: azurite_check(settings))
    results += attempt("mlflow", lambda: mlflow_check(home))
    results += attempt("ports", lambda: ports_check(home))
    return results
