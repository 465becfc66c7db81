"""The sweeper on the whole local loop: an idle endpoint is deleted and its live run retired.

Its own devhost and line: sweeping ends the line, so it cannot share one with other tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.ledger import RunState
from tests.e2e.conftest import Loop, running_loop
from tests.polling import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LINE = "idle"


@pytest.fixture(scope="module")
def loop(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    with running_loop(azurite, tmp_path_factory.mktemp("sweep") / "home", LINE) as started:
        yield started


def test_an_idle_endpoint_is_swept_and_the_live_run_retired(loop: Loop) -> None:
    """Once no request came for the idle window, the sweeper deletes the endpoint and retires
    the line's live run (the sweeper is fired until it decides so, within a bound: no sleep
    that races the window's edge)."""
    (live,) = loop.clients.ledger.list(line=LINE, states=[RunState.PROMOTED])
    endpoint = str(live.get("endpoint"))

    def swept() -> bool:
        loop.host.fire("sweep_idle_endpoints")
        return endpoint not in {e.name for e in loop.platform.list_endpoints()}

    window = loop.settings.idle_after.total_seconds()
    wait_until(swept, timeout=window + 120, every=1.0, what=f"{endpoint} swept")
    after = loop.clients.ledger.get(LINE, live.run_id)
    assert after.state == RunState.RETIRED
    assert "sweeper" in (after.reason or "")
