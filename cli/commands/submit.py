"""`tuneloop submit DATASET --line L` — validate, plan, upload the split and submit once.

The same arguments as ``tuneloop plan``; the facts the specs/flags do not give come from the
Azure ML workspace and registry. The train/validation split goes to the prepared container
under the run id (skipped when both blobs exist), the job is submitted with the run id as its
name (an existing job is returned), and the run is recorded in the ledger as SUBMITTED so the
job events release it like an ingested run. Exit codes as ``tuneloop plan``: 1 when the dataset
is not valid, and errors raised here are reported by ``cli.main`` with their type's code.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from cli.commands.plan import (
    PlanInputs,
    plan_document,
    plan_inputs,
    print_plan,
    quiet_sdk,
    report_invalid_dataset,
    validate_dataset,
)
from cli.commands.plan import (
    add_arguments as add_plan_arguments,
)
from shared.errors import ConfigError, PlanError

if TYPE_CHECKING:
    from pathlib import Path

    from shared.clients import Clients
    from shared.dataset import ValidationReport
    from shared.platform.port import FinetunePlan, JobInfo

__all__ = ["add_arguments", "run", "submit"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from shared.clients import Clients
    from shared.settings import load_settings

    quiet_sdk()
    return submit(args, Clients(load_settings()))


def submit(args: argparse.Namespace, clients: Clients) -> int:
    """Validate, plan, upload and submit with the given clients (tests wire fakes here).

    Returns 1 when the dataset is not valid (nothing planned, uploaded or submitted); every
    other failure raises its TuneloopError for ``cli.main`` to report.
    """
    settings = clients.settings
    if not (settings.storage_connection_string or settings.storage_account_url):
        raise ConfigError(
            "tuneloop submit uploads the split to the prepared container, and no storage "
            "account is set",
            hint="set TUNELOOP_STORAGE_ACCOUNT_URL to the account the datastore points at",
        )
    inputs = plan_inputs(args, settings)
    report = validate_dataset(args.dataset, settings)
    if not report.valid:
        return report_invalid_dataset("submit", args.dataset, report)
    plan = _plan(args, clients, inputs, report.dataset.sha256)
    split = _upload_split(args.dataset, plan, clients)
    if _no_validation(split, plan, clients):  # the prompt split may leave validation empty
        from dataclasses import replace

        plan = replace(plan, validation_blob="")
    job = _submit_and_record(plan, clients, report, split)
    doc = plan_document(plan, None)
    doc["job"] = {"name": job.name, "status": job.status, "studio_url": job.studio_url}
    doc["split"] = split
    print_plan(doc, as_json=args.json)
    if not args.json:
        print(f"submitted: {job.name} ({job.status}) {job.studio_url or ''}".rstrip())
    return 0


def _plan(
    args: argparse.Namespace, clients: Clients, inputs: PlanInputs, sha256: str
) -> FinetunePlan:
    """The plan from the flags' facts, the rest looked up in the workspace and registry."""
    from shared.finetune import Planner

    return Planner(clients.settings, clients.platform).plan(
        line=args.line,
        dataset_sha256=sha256,
        cli_overrides=inputs.overrides,
        base_model=inputs.base_model,
        component=inputs.component,
        compute=inputs.compute,
        gpus_per_node=inputs.gpus_per_node,
    )


def _upload_split(path: Path, plan: FinetunePlan, clients: Clients) -> dict[str, Any]:
    """Split the local file into the run's two prepared blobs (streamed, staged blocks)."""
    from shared.dataset import split_to
    from shared.storage import BlobRef

    settings, storage = clients.settings, clients.storage
    train_ref = BlobRef(plan.data_container, plan.train_blob)
    validation_ref = BlobRef(plan.data_container, plan.validation_blob)
    if storage.exists(train_ref) and storage.exists(validation_ref):
        return {
            "train_blob": str(train_ref),
            "validation_blob": str(validation_ref),
            "uploaded": False,
        }
    storage.ensure_containers(plan.data_container)
    train, validation = storage.open_writer(train_ref), storage.open_writer(validation_ref)
    with path.open("rb") as f:
        counts = split_to(
            iter(lambda: f.read(1024 * 1024), b""),
            train.write,
            validation.write,
            validation_fraction=settings.validation_fraction,
            max_line_bytes=settings.max_line_bytes,
        )
    if counts.sha256 != plan.dataset_sha256:
        raise PlanError([f"{path} changed while it was submitted; submit it again"])
    return {
        "train_blob": str(train_ref),
        "validation_blob": str(validation_ref),
        "uploaded": True,
        "train_examples": counts.train,
        "validation_examples": counts.validation,
        "train_sha256": train.commit(content_type="application/jsonl"),
        "validation_sha256": validation.commit(content_type="application/jsonl"),
    }


def _no_validation(split: dict[str, Any], plan: FinetunePlan, clients: Clients) -> bool:
    """Whether the run's validation file is empty: then the job gets none (the validation
    input is optional; the adapters leave it out for ``validation_blob=""``)."""
    if "validation_examples" in split:
        return bool(split["validation_examples"] == 0)
    from shared.storage import BlobRef

    ref = BlobRef(plan.data_container, plan.validation_blob)
    return bool(clients.storage.properties(ref)["size"] == 0)


def _submit_and_record(
    plan: FinetunePlan, clients: Clients, report: ValidationReport, split: dict[str, Any]
) -> JobInfo:
    """Record the run (ACCEPTED), submit once, move it to SUBMITTED with the job name."""
    from shared.errors import AlreadyExistsError, LedgerConflictError
    from shared.ledger import RunState, can_move

    ledger = clients.ledger
    fields = {
        "source": "tuneloop submit",
        "dataset_sha256": plan.dataset_sha256,
        "dataset_bytes": report.dataset.bytes,
        "fingerprint": plan.fingerprint,
        "base_model": plan.base_model.id,
        "train_blob": split["train_blob"],
        "validation_blob": split["validation_blob"],
    }
    try:
        rec = ledger.create(
            plan.line, plan.run_id, RunState.ACCEPTED, note="tuneloop submit", **fields
        )
    except AlreadyExistsError:
        rec = ledger.get(plan.line, plan.run_id)
    job = clients.platform.submit_finetune(plan)
    for _ in range(3):
        if not can_move(rec.state, RunState.SUBMITTED):
            break
        try:
            rec = ledger.advance(rec, RunState.SUBMITTED, job_name=job.name)
            break
        except LedgerConflictError:
            rec = ledger.get(plan.line, plan.run_id)
    log.info("submitted run=%s line=%s state=%s", plan.run_id, plan.line, rec.state)
    return job
