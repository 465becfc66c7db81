"""Typed settings, read once from ``TUNELOOP_*`` environment variables (or app settings).

Nothing reads the environment at import time: call :func:`load_settings` in the composition
root and pass the object in.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from shared.errors import ConfigError
from shared.naming import is_valid_line

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "LOCAL_WORKSPACE_ID",
    "LinePolicy",
    "Settings",
    "load_settings",
    "parse_iso_duration",
    "release_warnings",
    "settings_error",
]

log = logging.getLogger(__name__)

# The ARM-shaped id the embedded local platform uses as its Event Grid topic.
LOCAL_WORKSPACE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/tuneloop-local"
    "/providers/Microsoft.MachineLearningServices/workspaces/tuneloop-local"
)

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_iso_duration(text: str) -> timedelta:
    """Parse an ISO-8601 duration of days/hours/minutes/seconds, e.g. ``PT24H`` or ``P1DT30M``."""
    match = _DURATION.match(text.strip().upper())
    if not match or text.strip().upper() in {"P", "PT"}:
        raise ValueError(f"{text!r} is not an ISO-8601 duration such as PT24H or P1DT6H")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return timedelta(**parts)


@dataclass(frozen=True)
class LinePolicy:
    """How a line builds a run (issue 11, :meth:`Settings.policy_for`): ``data`` (cumulative:
    the live corpus + the new drop; latest: the new drop only), ``start`` (base | live) and
    ``max_train_examples`` (None = no cap)."""

    data: Literal["cumulative", "latest"]
    start: Literal["base", "live"]
    max_train_examples: int | None = None


_POLICY_KEYS = {"data": ("cumulative", "latest"), "start": ("base", "live")}


def _policy_entry(line: str, entry: Any) -> dict[str, Any]:
    """One TUNELOOP_LINE_POLICY entry, checked; ValueError naming the line, key and values."""
    if not is_valid_line(line):  # it could never match a line: a typo, said now
        raise ValueError(f"entry {line!r} is not a valid line name (1-63 of A-Z a-z 0-9 . _ -, "
                         "starting with a letter or digit)")
    if not isinstance(entry, dict):
        raise ValueError(f"entry {line!r} must be an object like "
                         '{"data": "latest", "start": "live", "max_train_examples": 500}')
    unknown = sorted(set(entry) - {*_POLICY_KEYS, "max_train_examples"})
    if unknown:
        raise ValueError(f"entry {line!r} has unknown key(s) {', '.join(unknown)}; allowed: "
                         "data, start, max_train_examples")
    for key, allowed in _POLICY_KEYS.items():
        if key in entry and entry[key] not in allowed:
            raise ValueError(f"entry {line!r} has {key}={entry[key]!r}; allowed: "
                             f"{' or '.join(allowed)}")
    cap = entry.get("max_train_examples")
    if cap is not None and (type(cap) is not int or cap < 1):
        raise ValueError(f"entry {line!r} has max_train_examples={cap!r}; it must be a whole "
                         "number of at least 1, or null for no cap")
    return dict(entry)


class Settings(BaseSettings):
    """Every tuneloop setting. Environment names are ``TUNELOOP_`` + the field name, upper case."""

    model_config = SettingsConfigDict(
        env_prefix="TUNELOOP_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    # --- storage -------------------------------------------------------------------------
    storage_connection_string: str | None = Field(
        default=None,
        description="Connection string (Azurite locally); in Azure use storage_account_url.",
    )
    storage_account_url: str | None = Field(
        default=None,
        description="https://<account>.blob.core.windows.net; identity via azure-identity.",
    )
    incoming_container: str = "incoming"
    reports_container: str = "reports"
    rejected_container: str = "rejected"
    prepared_container: str = "prepared"
    ledger_table: str = "tuneloopruns"

    # --- identity ------------------------------------------------------------------------
    # azure-identity's own variable, not a TUNELOOP_ one: DefaultAzureCredential picks a
    # user-assigned managed identity only by its client id. Read here so that the composition
    # root passes it explicitly (shared/clients.py) and one identity serves the blob trigger
    # (TUNELOOP_STORAGE__clientId), the host (AzureWebJobsStorage__clientId) and our clients.
    azure_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("azure_client_id", "AZURE_CLIENT_ID"),
        description="AZURE_CLIENT_ID: client id of the app's user-assigned managed identity.",
    )

    # --- lifecycle events (issue 12; shared/lifecycle.py, shared/outbox.py) -----------------
    events_endpoint: str | None = Field(
        default=None,
        description="Event Grid topic endpoint (https://<topic>.<region>-1.eventgrid.azure.net"
        "/api/events) the run's lifecycle events are published to; unset: none are recorded.",
    )
    events_key: SecretStr | None = Field(
        default=None,
        description="The topic's access key (sent as aeg-sas-key); unset: the app's identity "
        "(EventGrid Data Sender on the topic).",
    )

    # --- validation ----------------------------------------------------------------------
    max_line_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    min_examples: int = Field(default=10, ge=1)
    max_seq_length: int = Field(default=4096, gt=0)
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    tokenizer_path: str | None = Field(
        default=None, description="Local Hugging Face tokenizer dir for exact token counts."
    )

    # --- lines: what a run trains on and where it starts (issue 11; shared.corpus) ----------
    line_data: Literal["cumulative", "latest"] = Field(
        default="cumulative",
        description="cumulative: a run trains on the live run's drops (minus retracted) + the "
        "new drop; latest: on the new drop only.",
    )
    line_start: Literal["base", "live"] = Field(
        default="base", description="base: train from the base model; live: from the line's "
        "live model version."
    )
    line_max_train_examples: int | None = Field(
        default=None, ge=1,
        description="Cap on a run's training examples (newest drops whole, older ones sampled "
        "deterministically); None = no cap.",
    )
    # NoDecode: read by _line_policy, which names what is wrong (as line_overrides).
    line_policy: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict,
        description='Per-line data/start/cap, JSON: {"line": {"data": "latest", "start": '
        '"live", "max_train_examples": 500}}.',
    )

    # --- platform selection --------------------------------------------------------------
    platform: Literal["auto", "local", "azureml"] = Field(
        default="auto", description="auto = azureml when a workspace is configured, else local."
    )

    # --- Azure ML ------------------------------------------------------------------------
    subscription_id: str | None = None
    resource_group: str | None = None
    workspace_name: str | None = None
    registry_name: str = "azureml"
    component_name: str = "chat_completion_pipeline"
    component_version: str | None = Field(default=None, description="None = label latest.")
    # Phi-4 v8: fine-tunable for chat-completion, no retirement date (azureml-assets
    # 4b41f8cc). Every Phi-3/Phi-3.5 has finetuneRetirementDate 2025-08-30: refused by the plan.
    base_model: str = Field(
        default="Phi-4", description="Registry base model (fine-tunable for chat-completion)."
    )
    base_model_version: str | None = Field(default=None, description="None = label latest.")
    compute: str | None = Field(default=None, description="Named AML cluster for fine-tuning.")
    finetune_instance_type: str | None = Field(
        default=None, description="Serverless instance type when no cluster is named."
    )
    datastore: str = Field(
        default="tuneloop", description="AML datastore pointing at the prepared container."
    )
    # NoDecode: the text reaches _json_mapping, which says what is wrong with it (pydantic-settings'
    # own JSON decoding of complex fields fails with a message that names no cause).
    line_overrides: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict,
        description='Per-line parameter overrides, JSON: {"line": {"num_train_epochs": 2}}.',
    )
    # In Phi-4's inference allow-list (system metadata supportedComputes.inferenceComputes).
    # Not Standard_NC6s_v3: Azure retired NCv3 on 2025-09-30 (shared.platform.metadata).
    inference_instance_type: str = Field(
        default="Standard_NC24ads_A100_v4",
        description="VM size of the online deployments (in the base model's allow-list).",
    )
    inference_instance_count: int = Field(default=1, ge=1)
    gpus_per_node: int | None = Field(
        default=None,
        ge=1,
        le=8,
        description="GPUs per node of the fine-tune compute when its VM size list cannot be "
        "read (that list needs a subscription-scope read); None = look it up.",
    )

    # --- release ---------------------------------------------------------------------------
    # exam: the candidate sits the line's exam beside the live model (shared.release.exam);
    # auto: promoted without comparison; manual: held at 0 % for `tuneloop promote`;
    # gate: the old eval_loss comparison, now a deprecated alias of exam (see release_warnings).
    promotion: Literal["exam", "auto", "manual", "gate"] = "exam"
    gate_metric: Literal["chrf", "bleu", "exact"] = Field(
        default="chrf", description="The exam score that decides (sacrebleu chrF, BLEU, or "
        "exact match; every one on a 0-100 scale)."
    )
    gate_tolerance: float = Field(
        default=0.0, ge=0.0, le=100.0,
        description="Points of the gate metric a candidate may score below the live model.",
    )
    gate_min_score: float | None = Field(
        default=None, ge=0.0, le=100.0,
        description="Lowest gate-metric score a candidate may have to be promoted (None = any).",
    )
    exam_examples: int = Field(
        default=50, ge=1, le=10_000,
        description="Examples in a sampled exam (a golden exam is used whole).",
    )
    exam_concurrency: int = Field(default=4, ge=1, le=32)
    exam_call_timeout: float = Field(
        default=120.0, gt=0.0, description="Seconds one exam answer may take."
    )
    exam_max_new_tokens: int = Field(default=128, ge=1, le=512)
    smoke_examples: int = Field(default=2, ge=1, le=3)
    reconcile_schedule: str = "0 */5 * * * *"

    # --- sweeper ---------------------------------------------------------------------------
    sweep_schedule: str = "0 */30 * * * *"
    idle_after: timedelta = Field(default=timedelta(hours=24))
    idle_max_requests: int = Field(default=0, ge=0)
    sweep_max_deletions: int = Field(default=5, ge=0)
    sweep_mode: Literal["delete", "dry-run"] = "delete"

    # --- local platform --------------------------------------------------------------------
    home: Path = Field(default=Path(".tuneloop"), description="Local state directory.")
    local_base_model: str | None = Field(
        default=None, description="Local HF model dir; None = tiny built-in model."
    )
    local_device: str = Field(default="cpu", description="torch device for local training.")

    # --- telemetry (shared.telemetry) ------------------------------------------------------
    telemetry: Literal["auto", "local", "off"] = Field(
        default="auto",
        description="auto: Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is "
        "set, else <home>/telemetry/*.jsonl on the local platform; local: the home's files "
        "always; off: none.",
    )

    @field_validator("events_endpoint")
    @classmethod
    def _events_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be the topic's URL, https://<topic>.<region>-1.eventgrid."
                             "azure.net/api/events")
        return value

    @field_validator("idle_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_iso_duration(value) if isinstance(value, str) else value

    @field_validator("line_overrides", mode="before")
    @classmethod
    def _json_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON ({exc})") from None
        return value

    @field_validator("line_policy", mode="before")
    @classmethod
    def _line_policy(cls, value: Any) -> Any:
        value = cls._json_mapping(value)
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object {"<line>": {"data": ..., "start": ..., '
                             '"max_train_examples": ...}}')
        return {str(line): _policy_entry(str(line), entry) for line, entry in value.items()}

    def policy_for(self, line: str) -> LinePolicy:
        """The line's data/start/cap: its TUNELOOP_LINE_POLICY entry (each key it sets) over
        TUNELOOP_LINE_DATA, TUNELOOP_LINE_START and TUNELOOP_LINE_MAX_TRAIN_EXAMPLES."""
        own = self.line_policy.get(line, {})
        return LinePolicy(
            data=own.get("data", self.line_data),
            start=own.get("start", self.line_start),
            max_train_examples=own.get("max_train_examples", self.line_max_train_examples),
        )

    @property
    def workspace_configured(self) -> bool:
        return bool(self.subscription_id and self.resource_group and self.workspace_name)

    @property
    def platform_kind(self) -> Literal["local", "azureml"]:
        if self.platform == "auto":
            return "azureml" if self.workspace_configured else "local"
        return self.platform

    @property
    def workspace_arm_id(self) -> str:
        """The Event Grid topic job events must come from (the local platform has its own)."""
        if self.platform_kind == "local":
            return LOCAL_WORKSPACE_ID
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
        )


# Values never echoed in an error message (a connection string carries the account key).
_SECRET_SETTINGS = frozenset({"storage_connection_string", "events_key"})


def settings_error(exc: ValidationError | SettingsError) -> ConfigError:
    """One ConfigError naming each invalid ``TUNELOOP_*`` setting, what is wrong, what to do.

    The one place where pydantic's errors become tuneloop's: :func:`load_settings` and the
    ``tuneloop`` command use it, so every entry point says the same thing.
    """
    if isinstance(exc, SettingsError):
        found = re.search(r'field "(\w+)"', str(exc))
        name = found.group(1) if found else None
        env = f"TUNELOOP_{name.upper()}" if name else "a TUNELOOP_* setting"
        return ConfigError(f"{env} cannot be read: {exc}", hint=_settings_hint([name]))
    problems: list[str] = []
    names: list[str | None] = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err.get("loc", ())]
        name = loc[0] if loc else None
        names.append(name)
        env = f"TUNELOOP_{name.upper()}" if name else "a TUNELOOP_* setting"
        where = f" at {'.'.join(loc[1:])}" if len(loc) > 1 else ""
        shown = "" if name in _SECRET_SETTINGS or len(loc) > 1 else f"={_shown(err.get('input'))}"
        reason = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        reason = reason[:1].lower() + reason[1:]
        problems.append(f"{env}{shown} is invalid{where}: {reason}")
    return ConfigError("; ".join(problems), hint=_settings_hint(names))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _settings_hint(names: list[str | None]) -> str:
    known = [n for n in dict.fromkeys(names) if n in Settings.model_fields]
    if len(known) == 1 and len(names) == 1:
        name = known[0]
        default = Settings.model_fields[name].get_default(call_default_factory=True)
        if default is None:
            return f"fix TUNELOOP_{name.upper()} or unset it (it is optional)"
        shown = _default_text(default)
        return f"fix TUNELOOP_{name.upper()} or unset it to use the default {shown}"
    return "fix these settings or unset them to use their defaults"


def _default_text(value: Any) -> str:
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        return f"PT{seconds // 3600}H" if seconds % 3600 == 0 else f"PT{seconds}S"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return repr(value) if isinstance(value, str) else str(value)


def release_warnings(settings: Settings) -> list[str]:
    """What the release settings choose that a person should know at start (pure)."""
    if settings.promotion == "auto":
        return [
            "TUNELOOP_PROMOTION=auto: every smoke-tested model is promoted without comparing it "
            "with the live one; unset it to use the exam gate (TUNELOOP_PROMOTION=exam)"
        ]
    if settings.promotion == "gate":
        return [
            "TUNELOOP_PROMOTION=gate is deprecated: it now means exam (the candidate and the live "
            "model answer the line's exam; eval_loss is reported, no longer compared); "
            "set TUNELOOP_PROMOTION=exam"
        ]
    return []


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Read the settings once per process; an invalid one raises ConfigError saying which.

    The release choices worth a warning (:func:`release_warnings`) are logged here, once per
    process: at the Functions worker's start (functions/_root.py), the devhost's and each
    command's."""
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        raise settings_error(exc) from exc
    for warning in release_warnings(settings):
        log.warning("%s", warning)
    return settings
