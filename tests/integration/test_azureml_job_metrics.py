"""The Azure ML adapter reads a completed fine-tune's final metrics from the workspace's MLflow.

Through ``MLClient(..., transport=FakeTransport)``: the job GET, the workspace GET (its
``mlFlowTrackingUri``), then MLflow's ``experiments/get-by-name`` and ``runs/search`` on the
workspace's API host, answered with the run tree a chat-completion pipeline job leaves
(``tests/fixtures/azureml/mlflow.py``). The tests assert on the requests we send.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from shared.platform.azureml._metrics import final_metrics, last_values, mlflow_rest_base
from tests.fakes.credential import FakeCredential
from tests.fakes.transport import FakeTransport, Recorded, Reply
from tests.fixtures.azureml.mlflow import (
    EXPERIMENT_ID,
    MLFLOW,
    T0,
    accepting,
    audience,
    experiment_body,
    job_tree,
    matching,
    metric,
    mlflow_run,
    run_id,
    search_filter,
)
from tests.fixtures.azureml.rest import WORKSPACE, azureml_transport, job_body, workspace_settings

JOB = "tl-support-0123456789ab"


def make_platform(transport: FakeTransport) -> Any:
    from shared.platform.azureml import AzureMLPlatform

    settings = workspace_settings(datastore="tuneloopprepared", prepared_container="prepared")
    return AzureMLPlatform(settings, credential=FakeCredential(), transport=transport)


ML = "https://ml.azure.com"
ARM = "https://management.azure.com"


def serve(
    transport: FakeTransport, runs: list[dict[str, Any]], status: str = "Completed",
    audiences: tuple[str, ...] = (ML, ARM),
) -> None:
    """The job in ``status`` and MLflow answering searches over ``runs``, accepting tokens
    for ``audiences`` only (401 otherwise)."""
    transport.add("GET", WORKSPACE + rf"/jobs/{JOB}\?", Reply(200, job_body(JOB, status)))
    transport.add("GET", MLFLOW + r"experiments/get-by-name\?", accepting(
        audiences, lambda rec: Reply(200, experiment_body("tuneloop-support"))))
    transport.add("POST", MLFLOW + r"runs/search$", accepting(
        audiences, lambda rec: Reply(200, {"runs": matching(runs, rec.json())})))


def searches(transport: FakeTransport) -> list[Recorded]:
    return transport.calls("POST", MLFLOW + r"runs/search$")


@pytest.fixture
def transport() -> FakeTransport:
    return azureml_transport()


def test_completed_job_reports_the_finetune_steps_final_metrics(transport: FakeTransport) -> None:
    """A Completed job's metrics are the finetune step's last values, found by rootRunId."""
    serve(transport, job_tree(JOB))
    job = make_platform(transport).get_job(JOB)
    assert job.status == "Completed"
    assert job.metrics["eval_loss"] == pytest.approx(0.8123)
    assert job.metrics["train_loss"] == pytest.approx(0.9347)
    assert all(isinstance(v, float) for v in job.metrics.values())

    (lookup,) = transport.calls("GET", MLFLOW + r"experiments/get-by-name\?")
    assert "experiment_name=tuneloop-support" in lookup.url
    (search,) = searches(transport)
    body = search.json()
    assert body["experiment_ids"] == [EXPERIMENT_ID]
    assert body["filter"] == f"tags.mlflow.rootRunId = '{JOB}'"
    assert search.headers["Content-Type"].startswith("application/json")
    token = search.headers["Authorization"].removeprefix("Bearer ").split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert claims["aud"] == "https://ml.azure.com"


def mlflow_audiences(transport: FakeTransport) -> list[str]:
    """The token audience of every MLflow request, in order."""
    return [audience(r) for r in transport.calls(pattern=MLFLOW)]


def test_ml_audience_accepted_needs_no_other_token(transport: FakeTransport) -> None:
    """MLflow accepting https://ml.azure.com: every call carries that token, no ARM token is
    asked for MLflow."""
    serve(transport, job_tree(JOB), audiences=(ML,))
    job = make_platform(transport).get_job(JOB)
    assert job.metrics["eval_loss"] == pytest.approx(0.8123)
    assert mlflow_audiences(transport) == [ML, ML]


def test_ml_audience_refused_falls_back_to_arm(
    transport: FakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 for the https://ml.azure.com token: the call is sent again with an ARM token,
    which is then used for the following calls; the metrics are read; one warning says so."""
    serve(transport, job_tree(JOB), audiences=(ARM,))
    platform = make_platform(transport)
    with caplog.at_level(logging.WARNING, logger="shared.platform.azureml._metrics"):
        job = platform.get_job(JOB)
    assert job.metrics["eval_loss"] == pytest.approx(0.8123)
    assert mlflow_audiences(transport) == [ML, ARM, ARM]
    [warning] = [r.getMessage() for r in caplog.records if "HTTP 401" in r.getMessage()]
    assert "ml.azure.com" in warning
    assert "management.azure.com" in warning


def test_both_audiences_refused_gives_no_metrics_and_a_warning(
    transport: FakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """401 for both audiences: get_job still answers Completed, without metrics (best effort),
    and a warning names both audiences."""
    serve(transport, job_tree(JOB), audiences=())
    with caplog.at_level(logging.WARNING):
        job = make_platform(transport).get_job(JOB)
    assert (job.status, job.metrics) == ("Completed", {})
    assert mlflow_audiences(transport) == [ML, ARM]
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        f"no metrics run={JOB}" in m and "ml.azure.com" in m and "management.azure.com" in m
        for m in messages
    )


