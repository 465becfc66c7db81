"""The MLflow pyfunc model a local fine-tune produces: a Hugging Face chat model directory.

Logged as MLflow "model from code": this file is copied into the model and executed on load,
where :func:`mlflow.models.set_model` names the model object. ``predict`` takes the Azure ML
scoring request (a dict) and returns ``{"output": ...}``; deployment servers unwrap the
model and call :meth:`TuneloopChatModel.score` directly. Imported only in child processes
(it imports mlflow at module level to subclass).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc

from shared.platform.local.chat import ChatGenerator

__all__ = ["ARTIFACT_KEY", "TuneloopChatModel"]

ARTIFACT_KEY = "hf_model"


class TuneloopChatModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]  # untyped
    """Chat completion over a saved causal LM (merged weights, or base + LoRA adapter)."""

    generator: ChatGenerator | None = None
    # predict takes the raw scoring request: no type-hint based schema validation (mlflow
    # would otherwise wrap predict and warn that it has no list[...] hints).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        device = os.environ.get("TUNELOOP_LOCAL_DEVICE", "cpu")
        self.generator = ChatGenerator(Path(context.artifacts[ARTIFACT_KEY]), device=device)

    def score(self, body: Any) -> dict[str, Any]:
        if self.generator is None:
            raise RuntimeError("model not loaded: call mlflow.pyfunc.load_model first")
        return self.generator.score(body)

    # No type hints: mlflow would try to derive a signature from them (and warn).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        del context, params
        return self.score(model_input)


mlflow.models.set_model(TuneloopChatModel())
