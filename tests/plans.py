"""A fine-tune plan for tests that never train on it (run ids, job records, retries)."""

from __future__ import annotations

from shared.platform.port import BaseModelInfo, FinetunePlan

__all__ = ["placeholder_plan"]


def placeholder_plan(run_id: str) -> FinetunePlan:
    """A plan of line ``chat`` on the local tiny model, tagged with ``run_id``."""
    return FinetunePlan(
        run_id=run_id, line="chat", dataset_sha256="0" * 64,
        fingerprint="0" * 64, base_model=BaseModelInfo("local://tiny", "tiny", "1"),
        component_name="chat_completion_pipeline", component_version="0.0.82",
        parameters={}, data_container="prepared", train_blob="x/train.jsonl",
        validation_blob="x/validation.jsonl", experiment_name="tuneloop-chat",
        display_name="chat", tags={"tuneloop_run": run_id},
    )
