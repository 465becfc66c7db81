"""Job events through the real function object (`on_job_event` from its blueprint), with the
payloads decoded by the binding's own converter into func.EventGridEvent / func.CloudEvent."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from functions._root import set_clients
from functions.job_events import on_job_event
from functions.reconciler import reconcile_runs
from shared.clients import Clients
from shared.errors import TransientError
from shared.ledger import IN_RELEASE, RunState
from shared.storage import BlobRef
from tests.fakes.platform import FakePlatform

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
RUN = "tl-chat-0123456789ab-cdef0123"  # the run id in the fixtures
LINE = "chat"


def payload(name: str, **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())[0]
    body["data"].update(data)
    return body


def decoded(body: dict[str, Any]) -> Any:
    return EventGridEventInConverter.decode(Datum(json.dumps(body), "json"), trigger_metadata=None)


def user_function(builder: Any) -> Callable[..., None]:
    fn: Callable[..., None] = builder.build().get_user_function()
    return fn


def deliver(body: dict[str, Any]) -> None:
    user_function(on_job_event)(decoded(body))


def tick() -> None:
    user_function(reconcile_runs)(None)


@pytest.fixture
def fake(clients: Clients) -> Iterator[FakePlatform]:
    platform = FakePlatform()
    clients.use_platform(platform)
    set_clients(clients)
    yield platform
    set_clients(None)


@pytest.fixture
def run(clients: Clients, fake: FakePlatform) -> str:
    clients.ledger.create(
        LINE, RUN, RunState.SUBMITTED, name="batch1", blob="incoming/chat/batch1.jsonl",
        dataset_sha256="cd" * 32,
    )
    fake.set_job(RUN, "Completed", metrics={"eval_loss": 0.42})
    clients.storage.write_bytes(
        BlobRef(clients.settings.prepared_container, f"{RUN}/validation.jsonl"),
        json.dumps({"messages": [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "yo"}]}).encode(),
    )
    return RUN


def state(clients: Clients) -> RunState:
    return clients.ledger.get(LINE, RUN).state


def finish(clients: Clients) -> None:
    for _ in range(10):
        tick()
        if not clients.ledger.list(states=IN_RELEASE):
            return


def test_function_is_an_event_grid_trigger_named_on_job_event() -> None:
    """The blueprint registers on_job_event with an eventGridTrigger binding."""
    fn = on_job_event.build()
    assert fn.get_function_name() == "on_job_event"
    assert fn.get_trigger().get_binding_name() == "eventGridTrigger"
    timer = reconcile_runs.build()
    assert timer.get_function_name() == "reconcile_runs"
    assert timer.get_trigger().schedule == "%TUNELOOP_RECONCILE_SCHEDULE%"


def test_foreign_topic_changes_nothing(clients: Clients, fake: FakePlatform, run: str) -> None:
    """A Completed event from another workspace: the run and the platform are untouched."""
    body = payload("ml_RunCompleted.eventgrid.json")
    body["topic"] = body["topic"].replace("00000000-0000", "11111111-1111")
    deliver(body)
    assert state(clients) is RunState.SUBMITTED
    assert dict(fake.calls) == {}


def test_unknown_run_changes_nothing(clients: Clients, fake: FakePlatform, run: str) -> None:
    """A run id the ledger does not know (someone else's job in the workspace) is ignored."""
    deliver(payload("ml_RunCompleted.eventgrid.json", runId="someone-elses-job"))
    assert state(clients) is RunState.SUBMITTED
    assert dict(fake.calls) == {}


def test_child_step_run_changes_nothing(clients: Clients, fake: FakePlatform, run: str) -> None:
    """A pipeline step's Completed event does not release the parent run."""
    deliver(payload("ml_RunStatusChanged.childstep.eventgrid.json"))
    assert state(clients) is RunState.SUBMITTED
    assert dict(fake.calls) == {}


def test_running_moves_submitted_to_training(
    clients: Clients, fake: FakePlatform, run: str
) -> None:
    """RunStatusChanged Running: SUBMITTED → TRAINING."""
    deliver(payload("ml_RunStatusChanged.running.eventgrid.json"))
    assert state(clients) is RunState.TRAINING


def test_lowercase_failed_records_the_job_error(
    clients: Clients, fake: FakePlatform, run: str
) -> None:
    """runStatus 'failed' (sample casing) → FAILED with the job's error from get_job."""
    fake.set_job(RUN, "Failed", error="UserError: train_file_path has no rows")
    deliver(payload("ml_RunStatusChanged.failed.eventgrid.json"))
    rec = clients.ledger.get(LINE, RUN)
    assert rec.state is RunState.FAILED
    assert rec.reason == "job Failed: UserError: train_file_path has no rows"
    report = clients.storage.read_json(
        BlobRef(clients.settings.reports_container, f"{LINE}/batch1/run.json")
    )
    assert report["reason"] == rec.reason


def test_capitalised_runtags_payload_starts_the_release(
    clients: Clients, fake: FakePlatform, run: str
) -> None:
    """RunTags / RunStatus COMPLETED / runType null: the run is trained and its release starts."""
    deliver(payload("ml_RunStatusChanged.RunTags.eventgrid.json"))
    assert state(clients) is RunState.DEPLOYING
    assert ("tuneloop-chat", "1") in fake.models


def test_cloudevents_completed_releases(clients: Clients, fake: FakePlatform, run: str) -> None:
    """A CloudEvents-schema subscription works the same, through to PROMOTED."""
    deliver(payload("ml_RunCompleted.cloudevents.json"))
    finish(clients)
    assert state(clients) is RunState.PROMOTED


def test_running_after_completed_does_not_move_back(
    clients: Clients, fake: FakePlatform, run: str
) -> None:
    """Out of order: Completed, then a late Running; the run stays where the release put it."""
    deliver(payload("ml_RunCompleted.eventgrid.json"))
    before = state(clients)
    deliver(payload("ml_RunStatusChanged.running.eventgrid.json"))
    assert state(clients) is before is RunState.DEPLOYING


def test_twenty_concurrent_duplicates_release_once(
    clients: Clients, fake: FakePlatform, run: str
) -> None:
    """20 copies of Completed at once → one model version, one deployment, one promotion."""
    body = payload("ml_RunCompleted.eventgrid.json")
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda _: deliver(body), range(20)))
    with ThreadPoolExecutor(max_workers=5) as pool:  # and a few more while it deploys
        list(pool.map(lambda _: deliver(body), range(5)))
    finish(clients)
    rec = clients.ledger.get(LINE, RUN)
    assert rec.state is RunState.PROMOTED
    assert list(fake.models) == [("tuneloop-chat", "1")]
    assert fake.calls["register_model"] == 1
    assert list(fake.endpoints[str(rec.get("endpoint"))].deployments) == ["v01"]
    assert fake.calls["set_traffic"] == 1
    assert [e["state"] for e in rec.timeline].count("PROMOTED") == 1
    assert clients.ledger.get_claim("version-chat").fields["last"] == 1


def test_transient_failure_is_raised_for_redelivery(
    clients: Clients, fake: FakePlatform, run: str
) -> None:
    """A transient platform error fails the delivery (Event Grid redelivers); the redelivery
    continues from the recorded step."""
    fake.fail_once("deploy", TransientError("ARM throttled (429)"))
    body = payload("ml_RunCompleted.eventgrid.json")
    with pytest.raises(TransientError):
        deliver(body)
    fake.assert_faults_fired()
    assert state(clients) is RunState.DEPLOYING
    deliver(body)
    finish(clients)
    assert state(clients) is RunState.PROMOTED
    assert fake.calls["register_model"] == 1
