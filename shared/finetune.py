"""Plan a fine-tune job from facts, before anything is spent.

``plan_finetune`` is pure: settings, the base model's metadata, the component's interface and
the compute target in; a :class:`~shared.platform.port.FinetunePlan` out, or a
:class:`~shared.errors.PlanError` listing every problem, one line each. Parameters merge as
tuneloop defaults < the model's ``model_specific_defaults`` < per-line overrides < command-line
overrides, then each value is coerced to the type its component input declares.
:class:`Planner` gathers the facts from a :class:`~shared.platform.port.Platform`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

from shared.errors import NotFoundError, PlanError
from shared.naming import (
    BASE_MODEL_TAG,
    DATASET_TAG,
    FINGERPRINT_TAG,
    LINE_TAG,
    RUN_TAG,
    START_MODEL_TAG,
    experiment_name,
    is_valid_line,
)
from shared.naming import run_id as make_run_id
from shared.platform.metadata import CHAT_COMPLETION, has_passed, size_refusal
from shared.platform.port import (
    ASSET_TYPES,
    SERVERLESS,
    BaseModelInfo,
    ComponentInput,
    ComponentInterface,
    ComputeInfo,
    FinetunePlan,
    ModelVersionInfo,
    Platform,
)
from shared.settings import Settings
from shared.specs import (  # re-exported: callers plan with the specs
    BUNDLED_COMPONENT_SPEC,
    BUNDLED_MODEL_SPEC,
    DEFAULT_BASE_MODEL,
    RETIRED_MODEL_SPEC,
    bundled_base_model,
    bundled_component,
    component_from_dict,
    load_component_spec,
    load_model_spec,
)

__all__ = [
    "ASSET_TYPES",
    "BUNDLED_COMPONENT_SPEC",
    "BUNDLED_MODEL_SPEC",
    "COMPUTE_INPUTS",
    "DEFAULT_BASE_MODEL",
    "OWNED_INPUTS",
    "RETIRED_MODEL_SPEC",
    "SANITY_BOUNDS",
    "SERVERLESS",
    "TUNELOOP_DEFAULTS",
    "UNSUPPORTED_FINETUNE_SIZES",
    "Bound",
    "Planner",
    "bundled_base_model",
    "bundled_component",
    "coerce_value",
    "component_from_dict",
    "display_name",
    "finetune_allow_list",
    "load_component_spec",
    "load_model_spec",
    "model_refusals",
    "model_specific_defaults",
    "plan_finetune",
    "retry_plan",
    "size_refusal",
    "utc_today",
]

log = logging.getLogger(__name__)

# The Azure ML fine-tuning notebook's defaults (training + optimisation parameters).
TUNELOOP_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "num_train_epochs": 3,
        "per_device_train_batch_size": 1,
        "per_device_eval_batch_size": 1,
        "learning_rate": 5e-6,
        "lr_scheduler_type": "cosine",
        "apply_lora": "true",
        "apply_deepspeed": "true",
        "deepspeed_stage": 2,  # the notebook's int; coerced to the component's string enum "2"
    }
)

# The notebook's sizes that cannot fine-tune (compared case-insensitively).
UNSUPPORTED_FINETUNE_SIZES = frozenset(
    {"standard_nc6", "standard_nc12", "standard_nc24", "standard_nc24r"}
)

COMPUTE_INPUTS = (
    "compute_model_import",
    "compute_preprocess",
    "compute_finetune",
    "compute_model_evaluation",
)
# Inputs tuneloop sets from the run and the settings; overrides of them are refused.
OWNED_INPUTS = frozenset(
    {
        "train_file_path",
        "validation_file_path",
        "mlflow_model_path",
        "instance_type_finetune",
        *COMPUTE_INPUTS,
    }
)
GPU_INPUT = "number_of_gpu_to_use_finetuning"


@dataclass(frozen=True)
class Bound:
    """A sanity range for a numeric input: past it a plan is a typo, not a choice."""

    low: float | None
    high: float | None
    why: str
    low_open: bool = False  # the value must be strictly above ``low``
    unset: float | None = None  # the component's "not set" value (-1), always allowed


# tuneloop's own bounds, applied on each side where the component declares none (a ``min`` or
# ``max`` in the component spec wins). Not the trainer's hard limits: the values beyond which
# a fine-tune of a chat model is certainly a mistake and would waste GPU hours.
SANITY_BOUNDS: Mapping[str, Bound] = MappingProxyType(
    {
        "learning_rate": Bound(
            0, 0.1, "a rate of 0 or less does not learn; above 0.1 AdamW diverges (the "
            "notebook fine-tunes Phi-3 at 5e-6, the local tiny model at 5e-3)", low_open=True
        ),
        "num_train_epochs": Bound(
            1, 100, "a fine-tune over-fits long before 100 passes over its data (the notebook "
            "uses 1-3, the demo's tiny model 20)"
        ),
        "max_steps": Bound(1, 1_000_000, "a step count; -1 = train by epochs", unset=-1),
        "max_seq_length": Bound(
            1, 131_072, "a token count no chat model in the catalog exceeds (128k); -1 = the "
            "model's own maximum", unset=-1
        ),
        "lora_r": Bound(
            1, 1024, "the LoRA rank is at least 1 and far below the model's hidden size "
            "(Phi-3-mini: 3072); common ranks are 4-64"
        ),
        "lora_alpha": Bound(1, 4096, "the LoRA scale is positive; common values are 8-128"),
        "lora_dropout": Bound(0, 0.9, "a dropout probability; near 1 the adapter learns nothing"),
        GPU_INPUT: Bound(1, 8, "no Azure GPU VM size has more than 8 GPUs per node (ND96*)"),
        "num_nodes_finetune": Bound(
            1, 16, "more than 16 nodes for one chat-model fine-tune is a typo (the notebook "
            "uses 1)"
        ),
        "per_device_train_batch_size": Bound(1, 1024, "a batch of examples per GPU"),
        "per_device_eval_batch_size": Bound(1, 1024, "a batch of examples per GPU"),
        "gradient_accumulation_steps": Bound(1, 1024, "a count of batches per update"),
        "warmup_steps": Bound(0, None, "a step count"),
        "weight_decay": Bound(0, 1, "AdamW's decay rate; at 1 or more it erases the weights"),
    }
)
_BAD_COMPUTE_STATES = frozenset({"failed", "canceled", "deleting"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --- model metadata (parsed once into BaseModelInfo.metadata) ----------------------------


def _metadata_fact(model: BaseModelInfo, fact: str) -> None:
    """Raise PlanError when the model's metadata for ``fact`` could not be read."""
    problem = model.metadata.problems.get(fact)
    if problem:
        raise PlanError([f"{model.name} {problem}"])


