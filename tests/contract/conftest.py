"""``platform_under_test``: each implementation of the platform port in turn, behind its driver."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from shared.errors import NotFoundError
from tests.contract.drivers import AzureMLDriver, Driver, FakeDriver, LocalDriver


@pytest.fixture(
    scope="module",
    params=[
        "fake",
        "azureml",
        pytest.param("local", marks=[pytest.mark.slow, pytest.mark.integration]),
    ],
)
def platform_under_test(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """Each implementation in turn, wrapped in its driver (the local one trains once per
    module): the test fake, the Azure ML adapter, the local platform."""
    driver: Driver
    if request.param == "fake":
        driver = FakeDriver()
    elif request.param == "azureml":
        driver = AzureMLDriver()
    else:
        azurite: str = request.getfixturevalue("azurite")
        factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        driver = LocalDriver(azurite, factory.mktemp("contract-local"))
    try:
        yield driver
    finally:
        with contextlib.suppress(NotFoundError):
            driver.close()
