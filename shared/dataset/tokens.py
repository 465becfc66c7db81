"""Token counts per example: a documented estimate, or a local tokenizer when one is configured.

The estimate (``token_count_method: "estimate"``): each message costs 4 tokens of chat-template
overhead plus its content; content costs ceil(characters / 4) when it is ASCII and
ceil(UTF-8 bytes / 3) otherwise (about one token per CJK character); each example adds 3
tokens for the assistant's reply priming, as the OpenAI cookbook counts. It is close for
English under GPT/Llama/Phi tokenizers and deliberately cheap: no tokenizer is loaded.

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
    "estimate_content_tokens",
    "load_tokenizer_counter",
]

MESSAGE_OVERHEAD = 4
EXAMPLE_OVERHEAD = 3


def estimate_content_tokens(text: str) -> int:
    """The estimated token count of one message's content (see the module docstring)."""
    if text.isascii():
        return (len(text) + 3) // 4
    return (len(text.encode("utf-8", "surrogatepass")) + 2) // 3


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
        self.bins: dict[int, int] = {}
        self.count = 0

    def add(self, value: int) -> None:
        key = value if value < self.exact_below else self._wide_bin(value)
        self.bins[key] = self.bins.get(key, 0) + 1
        self.count += 1

    def _wide_bin(self, value: int) -> int:
        return self.exact_below + int(math.log(value / self.exact_below) / self._RATIO)

    def _bin_floor(self, key: int) -> int:
        if key < self.exact_below:
            return key
        return math.ceil(self.exact_below * math.exp((key - self.exact_below) * self._RATIO))

    def percentile(self, q: float) -> int:
        """The nearest-rank ``q``-th percentile (0 < q ≤ 100); 0 when empty."""
        if not self.count:
            return 0
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return self._bin_floor(key)
        raise AssertionError("rank beyond count")