def model_specific_defaults(model: BaseModelInfo) -> dict[str, Any]:
    """The model's ``model_specific_defaults``; {} if none; PlanError if unreadable."""
    _metadata_fact(model, "model_specific_defaults")
    return dict(model.metadata.model_specific_defaults)


def finetune_allow_list(model: BaseModelInfo) -> list[str] | None:
    """The VM sizes the model allows for fine-tuning; None if it does not say.

    The tag ``finetune_compute_allow_list`` if set, else ``supportedComputes.finetuneComputes``,
    else ``SKU.finetuneRecommendedSkus`` (see :mod:`shared.platform.metadata`).
    """
    _metadata_fact(model, "finetune_skus")
    skus = model.metadata.finetune_skus
    return list(skus) if skus is not None else None


def utc_today() -> date:
    """Today's date in UTC: the planner's clock unless a caller (a test) passes ``today``."""
    return datetime.now(UTC).date()


_DEFAULT_HINT = (
    f"use {DEFAULT_BASE_MODEL}, tuneloop's default base model (unset TUNELOOP_BASE_MODEL, or "
    "pass --model-spec with a model that is fine-tunable for chat-completion)"
)


def model_refusals(model: BaseModelInfo, today: date) -> list[str]:
    """Why ``model`` cannot be fine-tuned for chat completion on ``today`` (empty: it can).

    Refused: a fine-tune retirement date that has passed (``deprecation.finetuneRetirementDate``,
    2025-08-30 for every Phi-3/Phi-3.5), an archived model (``isArchived``), and a model whose
    ``tasks`` section does not list ``chat-completion`` in ``fineTuningTasks`` (an
    inference-only model lists only ``inferenceTasks``). A model whose metadata has no
    ``tasks`` section at all states nothing: the plan warns (:func:`_deprecation_warnings`).
    """
    meta = model.metadata
    where = f"{model.name} {model.version}"
    out: list[str] = []
    if has_passed(meta.finetune_retirement, today):
        assert meta.finetune_retirement is not None
        out.append(
            f"{where}: fine-tuning was retired on {_day(meta.finetune_retirement)} (model "
            "metadata deprecation.finetuneRetirementDate); Azure ML no longer fine-tunes it"
        )
    if model.archived:
        out.append(f"{where} is archived in its registry (isArchived): not offered any more")
    states_tasks = "tasks" in model.system_metadata or bool(meta.finetune_tasks)
    if states_tasks and CHAT_COMPLETION not in {t.strip().lower() for t in meta.finetune_tasks}:
        listed = ", ".join(meta.finetune_tasks) or "no fine-tuning task"
        problem = meta.problems.get("finetune_tasks")
        why = f" ({problem})" if problem else ""
        out.append(
            f"{where} is not fine-tunable for {CHAT_COMPLETION}: its system metadata "
            f"tasks.fineTuningTasks lists {listed}{why}"
        )
    return out


