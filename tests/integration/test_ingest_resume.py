"""Crashes and outages mid-ingest on Azurite: the retry (or the stale-claim sweep) finishes once.

These drive the core (`shared.ingest.Ingest`) directly so that faults can be injected into
its ports: a storage whose writer fails once, a platform that dies on submit, a clock that
moves past the lease.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from shared.clients import Clients
from shared.errors import TransientError
from shared.ingest import LEASE, Ingest, Outcome
from shared.ledger import RunState
from shared.naming import run_id
from shared.platform.port import BaseModelInfo, FinetunePlan, ModelVersionInfo
from shared.settings import Settings
from shared.storage import CHUNK, BlobRef, BlockWriter, Storage
from tests.fakes.platform import FakePlatform
from tests.integration.test_ingest import invalid_dataset, valid_dataset

pytestmark = pytest.mark.integration


class Crash(BaseException):
    """Stands for the worker process dying: nothing in the handler gets to clean up."""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class SimplePlanner:
    """A planner for the flow tests: the run id depends on the line and content only."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(
        self,
        *,
        line: str,
        dataset_sha256: str,
        corpus: Sequence[str] = (),
        start_model: ModelVersionInfo | None = None,
    ) -> FinetunePlan:
        # the corpus and start model count, as in the real planner's fingerprint
        others = sorted(set(corpus) - {dataset_sha256})
        tail = hashlib.sha256(
            repr((others, start_model.id if start_model else None)).encode()
        ).hexdigest()[:8] if others or start_model else "f" * 8
        rid = run_id(line, dataset_sha256, tail)
        return FinetunePlan(
            run_id=rid, line=line, dataset_sha256=dataset_sha256, fingerprint=tail,
            start_model=start_model,
            base_model=BaseModelInfo(id="local:tiny", name="tiny", version="1"),
            component_name="chat_completion_pipeline", component_version="0.0.82",
            parameters={"num_train_epochs": 1},
            data_container=self.settings.prepared_container,
            train_blob=f"{rid}/train.jsonl", validation_blob=f"{rid}/validation.jsonl",
            experiment_name=f"tuneloop-{line}", display_name=rid,
        )


class FlakyStorage(Storage):
    """Real storage whose ``fail`` operation raises once (a 503 after the SDK's own retries)."""

    def __init__(self, inner: Storage, *, fail: str) -> None:
        super().__init__(inner.service, inner.settings)
        self.fail = fail

    def _maybe_fail(self, op: str) -> None:
        if self.fail == op:
            self.fail = ""
            raise TransientError(f"storage unavailable while {op} (503 Server Busy)")

    def open_writer(self, ref: BlobRef) -> BlockWriter:
        self._maybe_fail("open_writer")
        return super().open_writer(ref)

    def delete(self, ref: BlobRef, *, etag: str | None = None) -> None:
        if self.fail == "delete:crash":
            self.fail = ""
            raise Crash
        self._maybe_fail("delete")
        super().delete(ref, etag=etag)

    def write_text(self, ref: BlobRef, text: str, *, content_type: str = "text/markdown") -> None:
        if self.fail == "write_text:503":
            self.fail = ""
            busy = HttpResponseError("The server is busy.")
            busy.status_code = 503
            raise busy
        super().write_text(ref, text, content_type=content_type)

    def write_json(self, ref: BlobRef, obj: Any) -> None:
        if self.fail == "run.json:SUBMITTED:crash" and obj.get("state") == "SUBMITTED":
            self.fail = ""
            raise Crash
        super().write_json(ref, obj)

    def read_chunks(
        self, ref: BlobRef, *, etag: str | None = None, chunk_size: int = CHUNK
    ) -> Iterator[bytes]:
        if self.fail.startswith("overwrite:") and ref.container == self.settings.incoming_container:
            data, self.fail = self.fail.removeprefix("overwrite:").encode(), ""
            self.write_bytes(ref, data)  # another upload lands between event and read
        return super().read_chunks(ref, etag=etag, chunk_size=chunk_size)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


def make_ingest(
    clients: Clients, platform: FakePlatform, clock: Clock, storage: Storage | None = None
) -> Ingest:
    return Ingest(
        settings=clients.settings, storage=storage or clients.storage, ledger=clients.ledger,
        platform=platform, planner=SimplePlanner(clients.settings), clock=clock,
    )


def drop(clients: Clients, name: str, data: bytes) -> None:
    clients.storage.write_bytes(BlobRef(clients.settings.incoming_container, name), data)


def names(clients: Clients, container: str) -> list[str]:
    return sorted(clients.storage.list_names(container))


