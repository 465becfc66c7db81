"""Start from live on the local platform, for real (issue 11 §2): a version trained from a
registered version starts where that version left off, and a run with no validation blob
trains without eval_loss.

Two tiny trainings: v1 from the base model on a small dataset, registered; v2 from v1 on the
same train file with no validation blob. Same seed and same file, so both jobs' first step
sees the same batch: its loss is the starting model's loss on that batch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from shared.clients import Clients
from shared.finetune import Planner
from shared.naming import LINE_TAG, RUN_TAG, START_MODEL_TAG
from shared.platform.local import LocalPlatform
from shared.platform.local.registry import hf_model_dir
from shared.platform.port import FinetunePlan, JobInfo
from shared.storage import BlobRef
from tests.isolation import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINE = "start"
# Small and quick: 24 short examples, two epochs of batches of 8 (6 optimizer steps).
RUN = {"num_train_epochs": 2, "max_seq_length": 64}


def _rows(n: int) -> bytes:
    colors = ["red", "green", "blue", "yellow"]
    rows = [
        {"messages": [{"role": "user", "content": f"Say {colors[i % 4]} {1 + i % 3} times."},
                      {"role": "assistant", "content": " ".join([colors[i % 4]] * (1 + i % 3))}]}
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


def test_a_version_trained_from_live_starts_from_its_weights(
    azurite: str, tmp_path: Path
) -> None:
    """v2 planned from registered v1 starts at a lower loss than the base model did on the
    same first batch, is saved whole (merged), reports v1 as its start model, and with no
    validation blob completes without eval_loss."""
    settings = isolated_settings(azurite, tmp_path / "home", line_overrides={LINE: RUN})
    clients = Clients(settings)
    clients.storage.ensure_containers(settings.prepared_container)
    platform = LocalPlatform.from_settings(settings, storage=clients.storage)
    train, validation = _rows(24), _rows(4)
    sha = hashlib.sha256(train + validation).hexdigest()
    planner = Planner(settings, platform)

    def upload(plan: FinetunePlan, *, with_validation: bool) -> None:
        clients.storage.write_bytes(BlobRef(plan.data_container, plan.train_blob), train)
        if with_validation:
            clients.storage.write_bytes(
                BlobRef(plan.data_container, plan.validation_blob), validation
            )

    try:
        v1_plan = planner.plan(line=LINE, dataset_sha256=sha)
        upload(v1_plan, with_validation=True)
        platform.submit_finetune(v1_plan)
        v1_job = _wait_terminal(platform, v1_plan.run_id)
        assert v1_job.status == "Completed", v1_job.error
        v1 = platform.register_model(
            "tl-start", "1", job_name=v1_job.name, tags={RUN_TAG: v1_job.name, LINE_TAG: LINE}
        )

        v2_plan = replace(planner.plan(line=LINE, dataset_sha256=sha, start_model=v1),
                          validation_blob="")
        assert v2_plan.run_id != v1_plan.run_id
        upload(v2_plan, with_validation=False)
        platform.submit_finetune(v2_plan)
        v2_job = _wait_terminal(platform, v2_plan.run_id)
    finally:
        platform.close()

    assert v2_job.status == "Completed", v2_job.error
    assert v2_job.tags[START_MODEL_TAG] == v1.id
    base_first, v2_first = v1_job.metrics["first_train_loss"], v2_job.metrics["first_train_loss"]
    print(f"first-step loss: from base {base_first:.4f}, from v1 {v2_first:.4f}; "
          f"v1 final train_loss {v1_job.metrics['train_loss']:.4f}")
    assert v2_first < base_first
    assert "eval_loss" in v1_job.metrics
    assert "eval_loss" not in v2_job.metrics
    spec = json.loads((platform.paths.job(v2_plan.run_id) / "job.json").read_text())
    assert Path(spec["start_model_dir"]) == hf_model_dir(platform._resolve_model(v1)[0])
    saved = platform.paths.job(v2_plan.run_id) / "output" / "model"
    assert (saved / "config.json").exists()
    assert not (saved / "adapter_config.json").exists()  # whole weights, as deployments load
