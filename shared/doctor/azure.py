"""The Azure checks: identity and tokens, workspace, registry, the planner's rules, datastore,
storage, Event Grid and the roles the code needs.

Roles are proven by a harmless read of each API the code calls, as the identity the doctor
runs as (``DefaultAzureCredential``: a managed identity, ``AZURE_CLIENT_ID``'s identity, or
your ``az login``): list one blob, read one ledger entity, peek the poison queue, list the
workspace's endpoints, list VM sizes, one tiny ``metrics:getBatch``. A read cannot prove a
write, so a pass means the role is there, not that every write will succeed. A 401/403 reads
"missing <role> on <scope>" (the roles of docs/azure.md and infra/'s role module).

The model and compute rules are the planner's own: the doctor plans a fine-tune with the facts
it looked up (:class:`shared.finetune.Planner`), so it refuses exactly what ``tuneloop
submit`` and ingest would refuse, and never re-states a rule.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from shared.clients import CLI_SDK_OPTIONS, StorageAccess, sdk_kwargs
from shared.doctor.checks import Check, Outcome, Role, attempt, fail, ok, skip, warn
from shared.doctor.eventgrid import blob_subscription_check, job_subscription_check, reader_role
from shared.doctor.rest import ARM_SCOPE, RestReader
from shared.errors import NotFoundError, PlanError, TuneloopError, map_azure_errors
from shared.platform.port import SERVERLESS, BaseModelInfo, ComponentInterface, ComputeInfo
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from shared.platform.azureml import AzureMLPlatform

__all__ = ["AUDIENCES", "POISON_QUEUE", "azure_checks"]

# Every token audience the code asks for: ARM (azure-ai-ml's control plane), Azure ML's data
# plane (MLflow job metrics, shared/platform/azureml/_metrics.py MLFLOW_SCOPE), Storage (blobs,
# tables; azure-storage's default audience) and Azure Monitor metrics (the sweeper's
# metrics:getBatch, azure-monitor-querymetrics' default audience).
AUDIENCES: Mapping[str, str] = {
    "ARM": ARM_SCOPE,
    "Azure ML": "https://ml.azure.com/.default",
    "Storage": "https://storage.azure.com/.default",
    "Azure Monitor metrics": "https://metrics.monitor.azure.com/.default",
}
# The blob trigger's poison queue (Functions blob trigger docs: "webjobs-blobtrigger-poison"),
# in the data account when TUNELOOP_STORAGE__queueServiceUri is set.
POISON_QUEUE = "webjobs-blobtrigger-poison"
# Role names as docs/roles.md (and infra/modules/roles.bicep) grant them.
STORAGE_DATA_ROLE = "Storage Blob Data Owner"
# Rows whose role only the app's identity holds (docs/roles.md gives "you" blob, table and
# workspace roles only): run as a person, a refusal there is a warning, not a failure.
APP_ONLY_ROWS = frozenset({"role.queue", "role.metrics", "role.vm_sizes"})
# Checks of things inside the workspace: skipped (not failed again) when it does not answer.
NEEDS_WORKSPACE = frozenset(
    {"compute", "datastore", "role.workspace", "role.mlflow", "role.metrics"}
)
# Azure ML workspace metrics (Microsoft.MachineLearningServices/workspaces), used for the
# tiny getBatch when the workspace has no endpoint yet.
_WORKSPACE_METRIC = ("Microsoft.MachineLearningServices/workspaces", "Completed Runs")
_ENDPOINT_METRIC = ("Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                    "RequestsPerMinute")
_SIGN_IN = ("sign in: `az login` (or `azd auth login`) on your machine; in Azure give the app "
            "a managed identity and set AZURE_CLIENT_ID to its client id")
_NO_STORAGE_HINT = "set TUNELOOP_STORAGE_ACCOUNT_URL (https://<account>.blob.core.windows.net)"
_DOCTOR_LINE = "doctor"  # the plan's line when no line has overrides
_MLFLOW_PROBE = "tuneloop-doctor"  # an experiment name to look up (its absence is fine)
_SHA = "0" * 64


@dataclass
class _Azure:
    """What the checks share: settings, credential, transport and lazily built clients."""

    settings: Settings
    credential: TokenCredential
    transport: Any
    environ: Mapping[str, str]
    now: datetime

    def kwargs(self) -> dict[str, Any]:
        return sdk_kwargs(CLI_SDK_OPTIONS, self.transport)  # a person waits: short retries

    @cached_property
    def platform(self) -> AzureMLPlatform:
        from shared.platform.azureml import AzureMLPlatform

        return AzureMLPlatform(self.settings, credential=self.credential, transport=self.transport)

    @cached_property
    def arm(self) -> RestReader:
        return RestReader(self.credential, ARM_SCOPE, transport=self.transport)

    @cached_property
    def storage_rest(self) -> RestReader:
        return RestReader(self.credential, AUDIENCES["Storage"], transport=self.transport)

    @property
    def today(self) -> date:
        """The planner's clock (UTC date) for retirement dates."""
        return self.now.astimezone(UTC).date()

    @property
    def workspace_id(self) -> str:
        return self.settings.workspace_arm_id

    @property
    def workspace_scope(self) -> str:
        return f"workspace {self.settings.workspace_name}"

    @property
    def subscription_scope(self) -> str:
        return f"/subscriptions/{self.settings.subscription_id}"

    @cached_property
    def account(self) -> str | None:
        """The data storage account's name, from the URL or the connection string."""
        s = self.settings
        if s.storage_connection_string:
            parts = dict(
                p.split("=", 1) for p in s.storage_connection_string.split(";") if "=" in p
            )
            return parts.get("AccountName")
        if s.storage_account_url:
            return (urlparse(s.storage_account_url).hostname or "").split(".")[0] or None
        return None

    @cached_property
    def storage_access(self) -> StorageAccess:
        return StorageAccess(self.settings, lambda: self.credential, self.kwargs(),
                             hint=_NO_STORAGE_HINT)

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        return self.storage_access.blob_service()

    @cached_property
    def table_service(self) -> TableServiceClient:
        return self.storage_access.table_service()

    @cached_property
    def facts(self) -> dict[str, Any]:
        """What earlier checks looked up, for later ones (workspace, model, component, compute)."""
        return {}

    def close(self) -> None:
        """Close the SDK clients the checks built (the credential is the caller's)."""
        for name in ("blob_service", "table_service", "platform", "arm", "storage_rest"):
            client = self.__dict__.pop(name, None)
            close = getattr(client, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):  # closing must not hide the report
                    close()