def test_crash_between_split_and_submit_is_resumed_after_the_lease(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """A handler dies after ACCEPTED; redeliveries wait out its lease, then submit exactly once."""
    incoming = clients.settings.incoming_container
    drop(clients, "chat/a.jsonl", valid_dataset(30))
    ingest = make_ingest(clients, platform, clock)
    platform.fail_once("submit_finetune", Crash())
    with pytest.raises(Crash):
        ingest.handle(incoming, "chat/a.jsonl")
    platform.assert_faults_fired()
    (run,) = clients.ledger.list(line="chat")
    assert run.state is RunState.ACCEPTED

    assert ingest.handle(incoming, "chat/a.jsonl").outcome is Outcome.IN_PROGRESS
    assert platform.jobs == {}

    clock.now += LEASE + timedelta(seconds=1)
    result = ingest.handle(incoming, "chat/a.jsonl")
    assert result.outcome is Outcome.SUBMITTED
    (run,) = clients.ledger.list(line="chat")
    assert [e["state"] for e in run.timeline] == ["RECEIVED", "ACCEPTED", "SUBMITTED"]
    assert list(platform.jobs) == [run.run_id]
    assert ingest.handle(incoming, "chat/a.jsonl").outcome is Outcome.ALREADY_DONE
    doc = clients.storage.read_json(
        BlobRef(clients.settings.reports_container, "chat/a/validation.json")
    )
    assert doc["split"] == run.get("split")
    assert doc["ingest"] == {"outcome": "accepted", "run_id": run.run_id}


def test_stale_claims_are_finished_by_the_sweep(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """When no redelivery comes, resume_stale finishes a dead handler's work once."""
    incoming = clients.settings.incoming_container
    drop(clients, "chat/b.jsonl", valid_dataset(30))
    ingest = make_ingest(clients, platform, clock)
    platform.fail_once("submit_finetune", Crash())
    with pytest.raises(Crash):
        ingest.handle(incoming, "chat/b.jsonl")
    platform.assert_faults_fired()

    clients.ledger.claim("release-tl-other", holder="someone")  # another stage's claim
    assert ingest.resume_stale() == []  # the lease is still fresh
    clock.now += LEASE * 2
    (result,) = ingest.resume_stale()
    assert result.outcome is Outcome.SUBMITTED
    assert len(platform.jobs) == 1
    assert ingest.resume_stale() == []


def test_crash_after_submit_only_closes_the_claim_on_resume(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """Dying right after SUBMITTED: the resume rewrites run.json and closes, reading nothing."""
    incoming = clients.settings.incoming_container
    drop(clients, "chat/e.jsonl", valid_dataset(20))
    flaky = FlakyStorage(clients.storage, fail="run.json:SUBMITTED:crash")
    ingest = make_ingest(clients, platform, clock, storage=flaky)
    with pytest.raises(Crash):
        ingest.handle(incoming, "chat/e.jsonl")
    clients.storage.delete(BlobRef(incoming, "chat/e.jsonl"))  # a re-read would now fail

    clock.now += LEASE * 2
    (result,) = ingest.resume_stale()
    assert result.outcome is Outcome.SUBMITTED
    run_json = clients.storage.read_json(
        BlobRef(clients.settings.reports_container, "chat/e/run.json")
    )
    assert run_json["state"] == "SUBMITTED"
    assert platform.calls["submit_finetune"] == 1


def test_transient_storage_failure_mid_split_raises_and_retry_finishes(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """A storage outage while writing the split raises; the immediate retry completes once."""
    incoming = clients.settings.incoming_container
    drop(clients, "chat/c.jsonl", valid_dataset(30))
    flaky = FlakyStorage(clients.storage, fail="open_writer")
    ingest = make_ingest(clients, platform, clock, storage=flaky)
    with pytest.raises(TransientError):
        ingest.handle(incoming, "chat/c.jsonl")
    (run,) = clients.ledger.list(line="chat")
    assert run.state is RunState.RECEIVED
    assert names(clients, clients.settings.prepared_container) == []

    # The failed handler released its claim, so the host's retry resumes without waiting.
    assert ingest.handle(incoming, "chat/c.jsonl").outcome is Outcome.SUBMITTED
    (run,) = clients.ledger.list(line="chat")
    assert run.state is RunState.SUBMITTED
    sha = run.get("dataset_sha256")
    assert names(clients, clients.settings.prepared_container) == [
        f"_drops/chat/{sha}/eval.jsonl", f"_drops/chat/{sha}/train.jsonl",
        f"{run.run_id}/train.jsonl", f"{run.run_id}/validation.jsonl",
    ]
    assert platform.calls["submit_finetune"] == 1


def test_unwrapped_server_busy_is_retried_not_recorded_as_failure(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """A raw SDK 503 (after the SDK's own retries) raises TransientError; the retry succeeds."""
    incoming = clients.settings.incoming_container
    drop(clients, "chat/f.jsonl", valid_dataset(20))
    flaky = FlakyStorage(clients.storage, fail="write_text:503")
    ingest = make_ingest(clients, platform, clock, storage=flaky)
    with pytest.raises(TransientError):
        ingest.handle(incoming, "chat/f.jsonl")
    assert clients.ledger.list() == []
    assert ingest.handle(incoming, "chat/f.jsonl").outcome is Outcome.SUBMITTED


def test_crash_after_quarantine_deletes_the_original_on_resume(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """Dying before deleting a rejected original: the resume deletes it, the copy stays intact."""
    incoming, rejected = clients.settings.incoming_container, clients.settings.rejected_container
    data = invalid_dataset()
    drop(clients, "chat/bad.jsonl", data)
    flaky = FlakyStorage(clients.storage, fail="delete:crash")
    ingest = make_ingest(clients, platform, clock, storage=flaky)
    with pytest.raises(Crash):
        ingest.handle(incoming, "chat/bad.jsonl")
    (run,) = clients.ledger.list(line="chat")
    assert run.state is RunState.REJECTED
    assert names(clients, incoming) == ["chat/bad.jsonl"]  # nothing deleted without a copy

    clock.now += LEASE * 2
    assert ingest.handle(incoming, "chat/bad.jsonl").outcome is Outcome.REJECTED
    assert names(clients, incoming) == []
    assert b"".join(clients.storage.read_chunks(BlobRef(rejected, "chat/bad.jsonl"))) == data
    (run,) = clients.ledger.list(line="chat")
    assert [e["state"] for e in run.timeline] == ["RECEIVED", "REJECTED"]


def test_transient_failure_while_deleting_keeps_the_verified_copy(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """An outage at the delete step raises; the retry finishes the quarantine once."""
    incoming, rejected = clients.settings.incoming_container, clients.settings.rejected_container
    drop(clients, "chat/bad.jsonl", invalid_dataset())
    flaky = FlakyStorage(clients.storage, fail="delete")
    ingest = make_ingest(clients, platform, clock, storage=flaky)
    with pytest.raises(TransientError):
        ingest.handle(incoming, "chat/bad.jsonl")
    assert names(clients, rejected) == ["chat/bad.jsonl"]
    assert ingest.handle(incoming, "chat/bad.jsonl").outcome is Outcome.REJECTED
    assert names(clients, incoming) == []
    assert len(clients.ledger.list(line="chat")) == 1


def test_blob_overwritten_before_it_is_read_is_left_to_its_own_event(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """Reads are pinned to the version claimed: an overwrite supersedes it, nothing mixes."""
    incoming = clients.settings.incoming_container
    drop(clients, "chat/d.jsonl", valid_dataset(20))
    replacement = valid_dataset(20, start=100).decode()
    flaky = FlakyStorage(clients.storage, fail=f"overwrite:{replacement}")
    ingest = make_ingest(clients, platform, clock, storage=flaky)
    assert ingest.handle(incoming, "chat/d.jsonl").outcome is Outcome.SUPERSEDED
    assert clients.ledger.list() == []

    # The new version's own BlobCreated event:
    assert ingest.handle(incoming, "chat/d.jsonl").outcome is Outcome.SUBMITTED
    (run,) = clients.ledger.list(line="chat")
    assert run.get("dataset_sha256") is not None
    assert len(platform.jobs) == 1


def test_a_deleted_blob_is_gone_quietly(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """An event for a blob deleted since changes nothing and does not raise."""
    ingest = make_ingest(clients, platform, clock)
    result = ingest.handle(clients.settings.incoming_container, "chat/never.jsonl")
    assert result.outcome is Outcome.GONE
    assert clients.ledger.list_claims() == []


def test_an_unexpected_error_is_recorded_once_not_retried(
    clients: Clients, platform: FakePlatform, clock: Clock
) -> None:
    """A bug mid-flow ends FAILED with its message in the report; redeliveries change nothing."""
    incoming = clients.settings.incoming_container
    drop(clients, "chat/g.jsonl", valid_dataset(20))

    def broken_planner(*, line: str, dataset_sha256: str, **_: Any) -> FinetunePlan:
        raise RuntimeError("planner bug")

    ingest = Ingest(
        settings=clients.settings, storage=clients.storage, ledger=clients.ledger,
        platform=platform, planner=broken_planner, clock=clock,
    )
    assert ingest.handle(incoming, "chat/g.jsonl").outcome is Outcome.FAILED
    (run,) = clients.ledger.list(line="chat")
    assert run.state is RunState.FAILED
    assert run.reason == "internal_error: RuntimeError: planner bug"
    doc = clients.storage.read_json(
        BlobRef(clients.settings.reports_container, "chat/g/validation.json")
    )
    assert doc["ingest"]["error"]["code"] == "internal_error"
    assert ingest.handle(incoming, "chat/g.jsonl").outcome is Outcome.ALREADY_DONE
    assert platform.calls["submit_finetune"] == 0
