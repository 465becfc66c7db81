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


class _Pending:
    """One conversation waiting for the batcher, and later its answer."""

    __slots__ = ("answer", "done", "error", "ids", "key")

    def __init__(self, ids: list[int], key: tuple[Any, ...]) -> None:
        self.ids = ids
        self.key = key
        self.answer: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class ChatGenerator:
    """A loaded model + tokenizer that answers conversations, batching concurrent requests.

    Requests that arrive while a generation runs queue up; the worker then generates for up
    to ``max_batch`` of them at once (left-padded, grouped by generation parameters). On a
    CPU one batched generation costs little more than a single one, so under concurrent load
    latency stays near one generation's time instead of growing with the queue.
    """

    def __init__(self, model_dir: Path, *, device: str = "cpu", max_batch: int = 32) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.device = device
        self.max_batch = max(1, max_batch)
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
        eos = self.model.generation_config.eos_token_id
        self._eos: list[int] = eos if isinstance(eos, list) else [eos] if eos is not None else []
        pad = self.tokenizer.pad_token_id
        self._pad: int = int(pad if pad is not None else (self._eos or [0])[0])
        self._limit = int(getattr(self.model.config, "max_position_embeddings", 4096))
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._worker, name="generate", daemon=True).start()

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            list(messages), tokenize=True, add_generation_prompt=True
        )
        if isinstance(ids, Mapping):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)

    @staticmethod
    def _generation_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
        max_new = int(params.get("max_new_tokens", 64))
        do_sample = bool(params.get("do_sample", params.get("temperature", 0) > 0))
        # min_new_tokens: the release smoke test needs a non-empty answer.
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new, "min_new_tokens": min(max_new, 4), "do_sample": do_sample,
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
        return kwargs

    def answer_all(
        self, conversations: Sequence[Sequence[Mapping[str, str]]], params: Mapping[str, Any]
    ) -> list[str]:
        """The assistant's reply to each conversation (never empty), batched with others."""
        kwargs = self._generation_kwargs(params)
        key = tuple(sorted(kwargs.items()))
        keep = max(1, self._limit - int(kwargs["max_new_tokens"]))
        items = [_Pending(self.prompt_ids(conv)[-keep:], key) for conv in conversations]
        with self._cond:
            self._queue.extend(items)
            self._cond.notify()
        answers = []
        for item in items:
            item.done.wait()
            if item.error is not None:
                raise item.error
            answers.append(item.answer or "")
        return answers

    def answer(self, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any]) -> str:
        """The assistant's reply to one conversation; never empty."""
        return self.answer_all([messages], params)[0]

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                key = self._queue[0].key
                batch = [item for item in self._queue if item.key == key][: self.max_batch]
                taken = set(map(id, batch))
                self._queue = [item for item in self._queue if id(item) not in taken]
            try:
                answers = self._generate([item.ids for item in batch], dict(key))
                for item, text in zip(batch, answers, strict=True):
                    item.answer = text
            except Exception as exc:
                log.error("generation failed for a batch of %s: %s", len(batch), exc)
                for item in batch:
                    item.error = exc
            finally:
                for item in batch:
                    item.done.set()

    def _generate(self, prompts: list[list[int]], kwargs: dict[str, Any]) -> list[str]:
        torch = self._torch
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):  # left padding: every prompt ends at column -1
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                pad_token_id=self._pad, **kwargs,
            )
        answers = []
        for row in out[:, width:].tolist():
            new = []
            for token in row:
                if token in self._eos:
                    break
                new.append(token)
            text: str = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            if not text:
                # Only whitespace or markers came out: show them rather than nothing.
                text = self.tokenizer.decode(new, skip_special_tokens=False).strip() or "…"
            answers.append(text)
        return answers

    def score(self, body: Any) -> dict[str, Any]:
        """Answer a scoring request: one conversation → ``{"output": str}``, many → a list."""
        conversations, params = parse_request(body)
        answers = self.answer_all(conversations, params)
        return {"output": answers[0] if len(answers) == 1 else answers}
