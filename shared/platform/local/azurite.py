"""Start (or find) Azurite, the Azure Storage emulator, on 127.0.0.1 for tests and the devhost."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError
from shared.settings import AZURITE_ACCOUNT, AZURITE_KEY

__all__ = ["Azurite", "connection_string", "find_azurite", "free_port", "start_azurite"]

log = logging.getLogger(__name__)

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
