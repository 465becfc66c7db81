"""Fixtures the release tests share: a FakePlatform wired into the Azurite clients."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared.clients import Clients
from shared.release import ReleaseContext
from tests.fakes.platform import FakePlatform


@pytest.fixture
def fake(clients: Clients) -> FakePlatform:
    """A FakePlatform the clients hand out (modules may define their own ``fake``)."""
    platform = FakePlatform()
    clients.use_platform(platform)
    return platform


@pytest.fixture
def ctx(clients: Clients, fake: FakePlatform) -> ReleaseContext:
    """A release context on Azurite and the fake platform."""
    return ReleaseContext.from_clients(clients)


def with_settings(ctx: ReleaseContext, **changes: Any) -> ReleaseContext:
    """The same context with some settings changed."""
    return dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=changes))
