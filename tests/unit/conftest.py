"""Fixtures for the unit tests that run the `tuneloop` command in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No TUNELOOP_* from the caller's shell, a fresh home; settings read anew in the test."""
    for key in list(os.environ):
        if key.startswith("TUNELOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()
