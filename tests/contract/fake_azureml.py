"""A small stateful Azure ML workspace in memory, served to the real SDK through FakeTransport.

``FakeAzureML`` answers the URLs azure-ai-ml 1.35, azure-core and azure-monitor-querymetrics
call, with the realistic REST bodies of ``tests/fixtures/azureml`` and
``tests/fixtures/azureml_release``, and keeps state between calls like the service does:

- registry: discovery, the chat-completion component and the Phi-3 model (``latest`` resolves
  through the version list; an unknown asset lists no versions, an unknown version is 404);
- jobs: PUT creates (409 when the name exists), GET reads; NotStarted becomes Running on the
  first read and :meth:`FakeAzureML.complete` finishes it, its run tree (pipeline node and
  steps, the finetune step with the Trainer's metrics) then served by the workspace's MLflow
  (``experiments/get-by-name``, ``runs/search`` on one tag equality);
- model versions: PUT registers, GET reads, 404 when missing;
- online endpoints and deployments: PUT answers 201 Creating (200 Updating for an update) with
  ``Azure-AsyncOperation``/``Location`` headers; each read of the resource or of its operation
  moves it on, and after ``reads_to_settle`` reads it is Succeeded; DELETE answers 202 and the
  resource reads Deleting until it is gone (404; a DELETE meanwhile answers 202 again). A PUT
  or DELETE while another operation on the same resource runs is 409 Conflict. Traffic must
  name existing deployments and sum to 100 (or all be 0), else 400, as ARM answers;
- the workspace's endpoint list, paged with ``nextLink``; ``listKeys``;
- scoring: ``POST https://<endpoint>.<region>.inference.ml.azure.com/score`` needs the key,
  routes by the ``azureml-model-deployment`` header or by the traffic split (404 when no
  deployment takes traffic), answers ``{"output": ...}`` and says which deployment answered;
- Azure Monitor ``metrics:getBatch``: RequestsPerMinute per endpoint from the scoring
  requests actually received; a resource it does not know is left out of the answer.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes.transport import FakeTransport, Recorded, Reply
from tests.fixtures.azureml.mlflow import MLFLOW, experiment_body, job_tree, matching
from tests.fixtures.azureml.rest import (
    API,
    DISCOVERY,
    REGISTRY,
    SUB,
    VM_SIZES,
    WORKSPACE,
    created,
)
from tests.fixtures.azureml.rest import fixture as jobs_fixture

RELEASE_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "azureml_release"
ARM = "https://management.azure.com"
RG = "rg-tuneloop"
WS = "ws-tuneloop"
LOCATION = "eastus2"
WS_ID = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
    f"Microsoft.MachineLearningServices/workspaces/{WS}"
)
OPERATIONS = (
    f"{ARM}/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/{LOCATION}"
)
OPERATION_API = "api-version=2022-02-01-preview"
BASE_MODEL = "Phi-4"  # the default base model (Phi-3 is retired: refused by the plan)
COMPONENT = "chat_completion_pipeline"
DEPLOYMENT_HEADER = "azureml-model-deployment"
METRIC = "RequestsPerMinute"
POLL_SECONDS = "1"  # Retry-After of operations in flight (the SDK's pollers sleep that long)
METRIC_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"

Key = tuple[str, ...]  # ("endpoint", name) or ("deployment", endpoint, name)


def release_fixture(name: str, **subs: str) -> Any:
    """A body from ``tests/fixtures/azureml_release`` with ``__KEY__`` placeholders filled."""
    text = (RELEASE_FIXTURES / name).read_text()
    for key, value in subs.items():
        text = text.replace(f"__{key}__", value)
    return json.loads(text)


def arm_time(value: datetime) -> str:
    """ARM's systemData spelling: seven fractional digits and a Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def not_found(what: str) -> Reply:
    return Reply(404, release_fixture("error_not_found.json", WHAT=what))


def bad_request(message: str) -> Reply:
    return Reply(400, {"error": {"code": "BadArgument", "message": message, "details": []}})


def busy(name: str) -> Reply:
    """ARM's answer to a PUT or DELETE while another operation on the resource runs."""
    message = (
        f"Conflict of operation, another operation on same entity ({name}) is already "
        f"running in workspace {WS}."
    )
    return Reply(409, {"error": {"code": "Conflict", "message": message, "details": []}})


