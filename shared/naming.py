"""Deterministic names: run ids (= job names), endpoint, model and deployment names.

Azure ML rules: job names ``[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}``; endpoint names 3–32 chars,
a letter first, then letters, digits and hyphens, unique in the region; deployment names
the same shape. Lines are user-chosen folder names, so everything is slugged and, where
truncated, suffixed with a short hash so two long lines never collide.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "deployment_name",
    "endpoint_name",
    "is_valid_line",
    "model_name",
    "run_id",
    "slug",
]

_LINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def is_valid_line(line: str) -> bool:
    """A line is the first path segment under incoming/: 1–63 safe characters."""
    return bool(_LINE.match(line))


def slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out or "x"


def _short_hash(*parts: str, n: int = 6) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:n]


def run_id(line: str, dataset_sha256: str, fingerprint: str) -> str:
    """The run id and Azure ML job name: the same dataset + plan always gives the same id."""
    return f"tl-{slug(line)[:40]}-{dataset_sha256[:12]}-{fingerprint[:8]}"


def endpoint_name(line: str) -> str:
    """The line's managed online endpoint: ``tl-<slug>`` (≤ 32 chars, letter first)."""
    base = slug(line)
    name = f"tl-{base}"
    if len(name) > 32 or base != line.lower():
        name = f"tl-{base[:21]}-{_short_hash(line)}".replace("--", "-")
    return name[:32].rstrip("-")


def model_name(line: str) -> str:
    """The registered model name of a line (Azure ML model names allow [A-Za-z0-9_.-])."""
    return f"tuneloop-{slug(line)}"


_DEPLOYMENT = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")


def deployment_name(version: str | int) -> str:
    """The deployment of a model version on its line's endpoint: ``v<version>`` (3–32 chars)."""
    name = f"v{version}"
    if len(name) < 3:
        name = f"v{int(version):02d}" if str(version).isdigit() else name
    if not _DEPLOYMENT.match(name):
        raise ValueError(
            f"model version {version!r} gives the invalid deployment name {name!r}: "
            "3–32 letters, digits or hyphens, a letter first"
        )
    return name