def _day(when: datetime) -> str:
    return (when.astimezone(UTC) if when.tzinfo is not None else when).date().isoformat()


def _deprecation_warnings(model: BaseModelInfo) -> list[str]:
    """The model's deprecation/retirement dates (a passed fine-tune retirement never gets this
    far: :func:`model_refusals`), and whether it is a preview model."""
    meta = model.metadata
    out = []
    for when, what in (
        (meta.finetune_deprecation, "fine-tuning deprecated"),
        (meta.finetune_retirement, "fine-tuning retired"),
        (meta.inference_retirement, "inference retired"),
    ):
        if when is not None:
            out.append(f"{model.name} {model.version}: {what} from {_day(when)} (metadata)")
    if "tasks" not in model.system_metadata and not meta.finetune_tasks:
        out.append(
            f"{model.name} {model.version}: its metadata lists no tasks, so whether it is "
            f"fine-tunable for {CHAT_COMPLETION} is not known"
        )
    if meta.preview:
        out.append(f"{model.name} {model.version} is a preview model in its registry (metadata)")
    return out


# --- coercion ----------------------------------------------------------------------------


def _bounds(spec: ComponentInput, n: float) -> None:
    if spec.min_value is not None and n < spec.min_value:
        raise ValueError(f"is below the minimum {_fmt(spec.min_value)} the component declares")
    if spec.max_value is not None and n > spec.max_value:
        raise ValueError(f"is above the maximum {_fmt(spec.max_value)} the component declares")


def _sanity_problem(spec: ComponentInput, value: float, bound: Bound) -> str | None:
    """Why ``value`` is beyond tuneloop's bound on a side the component leaves open, or None."""
    if bound.unset is not None and value == bound.unset:
        return None
    if spec.min_value is None and bound.low is not None:
        if bound.low_open and value <= bound.low:
            return f"is not above {_fmt(bound.low)}, tuneloop's sanity minimum: {bound.why}"
        if value < bound.low:
            return f"is below {_fmt(bound.low)}, tuneloop's sanity minimum: {bound.why}"
    if spec.max_value is None and bound.high is not None and value > bound.high:
        return f"is above {_fmt(bound.high)}, tuneloop's sanity maximum: {bound.why}"
    return None


def _check_sanity(
    parameters: Mapping[str, Any],
    sources: Mapping[str, str],
    component: ComponentInterface,
    base_model: BaseModelInfo,
    problems: list[str],
) -> None:
    """Numeric inputs within tuneloop's bounds and ``max_seq_length`` within the model's context."""
    for key, value in parameters.items():
        spec = component.inputs.get(key)
        if spec is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        where = f"input {key} = {_fmt(value)} ({sources.get(key, 'tuneloop')})"
        bound = SANITY_BOUNDS.get(key)
        problem = _sanity_problem(spec, value, bound) if bound is not None else None
        if problem:
            problems.append(f"{where} {problem}")
            continue
        window = base_model.metadata.context_window
        if key == "max_seq_length" and window is not None and value > window:
            problems.append(
                f"{where} is above {base_model.name}'s context window of {window} tokens "
                "(model metadata textContextWindow)"
            )


