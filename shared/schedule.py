"""NCRONTAB (the Functions timer format: ``sec min hour day month day-of-week``), evaluated.

Just enough to fire the timer functions locally on the schedules the real host would use:
``*``, ``*/n``, ``a-b``, ``a-b/n`` and comma lists in each of the six fields.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["next_fire", "parse_ncrontab"]

_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
            if step <= 0:
                raise ValueError(f"step must be positive in {text!r}")
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(part)
            end = high if step > 1 else start
        if not (low <= start <= end <= high):
            raise ValueError(f"{text!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_ncrontab(expr: str) -> tuple[frozenset[int], ...]:
    """Six fields of allowed values; raises ValueError with the offending field."""
    parts = expr.split()
    if len(parts) != 6:
        raise ValueError(
            f"NCRONTAB {expr!r} needs 6 fields (second minute hour day month day-of-week)"
        )
    dow = parts[5].replace("7", "0")
    fields = [*parts[:5], dow]
    return tuple(_field(f, lo, hi) for f, (lo, hi) in zip(fields, _RANGES, strict=True))


def next_fire(expr: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that matches ``expr`` (second resolution)."""
    sec, minute, hour, day, month, dow = parse_ncrontab(expr)
    t = after.replace(microsecond=0) + timedelta(seconds=1)
    limit = t + timedelta(days=366 * 5)
    while t < limit:
        if t.month not in month:
            t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            continue
        # Python: Monday=0; cron: Sunday=0.
        if t.day not in day or (t.weekday() + 1) % 7 not in dow:
            t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            continue
        if t.hour not in hour:
            t = t.replace(minute=0, second=0) + timedelta(hours=1)
            continue
        if t.minute not in minute:
            t = t.replace(second=0) + timedelta(minutes=1)
            continue
        if t.second not in sec:
            t += timedelta(seconds=1)
            continue
        return t
    raise ValueError(f"NCRONTAB {expr!r} never fires")
