"""`tuneloop demo` reads the run's typed release fields (no platform call for a missing name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.commands.demo import Demo, DemoError
from functions.devhost import DevHost
from shared.ledger import ReleaseRecord, RunRecord, RunState
from shared.platform.local import LocalPlatform
from shared.settings import Settings


def _demo(tmp_path: Path) -> Demo:
    settings = Settings(platform="local", home=tmp_path / "home")
    host = DevHost(settings, platform=LocalPlatform(settings))
    return Demo(host=host, line="demo", timeout=60.0)


def test_a_promoted_run_without_a_recorded_endpoint_is_a_demo_error(tmp_path: Path) -> None:
    """A run whose row lacks its endpoint ends the demo with one line naming the run, instead
    of asking the platform for an endpoint called "None"."""
    rec = RunRecord("demo", "tl-demo-000000000001-aaaaaaaa", RunState.PROMOTED,
                    release=ReleaseRecord(deployment="v01", model_name="tuneloop-demo"))
    with pytest.raises(DemoError, match=r"tl-demo-000000000001-aaaaaaaa .*no endpoint"):
        _demo(tmp_path).endpoint_url(rec)
