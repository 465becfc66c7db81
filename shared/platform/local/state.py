"""Where the local platform keeps its state under ``settings.home``, and how it writes it.

Layout (all under ``<home>/local/`` except MLflow's store)::

    jobs/<job>/job.json        what was submitted (plan, pid, submitted time)
    jobs/<job>/status.json     what the trainer reports (status, metrics, model, error)
    jobs/<job>/log.jsonl       one progress line per step, for the devhost/demo to tail
    jobs/<job>/process.log     the trainer's stdout/stderr
    endpoints/<ep>/endpoint.json            key, port, tags, traffic, times, router pid
    endpoints/<ep>/deployments/<d>.json     model, port, pid, provisioning state
    events/<time>-<id>.json    the outbox of Event Grid events, oldest first by name
    requests.db                request counts per endpoint per second (SQLite)
    models/                    the tiny built-in base model
    <home>/mlflow.db, <home>/mlartifacts/   MLflow tracking + registry

Every JSON file is replaced atomically (write to a temp file, fsync, rename) so that a
reader in another process never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Paths", "locked", "read_json", "utcnow_iso", "write_json"]


@dataclass(frozen=True)
class Paths:
    """The local platform's files for one home directory."""

    home: Path

    @property
    def root(self) -> Path:
        return self.home / "local"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def job(self, name: str) -> Path:
        return self.jobs / name

    @property
    def endpoints(self) -> Path:
        return self.root / "endpoints"

    def endpoint(self, name: str) -> Path:
        return self.endpoints / name

    def deployment(self, endpoint: str, name: str) -> Path:
        return self.endpoint(endpoint) / "deployments" / f"{name}.json"

    @property
    def events(self) -> Path:
        return self.root / "events"

    @property
    def requests_db(self) -> Path:
        return self.root / "requests.db"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifacts(self) -> Path:
        return (self.home / "mlartifacts").resolve()


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat()


def write_json(path: Path, obj: Any, *, private: bool = False) -> None:
    """Replace ``path`` atomically; ``private`` files (keys) are readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        if private:
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """Serialise state changes across processes sharing one home (flock on a lock file)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock_file, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
