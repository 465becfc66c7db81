"""What the validator checks against: limits taken from the settings, or given directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = ["ValidationConfig"]


@dataclass(frozen=True)
class ValidationConfig:
    """Limits for one validation run.

    ``max_line_bytes``: longer lines are skipped unread (``line_too_long``).
    ``min_examples``: fewer distinct valid examples is ``too_few_examples``.
    ``max_seq_length``: examples above it (in tokens) get ``exceeds_max_tokens``.
    ``tokenizer_path``: a local Hugging Face tokenizer directory for exact counts; ``None``
    uses the documented estimate (see :mod:`shared.dataset.tokens`).
    ``max_listed``: how many errors and how many warnings the report lists (counts are exact).
    """

    max_line_bytes: int = 4 * 1024 * 1024
    min_examples: int = 10
    max_seq_length: int = 4096
    tokenizer_path: str | None = None
    max_listed: int = 100

    def __post_init__(self) -> None:
        for field in ("max_line_bytes", "min_examples", "max_seq_length"):
            if getattr(self, field) < 1:
                raise ValueError(f"ValidationConfig.{field} must be at least 1")
        if self.max_listed < 0:
            raise ValueError("ValidationConfig.max_listed must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationConfig:
        """The validation limits of the app's settings."""
        return cls(
            max_line_bytes=settings.max_line_bytes,
            min_examples=settings.min_examples,
            max_seq_length=settings.max_seq_length,
            tokenizer_path=settings.tokenizer_path,
        )
