"""`tuneloop plan DATASET --line L` — plan a fine-tune job offline and print it as submitted.

No credentials, no network: the component and the base model come from local specs (the
bundled copies unless ``--component-spec`` / ``--model-spec``; the bundled model is the one
``TUNELOOP_BASE_MODEL`` names, Phi-4 by default), the compute from
``--compute-size``/``--gpus-per-node`` or the settings. The dataset is validated first: the
plan is only for valid data. Exit 0 with the plan and the job in the SDK's dict form; exit 1
when the dataset is not valid; exit 2 (a PlanError, reported by ``cli.main``) with one line per
problem of the flags, the specs or the parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import PlanError

if TYPE_CHECKING:
    from shared.dataset import ValidationReport
    from shared.platform.port import BaseModelInfo, ComponentInterface, ComputeInfo
    from shared.settings import Settings

__all__ = [
    "PlanInputs",
    "add_arguments",
    "dataset_sha256",
    "parse_overrides",
    "plan_document",
    "plan_inputs",
    "print_plan",
    "quiet_sdk",
    "report_invalid_dataset",
    "run",
    "validate_dataset",
]

# The dataset problems printed before the summary line (the report has them all).
_SHOWN_ISSUES = 5
SERVERLESS_TEXT = "serverless (no cluster)"

_CHUNK = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="the JSONL chat dataset (hashed, streamed)")
    parser.add_argument("--line", required=True, help="the line (model family) to plan for")
    parser.add_argument(
        "--component-spec", type=Path, help="component YAML spec (default: bundled)"
    )
    parser.add_argument("--model-spec", type=Path, help="base model YAML spec (default: bundled)")
    parser.add_argument(
        "--compute-size", help="VM size of the fine-tune compute, e.g. Standard_NC24ads_A100_v4"
    )
    parser.add_argument(
        "--gpus-per-node",
        type=int,
        help="GPUs per node of --compute-size, or of the configured compute when its VM size "
        "list cannot be read (default: TUNELOOP_GPUS_PER_NODE)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a component input (repeatable); beats per-line and model defaults",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``key=value`` pairs; values stay text and are coerced to the input's declared type."""
    out: dict[str, str] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r} is not KEY=VALUE")
            continue
        out[key.strip()] = value
    if problems:
        raise PlanError(problems)
    return out


def dataset_sha256(path: Path) -> str:
    """The dataset's sha256, read in 1 MiB chunks (memory does not grow with size)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise PlanError([f"cannot read dataset {path}: {exc.strerror or exc}"]) from exc
    return digest.hexdigest()


def quiet_sdk() -> None:
    # The SDK logs a WARNING per experimental class it touches; not news for a CLI user.
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)


def plan_document(plan: Any, job: Mapping[str, Any] | None) -> dict[str, Any]:
    """The plan (and the job, if built) as plain JSON-able data."""
    return {
        "run_id": plan.run_id,
        "line": plan.line,
        "dataset_sha256": plan.dataset_sha256,
        "fingerprint": plan.fingerprint,
        "base_model": plan.base_model.id,
        # where training starts: the base model, or the line's version it continues from
        "start_model": plan.start_model.id if plan.start_model else plan.base_model.id,
        "component": f"{plan.component_name}:{plan.component_version}",
        "compute": plan.compute,
        "instance_type": plan.instance_type,
        "experiment_name": plan.experiment_name,
        "display_name": plan.display_name,
        "data_container": plan.data_container,
        "train_blob": plan.train_blob,
        "validation_blob": plan.validation_blob,
        "parameters": dict(plan.parameters),
        "tags": dict(plan.tags),
        "warnings": list(plan.warnings),
        "job": job,
    }


def print_plan(doc: Mapping[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=False, default=str))
        return
    import yaml

    head = {k: v for k, v in doc.items() if k not in {"parameters", "tags", "warnings", "job"}}
    if "compute" in head and head["compute"] is None and head.get("instance_type"):
        head["compute"] = SERVERLESS_TEXT  # no cluster: the plan runs on serverless compute
    width = max(len(k) for k in head)
    for key, value in head.items():
        print(f"{key:<{width}}  {'(not set)' if value is None else value}")
    print("parameters:")
    for key, value in doc["parameters"].items():
        print(f"  {key} = {value!r}")
    print("tags:")
    for key, value in doc["tags"].items():
        print(f"  {key} = {value}")
    for warning in doc["warnings"]:
        print(f"warning: {warning}")
    if doc.get("job") is not None:
        print("job (as submitted, the SDK's dict form):")
        print(yaml.safe_dump(doc["job"], sort_keys=False, default_flow_style=False), end="")


@dataclass(frozen=True)
class PlanInputs:
    """What the flags say, read and checked before the dataset is (cheap checks first).

    ``component``/``base_model``/``compute`` are None where no flag gives them: ``plan`` then
    uses the bundled specs and the settings, ``submit`` asks the workspace.
    """

    component: ComponentInterface | None
    component_spec: Path | None
    base_model: BaseModelInfo | None
    compute: ComputeInfo | None
    overrides: dict[str, str]
    gpus_per_node: int | None = None  # --gpus-per-node: stands in when the GPU count is unknown


def plan_inputs(args: argparse.Namespace, settings: Settings) -> PlanInputs:
    """The specs, the compute and the ``--set`` overrides the flags give (PlanError if odd)."""
    from shared.platform.port import SERVERLESS, ComputeInfo
    from shared.specs import load_component_spec, load_model_spec

    compute = None
    if args.compute_size:
        compute = ComputeInfo(
            settings.compute or SERVERLESS, args.compute_size, "Succeeded", args.gpus_per_node
        )
    return PlanInputs(
        component=load_component_spec(args.component_spec) if args.component_spec else None,
        component_spec=args.component_spec,
        base_model=load_model_spec(args.model_spec) if args.model_spec else None,
        compute=compute,
        overrides=parse_overrides(args.overrides),
        gpus_per_node=args.gpus_per_node,
    )


def validate_dataset(path: Path, settings: Settings) -> ValidationReport:
    """The validator's report on the local file (DatasetUnreadableError if it cannot be read)."""
    from shared.dataset import ValidationConfig, validate_path

    return validate_path(path, config=ValidationConfig.from_settings(settings))


