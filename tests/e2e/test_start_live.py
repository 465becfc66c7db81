"""Start from live through the whole local loop (issue 11 §2), all real: with
TUNELOOP_LINE_START=live the line's second version is planned from the live version, trains
on from its weights and goes live in turn.

The second drop holds the first drop's examples in another order, so the cumulative corpus's
train file is the first run's again (every example a cross-drop duplicate) and both jobs' first
step sees the same batch: its loss is the starting model's loss on that batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.commands.demo import DEMO_DATASET, variant
from shared.naming import START_MODEL_TAG
from tests.e2e.conftest import Loop, running_loop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LINE = "startlive"


@pytest.fixture(scope="module")
def loop(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """A devhost whose line continues from its live version; the first drop promoted.

    Promotion ``auto``: this module is about where training starts, not about the exam."""
    with running_loop(azurite, tmp_path_factory.mktemp("e2e-start") / "home", LINE,
                      line_start="live", promotion="auto") as started:
        yield started


def test_the_second_version_trains_on_from_the_live_one(loop: Loop) -> None:
    """v2's job names v1 as its start model, starts at a lower loss than v1's job did from
    the base model on the same first batch, and is promoted."""
    first = loop.first
    assert first is not None
    live = first.release
    assert live.model_id
    loop.drop("second", variant(DEMO_DATASET.read_bytes(), 1))
    second = loop.wait_promoted("second")

    job1 = loop.platform.get_job(first.run_id)
    job2 = loop.platform.get_job(second.run_id)
    assert START_MODEL_TAG not in job1.tags
    assert job2.tags[START_MODEL_TAG] == live.model_id
    base_first = job1.metrics["first_train_loss"]
    live_first = job2.metrics["first_train_loss"]
    print(f"first-step loss: from base {base_first:.4f}, from live v1 {live_first:.4f}")
    assert live_first < base_first
    assert second.release.model_version != live.model_version
