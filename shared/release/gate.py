"""The gate: whether a smoke-tested deployment replaces the line's live one (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GateDecision", "decide_promotion"]


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    keep_deployment: bool = False


def decide_promotion(
    mode: Literal["auto", "gate", "manual"],
    *,
    new_loss: float | None,
    live_loss: float | None,
    has_live: bool,
    tolerance: float,
) -> GateDecision:
    """Pure: whether a smoke-tested deployment replaces the live one."""
    if mode == "auto":
        return GateDecision(True, "promotion auto")
    if mode == "manual":
        return GateDecision(
            False, "promotion is manual (TUNELOOP_PROMOTION=manual); the deployment waits at 0 %",
            keep_deployment=True,
        )
    if not has_live:
        return GateDecision(True, "gate: no live model to compare with")
    if new_loss is None:
        return GateDecision(False, "gate: the new job reported no eval_loss; cannot compare")
    if live_loss is None:
        return GateDecision(False, "gate: the live model has no recorded eval_loss; cannot compare")
    if new_loss > live_loss + tolerance:
        return GateDecision(
            False,
            f"gate: eval_loss {new_loss:.4f} is worse than the live model's {live_loss:.4f} "
            f"by more than {tolerance:g}",
        )
    return GateDecision(True, f"gate: eval_loss {new_loss:.4f} vs live {live_loss:.4f}")
