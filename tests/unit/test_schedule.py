"""NCRONTAB evaluation for the devhost's timers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.schedule import next_fire, parse_ncrontab

T0 = datetime(2026, 11, 27, 10, 7, 13, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 */30 * * * *", datetime(2026, 11, 27, 10, 30, 0, tzinfo=UTC)),
        ("0 */5 * * * *", datetime(2026, 11, 27, 10, 10, 0, tzinfo=UTC)),
        ("*/10 * * * * *", datetime(2026, 11, 27, 10, 7, 20, tzinfo=UTC)),
        ("0 0 3 * * *", datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)),
        ("0 0 9 * * 1-5", datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)),  # Friday -> Monday
        ("0 0 0 1 1 *", datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC)),
        ("30 15,45 * * * *", datetime(2026, 11, 27, 10, 15, 30, tzinfo=UTC)),
    ],
)
def test_next_fire(expr: str, expected: datetime) -> None:
    """The next matching second after the reference time, as the Functions host computes it."""
    assert next_fire(expr, T0) == expected


@pytest.mark.parametrize("expr", ["*/5 * * * *", "0 61 * * * *", "0 */0 * * * *", "x * * * * *"])
def test_bad_expressions_are_refused(expr: str) -> None:
    """Five fields, out-of-range values, zero steps and junk are errors, not silent schedules."""
    with pytest.raises(ValueError, match=r"NCRONTAB|outside|step|invalid literal"):
        parse_ncrontab(expr)
