"""The real `ingest_dataset` function on Azurite, called the way the Python worker calls it.

The host turns a BlobCreated event into SDK-type binding data (connection name, container,
blob); the worker decodes it with the blob extension's converter into a BlobClient and calls
our function. The tests do the same with real-shaped events and the real converter.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import threading
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import azurefunctions.extensions.bindings.blob as blob_ext
import pytest
from azurefunctions.extensions.base import Datum

from functions._root import set_clients
from shared.clients import Clients
from shared.errors import TransientError
from shared.ledger import RunState
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"
CONNECTION = "TUNELOOP_STORAGE"


# -- datasets ---------------------------------------------------------------------------------
def example(i: int, *, turns: int = 2) -> dict[str, Any]:
    messages: list[dict[str, str]] = [{"role": "system", "content": "Answer in one sentence."}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"Question {i}.{t}: what is {i} + {t}?"})
        messages.append({"role": "assistant", "content": f"{i} + {t} is {i + t}."})
    return {"messages": messages}


def valid_dataset(n: int = 40, *, start: int = 0) -> bytes:
    return b"".join(
        json.dumps(example(i, turns=1 + i % 3)).encode() + b"\n" for i in range(start, start + n)
    )


def invalid_dataset() -> bytes:
    lines = [json.dumps(example(i)).encode() for i in range(20)]
    lines[2] = b'{"messages": []}'
    lines[6] = b"{not json"
    return b"\n".join(lines) + b"\n"


# -- the worker's side of the binding ------------------------------------------------------------
@dataclass(frozen=True)
class ModelBindingData:
    """The fields of the worker's ``ModelBindingData`` protobuf message the converter reads."""

    version: str
    source: str
    content_type: str
    content: bytes


def blob_created_event(container: str, name: str, *, schema: str = "eventgrid") -> dict[str, Any]:
    """The fixture event re-pointed at ``container/name`` (subject and URL, as Storage sends)."""
    fixture = EVENTS / f"storage_BlobCreated.{schema}.json"
    event: dict[str, Any] = copy.deepcopy(json.loads(fixture.read_text())[0])
    event["subject"] = f"/blobServices/default/containers/{container}/blobs/{name}"
    event["data"]["url"] = f"https://tuneloopdata.blob.core.windows.net/{container}/{name}"
    return event


def binding_data(event: dict[str, Any]) -> Datum:
    """What the host sends the worker for an SDK-type blob trigger on this event."""
    path = unquote(urlsplit(event["data"]["url"]).path).lstrip("/")
    container, _, name = path.partition("/")
    content = {"Connection": CONNECTION, "ContainerName": container, "BlobName": name}
    mbd = ModelBindingData("1.0", "AzureStorageBlobs", "application/json",
                           json.dumps(content).encode())
    return Datum(value=mbd, type="model_binding_data")


_INDEX_LOCK = threading.Lock()


@functools.cache
def _index() -> Any:
    import function_app

    (fn,) = [f for f in function_app.app.get_functions()
             if f.get_function_name() == "ingest_dataset"]
    return fn


def indexed() -> Any:
    """The `ingest_dataset` Function as the worker indexes it (``get_functions`` runs once)."""
    with _INDEX_LOCK:
        return _index()


def user_function() -> Callable[..., None]:
    """The registered user function the worker calls."""
    user: Callable[..., None] = indexed().get_user_function()
    return user


def deliver(event: dict[str, Any]) -> None:
    """Decode the binding with the extension's converter and call the function (one delivery)."""
    fn = user_function()
    pytype = typing.get_type_hints(fn)["client"]
    client = blob_ext.BlobClientConverter.decode(
        data=binding_data(event), trigger_metadata={}, pytype=pytype
    )
    fn(client)


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def platform(clients: Clients) -> FakePlatform:
    fake = FakePlatform()
    clients.use_platform(fake)
    return fake


