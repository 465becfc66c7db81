"""Component and model specs on disk: the azureml-assets YAML shapes, read and checked.

``load_component_spec`` gives a component's interface, ``load_model_spec`` a registry model's
facts (its metadata parsed by :mod:`shared.platform.metadata` on construction), each from its
``spec.yaml``; ``bundled_component`` / ``bundled_base_model`` are the copies shipped in
``shared/data`` (chat_completion_pipeline 0.0.82 and Phi-4 v8, tuneloop's default base model)
that offline planning and the local platform use. ``shared/data`` also keeps
Phi-3-mini-4k-instruct v15 (:data:`RETIRED_MODEL_SPEC`), the documented example of a model the
planner refuses: archived, fine-tuning retired on 2025-08-30. A spec that does not fit its
shape is a PlanError naming the file and the field, never a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared.errors import PlanError
from shared.platform.port import BaseModelInfo, ComponentInput, ComponentInterface

__all__ = [
    "BUNDLED_COMPONENT_SPEC",
    "BUNDLED_MODEL_SPEC",
    "DEFAULT_BASE_MODEL",
    "RETIRED_MODEL_SPEC",
    "bundled_base_model",
    "bundled_component",
    "bundled_model_spec",
    "component_from_dict",
    "load_component_spec",
    "load_model_spec",
]

_DATA = Path(__file__).resolve().parent / "data"
BUNDLED_COMPONENT_SPEC = _DATA / "chat_completion_pipeline.yaml"
BUNDLED_MODEL_SPEC = _DATA / "phi-4.yaml"
# The default base model (TUNELOOP_BASE_MODEL's default): the model of BUNDLED_MODEL_SPEC.
DEFAULT_BASE_MODEL = "Phi-4"
# Phi-3-mini-4k-instruct v15: archived, fine-tuning retired 2025-08-30; planning it is refused.
RETIRED_MODEL_SPEC = _DATA / "phi-3-mini-4k-instruct.yaml"

# Top-level keys that make a YAML a component spec (azure-ai-ml component schemas), and the
# component types; a model spec has none of them.
_COMPONENT_KEYS = frozenset({"inputs", "outputs", "jobs", "command", "environment"})
_COMPONENT_TYPES = frozenset({"command", "pipeline", "parallel", "spark", "sweep", "flow"})
_SPEC_HINT = (
    "pass a component spec (azureml-assets spec.yaml) as --component-spec and a model spec "
    "as --model-spec"
)


def _read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    # Lazy: shared.finetune imports this module and the ingest trigger imports shared.finetune,
    # so a top-level import would load PyYAML at every cold start of the Functions app.
    import yaml

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PlanError([f"cannot read {what} {path}: {exc.strerror or exc}"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(
            [f"{what} {path} is not a text file (byte {exc.start} is not UTF-8)"], hint=_SPEC_HINT
        ) from None
    if "\x00" in text:
        raise PlanError([f"{what} {path} is not a text file (it holds NUL bytes)"], hint=_SPEC_HINT)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanError([f"{what} {path} is not valid YAML: {_one_line(exc)}"]) from exc
    if not isinstance(data, dict):
        raise PlanError(
            [f"{what} {path} is not a YAML mapping but {type(data).__name__}"], hint=_SPEC_HINT
        )
    return data


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _number(value: Any, where: str, problems: list[str]) -> float | None:
    """A spec's ``min``/``max`` (a number, or numeric text: the SDK schema allows both)."""
    if value is None:
        return None
    if not isinstance(value, bool):
        try:
            n = float(value)
        except (TypeError, ValueError):
            pass
        else:
            if math.isfinite(n):
                return n
    problems.append(f"{where} = {value!r} is not a number")
    return None


def component_from_dict(
    data: Mapping[str, Any], *, id: str | None = None, source: str = "component spec"
) -> ComponentInterface:
    """A component interface from a spec mapping (the azureml-assets YAML shape).

    Raises PlanError naming ``source`` and each field that does not fit the shape: ``inputs``
    not a mapping, an input without a ``type`` (azure-ai-ml's ParameterSchema/InputPortSchema
    declare ``type`` required), ``min``/``max`` not numbers, ``enum`` not a list.
    """
    raw_inputs = data.get("inputs") or {}
    if not isinstance(raw_inputs, Mapping):
        raise PlanError(
            [f"{source}: inputs is a {type(raw_inputs).__name__}, not a mapping of input names "
             "to their specs"],
            hint=_SPEC_HINT,
        )
    problems: list[str] = []
    inputs: dict[str, ComponentInput] = {}
    for name, spec in raw_inputs.items():
        where = f"{source}: inputs.{name}"
        if not isinstance(spec, Mapping):
            problems.append(f"{where} is a {type(spec).__name__}, not a mapping with a type")
            continue
        kind = spec.get("type")
        if not isinstance(kind, str) or not kind.strip():
            problems.append(f"{where} has no type (string, integer, number, boolean, uri_file ...)")
            continue
        enum = spec.get("enum")
        if enum is not None and not isinstance(enum, list):
            problems.append(f"{where}.enum is a {type(enum).__name__}, not a list")
            enum = None
        description = spec.get("description")
        inputs[str(name)] = ComponentInput(
            name=str(name),
            type=kind.strip(),
            optional=bool(spec.get("optional", False)),
            default=spec.get("default"),
            enum=tuple(_enum_text(e) for e in enum) if enum is not None else None,
            description=str(description) if description is not None else None,
            min_value=_number(spec.get("min"), f"{where}.min", problems),
            max_value=_number(spec.get("max"), f"{where}.max", problems),
        )
    if problems:
        raise PlanError(problems, hint="fix the component spec and plan again")
    outputs = data.get("outputs") or {}
    return ComponentInterface(
        name=str(data.get("name", "")),
        version=str(data.get("version", "")),
        inputs=MappingProxyType(inputs),
        id=id,
        outputs=tuple(str(o) for o in outputs) if isinstance(outputs, Mapping) else (),
    )


