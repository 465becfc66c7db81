"""Azurite, the Azure Storage emulator, on 127.0.0.1: for tests, and as a home's local storage.

A home's Azurite (``local_storage`` / ``start_local_storage``) persists under
``<home>/azurite``; where it runs is recorded in ``<home>/devhost.json`` (``read_host_state``
is the one reader of that file), so ``tuneloop upload``/``status``, a second devhost and a
devhost restarted after a crash find the same one. The home's devhost owns it: the devhost
that started it, or one that adopted it after the previous devhost died, stops it on
shutdown.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.errors import ConfigError
from shared.platform.local.procs import pid_alive, stop_pid
from shared.settings import AZURITE_ACCOUNT, AZURITE_KEY

__all__ = [
    "AZURITE_PORTS",
    "STATE_FILE",
    "Azurite",
    "HostState",
    "LocalStorage",
    "connection_string",
    "find_azurite",
    "free_port",
    "local_storage",
    "read_host_state",
    "start_azurite",
    "start_local_storage",
    "write_host_state",
]

log = logging.getLogger(__name__)

AZURITE_PORTS = (10000, 10001, 10002)  # blob, queue, table: the emulator's defaults
STATE_FILE = "devhost.json"

_REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def connection_string(blob_port: int, table_port: int, queue_port: int | None = None) -> str:
    parts = [
        "DefaultEndpointsProtocol=http",
        f"AccountName={AZURITE_ACCOUNT}",
        f"AccountKey={AZURITE_KEY}",
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT}",
        f"TableEndpoint=http://127.0.0.1:{table_port}/{AZURITE_ACCOUNT}",
    ]
    if queue_port:
        parts.append(f"QueueEndpoint=http://127.0.0.1:{queue_port}/{AZURITE_ACCOUNT}")
    return ";".join(parts) + ";"


def find_azurite() -> str:
    """The azurite executable: ``node_modules/.bin/azurite`` of the repo, else PATH."""
    local = _REPO / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise ConfigError(
        "Azurite is not installed", hint="run `npm install` in the repository root (Node.js 18+)"
    )


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Azurite:
    """A running Azurite process (blob + queue + table) and its connection string."""

    process: subprocess.Popen[bytes] | None
    blob_port: int
    table_port: int
    queue_port: int

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.table_port, self.queue_port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_azurite(
    *,
    location: Path | None = None,
    ports: tuple[int, int, int] | None = None,
    timeout: float = 60.0,
    log_file: Path | None = None,
) -> Azurite:
    """Start Azurite on loopback: in memory when ``location`` is None, else persisted there."""
    blob, queue, table = ports or (free_port(), free_port(), free_port())
    args = [
        find_azurite(),
        "--blobHost", "127.0.0.1", "--blobPort", str(blob),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue),
        "--tableHost", "127.0.0.1", "--tablePort", str(table),
        "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl",
    ]
    if location is None:
        args.append("--inMemoryPersistence")
    else:
        location.mkdir(parents=True, exist_ok=True)
        args += ["--location", str(location)]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    env = {**os.environ, "AZURITE_ACCOUNTS": ""}
    env.pop("AZURITE_ACCOUNTS")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(
                f"Azurite exited with code {proc.returncode}",
                hint=f"see {log_file}" if log_file else "run it by hand to see why",
            )
        if all(_port_open(p) for p in (blob, queue, table)):
            log.info("azurite up blob=%s table=%s", blob, table)
            return Azurite(proc, blob, table, queue)
        time.sleep(0.2)
    with contextlib.suppress(Exception):
        proc.kill()
    raise ConfigError(f"Azurite did not start within {timeout:.0f}s")


# -- the home's Azurite, recorded in devhost.json ----------------------------------------------
_FIX = "stop `tuneloop up`, delete the file and start `tuneloop up` again (it rewrites it)"


@dataclass(frozen=True)
class HostState:
    """What ``<home>/devhost.json`` records: the devhost's pid and the home's Azurite."""

    path: Path
    pid: int | None = None
    started: str | None = None
    azurite_pid: int | None = None
    azurite_ports: tuple[int, int, int] | None = None  # blob, queue, table
    azurite_connection_string: str | None = None
    events_endpoint: str | None = None  # the devhost's local Event Grid topic (topic.py)
    events_key: str | None = None  # its key (also in <home>/events/topic.key)

    @property
    def host_alive(self) -> bool:
        """Whether the devhost that wrote the file still runs (and is not this process)."""
        return self.pid != os.getpid() and pid_alive(self.pid)

    def azurite_running(self, home: Path) -> bool:
        """Whether the recorded Azurite runs: its process (when recorded) and all its ports."""
        if self.azurite_ports is None or self.azurite_connection_string is None:
            return False
        if self.azurite_pid is not None and not pid_alive(self.azurite_pid, _marker(home)):
            return False
        return all(_port_open(p) for p in self.azurite_ports)


def _marker(home: Path) -> str:
    """What the command line of a home's Azurite contains (with the ports, enough to tell
    a recorded pid that was reused by another program)."""
    del home
    return "azurite"


def _bad(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path} is corrupt: {what}", hint=_FIX)


def _int_field(path: Path, data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(path, f"{key} must be a positive integer, not {value!r}")
    return value


def read_host_state(home: Path) -> HostState | None:
    """The parsed ``<home>/devhost.json``; None when there is none.

    Raises ConfigError (one line: the file, what is wrong, what to do) when it cannot be
    read, is not JSON, or a field has the wrong type. Every command reads it through here.
    """
    path = Path(home) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}", hint="check its permissions, or " + _FIX
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _bad(path, f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _bad(path, f"expected a JSON object, found {type(data).__name__}")
    ports = data.get("azurite_ports")
    parsed: tuple[int, int, int] | None = None
    if ports is not None:
        if (
            not isinstance(ports, list)
            or len(ports) != 3
            or not all(type(p) is int and 0 < p < 65536 for p in ports)
        ):
            raise _bad(path, f"azurite_ports must be 3 port numbers (blob, queue, table), "
                             f"not {ports!r}")
        parsed = (ports[0], ports[1], ports[2])
    conn = data.get("azurite_connection_string")
    if conn is not None and not isinstance(conn, str):
        raise _bad(path, f"azurite_connection_string must be a string, not {conn!r}")
    if (parsed is None) != (conn is None):
        raise _bad(path, "azurite_ports and azurite_connection_string come together")
    started = data.get("started")
    if started is not None and not isinstance(started, str):
        raise _bad(path, f"started must be a time string, not {started!r}")
    for name in ("events_endpoint", "events_key"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise _bad(path, f"{name} must be a string, not {data[name]!r}")
    return HostState(
        path=path,
        pid=_int_field(path, data, "pid"),
        started=started,
        azurite_pid=_int_field(path, data, "azurite_pid"),
        azurite_ports=parsed,
        azurite_connection_string=conn,
        events_endpoint=data.get("events_endpoint"),
        events_key=data.get("events_key"),
    )


def write_host_state(
    home: Path, *, pid: int, storage: LocalStorage | None, started: str | None = None,
    topic: tuple[str, str] | None = None,
) -> None:
    """Record this devhost (and the home's Azurite it uses) in ``<home>/devhost.json``;
    ``started`` defaults to now; ``topic`` is the (endpoint, key) of its local Event Grid
    topic (``shared.platform.local.topic``)."""
    state: dict[str, Any] = {"pid": pid, "started": started or datetime.now(UTC).isoformat()}
    if topic is not None:
        state.update(events_endpoint=topic[0], events_key=topic[1])
    if storage is not None:
        state.update(
            azurite_pid=storage.pid,
            azurite_ports=list(storage.ports),
            # Azurite's well-known development key (public); never a configured secret.
            azurite_connection_string=storage.connection_string,
        )
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def local_storage(home: Path) -> str | None:
    """The connection string of the home's running Azurite; None when the home records none.

    Raises ConfigError when ``devhost.json`` is corrupt, or records an Azurite that is not
    running (its devhost crashed, or it was stopped): start ``tuneloop up``.
    """
    state = read_host_state(home)
    if state is None or state.azurite_connection_string is None:
        return None
    if not state.azurite_running(home):
        assert state.azurite_ports is not None
        raise ConfigError(
            f"{state.path} records an Azurite (pid {state.azurite_pid}, blob port "
            f"{state.azurite_ports[0]}) that is not running",
            hint="start `tuneloop up` for this TUNELOOP_HOME, "
            "or set TUNELOOP_STORAGE_CONNECTION_STRING",
        )
    return state.azurite_connection_string


@dataclass
class LocalStorage:
    """The home's Azurite as a devhost uses it: started, adopted, or shared.

    ``owned``: this devhost stops it on :meth:`stop` (it started it, or adopted it from a
    devhost that died); a devhost sharing the Azurite of another live devhost leaves it.
    """

    home: Path
    connection_string: str
    ports: tuple[int, int, int]  # blob, queue, table
    pid: int | None
    owned: bool
    process: Azurite | None = None

    def stop(self) -> None:
        """Stop the Azurite if this devhost owns it (idempotent)."""
        if not self.owned:
            return
        self.owned = False
        if self.process is not None:
            self.process.stop()
        else:
            stop_pid(self.pid, _marker(self.home))
        log.info("stopped the home's Azurite (pid %s)", self.pid)


def start_local_storage(home: Path) -> LocalStorage:
    """The home's Azurite for a devhost: the recorded one if it runs, else a new one.

    A running Azurite whose devhost died (kill -9, a crash) is adopted: this devhost owns it
    from now on. A new one takes the recorded ports when free (connection strings exported
    from an earlier banner keep working), else Azurite's defaults, else free ports: an
    Azurite that another home started may hold another ledger with the same run ids, so a
    home never shares one. Raises ConfigError when ``devhost.json`` is corrupt.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    state = read_host_state(home)
    if state is not None and state.azurite_running(home):
        assert state.azurite_ports is not None
        assert state.azurite_connection_string is not None
        owned = not state.host_alive
        log.info("the home's Azurite runs (pid %s); %s", state.azurite_pid,
                 "adopted: its devhost is gone" if owned else f"shared with devhost {state.pid}")
        return LocalStorage(home, state.azurite_connection_string, state.azurite_ports,
                            state.azurite_pid, owned=owned)
    candidates = [AZURITE_PORTS]
    if state is not None and state.azurite_ports is not None:
        if state.azurite_pid is not None and pid_alive(state.azurite_pid, _marker(home)):
            # Its process runs but a port does not answer: stuck; ours to replace.
            stop_pid(state.azurite_pid, _marker(home))
        candidates.insert(0, state.azurite_ports)
    ports = next((c for c in candidates if not any(_port_open(p) for p in c)), None)
    if ports is None:
        ports = (free_port(), free_port(), free_port())
        log.warning("ports %s are taken (another Azurite?); this home's Azurite uses %s",
                    AZURITE_PORTS, ports)
    server = start_azurite(location=home / "azurite", ports=ports, log_file=home / "azurite.log")
    log.info("started the home's Azurite on %s", ports)
    pid = server.process.pid if server.process else None
    return LocalStorage(home, server.connection_string, ports, pid, owned=True, process=server)