@pytest.fixture
def wired(
    clients: Clients, platform: FakePlatform, azurite: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Clients]:
    """The trigger's composition root points at this test's clients and fake platform."""
    monkeypatch.setenv(CONNECTION, azurite)
    set_clients(clients)
    yield clients
    set_clients(None)


def upload(clients: Clients, name: str, data: bytes) -> dict[str, Any]:
    container = clients.settings.incoming_container
    clients.storage.write_bytes(BlobRef(container, name), data)
    return blob_created_event(container, name)


def read(clients: Clients, container: str, name: str) -> bytes:
    return b"".join(clients.storage.read_chunks(BlobRef(container, name)))


def report(clients: Clients, prefix: str, file: str) -> Any:
    ref = BlobRef(clients.settings.reports_container, f"{prefix}/{file}")
    return clients.storage.read_json(ref)


# -- behaviour ------------------------------------------------------------------------------
def test_binding_is_an_event_grid_blob_trigger_on_the_incoming_setting() -> None:
    """The function is declared as the Event Grid-sourced blob trigger with our connection."""
    fn = indexed()
    (binding,) = fn.get_bindings_dict()["bindings"]
    assert binding["type"] == "blobTrigger"
    assert binding["source"] == "EventGrid"
    assert binding["path"] == "%TUNELOOP_INCOMING_CONTAINER%/{name}"
    assert binding["connection"] == CONNECTION
    assert blob_ext.BlobClientConverter.check_input_type_annotation(
        typing.get_type_hints(fn.get_user_function())["client"]
    )


def test_valid_dataset_is_reported_split_and_submitted(
    wired: Clients, platform: FakePlatform
) -> None:
    """A valid drop gets a report, deterministic prepared splits and exactly one submitted job."""
    data = valid_dataset(40) + json.dumps(example(3, turns=1)).encode() + b"\n"  # one duplicate
    deliver(upload(wired, "chat/first.jsonl", data))

    (run,) = wired.ledger.list(line="chat")
    assert run.state is RunState.SUBMITTED
    assert [e["state"] for e in run.timeline] == ["RECEIVED", "ACCEPTED", "SUBMITTED"]
    assert run.get("dataset_sha256") == hashlib.sha256(data).hexdigest()
    assert run.get("job_name") == run.run_id
    assert list(platform.jobs) == [run.run_id]
    assert platform.plans[run.run_id].train_blob == f"{run.run_id}/train.jsonl"

    doc = report(wired, "chat/first", "validation.json")
    assert doc["valid"] is True
    assert doc["ingest"] == {"outcome": "accepted", "run_id": run.run_id}
    split = doc["split"]
    assert split["train_examples"] + split["validation_examples"] == 40
    assert split["duplicates_dropped"] == 1
    assert run.get("split") == split
    md = wired.storage.service.get_blob_client(
        wired.settings.reports_container, "chat/first/validation.md"
    ).download_blob().readall().decode()
    assert "✅ valid" in md
    assert run.run_id in md
    assert report(wired, "chat/first", "run.json")["state"] == "SUBMITTED"

    prepared = wired.settings.prepared_container
    train = read(wired, prepared, f"{run.run_id}/train.jsonl")
    validation = read(wired, prepared, f"{run.run_id}/validation.jsonl")
    assert train.count(b"\n") == split["train_examples"]
    assert validation.count(b"\n") == split["validation_examples"] >= 1
    assert hashlib.sha256(train).hexdigest() == split["train_sha256"]


def test_split_is_deterministic_across_lines(wired: Clients, platform: FakePlatform) -> None:
    """The same examples split the same way, whichever line and file they arrive in."""
    data = valid_dataset(30)
    deliver(upload(wired, "alpha/a.jsonl", data))
    deliver(upload(wired, "beta/b.jsonl", data))
    (a,) = wired.ledger.list(line="alpha")
    (b,) = wired.ledger.list(line="beta")
    prepared = wired.settings.prepared_container
    for part in ("train", "validation"):
        assert read(wired, prepared, f"{a.run_id}/{part}.jsonl") == read(
            wired, prepared, f"{b.run_id}/{part}.jsonl"
        )