def _enum_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_component_spec(path: str | Path) -> ComponentInterface:
    """The interface of a component from its YAML spec (the azureml-assets ``spec.yaml`` format)."""
    data = _read_yaml(path, "component spec")
    if not data.get("name") or not data.get("inputs"):
        looks_like = " (it looks like a model spec)" if "system_metadata" in data else ""
        raise PlanError(
            [f"component spec {path} has no name or no inputs{looks_like}"], hint=_SPEC_HINT
        )
    return component_from_dict(data, source=f"component spec {path}")


def load_model_spec(path: str | Path, *, registry: str = "azureml") -> BaseModelInfo:
    """A registry model's facts from its YAML spec (the azureml-assets model ``spec.yaml``).

    Tag values that are not strings (the spec may hold ``model_specific_defaults`` as a
    mapping) are stored as JSON text, the way registry tags are strings. ``isArchived`` (a
    top-level key of the azureml-assets spec) becomes ``BaseModelInfo.archived``.
    """
    data = _read_yaml(path, "model spec")
    kind = data.get("type")
    component_keys = sorted(_COMPONENT_KEYS & set(data))
    if component_keys or (isinstance(kind, str) and kind.lower() in _COMPONENT_TYPES):
        found = f"type: {kind}" if kind else ", ".join(component_keys)
        raise PlanError(
            [f"model spec {path} is a component spec ({found}), not a model spec"],
            hint=_SPEC_HINT,
        )
    name, version = data.get("name"), data.get("version")
    if not name or version is None:
        raise PlanError([f"model spec {path} has no name or no version"])
    problems: list[str] = []
    for key in ("tags", "properties", "system_metadata"):
        if data.get(key) is not None and not isinstance(data[key], Mapping):
            shape = type(data[key]).__name__
            problems.append(f"model spec {path}: {key} is a {shape}, not a mapping")
    if problems:
        raise PlanError(problems, hint=_SPEC_HINT)
    tags = {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in (data.get("tags") or {}).items()
    }
    properties = {str(k): str(v) for k, v in (data.get("properties") or {}).items()}
    return BaseModelInfo(
        id=f"azureml://registries/{registry}/models/{name}/versions/{version}",
        name=str(name),
        version=str(version),
        tags=MappingProxyType(tags),
        properties=MappingProxyType(properties),
        system_metadata=MappingProxyType(dict(data.get("system_metadata") or {})),
        archived=_archived(data.get("isArchived")),
    )


def _archived(raw: Any) -> bool:
    if isinstance(raw, str):
        return raw.strip().lower() == "true"
    return raw is True


@lru_cache(maxsize=1)
def bundled_component() -> ComponentInterface:
    """``chat_completion_pipeline`` 0.0.82 as bundled in ``shared/data`` (offline, local)."""
    spec = load_component_spec(BUNDLED_COMPONENT_SPEC)
    return ComponentInterface(
        name=spec.name,
        version=spec.version,
        inputs=spec.inputs,
        id=f"azureml://registries/azureml/components/{spec.name}/versions/{spec.version}",
        outputs=spec.outputs,
    )


def bundled_model_spec(name: str) -> Path:
    """The bundled spec of registry model ``name`` (any case) for the offline ``tuneloop plan``.

    Phi-4 (the default) and Phi-3-mini-4k-instruct (kept to show the refusal); any other model
    is a PlanError asking for ``--model-spec`` (planning another model against Phi-4's facts
    would print a plan for the wrong model).
    """
    specs = {
        DEFAULT_BASE_MODEL.lower(): BUNDLED_MODEL_SPEC,
        "phi-3-mini-4k-instruct": RETIRED_MODEL_SPEC,
    }
    found = specs.get(name.strip().lower())
    if found is None:
        raise PlanError(
            [f"no bundled spec for base model {name} (TUNELOOP_BASE_MODEL): tuneloop ships "
             f"{DEFAULT_BASE_MODEL} and Phi-3-mini-4k-instruct"],
            hint="pass --model-spec with the model's spec.yaml (azureml-assets), or unset "
            f"TUNELOOP_BASE_MODEL to plan {DEFAULT_BASE_MODEL}",
        )
    return found


@lru_cache(maxsize=1)
def bundled_base_model() -> BaseModelInfo:
    """Phi-4's registry facts (v8) as shipped in ``shared/data``: the default base model."""
    return load_model_spec(BUNDLED_MODEL_SPEC)
