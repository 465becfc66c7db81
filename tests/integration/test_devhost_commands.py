"""`tuneloop upload` and the demo's dataset handling, on Azurite (no training here)."""

from __future__ import annotations

import json

import pytest

from cli.commands.demo import DEMO_DATASET, variant
from cli.commands.upload import upload_dataset
from cli.storage import storage_settings
from shared.clients import Clients
from shared.errors import ConfigError
from shared.ingest import delivery_key
from shared.settings import Settings
from shared.storage import BlobRef

pytestmark = pytest.mark.integration


def test_upload_puts_the_dataset_under_its_line_and_returns_the_new_etag(clients: Clients) -> None:
    """The blob lands at <incoming>/<line>/<name>.jsonl; its etag keys the ingest delivery."""
    data = DEMO_DATASET.read_bytes()
    blob, etag = upload_dataset(clients, data, line="support", name="first.jsonl")
    assert blob == "support/first.jsonl"
    ref = BlobRef(clients.settings.incoming_container, blob)
    props = clients.storage.properties(ref)
    assert str(props["etag"]) == etag
    assert b"".join(clients.storage.read_chunks(ref)) == data
    again_blob, again_etag = upload_dataset(clients, data, line="support", name="first")
    assert again_blob == blob
    assert again_etag != etag  # a new version: a new delivery for the same content
    container = clients.settings.incoming_container
    assert delivery_key(container, blob, etag) != delivery_key(container, blob, again_etag)


def test_upload_refuses_an_invalid_line(clients: Clients) -> None:
    """A line that cannot be a folder name is refused before anything is written."""
    with pytest.raises(ConfigError, match="not a valid line name"):
        upload_dataset(clients, b"{}", line="../etc", name="x")


def test_upload_finds_the_homes_azurite_only_when_storage_is_not_configured(
    settings: Settings, azurite: str
) -> None:
    """Configured storage wins; without it the devhost's recorded Azurite is used if it answers,
    and with neither the command says what to start or set."""
    assert storage_settings(settings) is settings
    bare = settings.model_copy(update={"storage_connection_string": None})
    with pytest.raises(ConfigError, match="no storage configured and no `tuneloop up`"):
        storage_settings(bare)  # no devhost recorded
    ports = [
        int(azurite.split(f"{kind}Endpoint=http://127.0.0.1:")[1].split("/")[0])
        for kind in ("Blob", "Queue", "Table")
    ]
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "devhost.json").write_text(json.dumps({
        "azurite_ports": ports,
        "azurite_connection_string": azurite,
    }))
    assert storage_settings(bare).storage_connection_string == azurite


def test_a_demo_variant_is_the_same_conversations_in_another_order() -> None:
    """Variant k > 0 has the same lines (so it trains the same) but a different hash."""
    data = DEMO_DATASET.read_bytes()
    assert variant(data, 0) == data
    one, two = variant(data, 1), variant(data, 2)
    assert sorted(one.splitlines()) == sorted(data.splitlines())
    assert len({data, one, two}) == 3
    assert variant(data, 1) == one  # deterministic: a re-run drops the same variant
