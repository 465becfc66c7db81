"""Reading infra/ for the tests: every .bicep through pycep-parser (the app's dev extra)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    pycep = pytest.importorskip(
        "pycep", reason="pycep-parser is not installed: pip install -e '.[dev]'"
    )
    parsed: dict[str, Any] = pycep.BicepParser().parse(file_path=path)
    return parsed


def accessor(value: Any) -> list[str]:
    """``a.b.c`` as pycep nests it, flattened to ["a", "b", "c"] ([] if not an accessor)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        operands = value["operator"]["operands"]
        return accessor(operands["operand_1"]) + accessor(operands["operand_2"])
    return []


def resource_config(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's body, also for a conditional one (``= if (...) {...}``)."""
    config: dict[str, Any] = resource["config"]
    if "condition" in config and "config" in config:
        inner: dict[str, Any] = config["config"]
        return inner
    return config