def _fmt(n: float) -> str:
    return str(int(n)) if float(n).is_integer() and abs(n) < 1e15 else repr(n)


def coerce_value(spec: ComponentInput, value: Any) -> Any:
    """``value`` as the type ``spec`` declares; ValueError says why it cannot be."""
    kind = spec.type.lower()
    if kind == "string":
        return _coerce_string(spec, value)
    if kind == "integer":
        return _coerce_integer(spec, value)
    if kind == "number":
        return _coerce_number(spec, value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
            return value.strip().lower() == "true"
        raise ValueError("is not a boolean (true or false)")
    if kind in ASSET_TYPES:
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise ValueError(f"is not a path or URI for a {kind} input")
    return value


def _coerce_string(spec: ComponentInput, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Mapping | list) and spec.enum is None:
        text = json.dumps(value, sort_keys=True)
    else:
        raise ValueError(f"is a {type(value).__name__}, not a string")
    if spec.enum is None or text in spec.enum:
        return text
    folded = [e for e in spec.enum if e.lower() == text.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError(f"is not one of the allowed values: {', '.join(spec.enum)}")


def _coerce_integer(spec: ComponentInput, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("is a boolean, not an integer")
    if isinstance(value, int):
        n = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value)
    ):
        n = int(value)
    else:
        raise ValueError("is not an integer")
    _bounds(spec, n)
    return n


def _coerce_number(spec: ComponentInput, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a number")
    if isinstance(value, int | float):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            raise ValueError("is not a number") from None
    else:
        raise ValueError("is not a number")
    if not math.isfinite(x):
        raise ValueError("is not a finite number")
    _bounds(spec, x)
    return x


# --- the plan ----------------------------------------------------------------------------


def _layers(
    settings: Settings,
    line: str,
    base_model: BaseModelInfo,
    cli_overrides: Mapping[str, Any] | None,
) -> list[tuple[str, Mapping[str, Any], bool]]:
    """(source, values, written by the user) from lowest to highest precedence."""
    return [
        ("tuneloop defaults", TUNELOOP_DEFAULTS, False),
        (f"{base_model.name} model_specific_defaults", model_specific_defaults(base_model), False),
        (f"TUNELOOP_LINE_OVERRIDES[{line}]", settings.line_overrides.get(line, {}), True),
        ("command line", cli_overrides or {}, True),
    ]


def _suggest(key: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _merge(
    layers: list[tuple[str, Mapping[str, Any], bool]],
    component: ComponentInterface,
    problems: list[str],
    warnings: list[str],
) -> dict[str, tuple[Any, str, bool]]:
    merged: dict[str, tuple[Any, str, bool]] = {}
    where = f"{component.name} {component.version}"
    for source, values, by_user in layers:
        for key, value in values.items():
            if key not in component.inputs:
                if by_user:
                    problems.append(
                        f"{key} ({source}) is not an input of {where}"
                        f"{_suggest(key, component.inputs)}"
                    )
                else:
                    warnings.append(
                        f"dropped {key}={value!r} from {source}: not an input of {where}"
                    )
                continue
            if key in OWNED_INPUTS:
                message = (
                    f"{key} ({source}) is set by tuneloop from the run and the compute settings"
                )
                if by_user:
                    problems.append(message)
                else:
                    warnings.append(f"ignored {message}")
                continue
            merged[key] = (value, source, by_user)
    return merged


def _compute_inputs(
    settings: Settings,
    base_model: BaseModelInfo,
    compute: ComputeInfo | None,
    problems: list[str],
    warnings: list[str],
    today: date,
) -> tuple[dict[str, Any], str | None, str | None, int | None]:
    """(compute inputs, cluster name or None, instance type, GPUs per node)."""
    if compute is None:
        if settings.compute:
            warnings.append(
                f"compute {settings.compute} was not looked up: size and GPUs not checked"
            )
            return dict.fromkeys(COMPUTE_INPUTS, settings.compute), settings.compute, None, None
        if not settings.finetune_instance_type:
            problems.append(
                "no compute: set TUNELOOP_COMPUTE (a GPU cluster) or "
                "TUNELOOP_FINETUNE_INSTANCE_TYPE (serverless), or pass --compute-size"
            )
            return {}, None, None, None
        compute = ComputeInfo(SERVERLESS, settings.finetune_instance_type, "Succeeded")
    name, size = compute.name, compute.size
    if compute.provisioning_state.lower() in _BAD_COMPUTE_STATES:
        problems.append(
            f"compute {name} is {compute.provisioning_state}: repair or recreate it, then retry"
        )
    if size is not None:
        retired = size_refusal(size, today, use="fine-tuning")
        if retired:
            problems.append(f"compute {name}: {retired}")
        if size.lower() in UNSUPPORTED_FINETUNE_SIZES:
            problems.append(
                f"compute {name} size {size} cannot fine-tune (unsupported sizes: "
                f"{', '.join(sorted(UNSUPPORTED_FINETUNE_SIZES))})"
            )
        allowed = finetune_allow_list(base_model)
        if allowed is not None and size.lower() not in {a.lower() for a in allowed}:
            problems.append(
                f"compute {name} size {size} is not in {base_model.name}'s fine-tune allow-list: "
                f"{', '.join(allowed)}"
            )
    if compute.gpus_per_node is not None and compute.gpus_per_node < 1:
        problems.append(f"compute {name} size {size} has no GPUs; fine-tuning needs a GPU size")
    if name == SERVERLESS:
        inputs: dict[str, Any] = dict.fromkeys(COMPUTE_INPUTS, SERVERLESS)
        if size:
            inputs["instance_type_finetune"] = size
        return inputs, None, size, compute.gpus_per_node
    return dict.fromkeys(COMPUTE_INPUTS, name), name, size, compute.gpus_per_node


def _fingerprint(
    component: ComponentInterface,
    base_model: BaseModelInfo,
    parameters: Mapping[str, Any],
    start_model: ModelVersionInfo | None = None,
    corpus: Iterable[str] = (),
) -> str:
    """What makes two plans the same job: component, base model, every parameter, the
    start model (absent when training starts from the base model, so such plans keep the
    fingerprint, and the run id, they had before start models existed) and the corpus: the
    sorted sha256s of the drops the run trains on (issue 11), absent when it is the one drop
    the run id already names (``dataset_sha256``), so a line's first run keeps its id too."""
    doc: dict[str, Any] = {
        "component": [component.name, component.version],
        "base_model": base_model.id,
        "parameters": dict(sorted(parameters.items())),
    }
    if start_model is not None:
        doc["start_model"] = start_model.id
    if corpus:
        doc["corpus"] = sorted(set(corpus))
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def display_name(base_model: BaseModelInfo, line: str, parameters: Mapping[str, Any]) -> str:
    """The notebook's scheme: model-line-bs…-scheduler-ds…-lora…-save_limit…-seqlen…."""
    p = parameters
    batch = (
        int(p.get("per_device_train_batch_size", 1))
        * int(p.get("gradient_accumulation_steps", 1))
        * int(p.get(GPU_INPUT, 1))
        * int(p.get("num_nodes_finetune", 1))
    )
    ds = f"ds{p.get('deepspeed_stage', '2')}" if p.get("apply_deepspeed") == "true" else "nods"
    lora = "lora" if p.get("apply_lora") == "true" else "nolora"
    # -1 (or unset) is the component's "no limit" / "the model's maximum": said in words, since
    # "seqlen-1" reads as a typo
    save = int(p.get("save_total_limit", -1))
    seqlen = int(p.get("max_seq_length", -1))
    return (
        f"{base_model.name}-{line}-bs{batch}-{p.get('lr_scheduler_type', 'linear')}-{ds}-{lora}"
        f"-{f'save_limit{save}' if save > 0 else 'save_all'}"
        f"-{f'seqlen{seqlen}' if seqlen > 0 else 'seqlen_model_max'}"
    )


def plan_finetune(
    settings: Settings,
    *,
    line: str,
    dataset_sha256: str,
    base_model: BaseModelInfo,
    component: ComponentInterface,
    data_container: str,
    compute: ComputeInfo | None = None,
    cli_overrides: Mapping[str, Any] | None = None,
    gpus_per_node: int | None = None,
    today: date | None = None,
    start_model: ModelVersionInfo | None = None,
    corpus: Iterable[str] = (),
) -> FinetunePlan:
    """The plan for fine-tuning ``base_model`` on one prepared dataset of ``line``.

    Raises PlanError with one line per problem (a retired, archived or not chat-fine-tunable
    model, unknown or owned input, value outside an enum or of the wrong type, compute not
    allowed, retired or not usable). ``today`` is the clock (default: :func:`utc_today`);
    ``gpus_per_node`` (``--gpus-per-node``, else ``TUNELOOP_GPUS_PER_NODE``) stands in when the
    compute's GPU count is unknown (the VM size list was not readable). ``start_model`` (a
    registered version of the line, e.g. the live one) is where training starts instead of
    ``base_model``; the fingerprint covers it. ``corpus``: the sha256s of the drops the run
    trains on (shared.corpus; empty = the one dataset); the fingerprint covers it.
    """
    today = today if today is not None else utc_today()
    problems: list[str] = []
    warnings: list[str] = []
    refusals = model_refusals(base_model, today)
    if refusals:
        raise PlanError(refusals, hint=_DEFAULT_HINT)
    if compute is None and not settings.compute and settings.finetune_instance_type:
        compute = ComputeInfo(SERVERLESS, settings.finetune_instance_type, "Succeeded")
    fallback = gpus_per_node if gpus_per_node is not None else settings.gpus_per_node
    gpus_source = None
    if compute is not None and compute.gpus_per_node is None and fallback is not None:
        compute = replace(compute, gpus_per_node=fallback)
        gpus_source = (
            "--gpus-per-node" if gpus_per_node is not None else "TUNELOOP_GPUS_PER_NODE"
        )
    if not is_valid_line(line):
        problems.append(f"line {line!r} is not a valid line name (1–63 of A-Z a-z 0-9 . _ -)")
    if not _SHA256.match(dataset_sha256):
        problems.append(f"dataset sha256 {dataset_sha256!r} is not 64 lower-case hex digits")
    merged = _merge(
        _layers(settings, line, base_model, cli_overrides), component, problems, warnings
    )
    compute_params, cluster, instance_type, gpus = _compute_inputs(
        settings, base_model, compute, problems, warnings, today
    )
    parameters: dict[str, Any] = {}
    for key, (value, source, _) in merged.items():
        try:
            parameters[key] = coerce_value(component.inputs[key], value)
        except ValueError as exc:
            problems.append(f"input {key} = {value!r} ({source}) {exc}")
    _set_gpus(parameters, merged, component, compute, gpus, problems, warnings)
    parameters.update({k: v for k, v in compute_params.items() if k in component.inputs})
    sources = {key: source for key, (_, source, _) in merged.items()}
    if compute is not None and GPU_INPUT not in sources:
        sources[GPU_INPUT] = gpus_source or f"the GPUs per node of {compute.size or compute.name}"
    _check_sanity(parameters, sources, component, base_model, problems)
    for spec in component.inputs.values():
        missing = spec.name not in parameters and spec.name not in OWNED_INPUTS
        if missing and not spec.optional and spec.default is None:
            problems.append(f"input {spec.name} is required by {component.name} and has no value")
    if start_model is not None and parameters.get("merge_lora_weights") == "false":
        problems.append(
            f"input merge_lora_weights = 'false' ({sources.get('merge_lora_weights')}) cannot "
            f"be used when training starts from {start_model.name}:{start_model.version}: each "
            "version must be saved as a whole model for the next one to start from"
        )
    if problems:
        raise PlanError(problems, hint="fix the overrides, the compute or the specs and plan again")
    warnings += _deprecation_warnings(base_model)
    drops = sorted(set(corpus))
    fingerprint = _fingerprint(
        component, base_model, parameters, start_model,
        corpus=() if drops == [dataset_sha256] else drops,
    )
    rid = make_run_id(line, dataset_sha256, fingerprint)
    plan = FinetunePlan(
        run_id=rid,
        line=line,
        dataset_sha256=dataset_sha256,
        fingerprint=fingerprint,
        base_model=base_model,
        component_name=component.name,
        component_version=component.version,
        parameters=MappingProxyType(dict(sorted(parameters.items()))),
        data_container=data_container,
        train_blob=f"{rid}/train.jsonl",
        validation_blob=f"{rid}/validation.jsonl",
        experiment_name=experiment_name(line),
        display_name=display_name(base_model, line, parameters),
        compute=cluster,
        instance_type=instance_type,
        tags=MappingProxyType(
            {
                RUN_TAG: rid,
                LINE_TAG: line,
                DATASET_TAG: dataset_sha256,
                BASE_MODEL_TAG: base_model.id,
                FINGERPRINT_TAG: fingerprint,
                # the job says where it started (Azure ML and local jobs carry plan tags)
                **({START_MODEL_TAG: start_model.id} if start_model is not None else {}),
            }
        ),
        warnings=tuple(warnings),
        start_model=start_model,
    )
    log.info(
        "planned run=%s line=%s model=%s compute=%s",
        rid,
        line,
        base_model.id,
        cluster or instance_type,
    )
    return plan


def _set_gpus(
    parameters: dict[str, Any],
    merged: Mapping[str, tuple[Any, str, bool]],
    component: ComponentInterface,
    compute: ComputeInfo | None,
    gpus: int | None,
    problems: list[str],
    warnings: list[str],
) -> None:
    if GPU_INPUT not in component.inputs or gpus is None or gpus < 1:
        if compute is not None and compute.size is not None and gpus is None:
            warnings.append(
                f"GPUs per node of {compute.size} unknown; {GPU_INPUT} not set from it (pass "
                "--gpus-per-node or set TUNELOOP_GPUS_PER_NODE)"
            )
        return
    chosen = merged.get(GPU_INPUT)
    if chosen is not None and chosen[2] and isinstance(parameters.get(GPU_INPUT), int):
        if parameters[GPU_INPUT] > gpus:
            problems.append(
                f"input {GPU_INPUT} = {parameters[GPU_INPUT]} ({chosen[1]}) exceeds the "
                f"{gpus} GPUs per node of {compute.size if compute else 'the compute'}"
            )
        return
    parameters[GPU_INPUT] = gpus


def retry_plan(plan: FinetunePlan, attempt: int) -> FinetunePlan:
    """The same plan under the run id of a later attempt (``<run>-r<attempt>``).

    A job name can be used once: after a run FAILED (a GPU node died, the job was canceled),
    training the same dataset with the same plan again needs a new job name. Attempt 1 is the
    plan itself; the suffix keeps later attempts deterministic, so duplicates still collapse.
    """
    if attempt <= 1:
        return plan
    rid = f"{plan.run_id}-r{attempt}"
    return replace(
        plan,
        run_id=rid,
        train_blob=f"{rid}/train.jsonl",
        validation_blob=f"{rid}/validation.jsonl",
        tags=MappingProxyType({**plan.tags, RUN_TAG: rid}),
    )


class Planner:
    """Plans a run from what a Platform reports: base model, component and compute."""

    def __init__(
        self,
        settings: Settings,
        platform: Platform,
        *,
        today: Callable[[], date] = utc_today,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.today = today

    def plan(
        self,
        *,
        line: str,
        dataset_sha256: str,
        cli_overrides: Mapping[str, Any] | None = None,
        base_model: BaseModelInfo | None = None,
        component: ComponentInterface | None = None,
        compute: ComputeInfo | None = None,
        gpus_per_node: int | None = None,
        start_model: ModelVersionInfo | None = None,
        corpus: Iterable[str] = (),
    ) -> FinetunePlan:
        """Look up the facts not given (a missing compute becomes PlanError) and plan;
        ``start_model`` (None = the base model) is where training starts, ``corpus`` the
        sha256s of the drops it trains on (ingest passes both; the fingerprint covers them)."""
        s = self.settings
        if base_model is None:
            base_model = self.platform.get_base_model(
                s.base_model, s.base_model_version or "latest"
            )
        if component is None:
            component = self.platform.get_component(
                s.component_name, s.component_version or "latest"
            )
        if compute is None:
            compute = self._compute()
        return plan_finetune(
            s,
            line=line,
            dataset_sha256=dataset_sha256,
            base_model=base_model,
            component=component,
            data_container=s.prepared_container,
            compute=compute,
            cli_overrides=cli_overrides,
            gpus_per_node=gpus_per_node,
            today=self.today(),
            start_model=start_model,
            corpus=corpus,
        )

    def _compute(self) -> ComputeInfo:
        target = self.settings.compute or SERVERLESS
        try:
            return self.platform.get_compute(target)
        except NotFoundError as exc:
            raise PlanError(
                [f"compute {target} not found: {exc.message}"],
                hint="create the cluster or fix TUNELOOP_COMPUTE",
            ) from exc
