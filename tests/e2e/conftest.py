"""The e2e tests' loop: a devhost on the embedded local platform, one line trained and promoted.

Each e2e module starts its own (``running_loop``) on per-module containers, table and home,
so no module depends on another, and a module that ends a line (the sweeper) has its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cli.commands.demo import DEMO_DATASET, OnDevHost
from functions.devhost import DevHost
from shared.ledger import RunRecord, RunState
from shared.settings import Settings
from shared.storage import BlobRef
from tests.isolation import isolated_settings
from tests.polling import wait_until

__all__ = ["Loop", "running_loop"]


@dataclass
class Loop(OnDevHost):
    settings: Settings
    host: DevHost
    line: str
    first: RunRecord | None = None
    runs: dict[str, RunRecord] = field(default_factory=dict)

    def drop(self, name: str, data: bytes) -> None:
        ref = BlobRef(self.settings.incoming_container, f"{self.line}/{name}.jsonl")
        self.clients.storage.write_bytes(ref, data)

    def run_of(self, name: str) -> RunRecord | None:
        """The non-duplicate run of the dataset dropped as ``name``, once the ledger has it."""
        for rec in self.clients.ledger.list(line=self.line):
            if rec.get("name") == name and rec.state != RunState.DUPLICATE:
                return rec
        return None

    def wait_promoted(self, name: str, timeout: float = 900) -> RunRecord:
        def promoted() -> RunRecord | None:
            rec = self.run_of(name)
            if rec is not None and rec.state in (RunState.HELD, RunState.FAILED,
                                                 RunState.REJECTED):
                pytest.fail(f"run of {name} ended {rec.state.value}: {rec.reason}")
            return rec if rec is not None and rec.state == RunState.PROMOTED else None

        return wait_until(promoted, timeout=timeout, what=f"{name} promoted")

    def scoring(self, rec: RunRecord) -> tuple[str, str]:
        endpoint = str(rec.get("endpoint"))
        info = self.platform.get_endpoint(endpoint)
        return str(info.scoring_uri), self.platform.endpoint_key(endpoint)


@contextlib.contextmanager
def running_loop(azurite: str, home: Path, line: str, **changes: Any) -> Iterator[Loop]:
    """A devhost on fresh containers and ``home``; the demo dataset dropped on ``line`` and
    promoted. ``changes`` sets other settings. On exit the devhost stops and no child process
    of the home may be left."""
    settings = isolated_settings(
        azurite,
        home,
        # Two epochs keep CI short; the loss still falls well (see test_loop).
        line_overrides={line: {"num_train_epochs": 2}},
        idle_after=timedelta(seconds=3),
        sweep_max_deletions=1,
        **changes,
    )
    # The sweeper is fired by the tests; its timer never comes due on its own.
    host = DevHost(settings, poll_every=0.2, reconcile_every=1.0, sweep_every=10**9, threads=1)
    loop = Loop(settings, host, line)
    try:
        host.start_background()
        loop.drop("first", DEMO_DATASET.read_bytes())
        loop.first = loop.wait_promoted("first")
        yield loop
    finally:
        host.stop()
    leftovers = [p for p in Path("/proc").glob("[0-9]*") if _child_of_home(p, settings.home)]
    assert leftovers == [], "a child process outlived devhost.stop()"


def _child_of_home(proc: Path, home: Path) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(Path(home).resolve()) in cmdline and "shared.platform.local" in cmdline