# -- identity and tokens -----------------------------------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (only to say who signed in; never trusted for anything)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _who(claims: Mapping[str, Any]) -> str:
    mi = claims.get("xms_mirid")
    if mi:
        return f"managed identity {str(mi).rsplit('/', 1)[-1]} (object id {claims.get('oid')})"
    user = claims.get("upn") or claims.get("unique_name") or claims.get("preferred_username")
    if user:
        return f"user {user} (object id {claims.get('oid')})"
    app = claims.get("appid") or claims.get("azp")
    if app:
        return f"application {app} (object id {claims.get('oid')})"
    return f"object id {claims.get('oid', 'unknown')}"


def identity_check(az: _Azure) -> Check:
    """Which identity DefaultAzureCredential signs in as, and whether it can at all.

    ``AZURE_CLIENT_ID`` (``Settings.azure_client_id``) is how the composition root picks the
    app's user-assigned managed identity (shared/clients.py)."""
    client_id = az.settings.azure_client_id
    chain = (f"DefaultAzureCredential with AZURE_CLIENT_ID={client_id} (the user-assigned "
             "managed identity, or an app registration)" if client_id else
             "DefaultAzureCredential (environment, workload identity, managed identity, "
             "az/azd login, in that order); AZURE_CLIENT_ID not set")
    try:
        with map_azure_errors("getting a token for Azure Resource Manager"):
            token = az.credential.get_token(ARM_SCOPE)
    except TuneloopError as exc:
        return fail("identity", f"{chain}: cannot sign in: {exc.message}", _SIGN_IN)
    claims = _claims(token.token)
    az.facts["claims"] = claims
    return ok("identity", f"{chain}: signed in as {_who(claims)}, tenant {claims.get('tid')}")


