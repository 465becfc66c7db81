"""`tuneloop plan DATASET --line L` — plan a fine-tune job offline and print it as submitted.

No credentials, no network: the component and the base model come from local specs (the
bundled copies unless ``--component-spec`` / ``--model-spec``), the compute from
``--compute-size``/``--gpus-per-node`` or the settings. Exit 0 with the plan and the job in
the SDK's dict form; exit 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.errors import PlanError, TuneloopError

__all__ = [
    "add_arguments",
    "dataset_sha256",
    "parse_overrides",
    "plan_document",
    "print_plan",
    "quiet_sdk",
    "report_error",
    "run",
]

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
    parser.add_argument("--gpus-per-node", type=int, help="GPUs per node of --compute-size")
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
    width = max(len(k) for k in head)
    for key, value in head.items():
        print(f"{key:<{width}}  {value}")
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


def report_error(exc: TuneloopError) -> int:
    problems = exc.problems if isinstance(exc, PlanError) else [exc.message]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from shared.finetune import (
        BUNDLED_COMPONENT_SPEC,
        SERVERLESS,
        bundled_base_model,
        load_component_spec,
        load_model_spec,
        plan_finetune,
    )
    from shared.platform.port import ComputeInfo
    from shared.settings import load_settings

    quiet_sdk()
    try:
        settings = load_settings()
        if args.gpus_per_node is not None and not args.compute_size:
            raise PlanError(["--gpus-per-node needs --compute-size"])
        spec_path = args.component_spec or BUNDLED_COMPONENT_SPEC
        component = load_component_spec(spec_path)
        base_model = load_model_spec(args.model_spec) if args.model_spec else bundled_base_model()
        compute = None
        if args.compute_size:
            compute = ComputeInfo(
                settings.compute or SERVERLESS, args.compute_size, "Succeeded", args.gpus_per_node
            )
        plan = plan_finetune(
            settings,
            line=args.line,
            dataset_sha256=dataset_sha256(args.dataset),
            base_model=base_model,
            component=component,
            data_container=settings.prepared_container,
            compute=compute,
            cli_overrides=parse_overrides(args.overrides),
        )
        from shared.platform.azureml._jobs import job_to_dict

        component_id = (
            f"azureml://registries/{settings.registry_name}/components/"
            f"{component.name}/versions/{component.version}"
        )
        job = job_to_dict(plan, spec_path, datastore=settings.datastore, component_id=component_id)
    except TuneloopError as exc:
        return report_error(exc)
    print_plan(plan_document(plan, job), as_json=args.json)
    return 0
