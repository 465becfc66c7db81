"""A base model's metadata, parsed once: registry tags and system metadata into typed facts.

Azure ML keeps a model's facts in two places, in several shapes: older model cards carry
string tags holding Python or JSON literals (``finetune_compute_allow_list``,
``inference_compute_allow_list``, ``model_specific_defaults`` — the fine-tuning notebooks read
them with ``ast.literal_eval``); newer ones (Phi-3 v15) carry structured ``systemMetadata``
(``supportedComputes``, ``SKU``, ``tasks``, ``deprecation``, ``textContextWindow``); Phi-4 v8
has no ``deprecation`` section at all, keeps ``model_specific_defaults`` as a mapping in its
spec (a JSON string once in the registry) and marks itself ``preview: true``.
:func:`parse_model_metadata` is the one reader of both; :class:`ModelMetadata` is what every
caller uses (``BaseModelInfo.metadata``). It never raises: a fact it cannot read is ``None``
(or empty) and ``problems`` says why, keyed by the fact's field name, so each caller decides
whether that fact matters to it (the planner refuses to plan on an unreadable allow-list; the
release, which only needs the inference list, does not care about the defaults).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

__all__ = [
    "CHAT_COMPLETION",
    "RETIRED_VM_SIZES",
    "ModelMetadata",
    "RetiredSize",
    "has_passed",
    "parse_model_metadata",
    "retired_size",
    "size_refusal",
]

# The fine-tuning task tuneloop runs (system metadata tasks.fineTuningTasks).
CHAT_COMPLETION = "chat-completion"


@dataclass(frozen=True)
class RetiredSize:
    """A VM size Azure has retired: from ``retired`` on it cannot be allocated at all."""

    size: str
    retired: date
    source: str


_NCV3_SOURCE = (
    "learn.microsoft.com/azure/virtual-machines/ncv3-nc6s-nc12s-nc24s-retirement "
    "(MicrosoftDocs/azure-docs articles/virtual-machines/ncv3-nc6s-nc12s-nc24s-retirement.md: "
    "\"On September 30, 2025, Microsoft Azure will retire the Standard_NC6s_v3, "
    "Standard_NC12s_v3 and Standard_NC24s_v3 virtual machines\"; recommended successor: "
    "NC A100 v4)"
)
_NV_SOURCE = (
    "learn.microsoft.com/azure/virtual-machines/sizes/migration-guides/nv-series-retirement "
    "(\"we're retiring our NV-series Azure VM sizes on September 6, 2023\"; NV and NV_Promo)"
)
# Retired VM sizes, refused for fine-tuning and for inference even when a model's (stale)
# allow-list still names them: Phi-3's inference lists name Standard_NC6s_v3, which Azure
# retired on 2025-09-30. Keys are lower case (sizes compare case-insensitively). Only sizes
# whose retirement notice we could cite are listed; add one with its date and its source.
RETIRED_VM_SIZES: Mapping[str, RetiredSize] = MappingProxyType(
    {
        r.size.lower(): r
        for r in (
            *(
                RetiredSize(size, date(2025, 9, 30), _NCV3_SOURCE)
                for size in ("Standard_NC6s_v3", "Standard_NC12s_v3", "Standard_NC24s_v3")
            ),
            *(
                RetiredSize(size, date(2023, 9, 6), _NV_SOURCE)
                for size in (
                    "Standard_NV6", "Standard_NV12", "Standard_NV24",
                    "Standard_NV6_Promo", "Standard_NV12_Promo", "Standard_NV24_Promo",
                )
            ),
        )
    }
)


def retired_size(size: str, today: date) -> RetiredSize | None:
    """The retirement of ``size`` if it has taken effect by ``today`` (any case), else None."""
    found = RETIRED_VM_SIZES.get(size.strip().lower())
    return found if found is not None and today >= found.retired else None


def size_refusal(size: str, today: date, *, use: str) -> str | None:
    """Why VM ``size`` cannot be used for ``use`` (fine-tuning / inference), or None.

    A retired size (:data:`RETIRED_VM_SIZES`, with its date and
    source) is refused even when a model's allow-list still names it.
    """
    retired = retired_size(size, today)
    if retired is None:
        return None
    return (
        f"VM size {size} was retired by Azure on {retired.retired.isoformat()} and cannot be "
        f"allocated for {use} (source: {retired.source})"
    )


def has_passed(when: datetime | None, today: date) -> bool:
    """Whether a metadata date (a retirement) is ``today`` or earlier, compared as UTC dates."""
    if when is None:
        return False
    day = when.astimezone(UTC).date() if when.tzinfo is not None else when.date()
    return today >= day

# A name as a bare word (VM size, task), for the comma-separated form ("Standard_NC6s_v3, ...").
_SIZE = re.compile(r"^[A-Za-z0-9_.-]+$")
# The longest tag text we parse (registry tags are at most 256 chars; mappings in specs more).
_MAX_LITERAL = 64 * 1024


@dataclass(frozen=True)
class ModelMetadata:
    """The facts tuneloop uses from a base model's metadata; ``None`` = the model does not say."""

    finetune_skus: tuple[str, ...] | None = None  # VM sizes it may be fine-tuned on
    inference_skus: tuple[str, ...] | None = None  # VM sizes it may be served on
    finetune_tasks: tuple[str, ...] = ()  # e.g. ("chat-completion",)
    inference_tasks: tuple[str, ...] = ()
    finetune_deprecation: datetime | None = None
    finetune_retirement: datetime | None = None
    inference_deprecation: datetime | None = None
    inference_retirement: datetime | None = None
    context_window: int | None = None  # tokens (systemMetadata.textContextWindow)
    preview: bool = False  # systemMetadata.preview (Phi-4 v8: true)
    # plain dicts behind Mapping (read-only by type): asdict/deepcopy work on them
    model_specific_defaults: Mapping[str, Any] = field(default_factory=dict)
    # field name above -> what is wrong with its source (that field is then None or empty)
    problems: Mapping[str, str] = field(default_factory=dict)


