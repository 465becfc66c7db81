"""Every error a user can see: a type, a stable code and a message that says what to do.

The triggers map these to retry / no-retry: ``TransientError`` is raised to the host (which
retries); every other ``TuneloopError`` ends in a recorded state.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "ConflictError",
    "DatasetUnreadableError",
    "LedgerConflictError",
    "NotFoundError",
    "NotPromotableError",
    "PlanError",
    "PlatformError",
    "SmokeTestError",
    "TransientError",
    "TuneloopError",
    "UnknownTrafficError",
]


class TuneloopError(Exception):
    """Base of every tuneloop error. ``code`` is stable; ``hint`` says what to do."""

    code = "tuneloop_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


class ConfigError(TuneloopError):
    """A setting is missing or invalid."""

    code = "config_error"


class DatasetUnreadableError(TuneloopError):
    """The dataset cannot be read at all (missing file, permission, not a file)."""

    code = "dataset_unreadable"


class PlanError(TuneloopError):
    """A fine-tune plan violates the component interface or the model's allow-lists."""

    code = "plan_error"

    def __init__(self, problems: Sequence[str], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems), hint=hint)


class PlatformError(TuneloopError):
    """The ML platform refused or failed an operation."""

    code = "platform_error"


class NotFoundError(PlatformError):
    """The named resource does not exist (``get_*`` raises this)."""

    code = "not_found"


class ConflictError(PlatformError):
    """The resource exists already or is in a state that forbids the operation."""

    code = "conflict"


class SmokeTestError(PlatformError):
    """A new deployment did not answer a smoke-test request with non-empty text."""

    code = "smoke_test_failed"


class UnknownTrafficError(PlatformError):
    """Request counts for an endpoint could not be established (never guessed as zero)."""

    code = "unknown_traffic"


class LedgerConflictError(TuneloopError):
    """Another worker changed the run since we read it (ETag mismatch); re-read and retry."""

    code = "ledger_conflict"


class NotPromotableError(TuneloopError):
    """A run cannot be promoted by hand: not HELD, its deployment is gone, or its line is busy."""

    code = "not_promotable"


class TransientError(TuneloopError):
    """A failure worth retrying (throttling, timeouts, 5xx). The host retries the trigger."""

    code = "transient"