def report_invalid_dataset(command: str, path: Path, report: ValidationReport) -> int:
    """One line per problem (the first few), then where to see them all; exit status 1."""
    issues = report.errors[:_SHOWN_ISSUES]
    for issue in issues:
        at = f":{issue.line}" if issue.line is not None else ""
        print(f"tuneloop {command}: {issue.code}: {path}{at}: {issue.message}", file=sys.stderr)
    total = report.error_total
    more = f" ({total - len(issues)} more problems)" if total > len(issues) else ""
    print(
        f"tuneloop {command}: dataset_invalid: {path}: the dataset is not valid{more}, so "
        f"nothing was planned (`tuneloop validate {path}` shows the whole report)",
        file=sys.stderr,
    )
    return 1


def run(args: argparse.Namespace) -> int:
    from shared.finetune import plan_finetune
    from shared.platform.azureml._jobs import job_to_dict
    from shared.settings import load_settings
    from shared.specs import (
        BUNDLED_COMPONENT_SPEC,
        BUNDLED_MODEL_SPEC,
        bundled_base_model,
        bundled_component,
        bundled_model_spec,
        load_model_spec,
    )

    quiet_sdk()
    settings = load_settings()
    inputs = plan_inputs(args, settings)
    report = validate_dataset(args.dataset, settings)
    if not report.valid:
        return report_invalid_dataset("plan", args.dataset, report)
    component = inputs.component or bundled_component()
    base_model = inputs.base_model
    if base_model is None:
        spec = bundled_model_spec(settings.base_model)
        base_model = bundled_base_model() if spec == BUNDLED_MODEL_SPEC else load_model_spec(spec)
    plan = plan_finetune(
        settings,
        line=args.line,
        dataset_sha256=report.dataset.sha256,
        base_model=base_model,
        component=component,
        data_container=settings.prepared_container,
        compute=inputs.compute,
        cli_overrides=inputs.overrides,
        gpus_per_node=inputs.gpus_per_node,
    )
    component_id = (
        f"azureml://registries/{settings.registry_name}/components/"
        f"{component.name}/versions/{component.version}"
    )
    spec_path = inputs.component_spec or BUNDLED_COMPONENT_SPEC
    job = job_to_dict(plan, spec_path, datastore=settings.datastore, component_id=component_id)
    print_plan(plan_document(plan, job), as_json=args.json)
    return 0
