"""A finished fine-tune's final metrics, read from the workspace's MLflow tracking server.

Azure ML keeps no metrics on the pipeline job itself: the ``chat_completion_finetune`` step
(Hugging Face Trainer with MLflow logging) logs ``eval_loss``, ``train_loss`` and friends on
its own run, a descendant of the pipeline job's run (tags ``mlflow.rootRunId`` and
``mlflow.parentRunId``). The workspace serves the MLflow REST API under its tracking URI
(``azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/.../workspaces/<ws>``, read over
https with ``/api/2.0/mlflow/...`` appended). We search the job's experiment for its descendant
runs, keep the step that logged ``eval_loss`` (the latest to end if several did) and take the
last value of each of its metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ARM_SCOPE",
    "MLFLOW_SCOPE",
    "MLFLOW_SCOPES",
    "MlflowRuns",
    "final_metrics",
    "last_values",
    "mlflow_rest_base",
]

log = logging.getLogger(__name__)

# The audience of Azure ML's data-plane APIs on <region>.api.azureml.ms (as the SDK's own
# run-history client asks for: azure-ai-ml's _restclient/runhistory/_configuration.py).
MLFLOW_SCOPE = "https://ml.azure.com/.default"
# Microsoft's own MLflow REST sample for Azure ML gets its token for the ARM resource
# ("resource_scope = https://management.azure.com", Azure/azureml-examples
# sdk/python/using-mlflow/using-rest-api/using_mlflow_rest_api.ipynb), so the tracking API
# accepts that audience too. We ask for ml.azure.com first and fall back to ARM on a 401.
ARM_SCOPE = "https://management.azure.com/.default"
MLFLOW_SCOPES = (MLFLOW_SCOPE, ARM_SCOPE)
PAGE_SIZE = 100
MAX_PAGES = 10  # a pipeline has a handful of steps; more pages means the filter went wrong
MAX_DEPTH = 3  # root pipeline -> pipeline component node -> step


def mlflow_rest_base(tracking_uri: str) -> str:
    """The https base of the MLflow REST API (``.../api/2.0/mlflow``) for a tracking URI."""
    uri = tracking_uri.strip().rstrip("/")
    if uri.startswith("azureml://"):
        uri = "https://" + uri.removeprefix("azureml://")
    if not uri.startswith("https://"):
        raise ValueError(f"not an Azure ML MLflow tracking URI: {tracking_uri!r}")
    return f"{uri}/api/2.0/mlflow"


def last_values(metrics: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each metric's last value (highest step, then latest timestamp) from MLflow ``Metric``s."""
    best: dict[str, tuple[int, int, float]] = {}
    for metric in metrics:
        key, value = metric.get("key"), metric.get("value")
        if not isinstance(key, str) or isinstance(value, bool):
            continue
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue  # "NaN" strings parse; anything else is not a metric we can compare
        order = (int(metric.get("step") or 0), int(metric.get("timestamp") or 0))
        if key not in best or order >= best[key][:2]:
            best[key] = (*order, number)
    return {key: entry[2] for key, entry in best.items()}


