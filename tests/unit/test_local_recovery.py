"""Attempt numbers of run ids, as the retry of a lost job reads them."""

from __future__ import annotations

import pytest

from shared.finetune import retry_plan
from shared.recovery import attempt_of
from tests.plans import placeholder_plan


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        ("tl-support-0123456789ab-89abcdef", ("tl-support-0123456789ab-89abcdef", 1)),
        ("tl-support-0123456789ab-89abcdef-r2", ("tl-support-0123456789ab-89abcdef", 2)),
        ("tl-support-0123456789ab-89abcdef-r12", ("tl-support-0123456789ab-89abcdef", 12)),
        ("tl-r2-0123456789ab-89abcdef", ("tl-r2-0123456789ab-89abcdef", 1)),
    ],
)
def test_attempt_of_reads_the_suffix_retry_plan_writes(
    run_id: str, expected: tuple[str, int]
) -> None:
    """``<run>-r<n>`` is attempt n of ``<run>``; a run id without the suffix is attempt 1."""
    assert attempt_of(run_id) == expected


def test_attempt_of_inverts_retry_plan() -> None:
    """For every attempt, retry_plan's run id reads back as (the first run id, the attempt)."""
    plan = placeholder_plan("tl-chat-000000000000-00000003")
    for n in range(1, 6):
        assert attempt_of(retry_plan(plan, n).run_id) == (plan.run_id, n)