def token_checks(az: _Azure) -> Iterator[Check]:
    """A token for every audience the code uses."""
    for label, scope in AUDIENCES.items():
        name = f"token.{label.lower().replace(' ', '_')}"

        def one(scope: str = scope, label: str = label) -> Check:
            try:
                with map_azure_errors(f"getting a token for {label} ({scope})"):
                    token = az.credential.get_token(scope)
            except TuneloopError as exc:
                return fail(f"token.{label.lower().replace(' ', '_')}", exc.message, _SIGN_IN)
            expires = datetime.fromtimestamp(token.expires_on, UTC)
            return ok(f"token.{label.lower().replace(' ', '_')}",
                      f"token for {label} ({scope}), valid until {expires:%H:%M} UTC")

        yield from attempt(name, one)


# -- workspace, registry, plan -----------------------------------------------------------------


def workspace_check(az: _Azure) -> Check:
    s = az.settings
    with map_azure_errors(f"workspace {s.workspace_name} in resource group {s.resource_group}"):
        workspace = az.platform.ml_client.workspaces.get(s.workspace_name)
    az.facts["workspace"] = workspace
    return ok("workspace", f"workspace {workspace.name} in {workspace.location} "
              f"(resource group {s.resource_group}) is reachable")


def _registry_role(az: _Azure) -> Role:
    return Role("AzureML Registry User (any signed-in identity reads the public azureml "
                "registry)", f"registry {az.settings.registry_name}")


def component_check(az: _Azure) -> Check:
    s = az.settings
    component: ComponentInterface = az.platform.get_component(
        s.component_name, s.component_version or "latest"
    )
    az.facts["component"] = component
    return ok("component", f"component {component.name} {component.version} resolves in "
              f"registry {s.registry_name}")


def base_model_check(az: _Azure) -> Check:
    s = az.settings
    model: BaseModelInfo = az.platform.get_base_model(
        s.base_model, s.base_model_version or "latest"
    )
    az.facts["base_model"] = model
    from shared.finetune import DEFAULT_BASE_MODEL, model_refusals

    refusals = model_refusals(model, az.today)  # the planner's rule: retired, archived, task
    az.facts["model_refusals"] = refusals
    if refusals:
        return fail("base_model", "; ".join(refusals),
                    f"use {DEFAULT_BASE_MODEL}, tuneloop's default base model (unset "
                    "TUNELOOP_BASE_MODEL and TUNELOOP_BASE_MODEL_VERSION)")
    return ok("base_model", f"base model {model.name} version {model.version} resolves in "
              f"registry {s.registry_name} and is fine-tunable for chat-completion")


def compute_check(az: _Azure) -> Check:
    s = az.settings
    target = s.compute or SERVERLESS
    try:
        compute: ComputeInfo = az.platform.get_compute(target)
    except NotFoundError as exc:
        fix = ("create the cluster (infra/modules/ml.bicep) or fix TUNELOOP_COMPUTE"
               if s.compute else "pick a size from the workspace region's VM sizes")
        return fail("compute", exc.message, fix)
    az.facts["compute"] = compute
    gpus = "GPUs per node unknown" if compute.gpus_per_node is None else (
        f"{compute.gpus_per_node} GPU(s) per node")
    kind = "serverless" if compute.name == SERVERLESS else f"cluster {compute.name}"
    return ok("compute", f"{kind}: size {compute.size}, {compute.provisioning_state}, {gpus}")


