"""Deterministic names and the tag vocabulary: one place for every name tuneloop derives.

A line is a user-chosen folder name under ``incoming/`` (:func:`is_valid_line`), compared
exactly: ``support`` and ``Support`` are two lines, and so are ``a.b``, ``a-b`` and ``a_b``.
Every name derived from a line (run id = job name, experiment, model, endpoint) is built
from :func:`line_key`, which is injective over valid lines:

- a line that is already its own slug (lower-case letters and digits joined by single
  hyphens, e.g. ``support``, ``order-status``) keeps it: ``support`` -> ``support``;
- any other line (upper case, ``.``, ``_``, doubled hyphens) and any line too long for the
  name gets the readable slug, ``--`` and 8 hex digits of the SHA-256 of the exact line:
  ``Support`` -> ``support--<hash>``.

The two shapes cannot meet: a slug never contains ``--``, so a key without ``--`` is a
lossless line itself and a key with ``--`` ends with the hash of its line.

Endpoint names are different: Azure ML online endpoint names are unique per *region*, across
every customer, so ``tl-support`` is likely someone else's. An endpoint name is therefore
``tl-<line key>-<scope key>``, the scope key being 8 hex digits of the SHA-256 of the
workspace's ARM id (lower case; the local platform: of its resolved home directory), see
:func:`endpoint_scope`. The scope key has a fixed length at the end, so the name still maps
back to exactly one (line key, scope key) pair: injective over lines, and over workspaces up to
a 32-bit hash collision (then the ownership check below refuses the reuse). Two hashed keys
collide only if two lines share 32 bits of SHA-256; the platforms' ownership check
(:data:`LINE_TAG`, see ``shared.platform.port.check_line_owner``) refuses to reuse a name
another line's tag claims, so even that never lets one line serve another line's model.

Azure ML naming rules these names respect (cited where each is built):

- job names: ``[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}``;
- experiment names: letters, digits, ``_`` and ``-``, up to 255 characters;
- model (asset) names: letters, digits, ``-``, ``.`` (and ``_``), a letter or digit first, up
  to 255 characters (azureml-assets wiki, "Asset naming convention");
- online endpoint and deployment names: 3-32 characters, a letter first, then letters,
  digits and hyphens, ending in a letter or digit (azure-ai-ml
  ``EndpointConfigurations``: ``NAME_REGEX_PATTERN = ^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$``,
  ``MIN/MAX_NAME_LENGTH = 3/32``; ``validate_endpoint_or_deployment_name``); an endpoint
  name is unique in the Azure region, and ARM compares resource names case-insensitively
  ("Naming rules and restrictions for Azure resources", learn.microsoft.com), which is why
  every derived name is lower case.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "BASE_MODEL_TAG",
    "BLOB_TAG",
    "DATASET_TAG",
    "FINGERPRINT_TAG",
    "JOB_TAG",
    "LINE_TAG",
    "MANAGED_TAG",
    "PROTECT_TAG",
    "RETRACTED_TAG",
    "RUN_TAG",
    "START_MODEL_TAG",
    "VERSION_TAG",
    "deployment_name",
    "endpoint_name",
    "endpoint_scope",
    "experiment_name",
    "is_valid_endpoint_name",
    "is_valid_job_name",
    "is_valid_line",
    "is_valid_model_name",
    "line_key",
    "model_name",
    "run_id",
    "scope_key",
    "slug",
]

# -- the tag vocabulary (jobs, models, endpoints, deployments) -------------------------------
LINE_TAG = "tuneloop_line"  # the exact line a job, model, endpoint or deployment belongs to
RUN_TAG = "tuneloop_run"  # the run id (= job name)
JOB_TAG = "tuneloop_job"  # the job whose output a model or MLflow run came from
DATASET_TAG = "tuneloop_dataset"  # the dataset's SHA-256
BLOB_TAG = "tuneloop_blob"  # the incoming blob the dataset was read from
BASE_MODEL_TAG = "tuneloop_base_model"  # the base model's asset id
# the model version a job started from (set only when it is not the base model: issue 11)
START_MODEL_TAG = "tuneloop_start_model"
FINGERPRINT_TAG = "tuneloop_fingerprint"  # the plan's fingerprint
MANAGED_TAG = "tuneloop_managed"  # "true" on endpoints tuneloop created (the sweeper's scope)
PROTECT_TAG = "tuneloop_protect"  # "true": the sweeper never deletes this endpoint
VERSION_TAG = "tuneloop_version"  # our model version on the local (MLflow) registry
RETRACTED_TAG = "tuneloop_retracted"  # on a model version: the retracted drops it learned (sha256s)

_LINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_LOSSLESS = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # a slug that is its own line
_JOB = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_ENDPOINT = re.compile(r"^[A-Za-z]([-A-Za-z0-9]{1,30})[A-Za-z0-9]$")  # 3-32 characters
_HASH_LEN = 8
_SEP = "--"  # never inside a slug: marks a hashed key
_ENDPOINT_PREFIX = "tl-"
_ENDPOINT_MAX = 32
_RUN_LINE_MAX = 40  # the line's share of a run id (the rest is the dataset and plan)


def is_valid_line(line: str) -> bool:
    """A line is the first path segment under incoming/: 1–63 safe characters."""
    return bool(_LINE.match(line))


def is_valid_job_name(name: str) -> bool:
    """Azure ML's job name rule (also the local platform's)."""
    return bool(_JOB.match(name))


def is_valid_model_name(name: str) -> bool:
    """Azure ML's asset name rule, as model names are checked."""
    return bool(_MODEL.match(name))


