"""The one polling helper of the test suite: wait until something holds, or fail saying what.

Tests poll a platform that settles on its own time (the local platform's processes) or a fake
that settles as it is read. Each poll calls ``check``; a truthy result is returned, and when
``timeout`` seconds pass without one the test fails naming ``what`` (never a silent ``False``).
Never assert on wall time: the timeout is only a ceiling for a broken run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.25
) -> T:
    """Call ``check`` until it returns something truthy and return that; AssertionError
    naming ``what`` after ``timeout`` seconds. ``check`` always runs at least once, and once
    more at the deadline, so a slow last poll is not lost."""
    deadline = time.monotonic() + timeout
    while True:
        last_chance = time.monotonic() >= deadline
        value = check()
        if value:
            return value
        if last_chance:
            raise AssertionError(f"not reached within {timeout:g}s: {what}")
        time.sleep(max(0.0, min(every, deadline - time.monotonic())))