def plan_checks(az: _Azure) -> Iterator[Check]:
    """The planner's rules on the facts found: the model is fine-tunable for chat-completion
    and not retired, the compute size is allowed and not retired, the overrides fit."""
    from shared.finetune import Planner

    needed = ("base_model", "component")
    if any(k not in az.facts for k in needed):
        yield skip("plan", "not planned: the base model or component did not resolve",
                   "fix the checks above first")
        return
    lines = sorted(az.settings.line_overrides) or [_DOCTOR_LINE]
    planner = Planner(az.settings, az.platform, today=lambda: az.today)
    refused = set(az.facts.get("model_refusals") or ())
    for line in lines:
        label = "the default plan" if line == _DOCTOR_LINE else f"line {line}"
        name = "plan" if line == _DOCTOR_LINE else f"plan.{line}"
        try:
            plan = planner.plan(
                line=line, dataset_sha256=_SHA, base_model=az.facts["base_model"],
                component=az.facts["component"], compute=az.facts.get("compute"),
            )
        except PlanError as exc:
            problems = [p for p in exc.problems if p not in refused]  # said in base_model
            if not problems:
                yield skip(name, f"{label}: only the base model's refusal above stops it",
                           "fix the base model first")
                continue
            yield fail(name, f"{label} is refused: {'; '.join(problems)}",
                       exc.hint or "fix the settings named above")
            continue
        model = plan.base_model
        where = plan.compute or f"serverless {plan.instance_type}"
        what = (f"{label}: {model.name} {model.version} fine-tunes on {where} "
                "(model, compute and overrides pass the planner's rules)")
        if plan.warnings:
            yield warn(name, f"{what}; {'; '.join(plan.warnings)}",
                       "see docs/fine-tuning.md; the plan still runs")
        else:
            yield ok(name, what)


def inference_check(az: _Azure) -> Check:
    """The inference size is on the model's inference allow-list and inference not retired."""
    from shared.release.steps import inference_allow_list

    s = az.settings
    model: BaseModelInfo | None = az.facts.get("base_model")
    size = s.inference_instance_type
    if model is None:
        return skip("inference", f"inference size {size} not checked: the base model did not "
                    "resolve", "fix the base model first")
    from shared.platform.metadata import has_passed, retired_size, size_refusal

    problems = []
    retired = size_refusal(size, az.today, use="inference")
    if retired:
        problems.append(retired)
    allowed = inference_allow_list(model)
    if allowed is not None and size.lower() not in {a.lower() for a in allowed}:
        problems.append(f"{size} is not on {model.name} {model.version}'s inference allow-list "
                        f"({', '.join(allowed)})")
    ends = model.metadata.inference_retirement
    if ends is not None and has_passed(ends, az.today):
        problems.append(f"{model.name} {model.version}: inference retired from {ends.date()}")
    if problems:
        choices = [a for a in (allowed or []) if retired_size(a, az.today) is None]
        pick = f" (e.g. {choices[0]})" if choices else ""
        return fail("inference", "; ".join(problems),
                    f"set TUNELOOP_INFERENCE_INSTANCE_TYPE to an allowed size{pick}")
    listed = "on its allow-list" if allowed is not None else "(the model names no allow-list)"
    return ok("inference", f"inference size {size} for {model.name} {model.version} {listed}")


# -- datastore and storage -------------------------------------------------------------------


def datastore_check(az: _Azure) -> Check:
    s = az.settings
    with map_azure_errors(f"datastore {s.datastore} in workspace {s.workspace_name}"):
        store = az.platform.ml_client.datastores.get(s.datastore)
    kind_raw = getattr(store, "type", "")
    # an SDK enum (value "AzureBlob") or the YAML spelling "azure_blob"
    kind = str(getattr(kind_raw, "value", kind_raw)).lower().replace("_", "")
    container = getattr(store, "container_name", None)
    account = getattr(store, "account_name", None)
    problems = []
    if kind != "azureblob":
        problems.append(f"is a {kind or 'non-blob'} datastore, not an Azure Blob one")
    if container != s.prepared_container:
        problems.append(f"points at container {container}, not {s.prepared_container}")
    if az.account and account and account.lower() != az.account.lower():
        problems.append(f"points at account {account}, not {az.account}")
    what = f"datastore {s.datastore} ({account}/{container})"
    if problems:
        return fail("datastore", f"{what} {'; '.join(problems)}",
                    f"point datastore {s.datastore} at the {s.prepared_container} container of "
                    "the data account (infra/modules/ml.bicep), or fix TUNELOOP_DATASTORE")
    credentials = getattr(store, "credentials", None)
    kind_of = type(credentials).__name__ if credentials is not None else "identity"
    if credentials is not None and "none" not in kind_of.lower():
        return warn("datastore", f"{what} uses stored credentials ({kind_of})",
                    "use identity-based access (no credentials) as infra/ deploys it")
    return ok("datastore", f"{what}, identity-based access")


