"""The smoke test: the new deployment, still at 0 % traffic, answers the run's own examples."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

from shared.errors import NotFoundError, TransientError
from shared.ledger import RunRecord
from shared.release.context import ReleaseContext, serving
from shared.storage import BlobRef

__all__ = ["answer_text", "smoke_test", "validation_ref"]

log = logging.getLogger(__name__)

_SMOKE_PARAMETERS = {"max_new_tokens": 64, "temperature": 0.6, "top_p": 0.9, "do_sample": True}
_PROBE = [{"role": "user", "content": "Say hello."}]


def smoke_test(ctx: ReleaseContext, run: RunRecord) -> str | None:
    """Invoke the new deployment directly; None if every answer is non-empty text, else why."""
    endpoint, deployment = serving(run)
    for messages in _smoke_conversations(ctx, run):
        payload = {"input_data": {"input_string": [messages], "parameters": _SMOKE_PARAMETERS}}
        try:
            response = ctx.platform.invoke(endpoint, payload, deployment=deployment)
        except TransientError:
            raise
        except Exception as exc:  # any refusal of the new deployment fails the smoke test
            return f"{deployment} raised {type(exc).__name__}: {exc}"
        if not answer_text(response):
            return f"{deployment} answered no text"
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode(text: str) -> str:
    """``text`` as valid Unicode: a lone UTF-16 surrogate (a JSON ``"\\ud83d"`` cut from its
    pair, e.g. half an emoji at the token limit) becomes U+FFFD, so it can be written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def answer_text(response: Any) -> str:
    """The assistant text in a scoring response (``{"output": ...}`` and its variants)."""
    if isinstance(response, bytes):
        response = response.decode("utf-8", "replace")
    if isinstance(response, str):
        try:
            decoded = json.loads(response)
        except ValueError:
            return _unicode(response.strip())
        return answer_text(decoded) if not isinstance(decoded, str) else _unicode(decoded.strip())
    if isinstance(response, Mapping):
        for key in ("output", "0", "generated_text", "text"):
            if key in response:
                return answer_text(response[key])
        choices = response.get("choices")
        if isinstance(choices, list) and choices:
            first = choices[0]
            if isinstance(first, Mapping):
                message = first.get("message")
                if isinstance(message, Mapping):
                    return answer_text(message.get("content"))
        return ""
    if isinstance(response, list) and response:
        return answer_text(response[0])
    return ""


def _smoke_conversations(ctx: ReleaseContext, run: RunRecord) -> list[list[dict[str, Any]]]:
    ref = validation_ref(ctx, run)
    try:
        examples = _jsonl_head(ctx.storage.read_chunks(ref), ctx.settings.smoke_examples)
    except NotFoundError:
        log.warning("run %s: no validation examples at %s; smoke-testing a probe", run.run_id, ref)
        return [_PROBE]
    conversations = []
    for example in examples:
        messages = list(example.get("messages") or []) if isinstance(example, dict) else []
        while messages and messages[-1].get("role") == "assistant":
            messages.pop()
        if messages:
            conversations.append(messages)
    return conversations or [_PROBE]


def validation_ref(ctx: ReleaseContext, run: RunRecord) -> BlobRef:
    """The run's validation split: as ingest recorded it, else ``<prepared>/<run>/``."""
    recorded = str(run.get("validation_blob") or "")
    container, _, name = recorded.partition("/")
    if container and name:
        return BlobRef(container, name)
    return BlobRef(ctx.settings.prepared_container, f"{run.run_id}/validation.jsonl")


def _jsonl_head(chunks: Iterator[bytes], n: int) -> list[Any]:
    """The first ``n`` JSON lines of a stream, reading no further than needed."""
    out: list[Any] = []
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                out.append(json.loads(line))
                if len(out) >= n:
                    return out
    if buffer.strip() and len(out) < n:
        out.append(json.loads(buffer))
    return out
