"""A local deployment: ``python -m shared.platform.local.serve <deployment.json> --parent-pid N``.

Binds 127.0.0.1:<port> at once (so liveness answers while the model loads), loads the
registered MLflow model in the background and speaks the Azure ML scoring contract:

- ``GET /`` liveness (200 while the process runs);
- ``GET /health`` readiness (200 once the model is loaded, 503 while loading, 500 failed);
- ``POST /score`` the chat request → ``{"output": "..."}``; a malformed request gets a 400
  with ``{"error": {"code": "BadRequest", "message": ...}}`` and the server keeps serving.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.platform.local.httpbase import BodyError, JsonHandler, Server, serve_until_stopped
from shared.platform.local.procs import watch_parent
from shared.platform.local.state import read_json

__all__ = ["main"]

log = logging.getLogger("shared.platform.local.serve")


class _Model:
    """The loaded model, or why it is not (yet) there."""

    def __init__(self) -> None:
        self.scorer: Any = None
        self.error: str | None = None
        self.ready = threading.Event()

    def load(self, spec: dict[str, Any]) -> None:
        try:
            import torch

            torch.set_num_threads(int(spec.get("threads", 1)))
            from shared.platform.local.registry import configure_mlflow, quiet

            home = Path(spec["home"])
            configure_mlflow(home)
            import mlflow.pyfunc

            with quiet():
                loaded = mlflow.pyfunc.load_model(spec["model_dir"])
            self.scorer = loaded.unwrap_python_model()
            log.info("model %s loaded from %s", spec["model_id"], spec["model_dir"])
        except Exception as exc:
            log.error("cannot load model: %s\n%s", exc, traceback.format_exc())
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()


def _handler(model: _Model, deployment: str) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            if self.path == "/":
                self.send_json(200, {"status": "alive", "deployment": deployment})
            elif self.path in ("/health", "/ready"):
                if model.error:
                    self.send_json(500, {"status": "failed", "error": model.error})
                elif model.scorer is None:
                    self.send_json(503, {"status": "loading"})
                else:
                    self.send_json(200, {"status": "ready", "deployment": deployment})
            else:
                self.send_error_json(404, "NotFound", f"no route GET {self.path}")

        def do_POST(self) -> None:
            if self.path != "/score":
                self.send_error_json(404, "NotFound", f"no route POST {self.path}; use /score")
                return
            try:
                body = self.read_json()
            except BodyError as exc:
                self.send_error_json(exc.status, "BadRequest", str(exc))
                return
            if model.scorer is None:
                message = model.error or "the model is still loading; retry shortly"
                self.send_error_json(503, "ServiceUnavailable", message)
                return
            from shared.platform.local.chat import ScoringRequestError

            try:
                result = model.scorer.score(body)
            except ScoringRequestError as exc:
                self.send_error_json(400, "BadRequest", str(exc))
                return
            except Exception as exc:
                log.error("scoring failed: %s\n%s", exc, traceback.format_exc())
                self.send_error_json(500, "InternalError", f"scoring failed: {exc}")
                return
            self.send_json(200, result, {"azureml-model-deployment": deployment})

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shared.platform.local.serve")
    parser.add_argument("spec", type=Path)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    spec = read_json(args.spec)
    if not isinstance(spec, dict):
        log.error("no deployment spec at %s", args.spec)
        return 2
    model = _Model()
    server = Server(("127.0.0.1", int(spec["port"])), _handler(model, spec["name"]))
    if args.parent_pid:
        watch_parent(args.parent_pid, lambda: os._exit(3))
    threading.Thread(target=model.load, args=(spec,), name="load-model", daemon=True).start()
    log.info(
        "deployment %s/%s listening on 127.0.0.1:%s", spec["endpoint"], spec["name"], spec["port"]
    )
    serve_until_stopped(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
