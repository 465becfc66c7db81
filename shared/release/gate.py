"""The gate: whether a smoke-tested deployment replaces the line's live one (pure).

``TUNELOOP_PROMOTION``:

* ``exam`` (default): the candidate and the live model answer the line's exam
  (:mod:`shared.release.exam`); :func:`decide_exam` promotes when the candidate scores at
  least the champion's score minus ``TUNELOOP_GATE_TOLERANCE`` (and at least
  ``TUNELOOP_GATE_MIN_SCORE`` when set). A line's first version is scored and promoted.
* ``auto``: promoted without comparison (logged as a warning at start);
* ``manual``: held at 0 % with its deployment kept, for ``tuneloop promote``;
* ``gate``: the old eval_loss comparison, a deprecated alias of ``exam`` now: each job's
  eval_loss is measured on its own validation split, so two of them are not comparable (a
  model answering everything with one curt sentence had 0.23 against the good model's 1.70).
  eval_loss stays in the reports as information.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GateDecision", "PromotionMode", "decide_exam", "decide_promotion", "uses_exam"]

PromotionMode = Literal["exam", "auto", "manual", "gate"]
_LABEL = {"chrf": "chrF", "bleu": "BLEU", "exact": "exact match"}


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    keep_deployment: bool = False


def uses_exam(mode: PromotionMode) -> bool:
    """Whether the mode examines the candidate (``gate`` is a deprecated alias of ``exam``)."""
    return mode in ("exam", "gate")


def decide_promotion(mode: PromotionMode) -> GateDecision:
    """Pure: the decision of a mode that does not examine (``auto``, ``manual``)."""
    if mode == "auto":
        return GateDecision(True, "promotion auto")
    if mode == "manual":
        return GateDecision(
            False, "promotion is manual (TUNELOOP_PROMOTION=manual); the deployment waits at 0 %",
            keep_deployment=True,
        )
    raise ValueError(f"promotion mode {mode!r} examines the candidate: use decide_exam")


def decide_exam(
    *,
    metric: str,
    candidate: float | None,
    champion: float | None,
    has_live: bool,
    tolerance: float,
    min_score: float | None = None,
) -> GateDecision:
    """Pure: promote when ``candidate >= champion - tolerance`` and ``candidate >= min_score``
    (if set); a line's first version (no live model) needs only the minimum. Fails closed: a
    score that could not be measured holds."""
    name = _LABEL.get(metric, metric)
    if candidate is None:
        if not has_live and min_score is None:
            return GateDecision(True, "exam: first version of the line; no exam examples to score")
        return GateDecision(
            False,
            "exam: no exam examples to score the candidate on (no golden exam at "
            "incoming/<line>/_exam/ and no evaluation-side examples behind the live model); "
            "promote it by hand with `tuneloop promote` or add a golden exam",
        )
    if min_score is not None and candidate < min_score:
        return GateDecision(
            False,
            f"exam: candidate {name} {candidate:.2f} is below TUNELOOP_GATE_MIN_SCORE "
            f"{min_score:g}" + (f" (live model {champion:.2f})" if champion is not None else ""),
        )
    if not has_live:
        return GateDecision(True, f"exam: first version of the line, {name} {candidate:.2f}")
    if champion is None:
        return GateDecision(
            False, f"exam: candidate {name} {candidate:.2f}, but the live model has no score",
        )
    if candidate < champion - tolerance:
        return GateDecision(
            False,
            f"exam: candidate {name} {candidate:.2f} is worse than the live model's "
            f"{champion:.2f} by more than the tolerance {tolerance:g}",
        )
    return GateDecision(
        True, f"exam: candidate {name} {candidate:.2f} vs live model {champion:.2f}"
    )
