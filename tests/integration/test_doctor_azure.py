"""`tuneloop doctor`'s Azure checks through the real SDKs over a FakeTransport.

azure-ai-ml, azure-storage-blob, azure-data-tables, azure-monitor-querymetrics and our
azure-core REST reader (Event Grid, queue peek) serialise, page and map errors for real; the
fake answers with realistic bodies (tests/fixtures/azureml_doctor): a healthy environment,
then one thing broken at a time (403 AuthorizationFailed, 404 ResourceNotFound, storage's
AuthorizationPermissionMismatch, TableNotFound, a subscription without dead-lettering ...).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from cli.commands import doctor as doctor_command
from shared.doctor import Check, Outcome, Report, run_checks
from shared.doctor.azure import AUDIENCES
from shared.settings import Settings
from tests.fakes.credential import FakeCredential
from tests.fakes.transport import FakeTransport, Reply
from tests.fixtures.azureml.rest import REGISTRY, VM_SIZES, WORKSPACE, fixture
from tests.fixtures.azureml_doctor import (
    BLOB,
    DATA_SUBS,
    DATASTORE,
    JOB_SUBS,
    METRICS,
    MLFLOW_EXPERIMENT,
    QUEUE,
    RG_TOPICS,
    SUB_TOPICS,
    TABLE,
    arm_error,
    body,
    doctor_settings,
    doctor_transport,
    storage_error,
    table_error,
)

NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


@pytest.fixture
def transport() -> FakeTransport:
    return doctor_transport()


def doctor(
    transport: FakeTransport,
    settings: Settings | None = None,
    *,
    credential: Any = None,
    environ: dict[str, str] | None = None,
) -> Report:
    return run_checks(
        settings or doctor_settings(), credential=credential or FakeCredential(),
        transport=transport, environ=environ or {}, now=NOW,
    )


def check(report: Report, name: str) -> Check:
    found = [c for c in report.checks if c.name == name]
    assert len(found) == 1, [c.name for c in report.checks]
    return found[0]


def outcomes(report: Report) -> dict[str, Outcome]:
    return {c.name: c.outcome for c in report.checks}


# -- a healthy environment ---------------------------------------------------------------


def test_a_healthy_environment_passes_every_check(transport: FakeTransport) -> None:
    """Workspace, registry, plan, datastore, storage, both subscriptions and every role: ok."""
    report = doctor(transport)
    assert {c.name: c.what for c in report.checks if c.outcome != Outcome.OK} == {}
    assert report.passed
    for name in ("identity", "workspace", "component", "base_model", "compute", "plan",
                 "inference", "datastore", "containers", "ledger", "eventgrid.blob",
                 "eventgrid.jobs", "role.blob", "role.queue", "role.workspace",
                 "role.mlflow", "role.vm_sizes", "role.metrics"):
        assert check(report, name).outcome == Outcome.OK
    assert "Phi-4 8" in check(report, "plan").what
    assert "tuneloop-ingest" in check(report, "eventgrid.blob").what
    assert "dead-letters to sttuneloopdata/deadletter" in check(report, "eventgrid.jobs").what


def test_the_reads_are_harmless(transport: FakeTransport) -> None:
    """The doctor only reads: GETs, and the one metrics:getBatch query POST."""
    doctor(transport)
    methods = {(r.method, "metrics:getBatch" in r.url) for r in transport.requests}
    assert methods == {("GET", False), ("POST", True)}


def test_a_token_is_asked_for_every_audience_the_code_uses(transport: FakeTransport) -> None:
    """ARM, Azure ML (MLflow), Storage and Azure Monitor metrics each get a token row."""
    credential = FakeCredential()
    report = doctor(transport, credential=credential)
    for scope in AUDIENCES.values():
        assert scope in credential.scopes
    tokens = [c for c in report.checks if c.name.startswith("token.")]
    assert len(tokens) == len(AUDIENCES)
    assert all(c.outcome == Outcome.OK for c in tokens)


class _NoStorageToken(FakeCredential):
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if "https://storage.azure.com/.default" in scopes:
            raise ClientAuthenticationError("AADSTS500011: The resource principal named "
                                            "https://storage.azure.com was not found")
        return super().get_token(*scopes, **kwargs)


def test_an_audience_without_a_token_fails_its_row_only(transport: FakeTransport) -> None:
    """A credential refusing one audience fails that token row and the storage reads."""
    report = doctor(transport, credential=_NoStorageToken())
    assert check(report, "token.storage").outcome == Outcome.FAIL
    assert "AADSTS500011" in check(report, "token.storage").what
    assert check(report, "token.arm").outcome == Outcome.OK
    assert check(report, "workspace").outcome == Outcome.OK
    assert not report.passed


class _NoIdentity(FakeCredential):
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ClientAuthenticationError(
            "DefaultAzureCredential failed to retrieve a token from the included credentials. "
            "Attempted credentials: EnvironmentCredential: EnvironmentCredential authentication "
            "unavailable. ManagedIdentityCredential: ManagedIdentityCredential authentication "
            "unavailable, no response from the IMDS endpoint. AzureCliCredential: Please run "
            "'az login' to set up an account")


def test_no_identity_fails_once_and_checks_nothing_else(transport: FakeTransport) -> None:
    """No credential can sign in: the identity row fails (with az login in the message), the
    token rows fail, every other row is not checked, and nothing is sent."""
    report = doctor(transport, credential=_NoIdentity())
    identity = check(report, "identity")
    assert identity.outcome == Outcome.FAIL
    assert "az login" in identity.what
    assert "AZURE_CLIENT_ID" in identity.fix
    rest = [c for c in report.checks if c.name != "identity" and not c.name.startswith("token.")]
    assert rest
    assert {c.outcome for c in rest} == {Outcome.SKIP}
    assert transport.requests == []


def test_the_identity_row_names_azure_client_id(transport: FakeTransport) -> None:
    """With AZURE_CLIENT_ID set, the identity row says which identity DefaultAzureCredential
    picks; the signed-in object id comes from the token."""
    client_id = "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
    report = doctor(transport, doctor_settings(azure_client_id=client_id))
    what = check(report, "identity").what
    assert f"AZURE_CLIENT_ID={client_id}" in what
    assert "0f0e0d0c-0b0a-4909-8807-060504030201" in what
    unset = check(doctor(doctor_transport()), "identity").what
    assert "AZURE_CLIENT_ID not set" in unset


# -- workspace, registry, plan ---------------------------------------------------------------


def test_a_missing_workspace_fails_with_the_settings_to_fix(transport: FakeTransport) -> None:
    """404 ResourceNotFound on the workspace: the row says not found, the run fails."""
    transport.add("GET", WORKSPACE + r"\?", arm_error(404, "error_resource_not_found.json"))
    report = doctor(transport)
    row = check(report, "workspace")
    assert row.outcome == Outcome.FAIL
    assert "not found" in row.what
    assert "TUNELOOP_WORKSPACE_NAME" in row.fix
    assert not report.passed
    # what lives inside the workspace is not failed again: one root cause, one ✗
    for name in ("compute", "datastore", "role.workspace", "role.mlflow", "role.metrics"):
        assert check(report, name).outcome == Outcome.SKIP
    assert not transport.calls("GET", DATASTORE)


def test_a_forbidden_workspace_names_the_missing_role(transport: FakeTransport) -> None:
    """403 AuthorizationFailed: "missing AzureML Data Scientist on workspace ws-tuneloop"."""
    transport.add("GET", WORKSPACE + r"\?", arm_error(403))
    row = check(doctor(transport), "workspace")
    assert row.outcome == Outcome.FAIL
    assert row.what.startswith("missing AzureML Data Scientist on workspace ws-tuneloop")
    assert row.fix == "grant the identity AzureML Data Scientist on workspace ws-tuneloop"


def test_a_model_that_does_not_resolve_fails_and_skips_the_plan(
    transport: FakeTransport,
) -> None:
    """A base model the registry does not have: base_model fails, the plan is not made."""
    report = doctor(transport, doctor_settings(base_model="Phi-5-imaginary"))
    assert check(report, "base_model").outcome == Outcome.FAIL
    assert "TUNELOOP_BASE_MODEL" in check(report, "base_model").fix
    assert check(report, "plan").outcome == Outcome.SKIP
    assert check(report, "inference").outcome == Outcome.SKIP
    assert not report.passed


def test_a_retired_model_is_not_ready(transport: FakeTransport) -> None:
    """Phi-3-mini v15 (fine-tuning and inference retired on 2025-08-30, archived): the
    base_model row fails with the planner's refusals and suggests Phi-4, the inference row
    fails, and the plan is not failed a second time for the same reason."""
    settings = doctor_settings(base_model="Phi-3-mini-4k-instruct")
    report = doctor(transport, settings)
    model = check(report, "base_model")
    assert model.outcome == Outcome.FAIL
    assert "fine-tuning was retired on 2025-08-30" in model.what
    assert "archived" in model.what
    assert "use Phi-4" in model.fix
    inference = check(report, "inference")
    assert inference.outcome == Outcome.FAIL
    assert "inference retired from 2025-08-30" in inference.what
    assert check(report, "plan").outcome == Outcome.SKIP
    assert not report.passed


def test_a_retired_size_is_refused_even_on_the_allow_list(transport: FakeTransport) -> None:
    """A stale inference allow-list naming Standard_NC6s_v3 (retired 2025-09-30) does not make
    it usable: the inference row fails with the retirement and suggests a current size."""
    from tests.fixtures.azureml_doctor import model_phi4

    model = model_phi4()
    computes = model["properties"]["systemMetadata"]["supportedComputes"]
    computes["inferenceComputes"] = ["Standard_NC6s_v3", *computes["inferenceComputes"]]
    transport.add("GET", REGISTRY + r"/models/Phi-4/versions\?", Reply(200, {"value": [model]}))
    transport.add("GET", REGISTRY + r"/models/Phi-4/versions/8\?", Reply(200, model))
    row = check(doctor(transport, doctor_settings(inference_instance_type="Standard_NC6s_v3")),
                "inference")
    assert row.outcome == Outcome.FAIL
    assert "retired by Azure on 2025-09-30" in row.what
    assert "e.g. Standard_NC24ads_A100_v4" in row.fix


def test_a_compute_size_off_the_allow_list_fails_the_plan(transport: FakeTransport) -> None:
    """A cluster of Standard_NC6s_v3 (not in Phi-4's fine-tune list): the planner refuses."""
    compute = copy.deepcopy(fixture("compute_gpu-a100.json"))
    compute["properties"]["properties"]["vmSize"] = "STANDARD_NC6S_V3"
    transport.add("GET", WORKSPACE + r"/computes/gpu-a100\?", Reply(200, compute))
    plan = check(doctor(transport), "plan")
    assert plan.outcome == Outcome.FAIL
    assert "fine-tune allow-list" in plan.what


def test_a_missing_cluster_fails_the_compute_row(transport: FakeTransport) -> None:
    """404 on the cluster: the compute row fails and says to create it."""
    transport.add("GET", WORKSPACE + r"/computes/gpu-a100\?", arm_error(
        404, "error_resource_not_found.json"))
    row = check(doctor(transport), "compute")
    assert row.outcome == Outcome.FAIL
    assert "TUNELOOP_COMPUTE" in row.fix


def test_overrides_of_each_line_are_planned(transport: FakeTransport) -> None:
    """Each line in TUNELOOP_LINE_OVERRIDES gets its own plan row; a bad override fails it."""
    settings = doctor_settings(line_overrides={"support": {"num_train_epochs": 2},
                                               "billing": {"lora_r": -4}})
    report = doctor(transport, settings)
    assert check(report, "plan.support").outcome == Outcome.OK
    billing = check(report, "plan.billing")
    assert billing.outcome == Outcome.FAIL
    assert "lora_r" in billing.what


def test_an_inference_size_off_the_allow_list_fails_with_a_choice(
    transport: FakeTransport,
) -> None:
    """Standard_NC6s_v3 for Phi-4 (its list starts with NC24ads A100 v4): fail, suggest one."""
    report = doctor(transport, doctor_settings(inference_instance_type="Standard_NC6s_v3"))
    row = check(report, "inference")
    assert row.outcome == Outcome.FAIL
    assert "not on Phi-4 8's inference allow-list" in row.what
    assert "Standard_NC24ads_A100_v4" in row.fix


# -- datastore and storage ---------------------------------------------------------------------


def test_a_datastore_on_another_container_fails(transport: FakeTransport) -> None:
    """The datastore must point at the prepared container of the data account."""
    store = body("datastore_tuneloop.json")
    store["properties"]["containerName"] = "azureml-blobstore-5d1c7f0e"
    store["properties"]["accountName"] = "stworkspace"
    transport.add("GET", DATASTORE, Reply(200, store))
    row = check(doctor(transport), "datastore")
    assert row.outcome == Outcome.FAIL
    assert "not prepared" in row.what
    assert "not sttuneloopdata" in row.what


def test_a_missing_datastore_fails(transport: FakeTransport) -> None:
    """404 UserError "DataStore tuneloop was not found": the row fails."""
    transport.add("GET", DATASTORE, arm_error(404, "error_datastore_not_found.json"))
    row = check(doctor(transport), "datastore")
    assert row.outcome == Outcome.FAIL
    assert "not found" in row.what
    assert "TUNELOOP_DATASTORE" in row.fix


def test_a_datastore_with_an_account_key_is_a_warning(transport: FakeTransport) -> None:
    """Stored credentials work but are not what infra/ deploys: a warning, exit 0."""
    store = body("datastore_tuneloop.json")
    store["properties"]["credentials"] = {"credentialsType": "AccountKey"}
    transport.add("GET", DATASTORE, Reply(200, store))
    report = doctor(transport)
    assert check(report, "datastore").outcome == Outcome.WARN
    assert report.passed


def test_a_missing_container_is_named(transport: FakeTransport) -> None:
    """404 ContainerNotFound for rejected: the containers row fails naming it."""
    transport.add("GET", BLOB + r"/rejected\?restype=container$",
                  storage_error(404, "ContainerNotFound", "container_not_found.xml"))
    row = check(doctor(transport), "containers")
    assert row.outcome == Outcome.FAIL
    assert "missing container(s) rejected" in row.what


def test_a_missing_ledger_table_is_a_warning(transport: FakeTransport) -> None:
    """404 TableNotFound: the app creates the table on first use, so a warning only."""
    transport.add("GET", TABLE, table_error(404, "table_not_found.json"))
    report = doctor(transport)
    assert check(report, "ledger").outcome == Outcome.WARN
    assert report.passed


def test_a_missing_active_table_is_a_warning_naming_it(transport: FakeTransport) -> None:
    """The ledger table exists but its active table (in-flight index, open claims) does not:
    a warning that names the active table."""
    transport.add("GET", TABLE.replace("(?:active)?", "active"),
                  table_error(404, "table_not_found.json"))
    row = check(doctor(transport), "ledger")
    assert row.outcome == Outcome.WARN
    assert "tunelooprunsactive" in row.what
    assert "tuneloopruns," not in row.what


def test_a_forbidden_table_names_the_table_role(transport: FakeTransport) -> None:
    """403 AuthorizationPermissionMismatch on the table: missing Storage Table Data
    Contributor on the account."""
    transport.add("GET", TABLE, table_error(403, "table_forbidden.json"))
    row = check(doctor(transport), "ledger")
    assert row.outcome == Outcome.FAIL
    assert row.what.startswith(
        "missing Storage Table Data Contributor on data account sttuneloopdata")


def test_forbidden_blobs_name_the_blob_role(transport: FakeTransport) -> None:
    """403 on listing blobs: missing Storage Blob Data Owner on the data account."""
    transport.add("GET", BLOB + r"/incoming\?restype=container&comp=list",
                  storage_error(403, "AuthorizationPermissionMismatch"))
    row = check(doctor(transport), "role.blob")
    assert row.outcome == Outcome.FAIL
    assert row.what.startswith("missing Storage Blob Data Owner on data account sttuneloopdata")


def test_the_poison_queue_needs_the_queue_role(transport: FakeTransport) -> None:
    """403 on peeking the poison queue: missing Storage Queue Data Contributor."""
    transport.add("GET", QUEUE, storage_error(403, "AuthorizationPermissionMismatch"))
    row = check(doctor(transport), "role.queue")
    assert row.outcome == Outcome.FAIL
    assert row.what.startswith("missing Storage Queue Data Contributor on data account")


class _Signed(FakeCredential):
    """Tokens carrying the claims of a person (upn) or of a managed identity (xms_mirid)."""

    def __init__(self, **claims: str) -> None:
        super().__init__()
        self.claims = claims

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        import base64

        token = super().get_token(*scopes, **kwargs)
        head, payload, sig = token.token.split(".")
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        data.update(self.claims)
        raw = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
        return AccessToken(f"{head}.{raw}.{sig}", token.expires_on)


def test_a_role_only_the_app_holds_is_a_warning_for_a_person(transport: FakeTransport) -> None:
    """Signed in as a person (az login), a 403 on the poison queue or the metrics API is a
    warning (docs/roles.md gives those roles to the app only); as the app's managed identity
    it is a failure."""
    from tests.fixtures.azureml_sweep import METRICS_ERRORS

    transport.add("GET", QUEUE, storage_error(403, "AuthorizationPermissionMismatch"))
    transport.add("POST", METRICS, Reply(401, METRICS_ERRORS[401]))
    person = doctor(transport, credential=_Signed(upn="ops@contoso.com", idtyp="user"))
    assert "user ops@contoso.com" in check(person, "identity").what
    for name in ("role.queue", "role.metrics"):
        assert check(person, name).outcome == Outcome.WARN
        assert "signed in as a person" in check(person, name).what
    mirid = ("/subscriptions/x/resourcegroups/rg-tuneloop/providers/"
             "Microsoft.ManagedIdentity/userAssignedIdentities/id-tuneloop")
    app = doctor(transport, credential=_Signed(xms_mirid=mirid))
    assert "managed identity id-tuneloop" in check(app, "identity").what
    assert check(app, "role.queue").outcome == Outcome.FAIL
    assert check(app, "role.metrics").outcome == Outcome.FAIL


def test_a_poison_queue_not_created_yet_is_fine(transport: FakeTransport) -> None:
    """404 QueueNotFound means the identity got past authorisation: ok."""
    transport.add("GET", QUEUE, storage_error(404, "QueueNotFound", "queue_not_found.xml"))
    assert check(doctor(transport), "role.queue").outcome == Outcome.OK


def test_the_queue_endpoint_setting_is_used(transport: FakeTransport) -> None:
    """TUNELOOP_STORAGE__queueServiceUri (the trigger's connection) names the queue service."""
    other = "https://sthost.queue.core.windows.net"
    transport.add("GET", r"^https://sthost\.queue\.core\.windows\.net/webjobs-blobtrigger-poison",
                  Reply(200, "<QueueMessagesList></QueueMessagesList>"))
    doctor(transport, environ={"TUNELOOP_STORAGE__queueServiceUri": other})
    assert transport.calls("GET", r"^https://sthost\.queue\.")
    assert not transport.calls("GET", QUEUE)


# -- Event Grid --------------------------------------------------------------------------------


def test_no_system_topic_on_the_account_fails(transport: FakeTransport) -> None:
    """No topic whose source is the data account (resource group nor subscription): fail."""
    topics = body("system_topics.json")
    topics["value"] = topics["value"][1:]
    transport.add("GET", RG_TOPICS, Reply(200, topics))
    transport.add("GET", SUB_TOPICS, Reply(200, topics))
    row = check(doctor(transport), "eventgrid.blob")
    assert row.outcome == Outcome.FAIL
    assert "no Event Grid system topic on storage account sttuneloopdata" in row.what
    assert transport.calls("GET", SUB_TOPICS)  # looked in the whole subscription too


def test_system_topics_are_found_on_a_later_page(transport: FakeTransport) -> None:
    """ARM pages lists with nextLink: a topic on the second page is found."""
    topics = body("system_topics.json")["value"]
    second = ("https://management.azure.com/subscriptions/00000000-1111-2222-3333-444444444444/"
              "resourceGroups/rg-tuneloop/providers/Microsoft.EventGrid/systemTopics"
              "?api-version=2022-06-15&$skipToken=page2")
    transport.add("GET", RG_TOPICS, Reply(200, {"value": topics[:1], "nextLink": second}))
    transport.add("GET", r"\$skipToken=page2", Reply(200, {"value": topics[1:]}))
    assert check(doctor(transport), "eventgrid.jobs").outcome == Outcome.OK
    assert transport.calls("GET", r"\$skipToken=page2")


def test_a_subscription_without_dead_letter_fails(transport: FakeTransport) -> None:
    """An undeliverable event would be lost: a subscription without dead-lettering fails."""
    sub = body("subscription_jobs.json")
    del sub["properties"]["deadLetterWithResourceIdentity"]
    transport.add("GET", JOB_SUBS, Reply(200, {"value": [sub]}))
    row = check(doctor(transport), "eventgrid.jobs")
    assert row.outcome == Outcome.FAIL
    assert "no dead-letter destination" in row.what


def test_a_job_subscription_missing_an_event_type_fails(transport: FakeTransport) -> None:
    """RunCompleted alone misses the failures (RunStatusChanged): fail naming it."""
    sub = body("subscription_jobs.json")
    sub["properties"]["filter"]["includedEventTypes"] = [
        "Microsoft.MachineLearningServices.RunCompleted"]
    transport.add("GET", JOB_SUBS, Reply(200, {"value": [sub]}))
    row = check(doctor(transport), "eventgrid.jobs")
    assert row.outcome == Outcome.FAIL
    assert "does not include Microsoft.MachineLearningServices.RunStatusChanged" in row.what


def test_a_job_subscription_without_the_run_tag_filter_is_a_warning(
    transport: FakeTransport,
) -> None:
    """The function filters foreign jobs itself: no runTags filter is only a warning."""
    sub = body("subscription_jobs.json")
    sub["properties"]["filter"]["advancedFilters"] = []
    transport.add("GET", JOB_SUBS, Reply(200, {"value": [sub]}))
    report = doctor(transport)
    assert check(report, "eventgrid.jobs").outcome == Outcome.WARN
    assert report.passed


def test_a_blob_subscription_on_another_container_fails(transport: FakeTransport) -> None:
    """A subject filter on reports/ lets no incoming blob through: fail."""
    sub = body("subscription_ingest.json")
    sub["properties"]["filter"]["subjectBeginsWith"] = "/blobServices/default/containers/reports/"
    transport.add("GET", DATA_SUBS, Reply(200, {"value": [sub]}))
    row = check(doctor(transport), "eventgrid.blob")
    assert row.outcome == Outcome.FAIL
    assert "does not let blobs of incoming/ through" in row.what


def test_a_blob_subscription_to_another_endpoint_does_not_count(
    transport: FakeTransport,
) -> None:
    """A webhook that is not the blob extension's: no subscription delivers to the function."""
    sub = body("subscription_ingest.json")
    sub["properties"]["destination"]["properties"]["endpointBaseUrl"] = (
        "https://func-tuneloop.azurewebsites.net/api/ingest")
    transport.add("GET", DATA_SUBS, Reply(200, {"value": [sub]}))
    row = check(doctor(transport), "eventgrid.blob")
    assert row.outcome == Outcome.FAIL
    assert "blob extension webhook" in row.what


def test_unreadable_event_grid_names_the_reader_role(transport: FakeTransport) -> None:
    """403 AuthorizationFailed listing system topics: missing Reader on the resource group."""
    transport.add("GET", RG_TOPICS, arm_error(403))
    row = check(doctor(transport), "eventgrid.jobs")
    assert row.outcome == Outcome.FAIL
    assert row.what.startswith("missing Reader (or EventGrid EventSubscription Reader) on "
                               "resource group rg-tuneloop")


def test_mlflow_refusing_every_audience_names_the_workspace_role(
    transport: FakeTransport,
) -> None:
    """MLflow answering 401 to the ml.azure.com token and to the ARM one (the release's
    fallback, defect 8): missing AzureML Data Scientist on the workspace."""
    transport.add("GET", MLFLOW_EXPERIMENT, Reply(401, {
        "error_code": "UNAUTHENTICATED", "message": "Unauthorized"}))
    row = check(doctor(transport), "role.mlflow")
    assert row.outcome == Outcome.FAIL
    assert row.what.startswith("missing AzureML Data Scientist on workspace ws-tuneloop")
    tokens = {r.headers.get("Authorization") for r in transport.calls("GET", MLFLOW_EXPERIMENT)}
    assert len(tokens) == 2  # one token per audience tried


# -- roles at subscription scope -------------------------------------------------------------


def test_forbidden_vm_sizes_are_a_warning(transport: FakeTransport) -> None:
    """403 on the subscription-scope vmSizes list: a warning with the --gpus-per-node way out."""
    transport.add("GET", VM_SIZES, arm_error(403))
    report = doctor(transport)
    row = check(report, "role.vm_sizes")
    assert row.outcome == Outcome.WARN
    assert "--gpus-per-node" in row.fix
    # the planner's own rule (defect 3): GPU count unknown is a warning, never a failure
    assert "GPUs per node unknown" in check(report, "compute").what
    assert check(report, "plan").outcome == Outcome.WARN
    assert report.passed


def test_metrics_401_names_monitoring_reader(transport: FakeTransport) -> None:
    """metrics:getBatch 401 (no Microsoft.Insights/Metrics/Read on the subscription)."""
    from tests.fixtures.azureml_sweep import METRICS_ERRORS

    transport.add("POST", METRICS, Reply(401, METRICS_ERRORS[401]))
    row = check(doctor(transport), "role.metrics")
    assert row.outcome == Outcome.FAIL
    assert row.what.startswith("missing Monitoring Reader")
    assert "subscription 00000000-1111-2222-3333-444444444444" in row.what


def test_metrics_authorization_error_per_resource_fails(transport: FakeTransport) -> None:
    """A 200 whose resource answers errorCode AuthorizationFailed is no permission either."""
    def denied(rec: Any) -> Reply:
        answer = {"values": [{"resourceid": rec.json()["resourceids"][0], "value": [{
            "name": {"value": "Completed Runs"}, "timeseries": [],
            "errorCode": "AuthorizationFailed", "errorMessage": "no access"}]}]}
        return Reply(200, answer)

    transport.add("POST", METRICS, denied)
    row = check(doctor(transport), "role.metrics")
    assert row.outcome == Outcome.FAIL
    assert "AuthorizationFailed" in row.what


def test_a_forbidden_registry_names_the_registry_role(transport: FakeTransport) -> None:
    """403 on the registry component: missing AzureML Registry User on the registry."""
    transport.add("GET", REGISTRY + r"/components/chat_completion_pipeline/versions\?",
                  arm_error(403))
    row = check(doctor(transport), "component")
    assert row.outcome == Outcome.FAIL
    assert row.what.startswith("missing AzureML Registry User")


# -- the command -------------------------------------------------------------------------------


def _command(transport: FakeTransport, settings: Settings, *, as_json: bool,
             monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setattr("shared.settings.load_settings", lambda: settings)
    out = io.StringIO()
    code = doctor_command.run(
        argparse.Namespace(json=as_json), out=out, credential=FakeCredential(),
        transport=transport, environ={}, now=NOW,
    )
    return code, out.getvalue()


def test_the_command_exits_0_when_ready_and_1_when_a_check_fails(
    transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 0 with every row ✓; exit 1 with a ✗ row and its fix below it."""
    code, text = _command(transport, doctor_settings(), as_json=False, monkeypatch=monkeypatch)
    assert code == 0
    assert text.splitlines()[-1].startswith("azureml: ready:")
    assert "✗" not in text
    transport.add("GET", DATASTORE, arm_error(404, "error_datastore_not_found.json"))
    code, text = _command(transport, doctor_settings(), as_json=False, monkeypatch=monkeypatch)
    assert code == 1
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("✗ datastore"))
    assert lines[row + 1].strip().startswith("fix: ")
    assert "not ready" in lines[-1]


def test_the_command_prints_json(
    transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json: platform, passed, counts and one object per check."""
    transport.add("GET", TABLE, table_error(404, "table_not_found.json"))
    code, text = _command(transport, doctor_settings(), as_json=True, monkeypatch=monkeypatch)
    data = json.loads(text)
    assert code == 0
    assert data["platform"] == "azureml"
    assert data["passed"] is True
    assert data["counts"]["warn"] == 1
    ledger = next(c for c in data["checks"] if c["check"] == "ledger")
    assert ledger["outcome"] == "warn"
    assert ledger["fix"]


def test_a_rest_reader_asks_for_its_token_once_for_many_reads(transport: FakeTransport) -> None:
    """The REST reader keeps one pipeline: one ARM token serves every read, not one per GET."""
    from shared.doctor.rest import ARM, ARM_SCOPE, RestReader

    credential = FakeCredential()
    reader = RestReader(credential, ARM_SCOPE, transport=transport)
    url = (f"{ARM}/subscriptions/{doctor_settings().subscription_id}/resourceGroups/rg-tuneloop"
           "/providers/Microsoft.EventGrid/systemTopics?api-version=2022-06-15")
    first, second = list(reader.list_values(url)), list(reader.list_values(url))
    reader.close()
    assert first
    assert first == second
    assert len(transport.calls("GET", RG_TOPICS)) == 2
    assert credential.scopes.count(ARM_SCOPE) == 1
