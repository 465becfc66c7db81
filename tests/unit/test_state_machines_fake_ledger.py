"""The release's and the ledger's state machine on the in-memory ledger (no Azurite): job
events move a run forward once, duplicates change nothing, a lost ETag race is re-read."""

from __future__ import annotations

import re

import pytest
from azure.core.exceptions import ResourceModifiedError
from azure.storage.blob import BlobServiceClient

from shared.events import JobEvent
from shared.ledger import RunState
from shared.release import ReleaseContext, handle_job_event
from shared.settings import Settings
from shared.storage import Storage
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform
from tests.fakes.transport import FakeTransport, Reply

LINE = "chat"
RUN = "tl-chat-000000000001-aaaaaaaa"
CONN = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"
)


@pytest.fixture
def ctx(tmp_path: object) -> ReleaseContext:
    """A release context on the fake ledger, the fake platform and blob writes that succeed."""
    transport = FakeTransport()
    transport.add("PUT", r".", Reply(201, headers={"ETag": '"0x1"'}))
    settings = Settings(storage_connection_string=CONN, platform="local")
    storage = Storage(
        BlobServiceClient.from_connection_string(CONN, transport=transport, retry_total=0),
        settings,
    )
    return ReleaseContext(settings, FakeLedger(), FakePlatform(), storage)


def failed(run_id: str = RUN) -> JobEvent:
    return JobEvent(
        event_id=f"evt-{run_id}", event_type="RunCompleted", run_id=run_id, status="Failed",
        tags={"tuneloop_line": LINE},
    )


def test_a_failed_job_fails_its_run_once(ctx: ReleaseContext) -> None:
    """A failed job moves its SUBMITTED run to FAILED; the duplicate delivery changes nothing."""
    ctx.ledger.create(LINE, RUN, RunState.SUBMITTED)
    assert isinstance(ctx.platform, FakePlatform)
    ctx.platform.set_job(RUN, "Failed", tags={"tuneloop_run": RUN})
    handle_job_event(ctx, failed())
    first = ctx.ledger.get(LINE, RUN)
    assert first.state is RunState.FAILED
    handle_job_event(ctx, failed())
    again = ctx.ledger.get(LINE, RUN)
    assert again.state is RunState.FAILED
    assert again.timeline == first.timeline


def test_a_lost_etag_race_is_re_read_not_lost(ctx: ReleaseContext) -> None:
    """When another worker wrote the run first (412 once), the release re-reads and decides."""
    ctx.ledger.create(LINE, RUN, RunState.SUBMITTED)
    assert isinstance(ctx.platform, FakePlatform)
    ctx.platform.set_job(RUN, "Failed", tags={"tuneloop_run": RUN})
    assert isinstance(ctx.ledger, FakeLedger)
    table = ctx.ledger.table
    table.fail_next(
        ResourceModifiedError(message="UpdateConditionNotSatisfied"), method="update_entity"
    )
    handle_job_event(ctx, failed())
    assert table.faults_fired == 1  # the guarded write lost the race once
    assert ctx.ledger.get(LINE, RUN).state is RunState.FAILED
    assert not re.search("conflict", str(ctx.ledger.get(LINE, RUN).reason or ""))
