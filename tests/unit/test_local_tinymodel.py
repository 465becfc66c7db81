"""The tiny built-in model: built offline from a fixed seed, byte-level, Phi-3 chat format."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.platform.local.tinymodel import ensure_tiny_model
from shared.platform.local.train import IGNORE, encode_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_tiny_model_is_built_once_and_deterministic(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """Two builds from the fixed seed have identical weights; a second call reuses the first."""
    assert ensure_tiny_model(tiny_dir.parents[2]) == tiny_dir
    other = ensure_tiny_model(tmp_path)
    weights = "model.safetensors"
    assert (other / weights).read_bytes() == (tiny_dir / weights).read_bytes()


def test_tokenizer_is_byte_level_with_the_phi3_chat_template(tiny_dir: Path) -> None:
    """Any text round-trips through 256 byte tokens; chat markers are single special tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    text = "héllo, wörld — 你好"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode())
    assert tok.decode(ids) == text
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert len(tok("<|assistant|>", add_special_tokens=False)["input_ids"]) == 1


def test_only_assistant_turns_are_trained(tiny_dir: Path) -> None:
    """Labels cover the assistant's text and end marker; system and user tokens are masked."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say red."},
        {"role": "assistant", "content": "red"},
    ]
    encoded = encode_example(tok, messages, 256)
    assert encoded is not None
    ids, labels = encoded
    assert tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)
    trained = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])
    assert trained == "red<|end|>\n"
    assert encode_example(tok, messages[:2], 256) is None  # nothing to learn
    short = encode_example(tok, messages, 10)
    assert short is None  # truncated before the answer