def container_check(az: _Azure) -> Check:
    s = az.settings
    names = [s.incoming_container, s.reports_container, s.rejected_container,
             s.prepared_container]
    missing = []
    for name in names:
        with map_azure_errors(f"container {name} of account {az.account}"):
            if not az.blob_service.get_container_client(name).exists():
                missing.append(name)
    if missing:
        return fail("containers", f"missing container(s) {', '.join(missing)} in account "
                    f"{az.account}", "create them (infra/modules/storage.bicep does)")
    return ok("containers", f"containers {', '.join(names)} exist in account {az.account}")


def ledger_check(az: _Azure) -> Check:
    """The ledger table and its active table (in-flight index, open claims) exist (a read of
    one entity of each also proves the table role)."""
    from shared.ledger import active_table_name

    table = az.settings.ledger_table
    tables = [table, active_table_name(table)]
    missing = []
    for name in tables:
        client = az.table_service.get_table_client(name)
        try:
            with map_azure_errors(f"ledger table {name} of account {az.account}"):
                next(iter(client.list_entities(results_per_page=1)), None)
        except NotFoundError:
            missing.append(name)
    if missing:
        return warn("ledger", f"ledger table(s) {', '.join(missing)} do not exist yet in "
                    f"account {az.account}",
                    "the app creates them on first use; infra/modules/storage.bicep creates them")
    return ok("ledger", f"ledger tables {', '.join(tables)} exist in account {az.account} "
              "(and can be read)")


# -- roles -----------------------------------------------------------------------------------


def blob_role_check(az: _Azure) -> Check:
    container = az.settings.incoming_container
    with map_azure_errors(f"listing blobs of {container}"):
        pages = az.blob_service.get_container_client(container).list_blobs(results_per_page=1)
        next(iter(pages), None)
    return ok("role.blob", f"{STORAGE_DATA_ROLE}: listed blobs of {az.account}/{container}")


def queue_role_check(az: _Azure) -> Check:
    """Peek the blob trigger's poison queue (Storage Queue Data Contributor on the data
    account, where TUNELOOP_STORAGE__queueServiceUri puts it); a missing queue is fine."""
    base = az.environ.get("TUNELOOP_STORAGE__queueServiceUri")
    if not base:
        blob_url = az.settings.storage_account_url
        if not blob_url:
            return warn("role.queue", "no queue endpoint known (TUNELOOP_STORAGE_ACCOUNT_URL "
                        "not set)", "set TUNELOOP_STORAGE_ACCOUNT_URL")
        base = blob_url.replace(".blob.", ".queue.")
    url = f"{base.rstrip('/')}/{POISON_QUEUE}/messages?peekonly=true&numofmessages=1"
    try:
        with map_azure_errors(f"peeking queue {POISON_QUEUE}"):
            az.storage_rest.send("GET", url, headers={"x-ms-version": "2021-12-02"})
    except NotFoundError:
        return ok("role.queue", f"Storage Queue Data Contributor: queue service of {az.account} "
                  f"answered ({POISON_QUEUE} not created yet)")
    return ok("role.queue", f"Storage Queue Data Contributor: peeked {POISON_QUEUE} of "
              f"{az.account}")


def workspace_role_check(az: _Azure) -> Check:
    endpoints = az.platform.list_endpoints()
    az.facts["endpoints"] = endpoints
    return ok("role.workspace", f"AzureML Data Scientist: listed {len(endpoints)} online "
              f"endpoint(s) of {az.workspace_scope}")