@dataclass(frozen=True)
class Score:
    """One scoring request as the endpoint received it."""

    endpoint: str
    deployment: str | None  # who answered (None: refused)
    status: int
    headers: dict[str, str]
    at: datetime


class FakeAzureML:
    """The workspace ``ws-tuneloop`` (eastus2) and the ``azureml`` registry; see the module."""

    def __init__(self, *, reads_to_settle: int = 2, page_size: int = 2) -> None:
        self.reads_to_settle = reads_to_settle
        self.page_size = page_size
        self.jobs: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, list[dict[str, Any]]] = {}  # MLflow run tree per completed job
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.scores: list[Score] = []
        self.created: list[Key] = []  # ("job", n), ("model", n, v), ("endpoint", n), ...
        self._pending: dict[Key, int] = {}
        self._operations: dict[str, Key] = {}
        self._op_counter = 0
        self._lock = threading.RLock()
        self.transport = FakeTransport()
        self._routes()

    # -- routes ---------------------------------------------------------------------------
    def _routes(self) -> None:
        t = self.transport
        ws = re.escape(ARM + WS_ID)
        t.add("GET", DISCOVERY, Reply(200, jobs_fixture("registry_discovery_azureml.json")))
        t.add("GET", REGISTRY + r"/(models|components)/([^/]+)/versions\?", self._registry_list)
        t.add("GET", REGISTRY + r"/(models|components)/([^/]+)/versions/([^/?]+)\?",
              self._registry_get)
        t.add("GET", WORKSPACE + r"\?", Reply(200, jobs_fixture("workspace.json")))
        t.add("GET", WORKSPACE + r"/computes/gpu-a100\?",
              Reply(200, jobs_fixture("compute_gpu-a100.json")))
        t.add("GET", VM_SIZES, Reply(200, jobs_fixture("vm_sizes_eastus2.json")))
        t.add("GET", API + r"/discovery$",
              Reply(200, jobs_fixture("workspace_discovery_eastus2.json")))
        t.add("GET", ws + r"/jobs/([^/?]+)\?", self._get_job)
        t.add("PUT", ws + r"/jobs/([^/?]+)\?", self._put_job)
        t.add("GET", MLFLOW + r"experiments/get-by-name\?", self._mlflow_experiment)
        t.add("POST", MLFLOW + r"runs/search$", self._mlflow_search)
        t.add("GET", ws + r"/models/([^/]+)/versions\?", self._list_models)
        t.add("GET", ws + r"/models/([^/]+)/versions/([^/?]+)\?", self._get_model)
        t.add("PUT", ws + r"/models/([^/]+)/versions/([^/?]+)\?", self._put_model)
        t.add("GET", ws + r"/onlineEndpoints\?", self._list_endpoints)
        t.add("GET", ws + r"/onlineEndpoints/([^/?]+)\?", self._get_endpoint)
        t.add("PUT", ws + r"/onlineEndpoints/([^/?]+)\?", self._put_endpoint)
        t.add("DELETE", ws + r"/onlineEndpoints/([^/?]+)\?", self._delete_endpoint)
        t.add("POST", ws + r"/onlineEndpoints/([^/?]+)/listKeys\?", self._list_keys)
        t.add("GET", ws + r"/onlineEndpoints/([^/]+)/deployments\?", self._list_deployments)
        t.add("GET", ws + r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)\?",
              self._get_deployment)
        t.add("PUT", ws + r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)\?",
              self._put_deployment)
        t.add("DELETE", ws + r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)\?",
              self._delete_deployment)
        t.add("GET", re.escape(OPERATIONS) + r"/mfeOperationsStatus/([^/?]+)", self._operation)
        t.add("GET", re.escape(OPERATIONS) + r"/mfeOperationResults/([^/?]+)", self._result)
        t.add("POST", r"^https://([a-z0-9-]+)\.[a-z0-9]+\.inference\.ml\.azure\.com/score$",
              self._score)
        t.add("POST", r"^https://[a-z0-9]+\.metrics\.monitor\.azure\.com/subscriptions/[^/]+/"
              r"metrics:getBatch\?", self._metrics)

    @staticmethod
    def _groups(rec: Recorded, pattern: str) -> tuple[str, ...]:
        match = re.search(pattern, rec.url)
        assert match, f"{pattern} does not match {rec.url}"
        return match.groups()

    # -- registry -------------------------------------------------------------------------
    @staticmethod
    def _registry_asset(kind: str, name: str) -> dict[str, Any] | None:
        if kind == "models" and name == BASE_MODEL:
            body: dict[str, Any] = jobs_fixture("registry_model_phi-4_8.json")
            return body
        if kind == "components" and name == COMPONENT:
            component: dict[str, Any] = jobs_fixture(
                "registry_component_chat_completion_pipeline_0.0.82.json"
            )
            return component
        return None

    def _registry_list(self, rec: Recorded) -> Reply:
        kind, name = self._groups(rec, r"/(models|components)/([^/]+)/versions\?")
        asset = self._registry_asset(kind, name)
        return Reply(200, {"value": [asset] if asset else [], "nextLink": None})

    def _registry_get(self, rec: Recorded) -> Reply:
        kind, name, version = self._groups(rec, r"/(models|components)/([^/]+)/versions/([^/?]+)")
        asset = self._registry_asset(kind, name)
        if asset is None or asset["name"] != version:
            return not_found(f"{kind[:-1]} {name}:{version} in registry azureml")
        return Reply(200, asset)

    # -- jobs -----------------------------------------------------------------------------
    def _get_job(self, rec: Recorded) -> Reply:
        (name,) = self._groups(rec, r"/jobs/([^/?]+)")
        with self._lock:
            body = self.jobs.get(name)
            if body is None:
                return Reply(404, jobs_fixture("error_job_not_found.json"))
            if body["properties"]["status"] == "NotStarted":
                body["properties"]["status"] = "Running"
            return Reply(200, copy.deepcopy(body))

    def _put_job(self, rec: Recorded) -> Reply:
        (name,) = self._groups(rec, r"/jobs/([^/?]+)")
        with self._lock:
            if name in self.jobs:
                return Reply(409, jobs_fixture("error_job_conflict.json"))
            reply = created(rec)
            self.jobs[name] = copy.deepcopy(reply.body)
            self.created.append(("job", name))
            return reply

    def complete(self, name: str, metrics: dict[str, float] | None = None) -> None:
        """The job finished: it reads Completed from now on, and its finetune step's run
        reports ``metrics`` (default: a Trainer's final eval_loss, train_loss, ...)."""
        with self._lock:
            self.jobs[name]["properties"]["status"] = "Completed"
            self.runs[name] = job_tree(name, metrics)

    # -- MLflow ---------------------------------------------------------------------------
    def _mlflow_experiment(self, rec: Recorded) -> Reply:
        name = parse_qs(urlparse(rec.url).query).get("experiment_name", [""])[0]
        with self._lock:
            known = any(j["properties"].get("experimentName") == name for j in self.jobs.values())
        if not known:
            return Reply(404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                               "message": f"Experiment '{name}' does not exist."})
        return Reply(200, experiment_body(name))

    def _mlflow_search(self, rec: Recorded) -> Reply:
        with self._lock:
            runs = [run for tree in self.runs.values() for run in tree]
        return Reply(200, {"runs": copy.deepcopy(matching(runs, rec.json()))})

    # -- models ---------------------------------------------------------------------------
    def _list_models(self, rec: Recorded) -> Reply:
        (name,) = self._groups(rec, r"/models/([^/]+)/versions\?")
        with self._lock:
            value = [copy.deepcopy(b) for (n, _), b in self.models.items() if n == name]
        return Reply(200, {"value": value, "nextLink": None})

    def _get_model(self, rec: Recorded) -> Reply:
        name, version = self._groups(rec, r"/models/([^/]+)/versions/([^/?]+)")
        with self._lock:
            body = self.models.get((name, version))
        return Reply(200, copy.deepcopy(body)) if body else not_found(f"model {name}:{version}")

    def _put_model(self, rec: Recorded) -> Reply:
        name, version = self._groups(rec, r"/models/([^/]+)/versions/([^/?]+)")
        sent = rec.json()["properties"]
        job = str(sent.get("modelUri", "")).split("/jobs/")[-1].split("/")[0]
        body = release_fixture("model_version.json", NAME=name, VERSION=version, JOB=job)
        body["properties"]["tags"] = sent.get("tags") or {}
        body["properties"]["modelUri"] = sent.get("modelUri")
        with self._lock:
            existed = (name, version) in self.models
            self.models[(name, version)] = body
            if not existed:
                self.created.append(("model", name, version))
        return Reply(200 if existed else 201, copy.deepcopy(body))

    # -- long-running operations ------------------------------------------------------------
    def _start(self, key: Key) -> dict[str, str]:
        """Track ``key`` as busy; the LRO headers ARM sends with a 201/202."""
        self._op_counter += 1
        op = f"{key[0][:2]}:{self._op_counter:08d}"
        self._operations[op] = key
        self._pending[key] = self.reads_to_settle
        status = f"{OPERATIONS}/mfeOperationsStatus/{op}?{OPERATION_API}"
        return {
            "Azure-AsyncOperation": status,
            "Location": status.replace("mfeOperationsStatus", "mfeOperationResults"),
            "Retry-After": POLL_SECONDS,
            "x-ms-async-operation-timeout": "PT1H",
        }

    def _body(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            if key[0] == "deployment":
                return self.deployments.get((key[1], key[2]))
            return self.endpoints.get(key[1])

    def _advance(self, key: Key) -> None:
        """One read of a busy resource or of its operation: it settles after enough of them."""
        with self._lock:
            left = self._pending.get(key)
            if left is None:
                return
            if left > 1:
                self._pending[key] = left - 1
                return
            del self._pending[key]
            body = self._body(key)
            if body is None:
                return
            if body["properties"]["provisioningState"] == "Deleting":
                if key[0] == "deployment":
                    del self.deployments[(key[1], key[2])]
                else:
                    del self.endpoints[key[1]]
                    for pair in [p for p in self.deployments if p[0] == key[1]]:
                        del self.deployments[pair]
            else:
                body["properties"]["provisioningState"] = "Succeeded"
                if key[0] == "endpoint":
                    body["systemData"]["lastModifiedAt"] = arm_time(datetime.now(UTC))

    def settle(self) -> None:
        """Every operation in flight finishes now."""
        with self._lock:
            for key in list(self._pending):
                self._pending[key] = 1
                self._advance(key)

    def _operation(self, rec: Recorded) -> Reply:
        (op,) = self._groups(rec, r"/mfeOperationsStatus/([^/?]+)")
        with self._lock:
            key = self._operations.get(op)
            if key is None:
                return not_found(f"operation {op}")
            self._advance(key)
            busy = key in self._pending
        body = {"id": rec.url.split("?")[0].removeprefix(ARM), "name": op,
                "status": "InProgress" if busy else "Succeeded"}
        return Reply(200, body, {"Retry-After": POLL_SECONDS} if busy else {})

    def _result(self, rec: Recorded) -> Reply:
        (op,) = self._groups(rec, r"/mfeOperationResults/([^/?]+)")
        with self._lock:
            key = self._operations.get(op)
            busy = key in self._pending if key else False
        return Reply(202, b"", {"Retry-After": POLL_SECONDS}) if busy else Reply(200, b"")

    # -- endpoints ------------------------------------------------------------------------
    def _endpoint_reply(self, name: str) -> Reply:
        body = self.endpoints.get(name)
        return Reply(200, copy.deepcopy(body)) if body else not_found(f"online endpoint {name}")

    def _list_endpoints(self, rec: Recorded) -> Reply:
        query = parse_qs(urlparse(rec.url).query)
        skip = int(query.get("$skip", ["0"])[0])
        with self._lock:
            names = sorted(self.endpoints)
            page = [copy.deepcopy(self.endpoints[n]) for n in names[skip : skip + self.page_size]]
        body: dict[str, Any] = {"value": page}
        if skip + self.page_size < len(names):
            body["nextLink"] = (
                f"{ARM}{WS_ID}/onlineEndpoints?api-version=2022-02-01-preview"
                f"&$skip={skip + self.page_size}"
            )
        return Reply(200, body)

    def _get_endpoint(self, rec: Recorded) -> Reply:
        (name,) = self._groups(rec, r"/onlineEndpoints/([^/?]+)")
        with self._lock:
            self._advance(("endpoint", name))
            return self._endpoint_reply(name)

    def _put_endpoint(self, rec: Recorded) -> Reply:
        (name,) = self._groups(rec, r"/onlineEndpoints/([^/?]+)")
        sent = rec.json()
        traffic = {k: int(v) for k, v in (sent["properties"].get("traffic") or {}).items()}
        now = arm_time(datetime.now(UTC))
        with self._lock:
            current = self.endpoints.get(name)
            if current and ("endpoint", name) in self._pending:
                return busy(name)
            unknown = sorted(d for d in traffic if (name, d) not in self.deployments)
            if unknown:
                return bad_request(
                    f"Deployment(s) {unknown} in traffic do not exist on endpoint {name}"
                )
            if traffic and sum(traffic.values()) not in (0, 100):
                return bad_request(f"Traffic must sum to 100 (or all be 0): {traffic}")
            if current is None:
                body = release_fixture("online_endpoint.json", NAME=name)
                body["systemData"]["createdAt"] = now
                state, status = "Creating", 201
                self.created.append(("endpoint", name))
            else:
                body, state, status = current, "Updating", 200
            body["tags"] = sent.get("tags") or {}
            body["properties"]["traffic"] = traffic
            body["properties"]["provisioningState"] = state
            body["systemData"]["lastModifiedAt"] = now
            self.endpoints[name] = body
            headers = self._start(("endpoint", name))
            return Reply(status, copy.deepcopy(body), headers)

    def _delete_endpoint(self, rec: Recorded) -> Reply:
        (name,) = self._groups(rec, r"/onlineEndpoints/([^/?]+)")
        with self._lock:
            body = self.endpoints.get(name)
            if body is None:
                return not_found(f"online endpoint {name}")
            if body["properties"]["provisioningState"] != "Deleting":
                if ("endpoint", name) in self._pending:
                    return busy(name)
                body["properties"]["provisioningState"] = "Deleting"
            return Reply(202, b"", self._start(("endpoint", name)))

    def _list_keys(self, rec: Recorded) -> Reply:
        (name,) = self._groups(rec, r"/onlineEndpoints/([^/?]+)/listKeys")
        with self._lock:
            if name not in self.endpoints:
                return not_found(f"online endpoint {name}")
        return Reply(200, release_fixture("endpoint_keys.json"))

    # -- deployments ----------------------------------------------------------------------
    def _list_deployments(self, rec: Recorded) -> Reply:
        (endpoint,) = self._groups(rec, r"/onlineEndpoints/([^/]+)/deployments")
        with self._lock:
            if endpoint not in self.endpoints:
                return not_found(f"online endpoint {endpoint}")
            value = [copy.deepcopy(b) for (e, _), b in self.deployments.items() if e == endpoint]
        return Reply(200, {"value": value, "nextLink": None})

    def _get_deployment(self, rec: Recorded) -> Reply:
        endpoint, name = self._groups(rec, r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)")
        with self._lock:
            self._advance(("deployment", endpoint, name))
            body = self.deployments.get((endpoint, name))
            if body is None:
                return not_found(f"deployment {endpoint}/{name}")
            return Reply(200, copy.deepcopy(body))

    def _put_deployment(self, rec: Recorded) -> Reply:
        endpoint, name = self._groups(rec, r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)")
        sent = rec.json()
        with self._lock:
            if endpoint not in self.endpoints:
                return not_found(f"online endpoint {endpoint}")
            existed = (endpoint, name) in self.deployments
            if existed and ("deployment", endpoint, name) in self._pending:
                return busy(name)
            body = release_fixture(
                "online_deployment.json", ENDPOINT=endpoint, NAME=name,
                MODEL=sent["properties"]["model"],
            )
            body["tags"] = sent.get("tags") or {}
            body["properties"]["instanceType"] = sent["properties"].get("instanceType")
            body["sku"]["capacity"] = (sent.get("sku") or {}).get("capacity", 1)
            body["properties"]["provisioningState"] = "Updating" if existed else "Creating"
            self.deployments[(endpoint, name)] = body
            if not existed:
                self.created.append(("deployment", endpoint, name))
            headers = self._start(("deployment", endpoint, name))
            return Reply(200 if existed else 201, copy.deepcopy(body), headers)

    def _delete_deployment(self, rec: Recorded) -> Reply:
        endpoint, name = self._groups(rec, r"/onlineEndpoints/([^/]+)/deployments/([^/?]+)")
        with self._lock:
            body = self.deployments.get((endpoint, name))
            if body is None:
                return not_found(f"deployment {endpoint}/{name}")
            if body["properties"]["provisioningState"] != "Deleting":
                if ("deployment", endpoint, name) in self._pending:
                    return busy(name)
                body["properties"]["provisioningState"] = "Deleting"
            return Reply(202, b"", self._start(("deployment", endpoint, name)))

    # -- scoring --------------------------------------------------------------------------
    def _score(self, rec: Recorded) -> Reply:
        (endpoint,) = self._groups(rec, r"^https://([a-z0-9-]+)\.")
        headers = {k.lower(): v for k, v in rec.headers.items()}
        with self._lock:
            body = self.endpoints.get(endpoint)
            deployments = {d for (e, d) in self.deployments if e == endpoint}
            traffic = dict(body["properties"]["traffic"]) if body else {}
        served: str | None = None
        if body is None:
            reply = Reply(404, {"message": f"endpoint {endpoint} not found"})
        elif not _authorised(headers):
            reply = Reply(401, {"message": "Key based authentication failed."})
        else:
            target = headers.get(DEPLOYMENT_HEADER)
            if target:
                served = target if target in deployments else None
            else:
                live = sorted((-s, d) for d, s in traffic.items() if s > 0 and d in deployments)
                served = live[0][1] if live else None
            if served is None:
                reply = Reply(404, {"message": (
                    f"Deployment {target} does not exist on endpoint {endpoint}" if target else
                    "No valid deployments to route to. Please check that the endpoint has at "
                    "least one deployment with positive weight values or use a deployment "
                    "specific header to route."
                )})
            else:
                reply = Reply(200, release_fixture("score_chat.json"), {DEPLOYMENT_HEADER: served})
        with self._lock:
            self.scores.append(Score(endpoint, served, reply.status, headers, datetime.now(UTC)))
        return reply

    # -- Azure Monitor --------------------------------------------------------------------
    def _metrics(self, rec: Recorded) -> Reply:
        query = {k: v[0] for k, v in parse_qs(urlparse(rec.url).query).items()}
        start = _parse(query["starttime"])
        end = _parse(query["endtime"])
        ids: list[str] = rec.json()["resourceids"]
        if len(ids) > 50:
            return bad_request("A maximum of 50 resource ids is allowed")
        with self._lock:
            by_id = {str(b["id"]).lower(): n for n, b in self.endpoints.items()}
            scores = list(self.scores)
        values = []
        for rid in ids:
            name = by_id.get(rid.lower())
            if name is None:
                continue  # Azure Monitor leaves a resource it has nothing for out of the answer
            minutes: dict[datetime, int] = {}
            for score in scores:
                if score.endpoint == name and start <= score.at <= end:
                    minute = score.at.replace(second=0, microsecond=0)
                    minutes[minute] = minutes.get(minute, 0) + 1
            values.append(_metric_entry(rid, query, minutes, start))
        return Reply(200, {"values": values})


def _authorised(headers: dict[str, str]) -> bool:
    keys = release_fixture("endpoint_keys.json")
    return headers.get("authorization") in (
        f"Bearer {keys['primaryKey']}", f"Bearer {keys['secondaryKey']}"
    )


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _metric_entry(
    rid: str, query: dict[str, str], minutes: dict[datetime, int], start: datetime
) -> dict[str, Any]:
    """One resource's entry in ``metrics:getBatch``'s ``values``: RequestsPerMinute (one sample
    per minute with requests) and ConnectionsActive (0 every minute: it reports, nobody is
    connected between scoring calls), each point carrying only the aggregations asked for that
    the metric supports (Average, the only one listed for both)."""
    asked = {a.strip().lower() for a in query.get("aggregation", "").split(",")}

    def point(at: datetime, value: float) -> dict[str, Any]:
        out: dict[str, Any] = {"timeStamp": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
        if "average" in asked:
            out["average"] = value
        return out

    series = {
        METRIC: [point(minute, float(count)) for minute, count in sorted(minutes.items())],
        "ConnectionsActive": [point(start.replace(second=0, microsecond=0), 0.0)],
    }
    names = [n for n in query.get("metricnames", METRIC).split(",") if n in series]
    return {
        "starttime": query["starttime"],
        "endtime": query["endtime"],
        "interval": query.get("interval", "PT1M"),
        "value": [{
            "id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
            "type": "Microsoft.Insights/metrics",
            "name": {"value": name, "localizedValue": name},
            "unit": "Count",
            "timeseries": [{"metadatavalues": [], "data": series[name]}] if series[name] else [],
            "errorCode": "Success",
        } for name in names],
        "namespace": METRIC_NAMESPACE,
        "resourceregion": LOCATION,
        "resourceid": rid,
    }


__all__ = ["FakeAzureML", "Score"]