# Allow-list sources, most specific first; the first that names any size wins. An explicit tag
# is the card's own allow-list; supportedComputes is what the service accepts; the SKU section
# is a recommendation, used only when nothing else is stated. (An empty list states nothing:
# it would forbid every size, which no card means.)
_SKU_SOURCES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "finetune_skus": (
        "finetune_compute_allow_list",
        (("supportedComputes", "finetuneComputes"), ("SKU", "finetuneRecommendedSkus")),
    ),
    "inference_skus": (
        "inference_compute_allow_list",
        (("supportedComputes", "inferenceComputes"), ("SKU", "inferenceRecommendedSkus")),
    ),
}
_DATES = {
    "finetune_deprecation": "finetuneDeprecationDate",
    "finetune_retirement": "finetuneRetirementDate",
    "inference_deprecation": "inferenceDeprecationDate",
    "inference_retirement": "inferenceRetirementDate",
}
_DEFAULTS_KEYS = ("model_specific_defaults", "modelSpecificDefaults")


def parse_model_metadata(
    tags: Mapping[str, Any], system_metadata: Mapping[str, Any]
) -> ModelMetadata:
    """Every fact tuneloop reads from a model's tags and system metadata; never raises."""
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, (tag, sections) in _SKU_SOURCES.items():
        values[name] = _skus(tags, system_metadata, tag, sections, name, problems)
    tasks = system_metadata.get("tasks")
    for name, key in (("finetune_tasks", "fineTuningTasks"), ("inference_tasks", "inferenceTasks")):
        raw = tasks.get(key) if isinstance(tasks, Mapping) else None
        values[name] = _words(raw, f"system metadata tasks.{key}", name, problems) or ()
    deprecation = system_metadata.get("deprecation")
    for name, key in _DATES.items():
        raw = deprecation.get(key) if isinstance(deprecation, Mapping) else None
        values[name] = _date(raw, f"system metadata deprecation.{key}", name, problems)
    values["context_window"] = _positive_int(
        system_metadata.get("textContextWindow"), "context_window", problems
    )
    values["model_specific_defaults"] = _defaults(tags, system_metadata, problems)
    values["preview"] = _flag(system_metadata.get("preview"))
    return ModelMetadata(**values, problems=problems)