def test_running_job_sends_no_mlflow_request(transport: FakeTransport) -> None:
    """Status polling of a job that has not completed never asks MLflow."""
    serve(transport, job_tree(JOB), status="Running")
    job = make_platform(transport).get_job(JOB)
    assert job.status == "Running"
    assert job.metrics == {}
    assert transport.calls(pattern=MLFLOW) == []


def test_metrics_are_read_once_per_completed_job(transport: FakeTransport) -> None:
    """A completed job's metrics do not change: the second get_job sends no second search."""
    serve(transport, job_tree(JOB))
    platform = make_platform(transport)
    first = platform.get_job(JOB)
    second = platform.get_job(JOB)
    assert first.metrics == second.metrics
    assert len(searches(transport)) == 1


def test_without_root_run_tags_the_parent_chain_is_walked(transport: FakeTransport) -> None:
    """Runs without mlflow.rootRunId are found through parentRunId: job, node, then its steps."""
    runs = job_tree(JOB)
    for run in runs:
        run["data"]["tags"] = [t for t in run["data"]["tags"] if t["key"] != "mlflow.rootRunId"]
    serve(transport, runs)
    job = make_platform(transport).get_job(JOB)
    assert job.metrics["eval_loss"] == pytest.approx(0.8123)
    filters = [search_filter(r.json()) for r in searches(transport)]
    assert filters == [
        ("mlflow.rootRunId", JOB),
        ("mlflow.parentRunId", JOB),
        ("mlflow.parentRunId", run_id(JOB, "chat_completion_pipeline")),
    ]


def test_mlflow_refusing_gives_empty_metrics_and_a_warning(
    transport: FakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """MLflow answering 403 does not fail get_job: no metrics, one warning, retried next time."""
    serve(transport, job_tree(JOB))
    transport.add("POST", MLFLOW + r"runs/search$", [
        Reply(403, {"error_code": "PERMISSION_DENIED", "message": "no read on the experiment"}),
        Reply(200, {"runs": job_tree(JOB)[3:]}),
    ])
    platform = make_platform(transport)
    with caplog.at_level(logging.WARNING, logger="shared.platform.azureml._jobs"):
        job = platform.get_job(JOB)
    assert (job.status, job.metrics) == ("Completed", {})
    assert any(f"no metrics run={JOB}" in r.getMessage() for r in caplog.records)
    assert "eval_loss" in platform.get_job(JOB).metrics


def test_malformed_mlflow_answer_gives_empty_metrics(transport: FakeTransport) -> None:
    """An experiment lookup without an id is a warning and no metrics, not an exception."""
    serve(transport, job_tree(JOB))
    transport.add("GET", MLFLOW + r"experiments/get-by-name\?", Reply(200, {"experiment": {}}))
    assert make_platform(transport).get_job(JOB).metrics == {}


def test_job_without_a_finetune_step_metric_has_none(transport: FakeTransport) -> None:
    """Steps that logged neither eval_loss nor train_loss give no metrics (the gate holds)."""
    serve(transport, job_tree(JOB, metrics={}))
    assert make_platform(transport).get_job(JOB).metrics == {}


# -- pure helpers -------------------------------------------------------------------------


def test_last_values_take_the_highest_step() -> None:
    """A metric's history keeps its value at the highest step (then the latest timestamp)."""
    history = [
        metric("eval_loss", 1.5, 100, T0 + 3), metric("eval_loss", 0.9, 300, T0 + 1),
        metric("eval_loss", 1.1, 200, T0 + 2), metric("eval_loss", 0.7, 300, T0 + 5),
        {"key": "note", "value": "n/a", "step": 1, "timestamp": T0},
    ]
    assert last_values(history) == {"eval_loss": 0.7}


def test_final_metrics_prefer_the_latest_run_that_logged_eval_loss() -> None:
    """Of several runs with eval_loss, the one that ended last wins; train_loss-only loses."""
    early = mlflow_run(JOB, "a", parent=JOB, ended=T0 + 1,
                       metrics=[metric("eval_loss", 0.5, 9, T0)])
    late = mlflow_run(JOB, "b", parent=JOB, ended=T0 + 2,
                      metrics=[metric("eval_loss", 0.6, 9, T0)])
    train_only = mlflow_run(JOB, "c", parent=JOB, ended=T0 + 3,
                            metrics=[metric("train_loss", 0.1, 9, T0)])
    assert final_metrics([early, train_only, late]) == {"eval_loss": 0.6}
    assert final_metrics([train_only]) == {"train_loss": 0.1}
    assert final_metrics([]) == {}


def test_mlflow_rest_base_from_the_workspace_tracking_uri() -> None:
    """azureml:// tracking URIs are read over https with MLflow's REST prefix; others refused."""
    uri = "azureml://eastus2.api.azureml.ms/mlflow/v2.0/subscriptions/s/resourceGroups/r/x/"
    assert mlflow_rest_base(uri) == (
        "https://eastus2.api.azureml.ms/mlflow/v2.0/subscriptions/s/resourceGroups/r/x"
        "/api/2.0/mlflow"
    )
    with pytest.raises(ValueError, match="not an Azure ML MLflow tracking URI"):
        mlflow_rest_base("file:///tmp/mlruns")