def mlflow_role_check(az: _Azure) -> Check:
    """One MLflow read on the workspace's tracking server (the release's job metrics), with
    the same audiences in the same order (``ml.azure.com``, then ARM on a 401)."""
    from shared.platform.azureml._metrics import MlflowRuns, mlflow_rest_base

    uri = getattr(az.facts.get("workspace"), "mlflow_tracking_uri", None)
    if not uri:
        return warn("role.mlflow", "not checked: the workspace names no MLflow tracking URI",
                    "check the workspace in Azure ML studio")
    runs = MlflowRuns(mlflow_rest_base(str(uri)), az.credential, transport=az.transport)
    try:
        with map_azure_errors("MLflow experiments/get-by-name"):
            runs.experiment_id(_MLFLOW_PROBE)
    except NotFoundError:
        pass  # no such experiment: authorised, which is what is asked
    return ok("role.mlflow", "AzureML Data Scientist: the workspace's MLflow tracking server "
              "answered (job metrics for the promotion gate)")


def vm_sizes_role_check(az: _Azure) -> Check:
    """The subscription-scope VM size list (GPUs per node for the plan)."""
    try:
        sizes = list(az.platform.ml_client.compute.list_sizes())
    except Exception as exc:
        from shared.errors import PermissionDeniedError, translate_azure_error

        mapped = translate_azure_error(exc, "listing the region's VM sizes")
        if isinstance(mapped, PermissionDeniedError):
            return warn("role.vm_sizes", f"missing Monitoring Reader (its */read covers "
                        "Microsoft.MachineLearningServices/locations/vmSizes) on subscription "
                        f"{az.settings.subscription_id}: {mapped.message}",
                        "grant it (infra/modules/subscription-roles.bicep does); without it the "
                        "GPUs per node are unknown (TUNELOOP_GPUS_PER_NODE or --gpus-per-node)")
        if mapped is None:
            raise
        raise mapped from exc
    return ok("role.vm_sizes", f"listed {len(sizes)} VM sizes of the workspace's region "
              "(subscription scope)")


def metrics_role_check(az: _Azure) -> Check:
    """One tiny ``metrics:getBatch`` (the sweeper's API): Monitoring Reader on the
    subscription; a 401/403 there, or an authorization errorCode per resource, is missing."""
    endpoints = az.facts.get("endpoints") or []
    workspace = az.facts.get("workspace")
    region = (getattr(endpoints[0], "location", None) if endpoints else None) or getattr(
        workspace, "location", None)
    if not region:
        return warn("role.metrics", "not checked: the workspace's region is unknown",
                    "fix the workspace check first")
    if endpoints:
        resource, (namespace, metric) = endpoints[0].id, _ENDPOINT_METRIC
    else:
        resource, (namespace, metric) = az.workspace_id, _WORKSPACE_METRIC
    denied: list[str] = []

    def note(response: Any) -> None:
        try:
            body = response.http_response.json()
        except Exception:
            return
        for value in (body or {}).get("values") or []:
            for item in value.get("value") or []:
                code = str(item.get("errorCode") or "")
                if "authoriz" in code.lower() or "forbidden" in code.lower():
                    denied.append(f"{code}: {item.get('errorMessage', '')}".strip())

    end = az.now
    with map_azure_errors(f"metrics:getBatch in {region}"):
        az.platform.metrics_client(region.replace(" ", "").lower()).query_resources(
            resource_ids=[resource], metric_namespace=namespace, metric_names=[metric],
            timespan=(end - timedelta(minutes=5), end), granularity=timedelta(minutes=1),
            aggregations=["Average"], raw_response_hook=note,
        )
    if denied:
        from shared.errors import PermissionDeniedError

        raise PermissionDeniedError(f"metrics:getBatch answered {denied[0]}")
    return ok("role.metrics", f"Monitoring Reader: metrics:getBatch in {region} answered")


# -- all of them -----------------------------------------------------------------------------