def _parse_literal(text: str) -> Any:
    """A JSON or Python literal, never evaluated; ``OrderedDict(...)``/``dict(...)`` unwrapped."""
    if len(text) > _MAX_LITERAL:
        raise ValueError(f"longer than {_MAX_LITERAL} characters")
    try:
        return json.loads(text)
    except ValueError:
        pass
    tree = ast.parse(text.strip(), mode="eval").body
    if (
        isinstance(tree, ast.Call)
        and isinstance(tree.func, ast.Name)
        and tree.func.id.lower() in {"ordereddict", "dict"}
        and len(tree.args) == 1
        and not tree.keywords
    ):
        tree = tree.args[0]
    value = ast.literal_eval(tree)
    if isinstance(value, list | tuple) and all(
        isinstance(p, tuple | list) and len(p) == 2 for p in value
    ):
        return dict(value)
    return value


_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


def _defaults(
    tags: Mapping[str, Any], meta: Mapping[str, Any], problems: dict[str, str]
) -> dict[str, Any]:
    found = [(tags[k], f"tag {k}") for k in _DEFAULTS_KEYS if k in tags]
    found += [(meta[k], f"system metadata {k}") for k in _DEFAULTS_KEYS if k in meta]
    if not found:
        return {}
    raw, where = found[0]
    value = raw
    if isinstance(raw, str):
        try:
            value = _parse_literal(raw)
        except _LITERAL_ERRORS as exc:
            problems["model_specific_defaults"] = (
                f"{where} is not a JSON or Python literal mapping: {exc}"
            )
            return {}
    if not isinstance(value, Mapping):
        problems["model_specific_defaults"] = f"{where} is not a mapping but {type(value).__name__}"
        return {}
    return {str(k): v for k, v in value.items()}


def _skus(
    tags: Mapping[str, Any],
    meta: Mapping[str, Any],
    tag: str,
    sections: tuple[tuple[str, str], ...],
    name: str,
    problems: dict[str, str],
) -> tuple[str, ...] | None:
    sources: list[tuple[Any, str]] = []
    if tag in tags:
        sources.append((tags[tag], f"tag {tag}"))
    for group, key in sections:
        section = meta.get(group)
        if isinstance(section, Mapping) and key in section:
            sources.append((section[key], f"system metadata {group}.{key}"))
    for raw, where in sources:
        sizes = _words(raw, where, name, problems)
        if sizes is None:
            return None  # an unreadable list is never silently replaced by another source
        if sizes:
            seen: dict[str, str] = {}
            for size in sizes:
                seen.setdefault(size.lower(), size)
            return tuple(seen.values())
    return None


def _words(raw: Any, where: str, name: str, problems: dict[str, str]) -> tuple[str, ...] | None:
    """A list of names from a list, a list literal or comma-separated words; None if unreadable."""
    if raw is None:
        return ()
    value = raw
    if isinstance(raw, str):
        text = raw.strip()
        pieces = [p.strip() for p in text.split(",") if p.strip()]
        if pieces and all(_SIZE.match(p) for p in pieces):
            return tuple(pieces)
        try:
            value = _parse_literal(text) if text else []
        except _LITERAL_ERRORS as exc:
            problems[name] = f"{where} is not a list literal: {exc}"
            return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        problems[name] = f"{where} is not a list of names"
        return None
    return tuple(v.strip() for v in value if v.strip())


def _date(raw: Any, where: str, name: str, problems: dict[str, str]) -> datetime | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, datetime):
        return raw
    try:
        # Python 3.11 reads the registry's "2025-06-30T00:00:00.000000Z" form, Z included.
        return datetime.fromisoformat(str(raw).strip())
    except ValueError:
        problems[name] = f"{where} = {str(raw)[:40]!r} is not an ISO-8601 date"
        return None


def _flag(raw: Any) -> bool:
    """A boolean the registry may hold as a bool or as text ("true")."""
    if isinstance(raw, str):
        return raw.strip().lower() == "true"
    return raw is True


def _positive_int(raw: Any, name: str, problems: dict[str, str]) -> int | None:
    if raw is None:
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = 0
    if value < 1:
        problems[name] = f"system metadata textContextWindow = {str(raw)[:40]!r} is not a count"
        return None
    return value
