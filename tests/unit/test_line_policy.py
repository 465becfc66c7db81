"""The line settings of issue 11: TUNELOOP_LINE_DATA/START/MAX_TRAIN_EXAMPLES and the per-line
TUNELOOP_LINE_POLICY override, read into Settings.policy_for(line)."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import LinePolicy, Settings, load_settings


def test_the_defaults_are_cumulative_from_the_base_model_without_a_cap() -> None:
    """Unset, every line trains on its cumulative corpus from the base model, uncapped."""
    assert Settings().policy_for("support") == LinePolicy("cumulative", "base", None)


def test_a_line_entry_overrides_each_key_it_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TUNELOOP_LINE_POLICY entry wins for the keys it names; the rest keep the globals (a
    null cap lifts the global cap for that line)."""
    monkeypatch.setenv("TUNELOOP_LINE_DATA", "cumulative")
    monkeypatch.setenv("TUNELOOP_LINE_MAX_TRAIN_EXAMPLES", "1000")
    monkeypatch.setenv(
        "TUNELOOP_LINE_POLICY",
        '{"support": {"data": "latest", "start": "live"}, "faq": {"max_train_examples": null},'
        ' "ops": {"max_train_examples": 50}}',
    )
    s = Settings()
    assert s.policy_for("support") == LinePolicy("latest", "live", 1000)
    assert s.policy_for("faq") == LinePolicy("cumulative", "base", None)
    assert s.policy_for("ops") == LinePolicy("cumulative", "base", 50)
    assert s.policy_for("other") == LinePolicy("cumulative", "base", 1000)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TUNELOOP_LINE_POLICY", '{"support": {"datta": "latest"}}', "unknown key(s) datta"),
        ("TUNELOOP_LINE_POLICY", '{"support": {"data": "all"}}',
         "'support' has data='all'; allowed: cumulative or latest"),
        ("TUNELOOP_LINE_POLICY", '{"support": {"start": "top"}}', "allowed: base or live"),
        ("TUNELOOP_LINE_POLICY", '{"support": {"max_train_examples": 0}}', "at least 1"),
        ("TUNELOOP_LINE_POLICY", '{"support": "latest"}', "must be an object"),
        ("TUNELOOP_LINE_POLICY", "[1]", "must be a JSON object"),
        ("TUNELOOP_LINE_POLICY", "{oops", "not JSON"),
        ("TUNELOOP_LINE_POLICY", '{"support/eu": {"data": "latest"}}',
         "'support/eu' is not a valid line name"),
        ("TUNELOOP_LINE_DATA", "everything", "'cumulative' or 'latest'"),
        ("TUNELOOP_LINE_START", "scratch", "'base' or 'live'"),
        ("TUNELOOP_LINE_MAX_TRAIN_EXAMPLES", "0", "greater than or equal to 1"),
    ],
)
def test_an_invalid_line_setting_is_one_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    """A bad value is the one-line ConfigError: the variable, what is wrong, what to do."""
    monkeypatch.setenv(name, value)
    load_settings.cache_clear()
    try:
        with pytest.raises(ConfigError) as info:
            load_settings()
    finally:
        load_settings.cache_clear()
    message = str(info.value)
    assert name in message
    assert says in message
    assert "\n" not in message
    assert info.value.hint
    assert name in info.value.hint