def test_invalid_dataset_is_reported_and_quarantined(
    wired: Clients, platform: FakePlatform
) -> None:
    """An invalid drop gets a report, a byte-identical quarantined copy, and leaves incoming."""
    data = invalid_dataset()
    deliver(upload(wired, "chat/broken.jsonl", data))

    (run,) = wired.ledger.list(line="chat")
    assert run.state is RunState.REJECTED
    assert "empty_messages" in (run.reason or "")
    assert "invalid_json" in (run.reason or "")
    assert read(wired, wired.settings.rejected_container, "chat/broken.jsonl") == data
    assert not wired.storage.exists(BlobRef(wired.settings.incoming_container, "chat/broken.jsonl"))
    doc = report(wired, "chat/broken", "validation.json")
    assert doc["valid"] is False
    assert {(e["line"], e["code"]) for e in doc["errors"]} >= {(3, "empty_messages"),
                                                               (7, "invalid_json")}
    assert doc["ingest"]["quarantined"] == f"{wired.settings.rejected_container}/chat/broken.jsonl"
    assert report(wired, "chat/broken", "run.json")["state"] == "REJECTED"
    assert platform.calls["submit_finetune"] == 0


def test_twenty_concurrent_deliveries_submit_once(
    wired: Clients, platform: FakePlatform
) -> None:
    """The same event delivered 20 times at once: one run, one set of splits, one submit."""
    event = upload(wired, "chat/busy.jsonl", valid_dataset(40))
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda _: deliver(event), range(20)))
    deliver(event)  # and once more after everything settled

    runs = wired.ledger.list(line="chat")
    assert [r.state for r in runs] == [RunState.SUBMITTED]
    assert platform.calls["submit_finetune"] == 1
    assert len(wired.ledger.list_claims()) == 1
    prepared = wired.storage.list_names(wired.settings.prepared_container)
    sha = runs[0].get("dataset_sha256")
    assert sorted(prepared) == [f"_drops/chat/{sha}/eval.jsonl", f"_drops/chat/{sha}/train.jsonl",
                                f"{runs[0].run_id}/train.jsonl",
                                f"{runs[0].run_id}/validation.jsonl"]


def test_same_content_under_another_name_is_a_duplicate(
    wired: Clients, platform: FakePlatform
) -> None:
    """Re-dropping the same content under another name is recorded as a duplicate, not re-run."""
    data = valid_dataset(25)
    deliver(upload(wired, "chat/monday.jsonl", data))
    deliver(upload(wired, "chat/tuesday.jsonl", data))

    states = {r.get("name"): r for r in wired.ledger.list(line="chat")}
    original, duplicate = states["monday"], states["tuesday"]
    assert original.state is RunState.SUBMITTED
    assert duplicate.state is RunState.DUPLICATE
    assert duplicate.get("duplicate_of") == original.run_id
    assert platform.calls["submit_finetune"] == 1
    doc = report(wired, "chat/tuesday", "validation.json")
    assert doc["ingest"]["duplicate_of"] == original.run_id
    assert report(wired, "chat/tuesday", "run.json")["state"] == "DUPLICATE"
    assert report(wired, "chat/monday", "run.json")["state"] == "SUBMITTED"


def test_a_failed_run_is_trained_again_when_the_data_is_dropped_again(
    wired: Clients, platform: FakePlatform
) -> None:
    """After a run FAILED, the same data dropped again is a new attempt (<run>-r2), run once."""
    data = valid_dataset(25)
    deliver(upload(wired, "chat/monday.jsonl", data))
    (first,) = wired.ledger.list(line="chat")
    wired.ledger.advance(first, RunState.FAILED, reason="job failed: node lost")

    deliver(upload(wired, "chat/monday.jsonl", data))  # the user drops it again
    deliver(upload(wired, "chat/tuesday.jsonl", data))  # and once more under another name

    runs = {r.run_id: r for r in wired.ledger.list(line="chat")}
    retry = runs[f"{first.run_id}-r2"]
    assert retry.state is RunState.SUBMITTED
    assert sorted(platform.plans) == sorted([first.run_id, retry.run_id])
    assert platform.plans[retry.run_id].tags["tuneloop_run"] == retry.run_id
    assert platform.plans[retry.run_id].train_blob == f"{retry.run_id}/train.jsonl"
    duplicates = [r for r in runs.values() if r.state is RunState.DUPLICATE]
    assert [r.get("duplicate_of") for r in duplicates] == [retry.run_id]


