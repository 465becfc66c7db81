"""`tuneloop submit`: validate, plan from the workspace, upload the split to Azurite, submit once
through the SDK and a fake Azure ML transport, record the run as SUBMITTED.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from cli.commands.submit import add_arguments, submit
from shared.clients import Clients
from shared.ledger import RunState
from shared.settings import Settings
from shared.storage import BlobRef
from tests.fakes.credential import FakeCredential
from tests.fakes.transport import FakeTransport
from tests.fixtures.azureml.rest import SUB, WORKSPACE, azureml_transport, created
from tests.fixtures.chats import write_chats

pytestmark = [
    pytest.mark.integration,
]


@pytest.fixture
def azure_clients(settings: Settings) -> tuple[Clients, FakeTransport]:
    """Clients on Azurite whose platform is the Azure ML adapter over a fake transport."""
    from shared.platform.azureml import AzureMLPlatform

    s = settings.model_copy(
        update={
            "platform": "azureml",
            "subscription_id": SUB,
            "resource_group": "rg-tuneloop",
            "workspace_name": "ws-tuneloop",
            "compute": "gpu-a100",
            "datastore": "tuneloopprepared",
            "min_examples": 10,
        }
    )
    transport = azureml_transport()
    transport.add("PUT", WORKSPACE + r"/jobs/", created)
    clients = Clients(s)
    clients.use_platform(AzureMLPlatform(s, credential=FakeCredential(), transport=transport))
    clients.storage.ensure_containers()
    return clients, transport


def args_for(dataset: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(dataset), "--line", "support", "--json", *extra])


def write_dataset(path: Path, n: int = 40) -> Path:
    return write_chats(path, n)


def test_submit_uploads_split_submits_and_records(
    azure_clients: tuple[Clients, FakeTransport],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The split lands under the run id, the job PUT names it, the ledger says SUBMITTED."""
    clients, transport = azure_clients
    dataset = write_dataset(tmp_path / "support.jsonl")

    assert submit(args_for(dataset), clients) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    run_id = doc["run_id"]

    prepared = clients.settings.prepared_container
    train = clients.storage.read_chunks(BlobRef(prepared, f"{run_id}/train.jsonl"))
    validation = clients.storage.read_chunks(BlobRef(prepared, f"{run_id}/validation.jsonl"))
    lines = b"".join(train).splitlines() + b"".join(validation).splitlines()
    assert len(lines) == 40
    assert doc["split"]["train_examples"] + doc["split"]["validation_examples"] == 40

    put = transport.calls("PUT")
    assert len(put) == 1
    assert put[0].url.split("?")[0].endswith(f"/jobs/{run_id}")
    inputs = put[0].json()["properties"]["jobs"]["chat_completion_pipeline"]["inputs"]
    assert inputs["train_file_path"]["uri"] == (
        f"azureml://datastores/tuneloopprepared/paths/{run_id}/train.jsonl"
    )

    rec = clients.ledger.get("support", run_id)
    assert rec.state == RunState.SUBMITTED
    assert rec.get("job_name") == run_id
    assert doc["job"]["name"] == run_id


def test_submit_twice_submits_once(
    azure_clients: tuple[Clients, FakeTransport],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A second submit of the same dataset finds the job and the blobs: no second PUT or upload."""
    clients, transport = azure_clients
    dataset = write_dataset(tmp_path / "support.jsonl")
    assert submit(args_for(dataset), clients) == 0
    first = json.loads(capsys.readouterr().out)

    from tests.fakes.transport import Reply
    from tests.fixtures.azureml.rest import job_body

    transport.add("GET", WORKSPACE + r"/jobs/", Reply(200, job_body(first["run_id"], "Running")))
    assert submit(args_for(dataset), clients) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["run_id"] == first["run_id"]
    assert second["split"]["uploaded"] is False
    assert second["job"]["status"] == "Running"
    assert len(transport.calls("PUT")) == 1


def test_an_empty_validation_side_submits_without_a_validation_file(
    azure_clients: tuple[Clients, FakeTransport],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TUNELOOP_VALIDATION_FRACTION 0 (or a small file whose prompts all split to train): the
    job gets no validation_file_path instead of an empty file; again once the blobs exist."""
    clients, transport = azure_clients
    clients = Clients(clients.settings.model_copy(update={"validation_fraction": 0.0}))
    clients.use_platform(azure_clients[0].platform)
    dataset = write_dataset(tmp_path / "support.jsonl")
    assert submit(args_for(dataset), clients) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["split"]["validation_examples"] == 0
    inputs = transport.calls("PUT")[0].json()["properties"]["jobs"]["chat_completion_pipeline"][
        "inputs"]
    assert "validation_file_path" not in inputs
    assert "train_file_path" in inputs


def test_submit_refuses_an_invalid_dataset(
    azure_clients: tuple[Clients, FakeTransport],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An invalid dataset exits 1 before anything is planned, uploaded or submitted."""
    clients, transport = azure_clients
    bad = write_dataset(tmp_path / "few.jsonl", n=3)
    assert submit(args_for(bad), clients) == 1
    assert "not valid" in capsys.readouterr().err
    assert not transport.calls("PUT")
    assert not transport.calls("GET", r"/jobs/")
