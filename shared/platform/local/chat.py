"""Chat inference with a Hugging Face causal LM directory: the Azure ML scoring contract.

Used by the MLflow model (``mlmodel.py``) and so by every local deployment. Requests follow
the Azure ML chat-completion contract::

    {"input_data": {"input_string": [[{"role": "user", "content": "..."}]],
                    "parameters": {"temperature": 0.7, "top_p": 0.9, "do_sample": true,
                                   "max_new_tokens": 64}}}

and the answer is ``{"output": "<assistant text>"}``. Validation errors raise
:class:`ScoringRequestError` with a message that says what is wrong and where.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ChatGenerator", "ScoringRequestError", "parse_request"]

log = logging.getLogger(__name__)

_ROLES = frozenset({"system", "user", "assistant"})
_PARAMS: dict[str, type | tuple[type, ...]] = {
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": int,
    "do_sample": bool,
    "max_new_tokens": int,
    "max_length": int,
    "repetition_penalty": (int, float),
}
MAX_NEW_TOKENS_LIMIT = 512


class ScoringRequestError(ValueError):
    """The scoring request is malformed; the message says which field and why."""


def _check_messages(conversation: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(conversation, list) or not conversation:
        raise ScoringRequestError(f"{where} must be a non-empty list of messages")
    messages: list[dict[str, str]] = []
    for i, msg in enumerate(conversation):
        at = f"{where}[{i}]"
        if not isinstance(msg, dict):
            raise ScoringRequestError(f"{at} must be an object with 'role' and 'content'")
        role, content = msg.get("role"), msg.get("content")
        if role not in _ROLES:
            raise ScoringRequestError(f"{at}.role must be one of {sorted(_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ScoringRequestError(f"{at}.content must be a string")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] == "assistant":
        raise ScoringRequestError(f"{where} must end with a user or system message")
    return messages


def parse_request(body: Any) -> tuple[list[list[dict[str, str]]], dict[str, Any]]:
    """Validate a scoring request: (conversations, generation parameters)."""
    if not isinstance(body, dict):
        raise ScoringRequestError("the request body must be a JSON object with 'input_data'")
    data = body.get("input_data")
    if not isinstance(data, dict):
        raise ScoringRequestError(
            "'input_data' is missing or not an object: expected "
            '{"input_data": {"input_string": [[{"role": "user", "content": "..."}]]}}'
        )
    raw = data.get("input_string")
    if not isinstance(raw, list) or not raw:
        raise ScoringRequestError(
            "'input_data.input_string' must be a non-empty list of conversations"
        )
    # A single conversation given as a flat list of messages is accepted too.
    conversations = raw if isinstance(raw[0], list) else [raw]
    checked = [
        _check_messages(conv, f"input_data.input_string[{i}]")
        for i, conv in enumerate(conversations)
    ]
    params = data.get("parameters") or {}
    if not isinstance(params, dict):
        raise ScoringRequestError("'input_data.parameters' must be an object")
    out: dict[str, Any] = {}
    for key, value in params.items():
        expected = _PARAMS.get(key)
        if expected is None:
            raise ScoringRequestError(
                f"unknown parameter input_data.parameters.{key}; known: {sorted(_PARAMS)}"
            )
        if isinstance(value, bool) and expected is not bool:
            raise ScoringRequestError(f"input_data.parameters.{key} must be a number")
        if not isinstance(value, expected):
            raise ScoringRequestError(
                f"input_data.parameters.{key} has the wrong type ({type(value).__name__})"
            )
        out[key] = value
    if "temperature" in out and out["temperature"] < 0:
        raise ScoringRequestError("input_data.parameters.temperature must be >= 0")
    if "top_p" in out and not 0 < out["top_p"] <= 1:
        raise ScoringRequestError("input_data.parameters.top_p must be in (0, 1]")
    if "max_new_tokens" in out and not 1 <= out["max_new_tokens"] <= MAX_NEW_TOKENS_LIMIT:
        raise ScoringRequestError(
            f"input_data.parameters.max_new_tokens must be in [1, {MAX_NEW_TOKENS_LIMIT}]"
        )
    return checked, out


class ChatGenerator:
    """A loaded model + tokenizer that answers conversations (one generation at a time)."""

    def __init__(self, model_dir: Path, *, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.device = device
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
        self.model: Any
        if (model_dir / "adapter_config.json").exists():
            from peft import AutoPeftModelForCausalLM

            self.model = AutoPeftModelForCausalLM.from_pretrained(model_dir)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model_dir)
        self.model.to(device)
        self.model.eval()
        self._torch = torch
        self._lock = threading.Lock()
        eos = self.model.generation_config.eos_token_id
        self._eos: list[int] = eos if isinstance(eos, list) else [eos] if eos is not None else []

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            list(messages), tokenize=True, add_generation_prompt=True
        )
        if isinstance(ids, Mapping):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    def answer(self, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any]) -> str:
        """The assistant's reply to one conversation; never empty."""
        torch = self._torch
        ids = self.prompt_ids(messages)
        limit = int(getattr(self.model.config, "max_position_embeddings", 4096))
        max_new = int(params.get("max_new_tokens", 64))
        ids = ids[-max(1, limit - max_new) :]
        do_sample = bool(params.get("do_sample", params.get("temperature", 0) > 0))
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "min_new_tokens": min(max_new, 4),
            "do_sample": do_sample,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if do_sample:
            kwargs["temperature"] = float(params.get("temperature", 1.0)) or 1.0
            kwargs["top_p"] = float(params.get("top_p", 1.0))
            if "top_k" in params:
                kwargs["top_k"] = int(params["top_k"])
        else:
            # Greedy decoding: unset sampling defaults so transformers does not warn.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if "repetition_penalty" in params:
            kwargs["repetition_penalty"] = float(params["repetition_penalty"])
        with self._lock, torch.inference_mode():
            input_ids = torch.tensor([ids], device=self.device)
            out = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs
            )
        new = [t for t in out[0, len(ids) :].tolist() if t not in self._eos]
        text: str = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        if not text:
            # A reply of only whitespace/markers still answered: show the raw tokens.
            text = self.tokenizer.decode(new, skip_special_tokens=False).strip() or "…"
        return text

    def score(self, body: Any) -> dict[str, Any]:
        """Answer a scoring request: one conversation → ``{"output": str}``, many → a list."""
        conversations, params = parse_request(body)
        answers = [self.answer(conv, params) for conv in conversations]
        return {"output": answers[0] if len(answers) == 1 else answers}
