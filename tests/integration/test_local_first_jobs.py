"""Two first jobs on a fresh home, for real: both train, neither trips over MLflow's schema.

The jobs are as small as the tiny model allows (a dozen examples, one epoch), so this is
about starting two trainers at once, not about learning.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from shared.clients import Clients
from shared.finetune import Planner
from shared.platform.local import LocalPlatform
from shared.platform.port import FinetunePlan, JobInfo
from shared.storage import BlobRef
from tests.isolation import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rows(n: int, word: str) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"Say {word} {i}."},
                      {"role": "assistant", "content": f"{word} {i}"}]}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _wait_terminal(platform: LocalPlatform, name: str, timeout: float = 600) -> JobInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = platform.get_job(name)
        if job.terminal:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {name} did not end within {timeout:.0f}s")


def test_two_first_jobs_on_a_fresh_home_both_complete(azurite: str, tmp_path: Path) -> None:
    """Two jobs submitted at once on a home with no MLflow store yet both complete (the
    tracking store is created once, not by both trainers at the same moment)."""
    settings = isolated_settings(
        azurite,
        tmp_path / "home",
        line_overrides={"a": {"num_train_epochs": 1}, "b": {"num_train_epochs": 1}},
    )
    clients = Clients(settings)
    clients.storage.ensure_containers(settings.prepared_container)
    platform = LocalPlatform.from_settings(settings, storage=clients.storage)
    plans: list[FinetunePlan] = []
    for line in ("a", "b"):
        train, validation = _rows(12, line), _rows(2, line)
        sha = hashlib.sha256(train + validation).hexdigest()
        plan = Planner(settings, platform).plan(line=line, dataset_sha256=sha)
        clients.storage.write_bytes(BlobRef(plan.data_container, plan.train_blob), train)
        clients.storage.write_bytes(BlobRef(plan.data_container, plan.validation_blob), validation)
        plans.append(plan)
    assert not (settings.home / "mlflow.db").exists()
    try:
        for plan in plans:
            platform.submit_finetune(plan)
        jobs = [_wait_terminal(platform, plan.run_id) for plan in plans]
    finally:
        platform.close()
    assert [(j.name, j.status, j.error) for j in jobs] == [
        (p.run_id, "Completed", None) for p in plans
    ]