def azure_checks(
    settings: Settings,
    *,
    credential: TokenCredential,
    transport: Any = None,
    environ: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[Check]:
    """Every Azure check, in order; none stops the others."""
    az = _Azure(settings, credential, transport, os.environ if environ is None else environ,
                now or datetime.now(UTC))
    sub = az.subscription_scope
    rg = f"{sub}/resourceGroups/{settings.resource_group}"
    ws_role = Role("AzureML Data Scientist", az.workspace_scope)
    account = f"data account {az.account}"
    missing = {
        "workspace": "check TUNELOOP_SUBSCRIPTION_ID, TUNELOOP_RESOURCE_GROUP and "
        "TUNELOOP_WORKSPACE_NAME (azd's .env has them)",
        "component": "check TUNELOOP_COMPONENT_NAME and TUNELOOP_COMPONENT_VERSION (unset = "
        "latest) against the registry TUNELOOP_REGISTRY_NAME",
        "base_model": "check TUNELOOP_BASE_MODEL and TUNELOOP_BASE_MODEL_VERSION (unset = "
        "latest), or unset both for the default",
        "datastore": "create it on the prepared container (infra/modules/ml.bicep, or "
        "docs/azure.md) or fix TUNELOOP_DATASTORE",
    }
    steps: list[tuple[str, Callable[[], Check | Iterator[Check]], Role | None]] = [
        ("identity", lambda: identity_check(az), None),
        ("token", lambda: token_checks(az), None),
        ("workspace", lambda: workspace_check(az), ws_role),
        ("component", lambda: component_check(az), _registry_role(az)),
        ("base_model", lambda: base_model_check(az), _registry_role(az)),
        ("compute", lambda: compute_check(az), ws_role),
        ("plan", lambda: plan_checks(az), None),
        ("inference", lambda: inference_check(az), None),
        ("datastore", lambda: datastore_check(az), ws_role),
        ("containers", lambda: container_check(az), Role(STORAGE_DATA_ROLE, account)),
        ("ledger", lambda: ledger_check(az), Role("Storage Table Data Contributor", account)),
        ("eventgrid.blob", lambda: blob_subscription_check(
            az.arm, account=az.account or "?", incoming=settings.incoming_container,
            scopes=(rg, sub)), reader_role(f"subscription {settings.subscription_id}")),
        ("eventgrid.jobs", lambda: job_subscription_check(
            az.arm, workspace_id=az.workspace_id, scopes=(rg,)),
         reader_role(f"resource group {settings.resource_group}")),
        ("role.blob", lambda: blob_role_check(az), Role(STORAGE_DATA_ROLE, account)),
        ("role.queue", lambda: queue_role_check(az),
         Role("Storage Queue Data Contributor", account)),
        ("role.workspace", lambda: workspace_role_check(az), ws_role),
        ("role.mlflow", lambda: mlflow_role_check(az), ws_role),
        ("role.vm_sizes", lambda: vm_sizes_role_check(az), None),
        ("role.metrics", lambda: metrics_role_check(az),
         Role("Monitoring Reader (and the Microsoft.Insights provider registered)",
              f"subscription {settings.subscription_id}")),
    ]
    try:
        results = _run_steps(az, steps, missing)
    finally:
        az.close()
    if _is_person(az.facts.get("claims") or {}):
        results = [_as_person(c) for c in results]
    return results


def _run_steps(
    az: _Azure,
    steps: list[tuple[str, Callable[[], Check | Iterator[Check]], Role | None]],
    missing: Mapping[str, str],
) -> list[Check]:
    results: list[Check] = []
    for name, step, role in steps:
        if name not in ("identity", "token") and "claims" not in az.facts:
            results.append(skip(name, "not checked: no identity could sign in",
                                "fix the identity check first"))
            continue
        if name in NEEDS_WORKSPACE and "workspace" not in az.facts:
            results.append(skip(name, "not checked: the workspace did not answer",
                                "fix the workspace check first"))
            continue
        results += attempt(name, step, role=role, not_found=missing.get(name))
    return results


def _is_person(claims: Mapping[str, Any]) -> bool:
    """A signed-in user (az login), not a managed identity or an app registration."""
    if claims.get("xms_mirid"):
        return False
    return claims.get("idtyp") == "user" or bool(claims.get("upn") or claims.get("unique_name"))


def _as_person(check: Check) -> Check:
    """A role only the app holds, refused to a person, is a warning: check the app's."""
    if check.name not in APP_ONLY_ROWS or check.outcome != Outcome.FAIL:
        return check
    return warn(check.name, f"{check.what} (you are signed in as a person; the app's identity "
                "holds this role, not you)", "run `tuneloop doctor` as the app's identity, or "
                "check its role assignments (docs/roles.md)")
