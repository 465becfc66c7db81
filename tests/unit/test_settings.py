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
    for name, field in Settings.model_fields.items():
        # A field read from another library's variable (AZURE_CLIENT_ID) names it as an alias.
        choices = getattr(field.validation_alias, "choices", [])
        key = next((c for c in choices if isinstance(c, str) and c.isupper()),
                   f"TUNELOOP_{name.upper()}")
        assert key in sample["Values"], key
        assert sample["Descriptions"][key], key


def test_load_settings_turns_an_invalid_setting_into_one_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An invalid value is a ConfigError naming the variable, the value, why and what to do."""
    from shared.errors import ConfigError
    from shared.settings import load_settings

    monkeypatch.setenv("TUNELOOP_PROMOTION", "yolo")
    load_settings.cache_clear()
    try:
        with pytest.raises(ConfigError) as excinfo:
            load_settings()
    finally:
        load_settings.cache_clear()
    assert excinfo.value.message == (
        "TUNELOOP_PROMOTION='yolo' is invalid: input should be 'exam', 'auto', 'manual' or 'gate'"
    )
    assert excinfo.value.hint == "fix TUNELOOP_PROMOTION or unset it to use the default 'exam'"


def test_line_overrides_json_errors_say_where(monkeypatch: pytest.MonkeyPatch) -> None:
    """Broken JSON says what the parser saw; a non-mapping entry names the line it is under."""
    from pydantic import ValidationError

    from shared.settings import settings_error

    monkeypatch.setenv("TUNELOOP_LINE_OVERRIDES", "{bad")
    with pytest.raises(ValidationError) as broken:
        Settings()
    assert "not JSON (Expecting property name" in settings_error(broken.value).message
    monkeypatch.setenv("TUNELOOP_LINE_OVERRIDES", '{"support": [1]}')
    with pytest.raises(ValidationError) as nested:
        Settings()
    assert settings_error(nested.value).message.startswith(
        "TUNELOOP_LINE_OVERRIDES is invalid at support: input should be a valid dictionary"
    )


def test_a_connection_string_is_never_echoed() -> None:
    """The storage connection string carries the account key: its value stays out of errors."""
    from pydantic import ValidationError

    from shared.settings import settings_error

    with pytest.raises(ValidationError) as excinfo:
        Settings(storage_connection_string=["AccountKey=s3cr3t"])  # type: ignore[arg-type]
    error = settings_error(excinfo.value)
    assert error.message.startswith("TUNELOOP_STORAGE_CONNECTION_STRING is invalid")
    assert "s3cr3t" not in str(error)


def test_optional_and_duration_settings_say_their_default() -> None:
    """The hint gives the default in the form the variable takes (PT24H), or says it is optional."""
    from pydantic import ValidationError

    from shared.settings import settings_error

    with pytest.raises(ValidationError) as duration:
        Settings(idle_after="3h")  # type: ignore[arg-type]
    assert settings_error(duration.value).hint == (
        "fix TUNELOOP_IDLE_AFTER or unset it to use the default PT24H"
    )
    with pytest.raises(ValidationError) as optional:
        Settings(compute=5)  # type: ignore[arg-type]
    assert settings_error(optional.value).hint == (
        "fix TUNELOOP_COMPUTE or unset it (it is optional)"
    )