def final_metrics(runs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The fine-tune step's last metric values among a job's descendant runs (MLflow ``Run``s).

    The step is the run that logged ``eval_loss`` (else ``train_loss``); if several did, the one
    that ended last. Nothing logged: an empty mapping.
    """
    candidates: list[tuple[int, int, dict[str, float]]] = []
    for run in runs:
        values = last_values((run.get("data") or {}).get("metrics") or ())
        if "eval_loss" in values:
            rank = 2
        elif "train_loss" in values:
            rank = 1
        else:
            continue
        info = run.get("info") or {}
        ended = int(info.get("end_time") or info.get("start_time") or 0)
        candidates.append((rank, ended, values))
    if not candidates:
        return {}
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


class MlflowRuns:
    """The few MLflow REST calls we need, through an azure-core pipeline (``transport=``).

    Tokens are asked for each audience of ``scopes`` in turn: a 401 with one moves to the next
    (logged), and the first one accepted is kept for later calls. Every audience refused is a
    PermissionDeniedError naming them.
    """

    def __init__(
        self, base_url: str, credential: Any, *, transport: Any = None,
        scopes: tuple[str, ...] = MLFLOW_SCOPES,
    ) -> None:
        self.base_url = base_url
        self._credential = credential
        self._transport = transport
        self._scopes = scopes
        self._scope = 0  # index of the audience in use
        self._clients: dict[str, Any] = {}

    def _client(self, scope: str) -> Any:
        client = self._clients.get(scope)
        if client is None:
            from azure.core import PipelineClient
            from azure.core.pipeline.policies import (
                BearerTokenCredentialPolicy,
                HeadersPolicy,
                RetryPolicy,
                UserAgentPolicy,
            )

            policies = [
                HeadersPolicy({"Accept": "application/json"}),
                UserAgentPolicy("tuneloop"),
                RetryPolicy(retry_total=2),
                BearerTokenCredentialPolicy(self._credential, scope),
            ]
            kwargs = {"transport": self._transport} if self._transport is not None else {}
            client = PipelineClient(self.base_url, policies=policies, **kwargs)
            self._clients[scope] = client
        return client

    def _send(self, method: str, path: str, params: Mapping[str, str],
              body: Mapping[str, Any] | None) -> Any:
        """The response with the first audience the API accepts (from the one last accepted)."""
        from azure.core.rest import HttpRequest

        from shared.errors import PermissionDeniedError

        index = self._scope
        while True:
            scope = self._scopes[index]
            request = HttpRequest(
                method, f"{self.base_url}/{path}", params=dict(params),
                json=dict(body) if body is not None else None,
            )
            response = self._client(scope).send_request(request)
            if response.status_code != 401:
                self._scope = index  # later calls start with the audience accepted
                return response
            if index + 1 >= len(self._scopes):
                tried = " and ".join(s.removesuffix("/.default") for s in self._scopes)
                raise PermissionDeniedError(
                    f"MLflow {path}: HTTP 401 for tokens of every audience tried ({tried})",
                    hint="check that the identity can get a token for these audiences and "
                    "has AzureML Data Scientist on the workspace",
                )
            log.warning("MLflow %s: HTTP 401 with a token for %s; trying %s", path,
                        scope.removesuffix("/.default"),
                        self._scopes[index + 1].removesuffix("/.default"))
            index += 1

    def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
              body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        from azure.core.exceptions import HttpResponseError, map_error

        response = self._send(method, path, params or {}, body)
        if response.status_code >= 400:
            map_error(response.status_code, response, {})
            raise HttpResponseError(response=response)
        data = json.loads(response.text() or "{}")
        if not isinstance(data, dict):
            raise ValueError(f"MLflow {path}: expected a JSON object, got {type(data).__name__}")
        return data

    def experiment_id(self, name: str) -> str:
        """The MLflow experiment id of an Azure ML experiment (its name)."""
        data = self._call("GET", "experiments/get-by-name", params={"experiment_name": name})
        return str(data["experiment"]["experiment_id"])

    def search(self, experiment_id: str, filter_string: str) -> list[dict[str, Any]]:
        """All runs of the experiment that match the filter (pages followed)."""
        runs: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            body: dict[str, Any] = {
                "experiment_ids": [experiment_id],
                "filter": filter_string,
                "max_results": PAGE_SIZE,
            }
            if token:
                body["page_token"] = token
            data = self._call("POST", "runs/search", body=body)
            runs.extend(data.get("runs") or [])
            token = data.get("next_page_token") or None
            if not token:
                break
        return runs

    def descendants(self, experiment_id: str, job_name: str) -> list[dict[str, Any]]:
        """The job's descendant runs: by ``mlflow.rootRunId``, else walking ``parentRunId``."""
        runs = self.search(experiment_id, f"tags.mlflow.rootRunId = '{_quoted(job_name)}'")
        runs = [r for r in runs if _run_id(r) != job_name]
        if runs:
            return runs
        found: list[dict[str, Any]] = []
        parents = [job_name]
        for _ in range(MAX_DEPTH):
            children: list[dict[str, Any]] = []
            for parent in parents:
                children.extend(
                    self.search(experiment_id, f"tags.mlflow.parentRunId = '{_quoted(parent)}'")
                )
            if not children:
                break
            found.extend(children)
            if final_metrics(children):
                break
            parents = [_run_id(c) for c in children if _run_id(c)]
        return found


def _quoted(value: str) -> str:
    """A value inside an MLflow filter's single quotes (job names never hold one; be safe)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _run_id(run: Mapping[str, Any]) -> str:
    info = run.get("info") or {}
    return str(info.get("run_id") or info.get("run_uuid") or "")
