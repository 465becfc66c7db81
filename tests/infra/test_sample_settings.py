"""local.settings.sample.json teaches the forms the Functions host accepts (issue 10, defect 5)."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.bicep import ROOT


def sample() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "local.settings.sample.json").read_text())
    return loaded


def test_no_obsolete_worker_indexing_flag() -> None:
    """EnableWorkerIndexing is the default of the Python v2 model now; the flag is obsolete."""
    values = sample()["Values"]
    assert "EnableWorkerIndexing" not in json.dumps(values)
    assert "AzureWebJobsFeatureFlags" not in values


def test_the_trigger_connection_is_described_with_blob_and_queue_service_uris() -> None:
    """The identity form of TUNELOOP_STORAGE names the queue too (poison-blob queue), never
    recommending __serviceUri, and says which roles the identity needs."""
    text = sample()["Descriptions"]["TUNELOOP_STORAGE"]
    assert "TUNELOOP_STORAGE__blobServiceUri" in text
    assert "TUNELOOP_STORAGE__queueServiceUri" in text
    assert "Not TUNELOOP_STORAGE__serviceUri" in text
    assert "Storage Blob Data Owner" in text
    assert "Storage Queue Data Contributor" in text


def test_the_sample_names_the_user_assigned_identity_and_the_host_version() -> None:
    """AZURE_CLIENT_ID is listed (defect 7) and the host version floor is stated."""
    loaded = sample()
    assert "AZURE_CLIENT_ID" in loaded["Values"]
    assert "4.34.1" in loaded["Descriptions"]["FUNCTIONS_WORKER_RUNTIME"]
