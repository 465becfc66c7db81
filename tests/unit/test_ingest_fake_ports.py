"""The ingest state machine on in-memory ports (ledger, storage, platform; no Azurite):
exactly one job per dataset version, quarantine of invalid data, duplicates recorded, and a
transient outage mid-way retried to the same end."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceResponseError

from shared.errors import TransientError
from shared.ingest import Ingest, Outcome
from shared.ledger import RunState
from shared.settings import Settings
from shared.storage import BlobRef
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform
from tests.fakes.storage import FakeStorage, http_error
from tests.integration.test_ingest import invalid_dataset, valid_dataset
from tests.integration.test_ingest_resume import Clock, SimplePlanner

SETTINGS = Settings(platform="local", min_examples=10)
INCOMING = SETTINGS.incoming_container


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage(SETTINGS)


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


@pytest.fixture
def ingest(ledger: FakeLedger, storage: FakeStorage, platform: FakePlatform) -> Ingest:
    return Ingest(
        settings=SETTINGS, storage=storage, ledger=ledger, platform=platform,
        planner=SimplePlanner(SETTINGS), clock=Clock(),
    )


def drop(storage: FakeStorage, name: str, data: bytes) -> None:
    storage.write_bytes(BlobRef(INCOMING, name), data)


def test_a_valid_drop_submits_one_job_and_a_redelivery_changes_nothing(
    ingest: Ingest, storage: FakeStorage, ledger: FakeLedger, platform: FakePlatform
) -> None:
    """Valid data → split written, SUBMITTED, one job; the same delivery again is already done."""
    drop(storage, "chat/a.jsonl", valid_dataset())
    result = ingest.handle(INCOMING, "chat/a.jsonl")
    assert result.outcome is Outcome.SUBMITTED
    assert result.run_id is not None
    assert ledger.get("chat", result.run_id).state is RunState.SUBMITTED
    assert list(platform.jobs) == [result.run_id]
    prepared = storage.list_names(SETTINGS.prepared_container, f"{result.run_id}/")
    assert prepared == [f"{result.run_id}/train.jsonl", f"{result.run_id}/validation.jsonl"]
    again = ingest.handle(INCOMING, "chat/a.jsonl")
    assert again.outcome is Outcome.ALREADY_DONE
    assert platform.calls["submit_finetune"] == 1


def test_an_invalid_drop_is_quarantined_and_rejected(
    ingest: Ingest, storage: FakeStorage, ledger: FakeLedger, platform: FakePlatform
) -> None:
    """Invalid data → a verified copy in rejected/, the run REJECTED with a reason, no job."""
    data = invalid_dataset()
    drop(storage, "chat/bad.jsonl", data)
    result = ingest.handle(INCOMING, "chat/bad.jsonl")
    assert result.outcome is Outcome.REJECTED
    assert storage.read(SETTINGS.rejected_container, "chat/bad.jsonl") == data
    rec = ledger.get("chat", str(result.run_id))
    assert rec.state is RunState.REJECTED
    assert "invalid dataset" in (rec.reason or "")
    assert platform.jobs == {}


def test_the_same_content_under_another_name_is_a_duplicate(
    ingest: Ingest, storage: FakeStorage, platform: FakePlatform
) -> None:
    """A second name with the same content is recorded DUPLICATE; nothing more is submitted."""
    data = valid_dataset()
    drop(storage, "chat/a.jsonl", data)
    drop(storage, "chat/copy.jsonl", data)
    assert ingest.handle(INCOMING, "chat/a.jsonl").outcome is Outcome.SUBMITTED
    assert ingest.handle(INCOMING, "chat/copy.jsonl").outcome is Outcome.DUPLICATE
    assert len(platform.jobs) == 1


def test_a_ledger_outage_mid_way_is_transient_and_the_retry_finishes_once(
    ingest: Ingest, storage: FakeStorage, ledger: FakeLedger, platform: FakePlatform
) -> None:
    """A dropped connection on a ledger write raises TransientError (the host retries); the
    retry resumes from the claim and submits exactly one job."""
    drop(storage, "chat/a.jsonl", valid_dataset())
    ledger.table.fail_next(ServiceResponseError("connection reset"), method="update_entity")
    with pytest.raises(TransientError):
        ingest.handle(INCOMING, "chat/a.jsonl")
    assert ledger.table.faults_fired == 1
    result = ingest.handle(INCOMING, "chat/a.jsonl")
    assert result.outcome is Outcome.SUBMITTED
    assert platform.calls["submit_finetune"] == 1


def test_a_storage_outage_on_the_split_is_transient_and_the_retry_finishes_once(
    ingest: Ingest, storage: FakeStorage, platform: FakePlatform
) -> None:
    """A 503 while committing the split raises TransientError; the retry submits one job."""
    drop(storage, "chat/a.jsonl", valid_dataset())
    storage.blobs.fail_next(http_error(503, "ServerBusy"), method="commit_block_list")
    with pytest.raises(TransientError):
        ingest.handle(INCOMING, "chat/a.jsonl")
    assert storage.blobs.faults_fired == 1
    assert ingest.handle(INCOMING, "chat/a.jsonl").outcome is Outcome.SUBMITTED
    assert len(platform.jobs) == 1