@pytest.mark.parametrize(
    "name",
    ["chat/notes.txt", "top-level.jsonl", "bad line!/x.jsonl", "chat/.jsonl", "_x/a.json"],
)
def test_non_datasets_are_ignored(wired: Clients, platform: FakePlatform, name: str) -> None:
    """Anything but <line>/<name>.jsonl changes nothing and stays where it is."""
    deliver(upload(wired, name, valid_dataset(12)))
    assert wired.ledger.list() == []
    assert wired.ledger.list_claims() == []
    assert wired.storage.list_names(wired.settings.reports_container) == []
    assert wired.storage.exists(BlobRef(wired.settings.incoming_container, name))


def test_cloudevents_schema_is_handled_the_same(wired: Clients, platform: FakePlatform) -> None:
    """A subscription using the CloudEvents schema binds and ingests identically."""
    container = wired.settings.incoming_container
    wired.storage.write_bytes(BlobRef(container, "chat/ce.jsonl"), valid_dataset(15))
    deliver(blob_created_event(container, "chat/ce.jsonl", schema="cloudevents"))
    assert [r.state for r in wired.ledger.list(line="chat")] == [RunState.SUBMITTED]


def test_transient_submit_failure_raises_and_the_retry_submits_once(
    wired: Clients, platform: FakePlatform
) -> None:
    """A throttled submit makes the function raise (host retry); the retry finishes once."""
    event = upload(wired, "chat/flaky.jsonl", valid_dataset(20))
    platform.fail_once("submit_finetune", TransientError("429 Too Many Requests"))
    with pytest.raises(TransientError):
        deliver(event)
    platform.assert_faults_fired()
    (run,) = wired.ledger.list(line="chat")
    assert run.state is RunState.ACCEPTED

    deliver(event)
    (run,) = wired.ledger.list(line="chat")
    assert run.state is RunState.SUBMITTED
    assert list(platform.jobs) == [run.run_id]


def test_bad_overrides_fail_the_run_with_the_plan_error(
    clients: Clients, azurite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan the component refuses ends FAILED with the planner's message in the report."""
    settings = clients.settings.model_copy(
        update={"line_overrides": {"chat": {"num_train_epochs": "many"}}}
    )
    local = Clients(settings)
    fake = FakePlatform()
    local.use_platform(fake)
    monkeypatch.setenv(CONNECTION, azurite)
    set_clients(local)
    try:
        deliver(upload(local, "chat/odd.jsonl", valid_dataset(12)))
    finally:
        set_clients(None)
    (run,) = local.ledger.list(line="chat")
    assert run.state is RunState.FAILED
    assert (run.reason or "").startswith("plan_error: ")
    assert "num_train_epochs" in (run.reason or "")
    doc = report(local, "chat/odd", "validation.json")
    assert doc["valid"] is True
    assert doc["ingest"]["error"]["code"] == "plan_error"
    assert fake.calls["submit_finetune"] == 0


def test_devhost_binding_from_an_event_ingests_the_same(
    wired: Clients, platform: FakePlatform
) -> None:
    """The devhost's binding (a BlobClient built from the event's subject) drives the function."""
    from functions.ingest import binding_for_blob_event

    event = upload(wired, "chat/local.jsonl", valid_dataset(15))
    user_function()(binding_for_blob_event(event, wired))
    assert [r.state for r in wired.ledger.list(line="chat")] == [RunState.SUBMITTED]
