"""The platform port's contract, one suite run against every implementation of the port.

Every test takes ``platform_under_test`` (see ``conftest.py``): the tests' ``FakePlatform``,
the Azure ML adapter through the real SDK and a stateful fake workspace, and the local
platform for real. No test depends on another having run first. A test states what
``shared/platform/port.py`` promises and asserts only what the port lets a caller observe;
the driver's hooks (make a job finish, was something created anew) stand in for the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.errors import (
    ConflictError,
    NameOwnedByAnotherLineError,
    NotFoundError,
    PlatformError,
)
from shared.naming import LINE_TAG, MANAGED_TAG, RUN_TAG, START_MODEL_TAG
from shared.platform.port import (
    TERMINAL_JOB_STATUSES,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    ModelVersionInfo,
    Platform,
    ProvisioningState,
)
from tests.contract.drivers import Driver

SERVED = "tl-contract"
ENSURED = "tl-contract-ensure"
DELETED = "tl-contract-delete"
RACED = "tl-contract-race"
OWNED = "tl-contract-owned"
DEPLOYMENT = "blue"
MODEL = "tuneloop-contract"
LINE_NAME = "contract"  # the drivers' line (tests.contract.drivers.LINE)
TAGS = {MANAGED_TAG: "true", LINE_TAG: "contract"}
INTRUDER = {MANAGED_TAG: "true", LINE_TAG: "Contract"}  # another line: case matters
PAYLOAD: dict[str, Any] = {
    "input_data": {
        "input_string": [[{"role": "user", "content": "Say red 2 times."}]],
        "parameters": {"max_new_tokens": 8, "do_sample": False},
    }
}


def raises_not_found(call: Callable[[], object]) -> bool:
    """Whether ``call`` raises NotFoundError (anything else propagates)."""
    try:
        call()
    except NotFoundError:
        return True
    return False


def nonzero(traffic: Mapping[str, int]) -> dict[str, int]:
    """A split without its zero entries: ``{}`` and ``{"blue": 0}`` say the same."""
    return {str(k): int(v) for k, v in traffic.items() if int(v)}


@dataclass
class Served:
    """The suite's endpoint with one deployment of the driver's trained model."""

    endpoint: str
    deployment: str
    model: ModelVersionInfo
    spec: DeploymentSpec
    first_deploys: list[DeploymentInfo]  # two racing first calls
    traffic_after_deploy: dict[str, int]


@pytest.fixture(scope="module")
def served(platform_under_test: Driver) -> Served:
    """Register the trained model, ensure the endpoint, deploy (two racing calls) and wait."""
    d = platform_under_test
    p = d.platform
    job = d.finished_job()
    model = p.register_model(MODEL, "1", job_name=job.name, tags={RUN_TAG: job.name})
    p.ensure_endpoint(SERVED, tags=TAGS)
    d.eventually(lambda: p.get_endpoint(SERVED).provisioning_state == ProvisioningState.SUCCEEDED,
                 "endpoint Succeeded")
    spec = DeploymentSpec(
        SERVED, DEPLOYMENT, model, d.instance_type, tags={RUN_TAG: job.name}
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        firsts = list(pool.map(lambda _: p.deploy(spec), range(2)))
    traffic = dict(p.get_endpoint(SERVED).traffic)
    d.eventually(
        lambda: p.get_deployment(SERVED, DEPLOYMENT).provisioning_state
        == ProvisioningState.SUCCEEDED,
        "deployment Succeeded",
    )
    return Served(SERVED, DEPLOYMENT, model, spec, firsts, traffic)


# -- fine-tuning ----------------------------------------------------------------------------


def test_adapter_implements_the_port(platform_under_test: Driver) -> None:
    """The adapter satisfies the Platform protocol and names its kind."""
    assert isinstance(platform_under_test.platform, Platform)
    assert platform_under_test.platform.kind == platform_under_test.kind


def test_get_base_model_returns_id_name_and_version(platform_under_test: Driver) -> None:
    """get_base_model identifies the model (id, name, version) and carries its tags."""
    d = platform_under_test
    model = d.platform.get_base_model(d.settings.base_model)
    assert model.id
    assert model.name
    assert model.version
    assert model.tags.get("task") == "chat-completion"
    assert model.id == d.plan.base_model.id


def test_get_base_model_unknown_raises_not_found(platform_under_test: Driver) -> None:
    """A base model the platform does not have raises NotFoundError (label or version)."""
    platform, name = platform_under_test.missing_base_model()
    with pytest.raises(NotFoundError):
        platform.get_base_model(name)
    with pytest.raises(NotFoundError):
        platform.get_base_model(name, "7")


def test_get_component_declares_data_and_model_inputs(platform_under_test: Driver) -> None:
    """The fine-tune component declares the train/validation files and the MLflow model input."""
    d = platform_under_test
    component = d.platform.get_component(d.settings.component_name)
    assert component.name == d.settings.component_name
    assert component.version
    inputs = component.inputs
    assert inputs["train_file_path"].type == "uri_file"
    assert inputs["validation_file_path"].type == "uri_file"
    assert inputs["mlflow_model_path"].type == "mlflow_model"


def test_get_component_unknown_raises_not_found(platform_under_test: Driver) -> None:
    """A component the platform does not have raises NotFoundError."""
    with pytest.raises(NotFoundError):
        platform_under_test.platform.get_component("no_such_component_pipeline")


def test_get_compute_reports_its_state(platform_under_test: Driver) -> None:
    """The planned compute reads Succeeded."""
    d = platform_under_test
    compute = d.platform.get_compute(d.compute)
    assert compute.name
    assert compute.provisioning_state == ProvisioningState.SUCCEEDED


def test_submit_finetune_is_idempotent_on_the_run_id(platform_under_test: Driver) -> None:
    """A second submit of the same plan returns the same job, and only one job exists."""
    d = platform_under_test
    first = d.platform.submit_finetune(d.plan)
    created = d.creations("job", d.plan.run_id)
    second = d.platform.submit_finetune(d.plan)
    assert first.name == second.name == d.plan.run_id
    assert second.tags.get(RUN_TAG) == d.plan.run_id
    assert d.creations("job", d.plan.run_id) == created
    assert d.platform.get_job(d.plan.run_id).name == d.plan.run_id


def test_get_job_unknown_raises_not_found(platform_under_test: Driver) -> None:
    """get_job of a name never submitted raises NotFoundError."""
    with pytest.raises(NotFoundError):
        platform_under_test.platform.get_job("tl-contract-000000000000-00000000")


def test_finished_job_is_completed_with_its_model_output(platform_under_test: Driver) -> None:
    """A finished job reads Completed (terminal) with the trained_model output and no error."""
    job = platform_under_test.finished_job()
    assert job.status == "Completed", job.error
    assert job.terminal
    assert job.status in TERMINAL_JOB_STATUSES
    assert job.outputs.get("trained_model")
    assert job.error is None


def test_finished_job_reports_its_training_metrics(platform_under_test: Driver) -> None:
    """A completed job reports the metrics its training logged (the gate reads eval_loss)."""
    job = platform_under_test.finished_job()
    assert "eval_loss" in job.metrics
    assert all(isinstance(v, float) for v in job.metrics.values())


def test_a_plan_with_a_start_model_trains_on_from_it_and_says_so(
    platform_under_test: Driver,
) -> None:
    """A plan whose start model is a registered version is accepted, and its job (submitted
    and finished) reports that version in its tags (issue 11: start from live)."""
    d = platform_under_test
    job = d.finished_job()
    start = d.platform.register_model(
        f"{MODEL}-start", "1", job_name=job.name, tags={RUN_TAG: job.name, LINE_TAG: LINE_NAME}
    )
    plan = d.plan_for(5, start_model=start)
    assert plan.start_model == start
    submitted = d.platform.submit_finetune(plan)
    assert submitted.name == plan.run_id
    assert submitted.tags.get(START_MODEL_TAG) == start.id
    finished = d.finish(plan.run_id)
    assert finished.status == "Completed", finished.error
    assert finished.tags.get(START_MODEL_TAG) == start.id
    assert finished.outputs.get("trained_model")


def test_a_start_model_that_is_not_registered_is_not_found(platform_under_test: Driver) -> None:
    """A start model the platform does not have raises NotFoundError and creates no job."""
    d = platform_under_test
    ghost = ModelVersionInfo(f"{MODEL}-never-registered", "1", "never-registered")
    plan = d.plan_for(7, start_model=ghost)
    with pytest.raises(NotFoundError):
        d.platform.submit_finetune(plan)
    with pytest.raises(NotFoundError):
        d.platform.get_job(plan.run_id)


def test_a_plan_without_validation_data_is_accepted_and_trains(
    platform_under_test: Driver,
) -> None:
    """A plan with validation_blob "" (a run with no evaluation side) is submitted and
    completes with its model."""
    d = platform_under_test
    plan = d.plan_for(9, validation=False)
    assert d.platform.submit_finetune(plan).name == plan.run_id
    finished = d.finish(plan.run_id)
    assert finished.status == "Completed", finished.error
    assert finished.outputs.get("trained_model")


# -- release --------------------------------------------------------------------------------


def test_register_model_is_idempotent_on_name_and_version(platform_under_test: Driver) -> None:
    """Registering (name, version) twice gives one version, readable by get_model_version."""
    d = platform_under_test
    job = d.finished_job()
    tags = {RUN_TAG: job.name, LINE_TAG: "contract"}
    first = d.platform.register_model(f"{MODEL}-reg", "3", job_name=job.name, tags=tags)
    created = d.creations("model", f"{MODEL}-reg", "3")
    assert created == 1
    second = d.platform.register_model(f"{MODEL}-reg", "3", job_name=job.name, tags=tags)
    assert (second.name, second.version, second.id) == (first.name, "3", first.id)
    assert first.name == f"{MODEL}-reg"
    assert first.tags.get(RUN_TAG) == job.name
    assert d.creations("model", f"{MODEL}-reg", "3") == created
    read = d.platform.get_model_version(f"{MODEL}-reg", "3")
    assert (read.name, read.version, read.id) == (first.name, "3", first.id)


def test_get_model_version_unknown_raises_not_found(platform_under_test: Driver) -> None:
    """An unregistered version, or model, raises NotFoundError."""
    p = platform_under_test.platform
    with pytest.raises(NotFoundError):
        p.get_model_version(f"{MODEL}-reg", "99")
    with pytest.raises(NotFoundError):
        p.get_model_version("tuneloop-never-registered", "1")


def test_ensure_endpoint_is_idempotent_and_settles(platform_under_test: Driver) -> None:
    """A second ensure_endpoint creates nothing new; called again it eventually reads Succeeded."""
    d = platform_under_test
    p = d.platform
    first = p.ensure_endpoint(ENSURED, tags=TAGS)
    assert first.name == ENSURED
    assert first.provisioning_state in {ProvisioningState.CREATING, ProvisioningState.SUCCEEDED}
    created = d.creations("endpoint", ENSURED)
    second = p.ensure_endpoint(ENSURED, tags=TAGS)
    assert second.name == ENSURED
    assert d.creations("endpoint", ENSURED) == created

    def settled_endpoint() -> EndpointInfo | None:
        info = p.ensure_endpoint(ENSURED, tags=TAGS)
        return info if info.provisioning_state == ProvisioningState.SUCCEEDED else None

    settled = d.eventually(settled_endpoint, "ensure_endpoint Succeeded")
    assert dict(settled.tags) == TAGS
    assert d.creations("endpoint", ENSURED) == created


def test_concurrent_ensure_endpoint_creates_one(platform_under_test: Driver) -> None:
    """Racing ensure_endpoint calls (duplicate deliveries) all get the same, single endpoint."""
    d = platform_under_test
    p = d.platform
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: p.ensure_endpoint(RACED, tags=TAGS), range(4)))
    assert {(r.name, r.id) for r in results} == {(RACED, results[0].id)}
    assert results[0].created is not None
    assert {r.created for r in results} == {results[0].created}
    created = d.creations("endpoint", RACED)
    d.eventually(lambda: p.get_endpoint(RACED).provisioning_state
                 == ProvisioningState.SUCCEEDED, "endpoint Succeeded")
    assert [e.name for e in p.list_endpoints()].count(RACED) == 1
    assert d.creations("endpoint", RACED) == created
    p.delete_endpoint(RACED)


def test_a_missing_endpoint_raises_not_found(platform_under_test: Driver) -> None:
    """get_endpoint, invoke and set_traffic on an endpoint that never existed: NotFoundError."""
    p = platform_under_test.platform
    with pytest.raises(NotFoundError):
        p.get_endpoint("tl-contract-never")
    with pytest.raises(NotFoundError):
        p.invoke("tl-contract-never", PAYLOAD)
    with pytest.raises(NotFoundError):
        p.set_traffic("tl-contract-never", {DEPLOYMENT: 100})


def test_deploy_is_idempotent_settles_and_starts_at_zero_traffic(
    platform_under_test: Driver, served: Served
) -> None:
    """Racing first deploys both return the new deployment at 0 % traffic; deploying again
    creates nothing and reads Succeeded."""
    d = platform_under_test
    for first in served.first_deploys:
        assert (first.endpoint, first.name) == (served.endpoint, served.deployment)
        assert first.provisioning_state in {
            ProvisioningState.CREATING, ProvisioningState.SUCCEEDED,
        }
    assert served.traffic_after_deploy.get(served.deployment, 0) == 0
    created = d.creations("deployment", served.endpoint, served.deployment)
    again = d.platform.deploy(served.spec)
    assert again.name == served.deployment
    assert again.provisioning_state == ProvisioningState.SUCCEEDED
    assert d.creations("deployment", served.endpoint, served.deployment) == created
    read = d.platform.get_deployment(served.endpoint, served.deployment)
    assert read.provisioning_state == ProvisioningState.SUCCEEDED
    assert read.model_id == again.model_id


def test_deploy_to_a_missing_endpoint_raises_not_found(
    platform_under_test: Driver, served: Served
) -> None:
    """A deployment needs its endpoint: deploying to a missing one raises NotFoundError."""
    spec = dataclasses.replace(served.spec, endpoint="tl-contract-missing")
    with pytest.raises(NotFoundError):
        platform_under_test.platform.deploy(spec)


def test_get_deployment_unknown_raises_not_found(
    platform_under_test: Driver, served: Served
) -> None:
    """get_deployment of a deployment that does not exist raises NotFoundError."""
    with pytest.raises(NotFoundError):
        platform_under_test.platform.get_deployment(served.endpoint, "nothere")


def test_invoke_with_a_deployment_targets_it(platform_under_test: Driver, served: Served) -> None:
    """At 0 % traffic a deployment answers only when targeted, and its answer has output."""
    d = platform_under_test
    p = d.platform
    p.set_traffic(served.endpoint, {served.deployment: 0})
    d.eventually(lambda: p.get_endpoint(served.endpoint).provisioning_state
                 == ProvisioningState.SUCCEEDED, "endpoint Succeeded")
    assert nonzero(p.get_endpoint(served.endpoint).traffic) == {}
    with pytest.raises(NotFoundError):
        p.invoke(served.endpoint, PAYLOAD)  # no deployment takes traffic
    answer = p.invoke(served.endpoint, PAYLOAD, deployment=served.deployment)
    assert isinstance(answer["output"], str)
    assert answer["output"].strip()
    d.check_targeted(served.endpoint, served.deployment)
    with pytest.raises(NotFoundError):
        p.invoke(served.endpoint, PAYLOAD, deployment="nothere")


def test_set_traffic_is_idempotent_and_reflected(
    platform_under_test: Driver, served: Served
) -> None:
    """Setting the same split twice is fine; get_endpoint and list_endpoints report it."""
    d = platform_under_test
    p = d.platform
    split = {served.deployment: 100}
    p.set_traffic(served.endpoint, split)
    p.set_traffic(served.endpoint, split)
    d.eventually(lambda: p.get_endpoint(served.endpoint).provisioning_state
                 == ProvisioningState.SUCCEEDED, "endpoint Succeeded")
    assert nonzero(p.get_endpoint(served.endpoint).traffic) == split
    [listed] = [e for e in p.list_endpoints() if e.name == served.endpoint]
    assert nonzero(listed.traffic) == split
    answer = p.invoke(served.endpoint, PAYLOAD)  # the split routes an untargeted request
    assert answer["output"].strip()


def test_set_traffic_refuses_a_bad_split(platform_under_test: Driver, served: Served) -> None:
    """A split naming a missing deployment, or not summing to 100, raises and changes nothing."""
    d = platform_under_test
    p = d.platform
    d.eventually(lambda: p.get_endpoint(served.endpoint).provisioning_state
                 == ProvisioningState.SUCCEEDED, "endpoint Succeeded")
    before = nonzero(p.get_endpoint(served.endpoint).traffic)
    with pytest.raises(PlatformError):
        p.set_traffic(served.endpoint, {"nothere": 100})
    with pytest.raises(PlatformError):
        p.set_traffic(served.endpoint, {served.deployment: 60})
    assert nonzero(p.get_endpoint(served.endpoint).traffic) == before


def test_delete_deployment_of_a_missing_one_succeeds(
    platform_under_test: Driver, served: Served
) -> None:
    """Deleting a deployment that is not there, or whose endpoint is not, is success."""
    p = platform_under_test.platform
    p.delete_deployment(served.endpoint, "nothere")
    p.delete_deployment("tl-contract-missing", served.deployment)
    assert p.get_deployment(served.endpoint, served.deployment).name == served.deployment


# -- sweeping -------------------------------------------------------------------------------


def check_listed(listed: EndpointInfo) -> None:
    """What the sweeper decides on: times (aware, ordered), state and an integer split."""
    assert listed.id
    assert listed.created is not None
    assert listed.created.tzinfo is not None
    assert listed.modified is not None
    assert listed.modified.tzinfo is not None
    assert listed.modified >= listed.created
    assert isinstance(listed.provisioning_state, str)
    assert listed.provisioning_state
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in listed.traffic.items())


def test_list_endpoints_reports_what_the_sweeper_needs(
    platform_under_test: Driver, served: Served
) -> None:
    """Each endpoint is listed once with tags, aware times, state and traffic, as get reads it."""
    d = platform_under_test
    p = d.platform
    p.ensure_endpoint(ENSURED, tags=TAGS)
    d.eventually(lambda: p.get_endpoint(ENSURED).provisioning_state
                 == ProvisioningState.SUCCEEDED, "endpoint Succeeded")
    listed = p.list_endpoints()
    names = [e.name for e in listed]
    assert len(names) == len(set(names))
    assert {served.endpoint, ENSURED} <= set(names)
    for endpoint in listed:
        check_listed(endpoint)
    mine = {e.name: e for e in listed}
    for name in (served.endpoint, ENSURED):
        assert dict(mine[name].tags) == TAGS
        got = p.get_endpoint(name)
        assert (got.name, got.id, dict(got.tags)) == (name, mine[name].id, TAGS)
        assert nonzero(got.traffic) == nonzero(mine[name].traffic)
        assert got.provisioning_state == mine[name].provisioning_state
        assert got.created == mine[name].created


def test_endpoint_requests_counts_known_and_never_guesses_unknown(
    platform_under_test: Driver, served: Served
) -> None:
    """Scoring requests are counted per endpoint; an endpoint it cannot count is absent, not 0."""
    p = platform_under_test.platform
    for _ in range(3):
        p.invoke(served.endpoint, PAYLOAD, deployment=served.deployment)
    now = datetime.now(UTC) + timedelta(seconds=1)
    endpoint = p.get_endpoint(served.endpoint)
    ghost = dataclasses.replace(
        endpoint, name="tl-contract-ghost",
        id=endpoint.id.replace(served.endpoint, "tl-contract-ghost"),
    )
    # UnknownTrafficError is for a failed query; this one can count the known endpoint.
    counts = p.endpoint_requests([endpoint, ghost], timedelta(hours=1), now=now)
    assert isinstance(counts[served.endpoint], int)
    assert counts[served.endpoint] >= 3
    assert "tl-contract-ghost" not in counts
    # Known and countable but idle in the window: a real 0, not an absence.
    before = p.endpoint_requests([endpoint], timedelta(hours=1), now=now - timedelta(days=1))
    assert before == {served.endpoint: 0}
    assert p.endpoint_requests([], timedelta(hours=1), now=now) == {}


def test_delete_endpoint_is_idempotent(platform_under_test: Driver) -> None:
    """delete_endpoint succeeds, succeeds again, and the endpoint ends up gone (NotFoundError)."""
    d = platform_under_test
    p = d.platform
    p.ensure_endpoint(DELETED, tags=TAGS)
    d.eventually(lambda: p.get_endpoint(DELETED).provisioning_state
                 == ProvisioningState.SUCCEEDED, "endpoint Succeeded")
    p.delete_endpoint(DELETED)
    p.delete_endpoint(DELETED)  # while it may still be deleting
    d.eventually(lambda: raises_not_found(lambda: p.get_endpoint(DELETED)), "endpoint gone")
    p.delete_endpoint(DELETED)  # already gone
    assert DELETED not in [e.name for e in p.list_endpoints()]


def test_delete_deployment_removes_it_and_is_idempotent(
    platform_under_test: Driver, served: Served
) -> None:
    """A deployment without traffic is deleted; deleting it again, while it may still be
    deleting and once it is gone, succeeds (its own deployment: no other test is touched)."""
    d = platform_under_test
    p = d.platform
    spec = dataclasses.replace(served.spec, name="gone")
    p.deploy(spec)
    d.eventually(lambda: p.get_deployment(served.endpoint, "gone").provisioning_state
                 == ProvisioningState.SUCCEEDED, "deployment Succeeded")
    assert nonzero(p.get_endpoint(served.endpoint).traffic).get("gone", 0) == 0
    p.delete_deployment(served.endpoint, "gone")
    p.delete_deployment(served.endpoint, "gone")  # while it may still be deleting
    d.eventually(lambda: raises_not_found(lambda: p.get_deployment(served.endpoint, "gone")),
                 "deployment gone")
    p.delete_deployment(served.endpoint, "gone")  # already gone
    assert "gone" not in nonzero(p.get_endpoint(served.endpoint).traffic)
    assert p.get_deployment(served.endpoint, served.deployment).name == served.deployment


def test_delete_deployment_with_traffic_is_refused(
    platform_under_test: Driver, served: Served
) -> None:
    """A deployment that takes traffic is not deleted: ConflictError, and it keeps serving."""
    d = platform_under_test
    p = d.platform
    p.set_traffic(served.endpoint, {served.deployment: 100})
    d.eventually(lambda: p.get_endpoint(served.endpoint).provisioning_state
                 == ProvisioningState.SUCCEEDED, "endpoint Succeeded")
    with pytest.raises(ConflictError, match="traffic"):
        p.delete_deployment(served.endpoint, served.deployment)
    read = p.get_deployment(served.endpoint, served.deployment)
    assert read.provisioning_state == ProvisioningState.SUCCEEDED
    assert nonzero(p.get_endpoint(served.endpoint).traffic) == {served.deployment: 100}
    assert p.invoke(served.endpoint, PAYLOAD)["output"].strip()


# -- ownership: a name another line's tag claims is never reused ---------------------------


def test_register_model_refuses_a_model_of_another_line(platform_under_test: Driver) -> None:
    """Registering under a model name whose versions belong to another line is a
    NameOwnedByAnotherLineError, for a new version and for an existing one; nothing is
    registered."""
    d = platform_under_test
    p = d.platform
    job = d.finished_job()
    name = f"{MODEL}-owned"
    p.register_model(name, "1", job_name=job.name, tags={LINE_TAG: "contract"})
    for version in ("1", "2"):
        with pytest.raises(NameOwnedByAnotherLineError, match="belongs to line 'contract'"):
            p.register_model(name, version, job_name=job.name, tags={LINE_TAG: "Contract"})
    assert raises_not_found(lambda: p.get_model_version(name, "2"))
    assert p.get_model_version(name, "1").tags.get(LINE_TAG) == "contract"


def test_ensure_endpoint_refuses_an_endpoint_of_another_line(
    platform_under_test: Driver,
) -> None:
    """ensure_endpoint on an endpoint tagged with another line is a
    NameOwnedByAnotherLineError, and the endpoint keeps its owner."""
    d = platform_under_test
    p = d.platform
    p.ensure_endpoint(OWNED, tags=TAGS)
    with pytest.raises(NameOwnedByAnotherLineError, match="belongs to line 'contract'"):
        p.ensure_endpoint(OWNED, tags=INTRUDER)
    assert dict(p.get_endpoint(OWNED).tags) == TAGS
    assert [e.name for e in p.list_endpoints()].count(OWNED) == 1
    d.eventually(lambda: p.get_endpoint(OWNED).provisioning_state
                 == ProvisioningState.SUCCEEDED, "endpoint Succeeded")
    p.delete_endpoint(OWNED)


def test_deploy_refuses_an_endpoint_of_another_line(
    platform_under_test: Driver, served: Served
) -> None:
    """Deploying onto an endpoint tagged with another line is a NameOwnedByAnotherLineError;
    no deployment is created."""
    d = platform_under_test
    spec = dataclasses.replace(served.spec, name="intruder", tags={**INTRUDER})
    with pytest.raises(NameOwnedByAnotherLineError, match="belongs to line 'contract'"):
        d.platform.deploy(spec)
    assert raises_not_found(lambda: d.platform.get_deployment(served.endpoint, "intruder"))
    assert d.creations("deployment", served.endpoint, "intruder") in (0, (None, None))


def test_deploy_refuses_a_model_of_another_line(
    platform_under_test: Driver, served: Served
) -> None:
    """Deploying a model tagged with another line onto this line's endpoint is a
    NameOwnedByAnotherLineError; no deployment is created."""
    d = platform_under_test
    theirs = dataclasses.replace(served.model, tags={**served.model.tags, LINE_TAG: "Contract"})
    spec = dataclasses.replace(served.spec, name="stranger", model=theirs, tags={**TAGS})
    with pytest.raises(NameOwnedByAnotherLineError, match="belongs to line 'Contract'"):
        d.platform.deploy(spec)
    assert raises_not_found(lambda: d.platform.get_deployment(served.endpoint, "stranger"))


# -- model tags: the exam's scores and retractions are tags on a registered version ---------


def test_update_model_tags_merges_into_the_version_tags(platform_under_test: Driver) -> None:
    """update_model_tags adds and overwrites only the tags it names; the others keep their
    values, and get_model_version reads the merged tags."""
    d = platform_under_test
    p = d.platform
    job = d.finished_job()
    name = f"{MODEL}-tags"
    p.register_model(name, "1", job_name=job.name,
                     tags={RUN_TAG: job.name, LINE_TAG: "contract", "tuneloop_exam": "old"})
    first = p.update_model_tags(
        name, "1", {"tuneloop_exam": "61.2", "tuneloop_exam_metric": "chrf"}
    )
    second = p.update_model_tags(name, "1", {LINE_TAG: "contract", "tuneloop_retracted": "ab"})
    assert first.tags["tuneloop_exam"] == "61.2"
    assert first.tags.get("tuneloop_retracted") is None
    read = p.get_model_version(name, "1")
    for tags in (second.tags, read.tags):
        assert tags[RUN_TAG] == job.name
        assert tags[LINE_TAG] == "contract"
        assert tags["tuneloop_exam"] == "61.2"
        assert tags["tuneloop_exam_metric"] == "chrf"
        assert tags["tuneloop_retracted"] == "ab"
    assert (read.name, read.version, read.id) == (second.name, "1", second.id)


def test_update_model_tags_of_a_missing_version_raises_not_found(
    platform_under_test: Driver,
) -> None:
    """Tagging an unregistered version, or model, raises NotFoundError and creates nothing."""
    p = platform_under_test.platform
    with pytest.raises(NotFoundError):
        p.update_model_tags(f"{MODEL}-tags", "99", {"tuneloop_exam": "1"})
    with pytest.raises(NotFoundError):
        p.update_model_tags("tuneloop-never-registered", "1", {"tuneloop_exam": "1"})
    assert raises_not_found(lambda: p.get_model_version("tuneloop-never-registered", "1"))


def test_update_model_tags_refuses_a_model_of_another_line(platform_under_test: Driver) -> None:
    """Tags naming another line than the version's are a NameOwnedByAnotherLineError; the
    version keeps its tags."""
    d = platform_under_test
    p = d.platform
    job = d.finished_job()
    name = f"{MODEL}-tags-owned"
    p.register_model(name, "1", job_name=job.name, tags={LINE_TAG: "contract"})
    with pytest.raises(NameOwnedByAnotherLineError, match="belongs to line 'contract'"):
        p.update_model_tags(name, "1", {LINE_TAG: "Contract", "tuneloop_exam": "99"})
    tags = p.get_model_version(name, "1").tags
    assert tags.get(LINE_TAG) == "contract"
    assert "tuneloop_exam" not in tags
