"""The app settings infra/ gives the Function App are exactly what the code reads.

Derived from the Settings model (shared/settings.py) and the trigger definitions
(functions/*.py), not from a hand list of settings.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from shared.settings import Settings
from tests.infra.bicep import INFRA, ROOT, accessor, parse

# Settings infra/ leaves unset, each with the reason. A new Settings field fails
# test_every_setting_is_decided until it is set in main.bicep or listed here.
NOT_SET_IN_AZURE = {
    "storage_connection_string": "identity only: TUNELOOP_STORAGE_ACCOUNT_URL is set instead",
    "tokenizer_path": "no local tokenizer directory on the Functions host",
    "component_version": "unset = the registry's latest label",
    "base_model_version": "unset = the registry's latest label",
    "finetune_instance_type": "the named cluster (TUNELOOP_COMPUTE) is used, not serverless",
    "gpus_per_node": "unset = looked up: the template grants the vmSizes read (Monitoring Reader)",
    "home": "local platform only",
    "local_base_model": "local platform only",
    "local_device": "local platform only",
    "line_data": "unset = cumulative (the default); set it as an app setting to change it",
    "line_start": "unset = base (the default); set it as an app setting to change it",
    "line_max_train_examples": "unset = no cap on a run's training examples",
    "line_policy": "unset = no per-line override of the line data/start/cap settings",
    "gate_min_score": "unset = no lowest exam score; the exam compares with the live model",
    "events_key": "identity only: the app's identity holds EventGrid Data Sender on the topic",
    "telemetry": "unset = auto: Application Insights through the connection string "
    "(APPLICATIONINSIGHTS_CONNECTION_STRING) that the function module sets",
}
# Set for the Azure platform whatever their defaults: the workspace, our storage and the
# datastore/compute infra/ creates.
REQUIRED = {
    "platform", "storage_account_url", "subscription_id", "resource_group", "workspace_name",
    "compute", "datastore", "azure_client_id",
}


def env_name(field: str) -> str:
    """The variable a Settings field is read from (an alias if it has one)."""
    choices = getattr(Settings.model_fields[field].validation_alias, "choices", [])
    upper = [c for c in choices if isinstance(c, str) and c.isupper()]
    return upper[0] if upper else f"TUNELOOP_{field.upper()}"


def app_settings() -> dict[str, Any]:
    """Every app setting the Function App gets: main.bicep's one place + function.bicep's own."""
    main = parse(INFRA / "main.bicep")["variables"]["tuneloopSettings"]["value"]
    function = parse(INFRA / "modules" / "function.bicep")["variables"]
    settings = dict(main)
    for name in ("triggerSettings", "hostStorageSettings", "platformSettings"):
        settings.update(function[name]["value"])
    return settings


def trigger_connections() -> set[str]:
    """The connection names the triggers use (connection="..." in functions/*.py)."""
    names = set()
    for path in (ROOT / "functions").glob("*.py"):
        names |= set(re.findall(r'connection="(\w+)"', path.read_text()))
    return names


def host_resolved() -> set[str]:
    """%NAME% in trigger definitions: the host resolves these from app settings."""
    names = set()
    for path in (ROOT / "functions").glob("*.py"):
        names |= set(re.findall(r"%(\w+)%", path.read_text()))
    return names


FIELDS = {env_name(f): f for f in Settings.model_fields}


def test_every_tuneloop_setting_in_infra_is_one_the_code_reads() -> None:
    """No unknown TUNELOOP_* (or AZURE_CLIENT_ID) app setting: each is a Settings field or a
    trigger connection's ``<connection>__<property>``."""
    connections = trigger_connections()
    assert connections == {"TUNELOOP_STORAGE"}
    unknown = [
        key for key in app_settings()
        if key.startswith("TUNELOOP_")
        and key not in FIELDS
        and key.split("__")[0] not in connections
    ]
    assert not unknown, f"app settings no code reads: {unknown}"


def test_every_setting_is_decided() -> None:
    """Each Settings field is set in infra/ or deliberately left unset, with a reason."""
    in_infra = {FIELDS[k] for k in app_settings() if k in FIELDS}
    undecided = set(Settings.model_fields) - in_infra - set(NOT_SET_IN_AZURE)
    assert not undecided, (
        f"set {sorted(env_name(f) for f in undecided)} in infra/main.bicep (tuneloopSettings) "
        "or add them to NOT_SET_IN_AZURE with the reason"
    )
    both = in_infra & set(NOT_SET_IN_AZURE)
    assert not both, f"set in infra/ and listed as unset: {sorted(both)}"


def test_required_and_host_resolved_settings_are_set() -> None:
    """The workspace, storage, compute, identity and every %NAME% the host resolves are set."""
    keys = set(app_settings())
    missing = {env_name(f) for f in REQUIRED} - keys
    missing |= host_resolved() - keys
    assert not missing, f"missing app settings: {sorted(missing)}"


def test_the_trigger_connection_names_blob_and_queue_with_the_identity() -> None:
    """TUNELOOP_STORAGE uses __blobServiceUri + __queueServiceUri (the poison queue), not
    __serviceUri, with the same user-assigned identity as AZURE_CLIENT_ID and the host."""
    settings = app_settings()
    for part in ("blobServiceUri", "queueServiceUri", "credential", "clientId"):
        assert f"TUNELOOP_STORAGE__{part}" in settings
    assert "TUNELOOP_STORAGE__serviceUri" not in settings
    assert settings["TUNELOOP_STORAGE__credential"] == "managedidentity"
    same = {
        str(settings[k]) for k in
        ("TUNELOOP_STORAGE__clientId", "AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID")
    }
    assert len(same) == 1, same
    assert "clientId" in next(iter(same))
    assert "AzureWebJobsStorage" not in settings  # identity-based: no connection string
    for obsolete in ("AzureWebJobsFeatureFlags", "FUNCTIONS_WORKER_RUNTIME",
                     "FUNCTIONS_EXTENSION_VERSION"):
        assert obsolete not in settings


def resolved_main_settings() -> dict[str, str]:
    """main.bicep's settings with parameters replaced by their defaults and variables by their
    values; settings computed at deployment (outputs of other modules) are left out."""
    main = parse(INFRA / "main.bicep")
    params = {k: v.get("default") for k, v in main["parameters"].items()}
    variables = {k: v["value"] for k, v in main["variables"].items()}
    out = {}
    for key, value in main["variables"]["tuneloopSettings"]["value"].items():
        path = accessor(value)
        if len(path) == 1 and path[0] in params:
            value = params[path[0]]
        elif len(path) == 1 and path[0] in variables:
            value = variables[path[0]]
        elif len(path) == 2 and isinstance(variables.get(path[0]), dict):
            value = variables[path[0]].get(path[1])
        if isinstance(value, str) and value == str(value) and not accessor(value)[1:]:
            out[key] = value
    return out


def test_the_values_infra_sets_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The values and parameter defaults infra/ writes load into Settings without an error."""
    for key in list(os.environ):
        if key.startswith("TUNELOOP_"):
            monkeypatch.delenv(key)
    values = resolved_main_settings()
    main = parse(INFRA / "main.bicep")
    computed = {k for k, v in values.items() if v in main["parameters"] or v in main["variables"]}
    assert not computed, computed
    assert {"TUNELOOP_PROMOTION", "TUNELOOP_IDLE_AFTER", "TUNELOOP_BASE_MODEL"} <= set(values)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.platform == "azureml"
    assert settings.incoming_container == values["TUNELOOP_INCOMING_CONTAINER"]
    assert settings.base_model == values["TUNELOOP_BASE_MODEL"]
