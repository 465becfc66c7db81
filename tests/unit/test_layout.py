"""The shape of the tree: two entry points (functions/, cli/) over one core (shared/)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = ("functions", "cli", "function_app", "azure.functions", "azurefunctions")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _is_entry_point(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in ENTRY_POINTS)


def test_entry_point_check_sees_an_entry_point_import(tmp_path: Path) -> None:
    """The import scan recognises a lazy import of an entry point inside a function."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from functions.devhost import DevHost\n", encoding="utf-8")
    assert any(_is_entry_point(m) for m in _imports(source))


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "shared").rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_core_never_imports_an_entry_point(path: Path) -> None:
    """No module of shared/ imports functions/, cli/ or azure.functions, even lazily."""
    offending = [m for m in _imports(path) if _is_entry_point(m)]
    assert offending == []


def test_importing_the_app_stays_light() -> None:
    """`import function_app` loads no ML SDK, torch, transformers, MLflow, matplotlib or
    OpenTelemetry/Azure Monitor (cold starts; shared.telemetry imports them on first use)."""
    heavy = ["azure.ai.ml", "torch", "transformers", "mlflow", "peft", "matplotlib",
             "opentelemetry", "azure.monitor.opentelemetry"]
    code = (
        "import json, sys; import function_app; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