def is_valid_endpoint_name(name: str) -> bool:
    """Azure ML's online endpoint (and deployment) name rule: 3-32, letter first."""
    return bool(_ENDPOINT.match(name))


def slug(text: str) -> str:
    """Lower case, runs of anything but letters and digits as one hyphen (lossy)."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out or "x"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def line_key(line: str, max_len: int = 63) -> str:
    """The line as a name part: its slug when that loses nothing and fits in ``max_len``,
    else the slug cut to fit, ``--`` and a hash of the exact line (see the module)."""
    if _LOSSLESS.match(line) and len(line) <= max_len:
        return line
    room = max_len - len(_SEP) - _HASH_LEN
    if room < 1:
        raise ValueError(f"no room for a line in {max_len} characters")
    head = slug(line)[:room].rstrip("-") or "x"
    return f"{head}{_SEP}{_short_hash(line)}"


def run_id(line: str, dataset_sha256: str, fingerprint: str) -> str:
    """The run id and Azure ML job name: the same line, dataset and plan give the same id.

    ``tl-<line key ≤ 40>-<sha256[:12]>-<fingerprint[:8]>``: the tail has a fixed length, so
    distinct line keys give distinct ids; letters, digits and hyphens only (job name rule).
    """
    return f"tl-{line_key(line, _RUN_LINE_MAX)}-{dataset_sha256[:12]}-{fingerprint[:8]}"


def experiment_name(line: str) -> str:
    """The Azure ML (and local MLflow) experiment of a line's jobs."""
    return f"tuneloop-{line_key(line)}"


def scope_key(scope: str) -> str:
    """8 hex digits naming a workspace (or a local home) in endpoint names.

    The scope is compared as ARM compares resource ids: case-insensitively, so it is lower-cased
    (and a trailing ``/`` dropped) before it is hashed.
    """
    return _short_hash(scope.strip().rstrip("/").lower())


def endpoint_scope(settings: Settings) -> str:
    """What endpoint names are unique over: the Azure ML workspace's ARM id, or, on the local
    platform, ``local:`` and its resolved home directory (stable for one home, distinct per home).
    """
    if settings.platform_kind == "local":
        return f"local:{settings.home.expanduser().resolve()}"
    return settings.workspace_arm_id


def endpoint_name(line: str, scope: str) -> str:
    """The line's managed online endpoint in ``scope`` (:func:`endpoint_scope`):
    ``tl-<line key ≤ 20>-<scope key>`` (≤ 32 chars, a letter first, letters, digits, hyphens).

    Online endpoint names are unique per Azure region across customers, so the workspace's
    hash keeps ``tl-support`` of two workspaces (or two customers) apart; the fixed-length tail
    keeps the name injective over (line, workspace).
    """
    room = _ENDPOINT_MAX - len(_ENDPOINT_PREFIX) - 1 - _HASH_LEN
    return f"{_ENDPOINT_PREFIX}{line_key(line, room)}-{scope_key(scope)}"


def model_name(line: str) -> str:
    """The registered model name of a line: ``tuneloop-<line key>`` (asset name rule)."""
    return f"tuneloop-{line_key(line)}"


def deployment_name(version: str | int) -> str:
    """The deployment of a model version on its line's endpoint: ``v<version>`` (3–32 chars).

    Unique per line because it lives on the line's own endpoint.
    """
    name = f"v{version}"
    if len(name) < 3:
        name = f"v{int(version):02d}" if str(version).isdigit() else name
    if not is_valid_endpoint_name(name):
        raise ValueError(
            f"model version {version!r} gives the invalid deployment name {name!r}: "
            "3–32 letters, digits or hyphens, a letter first"
        )
    return name
