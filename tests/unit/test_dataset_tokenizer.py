"""Exact token counts through a local tokenizer (built here; nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.dataset import ValidationConfig, validate_stream
from shared.errors import ConfigError

pytestmark = pytest.mark.slow  # importing transformers takes several seconds


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level tokenizer: one token per whitespace-separated word."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["hello", "world", "how", "are", "you", "fine", "thanks"]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    model = tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("tokenizer")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(
        path
    )
    return path


def test_token_counts_come_from_the_tokenizer(tokenizer_dir: Path) -> None:
    """With tokenizer_path set, tokens are counted by the tokenizer plus the fixed overheads."""
    rows = [{"messages": [{"role": "user", "content": "hello world how are you"},
                          {"role": "assistant", "content": f"fine thanks {'hello ' * i}"}]}
            for i in range(10)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    report = validate_stream([data], name="d", config=ValidationConfig(
        tokenizer_path=str(tokenizer_dir), max_seq_length=20))
    stats = report.stats
    assert stats["token_count_method"] == "tokenizer"
    # content 5 + (2 + i) tokens, + 4 per message × 2 + 3 per example
    expected = [5 + 2 + i + 8 + 3 for i in range(10)]
    assert stats["tokens_per_example"]["min"] == min(expected)
    assert stats["tokens_per_example"]["max"] == max(expected)
    assert stats["tokens_per_example"]["total"] == sum(expected)
    assert stats["assistant_tokens_total"] == sum(2 + i for i in range(10))
    assert report.warning_counts == {"exceeds_max_tokens": sum(t > 20 for t in expected)}


def test_unloadable_tokenizer_is_a_config_error(tmp_path: Path) -> None:
    """A tokenizer path that does not hold a tokenizer says what to set."""
    with pytest.raises(ConfigError) as info:
        validate_stream([b""], name="d", config=ValidationConfig(tokenizer_path=str(tmp_path)))
    assert "TUNELOOP_TOKENIZER_PATH" in str(info.value)
