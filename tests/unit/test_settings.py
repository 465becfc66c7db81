"""Settings: TUNELOOP_ environment variables, durations, platform selection, the sample file."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from shared.settings import LOCAL_WORKSPACE_ID, Settings, parse_iso_duration

ROOT = Path(__file__).resolve().parents[2]


def test_environment_variables_use_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """TUNELOOP_* variables set the fields; empty values keep the defaults."""
    monkeypatch.setenv("TUNELOOP_MIN_EXAMPLES", "3")
    monkeypatch.setenv("TUNELOOP_IDLE_AFTER", "PT2H30M")
    monkeypatch.setenv("TUNELOOP_LINE_OVERRIDES", '{"support": {"num_train_epochs": 2}}')
    monkeypatch.setenv("TUNELOOP_COMPONENT_VERSION", "")
    s = Settings()
    assert s.min_examples == 3
    assert s.idle_after == timedelta(hours=2, minutes=30)
    assert s.line_overrides == {"support": {"num_train_epochs": 2}}
    assert s.component_version is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("PT24H", timedelta(hours=24)), ("P1DT6H", timedelta(days=1, hours=6)),
     ("PT90S", timedelta(seconds=90)), ("pt5m", timedelta(minutes=5))],
)
def test_iso_durations(text: str, expected: timedelta) -> None:
    """ISO-8601 durations of days, hours, minutes and seconds parse exactly."""
    assert parse_iso_duration(text) == expected


@pytest.mark.parametrize("text", ["24h", "P", "PT", "P1Y", ""])
def test_bad_durations_are_refused(text: str) -> None:
    """Anything but an ISO-8601 day/time duration is a clear error."""
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_iso_duration(text)


def test_platform_auto_selects_by_workspace() -> None:
    """auto means Azure ML when a workspace is configured, else the local platform."""
    assert Settings().platform_kind == "local"
    assert Settings().workspace_arm_id == LOCAL_WORKSPACE_ID
    s = Settings(subscription_id="sub", resource_group="rg", workspace_name="ws")
    assert s.platform_kind == "azureml"
    assert s.workspace_arm_id.endswith("/workspaces/ws")


def test_sample_settings_file_lists_every_setting() -> None:
    """local.settings.sample.json has a value and a description for every setting."""
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())
    for name in Settings.model_fields:
        key = f"TUNELOOP_{name.upper()}"
        assert key in sample["Values"], key
        assert sample["Descriptions"][key], key
