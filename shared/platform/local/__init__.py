"""The embedded local platform: real training, MLflow registry, local endpoints, events.

Only :class:`LocalPlatform` is public; importing this package is light (torch, transformers
and mlflow load inside the operations and child processes that need them).
"""

from __future__ import annotations

from shared.platform.local.platform import LocalPlatform

__all__ = ["LocalPlatform"]
