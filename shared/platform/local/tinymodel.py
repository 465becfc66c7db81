"""The tiny built-in base model: a Phi-3-shaped causal LM with a byte-level tokenizer.

It is made on the fly from a fixed seed (nothing is downloaded) and cached under the home
directory, so every machine builds the same weights once. It is small enough to fine-tune
in about a minute on two CPU cores; its answers are byte soup that becomes more like the
training data as the loss goes down.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "CHAT_TEMPLATE",
    "MODEL_SPECIFIC_DEFAULTS",
    "SPECIAL_TOKENS",
    "TINY_MODEL_NAME",
    "TINY_MODEL_VERSION",
    "ensure_tiny_model",
]

log = logging.getLogger(__name__)

TINY_MODEL_NAME = "tuneloop-tiny-phi3"
TINY_MODEL_VERSION = "1"
_SEED = 20240607

# Phi-3's chat markers; <|endoftext|> doubles as padding, as in Phi-3.
SPECIAL_TOKENS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Hyperparameters that make the tiny model learn visibly within a minute on CPU; the planner
# merges them over tuneloop's defaults exactly as it merges an Azure model's own defaults.
MODEL_SPECIFIC_DEFAULTS: dict[str, str] = {
    "apply_lora": "true",
    "apply_deepspeed": "false",
    "num_train_epochs": "5",
    "per_device_train_batch_size": "8",
    "per_device_eval_batch_size": "8",
    "gradient_accumulation_steps": "1",
    "learning_rate": "0.005",
    "lr_scheduler_type": "cosine",
    "warmup_steps": "2",
    "lora_r": "16",
    "lora_alpha": "32",
    "lora_dropout": "0.0",
    "max_seq_length": "256",
    "precision": "32",
}

_ARCH: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "original_max_position_embeddings": 512,
}


def _build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    marker = SPECIAL_TOKENS[0]
    tokenizer: Any = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        eos_token=marker,
        pad_token=marker,
        bos_token=marker,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=_ARCH["max_position_embeddings"],
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _build(target: Path) -> None:
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    tokenizer = _build_tokenizer()
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    eos_id = tokenizer.eos_token_id
    config = Phi3Config(
        vocab_size=len(tokenizer),
        bos_token_id=eos_id,
        eos_token_id=[eos_id, end_id],
        pad_token_id=eos_id,
        tie_word_embeddings=False,
        **_ARCH,
    )
    torch.manual_seed(_SEED)
    model = Phi3ForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=eos_id, eos_token_id=[eos_id, end_id], pad_token_id=eos_id
    )
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "tuneloop.json").write_text(
        json.dumps({"name": TINY_MODEL_NAME, "version": TINY_MODEL_VERSION, "seed": _SEED})
    )


def ensure_tiny_model(home: Path) -> Path:
    """The tiny model's directory under ``home``, built (atomically) on first use."""
    target = home / "local" / "models" / f"{TINY_MODEL_NAME}-v{TINY_MODEL_VERSION}"
    if (target / "tuneloop.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        log.info("building tiny base model %s in %s", TINY_MODEL_NAME, target)
        _build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process built it first; theirs is identical (fixed seed).
            if not (target / "tuneloop.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
