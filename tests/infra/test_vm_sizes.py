"""The VM sizes infra/ allows are in the default base model's allow-lists and not retired."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from shared.platform import metadata
from tests.infra.bicep import INFRA, ROOT, parse

PHI4 = ROOT.parent / "shared" / "reference" / "azureml" / "assets" / "models" / "system" / "Phi-4"


def allowed(param: str) -> tuple[list[str], str]:
    """A main.bicep parameter's @allowed values and its default."""
    spec = parse(INFRA / "main.bicep")["parameters"][param]
    values = next(d["argument"] for d in spec["decorators"] if d["type"] == "allowed")
    return list(values), str(spec["default"])


def phi4_sku() -> dict[str, Any]:
    if not (PHI4 / "spec.yaml").exists():
        pytest.skip(f"no reference spec at {PHI4} (the reference folder is not in this checkout)")
    spec = yaml.safe_load((PHI4 / "spec.yaml").read_text())
    sku: dict[str, Any] = spec["system_metadata"]["SKU"]
    return sku


@pytest.mark.parametrize(
    ("param", "allow_list"),
    [("gpuVmSize", "finetuneRecommendedSkus"), ("inferenceVmSize", "inferenceRecommendedSkus")],
)
def test_allowed_sizes_come_from_the_model_allow_list(param: str, allow_list: str) -> None:
    """@allowed equals Phi-4's allow-list; the default is in it; no size is retired."""
    values, default = allowed(param)
    assert sorted(values) == sorted(phi4_sku()[allow_list])
    assert default in values
    retired = getattr(metadata, "RETIRED_VM_SIZES", {})
    assert not [v for v in values if v.lower() in retired]
