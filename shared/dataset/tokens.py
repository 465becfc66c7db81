"""Token counts per example: a documented estimate, or a local tokenizer when one is configured.

The estimate (``token_count_method: "estimate"``): an example's content costs
ceil(characters / 4) tokens — the usual rule of thumb for English under GPT/Llama/Phi
tokenizers — plus 4 tokens of chat-template overhead per message and 3 per example for the
reply priming, as the OpenAI cookbook counts. It costs O(1) per message (``len`` of a str)
and no tokenizer is loaded. It undercounts scripts that need more tokens per character
(CJK about 3-4×): configure a tokenizer where that matters.

With ``tokenizer_path`` (``"tokenizer"``), content is counted with
``AutoTokenizer.from_pretrained(path)`` (loaded when validation starts, never at import) and
the same per-message and per-example overheads are added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from shared.errors import ConfigError

__all__ = [
    "EXAMPLE_OVERHEAD",
    "MESSAGE_OVERHEAD",
    "Histogram",
    "chars_to_tokens",
    "example_tokens",
    "load_tokenizer_counter",
]

MESSAGE_OVERHEAD = 4
EXAMPLE_OVERHEAD = 3


def chars_to_tokens(chars: int) -> int:
    """The estimated tokens of content totalling ``chars`` characters (see the module doc)."""
    return (chars + 3) // 4


def example_tokens(content_tokens: int, messages: int) -> int:
    """An example's tokens: its content plus the per-message and per-example overheads."""
    return content_tokens + MESSAGE_OVERHEAD * messages + EXAMPLE_OVERHEAD


def load_tokenizer_counter(path: str) -> Callable[[str], int]:
    """A function counting the tokens of a text with the local tokenizer at ``path``."""
    try:
        from transformers import AutoTokenizer

        tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # any load failure is a configuration problem for the user
        raise ConfigError(
            f"cannot load the tokenizer at {path!r}: {exc}",
            hint="set TUNELOOP_TOKENIZER_PATH to a local Hugging Face tokenizer directory, "
            "or unset it to use the token estimate",
        ) from exc

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    return count


class Histogram:
    """Memory-bounded distribution of non-negative integers with nearest-rank percentiles.

    Values below ``exact_below`` (default 16,384) get one bin each, so percentiles of those are
    exact; larger values share geometric bins 1 % wide (a percentile there is the bin's lower
    bound, within 1 % of the true value). At most about 17,000 bins exist whatever the count.
    """

    _RATIO = math.log(1.01)

    def __init__(self, exact_below: int = 16_384) -> None:
        self.exact_below = exact_below
        self.bins: dict[int, int] = {}  # callers may count values below exact_below here
        self._largest = 0

    @property
    def count(self) -> int:
        return sum(self.bins.values())

    def add(self, value: int) -> None:
        if value < self.exact_below:
            key = value
        else:
            key = self._wide_bin(value)
            self._largest = max(self._largest, value)
        self.bins[key] = self.bins.get(key, 0) + 1

    def minimum(self) -> int:
        """The smallest value (exact below ``exact_below``, else its bin's lower bound)."""
        return self._bin_floor(min(self.bins)) if self.bins else 0

    def maximum(self) -> int:
        """The largest value, exact."""
        if not self.bins:
            return 0
        top = max(self.bins)
        return top if top < self.exact_below else self._largest

    def _wide_bin(self, value: int) -> int:
        return self.exact_below + int(math.log(value / self.exact_below) / self._RATIO)

    def _bin_floor(self, key: int) -> int:
        if key < self.exact_below:
            return key
        return math.ceil(self.exact_below * math.exp((key - self.exact_below) * self._RATIO))

    def percentile(self, q: float) -> int:
        """The nearest-rank ``q``-th percentile (0 < q ≤ 100); 0 when empty."""
        count = self.count
        if not count:
            return 0
        rank = max(1, math.ceil(q / 100 * count))
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return self._bin_floor(key)
        raise AssertionError("rank beyond count")
