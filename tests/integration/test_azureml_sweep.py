"""The Azure ML adapter's sweeping operations through the real SDKs over a FakeTransport.

azure-ai-ml and azure-monitor-querymetrics serialise, page, retry and map errors for real;
the fake answers with realistic ARM / Azure Monitor bodies and records what we sent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest

from shared.errors import ConflictError, PermissionDeniedError, UnknownTrafficError
from shared.platform.azureml import AzureMLPlatform
from shared.platform.azureml._sweep import BATCH_SIZE, Series, _point, _read_batch
from shared.settings import Settings
from tests.fakes.transport import Reply
from tests.fixtures.azureml_sweep import (
    RG,
    SUB,
    WS,
    FakeAzure,
    FakeEndpoint,
    StaticCredential,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"


def managed(line: str) -> dict[str, str]:
    return {"tuneloop_managed": "true", "tuneloop_line": line}


def platform_for(azure: FakeAzure) -> AzureMLPlatform:
    settings = Settings(
        subscription_id=SUB, resource_group=RG, workspace_name=WS, platform="azureml"
    )
    return AzureMLPlatform(settings, credential=StaticCredential(), transport=azure.transport)


def world(n: int, *, location: str = "eastus", prefix: str = "ep") -> list[FakeEndpoint]:
    return [
        FakeEndpoint(
            f"{prefix}-{i:04d}", created=NOW - 10 * DAY, modified=NOW - 5 * DAY,
            location=location, tags=managed(f"{prefix}{i}"), requests=[0.0],
        )
        for i in range(n)
    ]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


# -- listing ---------------------------------------------------------------------------------


def test_list_follows_next_link_once_and_reads_system_data() -> None:
    """One paged list pass (nextLink followed), no per-endpoint GET, systemData times kept."""
    eps = world(5)
    eps[0].tags = {"tuneloop_managed": "true", "tuneloop_line": "alpha", "tuneloop_protect": "true"}
    eps[1].state = "Updating"
    azure = FakeAzure(eps, page_size=2)
    listed = platform_for(azure).list_endpoints()

    assert [e.name for e in listed] == [e.name for e in eps]
    calls = azure.list_calls()
    assert len(calls) == 3  # 5 endpoints at 2 per page
    assert "$skip=2" in calls[1].url
    assert "$skip=4" in calls[2].url
    assert all(query(c.url)["api-version"] == "2022-02-01-preview" for c in calls)
    assert azure.endpoint_gets() == []

    first = listed[0]
    assert first.id == eps[0].id
    assert first.created == NOW - 10 * DAY
    assert first.modified == NOW - 5 * DAY
    assert first.created.tzinfo is not None
    assert first.provisioning_state == "Succeeded"
    assert first.tags["tuneloop_protect"] == "true"
    assert first.traffic == {"blue": 100}
    assert first.location == "eastus"
    assert first.scoring_uri == f"https://{first.name}.eastus.inference.ml.azure.com/score"
    assert listed[1].provisioning_state == "Updating"


def test_empty_workspace_lists_nothing() -> None:
    """A workspace without endpoints lists an empty list, not None."""
    azure = FakeAzure([])
    assert platform_for(azure).list_endpoints() == []


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_request_shape() -> None:
    """getBatch is POSTed to the region's endpoint asking RequestsPerMinute and ConnectionsActive
    with Average (the only aggregation listed for them) at PT1M over the window, ids in the body."""
    eps = world(3)
    eps[0].requests = [2.0, 5.0]
    azure = FakeAzure(eps)
    counts = platform_for(azure).endpoint_requests(
        platform_for(azure).list_endpoints(), DAY, now=NOW
    )
    assert counts == {eps[0].name: 7, eps[1].name: 0, eps[2].name: 0}

    [call] = azure.metrics_calls()
    url = urlparse(call.url)
    assert url.hostname == "eastus.metrics.monitor.azure.com"
    assert url.path == f"/subscriptions/{SUB}/metrics:getBatch"
    q = query(call.url)
    assert q["metricnames"] == "RequestsPerMinute,ConnectionsActive"
    assert q["metricnamespace"] == NAMESPACE
    assert q["aggregation"] == "Average"
    assert q["interval"] == "PT1M"
    assert q["starttime"] == "2026-02-28T12:00:00.000Z"
    assert q["endtime"] == "2026-03-01T12:00:00.000Z"
    assert call.json() == {"resourceids": [e.id for e in eps]}
    assert call.headers["Authorization"] == "Bearer fake-token"


@pytest.mark.parametrize("window", [timedelta(minutes=7), timedelta(days=7)])
def test_grain_is_one_minute_whatever_the_window(window: timedelta) -> None:
    """PT1M for any window: only there is a point's Average that minute's requests."""
    azure = FakeAzure(world(1))
    platform = platform_for(azure)
    platform.endpoint_requests(platform.list_endpoints(), window, now=NOW)
    [call] = azure.metrics_calls()
    assert query(call.url)["interval"] == "PT1M"


def test_batches_hold_at_most_50_ids_grouped_by_region() -> None:
    """120 endpoints in eastus and 7 in westeurope: 3 + 1 calls, each one region, ≤ 50 ids."""
    eps = world(120) + world(7, location="westeurope", prefix="eu")
    azure = FakeAzure(eps)
    platform = platform_for(azure)
    counts = platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert len(counts) == 127

    calls = azure.metrics_calls()
    assert len(calls) == 4
    by_host: dict[str, list[int]] = {}
    for call in calls:
        ids = call.json()["resourceids"]
        assert 0 < len(ids) <= BATCH_SIZE
        host = urlparse(call.url).hostname
        assert host is not None
        region = host.split(".")[0]
        assert all(e.location == region for e in eps if e.id in ids)
        by_host.setdefault(region, []).append(len(ids))
    assert sorted(by_host["eastus"]) == [20, 50, 50]
    assert by_host["westeurope"] == [7]


def test_results_are_matched_by_resource_id_case_insensitively() -> None:
    """Azure Monitor may echo ids in another case; counts still land on the right endpoint."""
    eps = world(2)
    eps[1].requests = [4.0]
    azure = FakeAzure(eps)

    def lower_ids(req):  # type: ignore[no-untyped-def]
        reply = azure._metrics(req)
        for value in reply.body["values"]:
            value["resourceid"] = value["resourceid"].lower()
            for metric in value["value"]:
                metric["id"] = metric["id"].lower()
        reply.body["values"].reverse()
        return reply

    azure.transport.add("POST", r"metrics:getBatch", lower_ids)
    platform = platform_for(azure)
    assert platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW) == {
        eps[0].name: 0, eps[1].name: 4,
    }


def test_requests_are_per_minute_averages_summed_and_rounded_up() -> None:
    """Each minute's Average × 1 minute, summed over the window; a fraction rounds up (a minute
    averaging 0.5 had a request), bare timestamps (no data that minute) add nothing."""
    eps = world(2)
    eps[0].requests = [0.5, 2.0, None, 1.25]
    eps[1].requests = [None, 0.0, 0.25]
    azure = FakeAzure(eps)
    platform = platform_for(azure)
    counts = platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert counts == {eps[0].name: 4, eps[1].name: 1}


def test_point_with_values_but_no_average_is_unknown_not_zero() -> None:
    """A point that carries other aggregations but not the Average asked for is no count: the
    endpoint is absent (unknown), never 0; so is one with a negative Average."""
    eps = world(3)
    eps[0].requests = [None, {"total": 12.0, "count": 3.0}]
    eps[1].requests = [-1.0]
    eps[2].requests = [1.0]
    azure = FakeAzure(eps)
    platform = platform_for(azure)
    counts = platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert counts == {eps[2].name: 1}


@pytest.mark.parametrize(
    ("requests", "connections", "expected"),
    [
        ([], [0.0, 0.0, None], 0),  # no request sample; reported on, no client: idle
        ([None, None], [0.0], 0),  # bare timestamps only, same
        ([], [], None),  # "timeseries": [] for both: nothing proves it is reported on
        ([None], [None, None], None),  # no sample of either metric
        ([], [0.0, 2.0], None),  # clients connected but no request recorded: contradictory
        ([], [{"maximum": 0.0}], None),  # heartbeat without the Average asked for
    ],
    ids=["no-requests-heartbeat-0", "bare-points-heartbeat-0", "both-empty",
         "both-bare", "connections-without-requests", "heartbeat-no-average"],
)
def test_no_request_sample_is_zero_only_when_connections_report_zero(
    requests: list[object], connections: list[object], expected: int | None
) -> None:
    """An endpoint with no RequestsPerMinute sample in the window counts 0 only when
    ConnectionsActive has samples, all 0; otherwise its traffic is unknown (absent)."""
    [ep] = world(1)
    ep.requests = requests  # type: ignore[assignment]
    ep.connections = connections  # type: ignore[assignment]
    azure = FakeAzure([ep])
    platform = platform_for(azure)
    counts = platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert counts.get(ep.name) == expected


def test_omitted_or_errored_endpoints_are_unknown() -> None:
    """An endpoint left out of the answer, or whose RequestsPerMinute has an errorCode, is
    absent (unknown), never 0, while the others in the batch count."""
    eps = world(3)
    eps[0].requests = None  # omitted from the answer
    eps[1].metric_error = "InternalServerError"
    azure = FakeAzure(eps)
    platform = platform_for(azure)
    counts = platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert counts == {eps[2].name: 0}


@pytest.mark.integration
def test_busy_endpoint_is_kept_when_only_average_is_served(settings: Settings) -> None:
    """A busy endpoint (Azure Monitor serves only Average for RequestsPerMinute) is kept by the
    whole sweep; asking Total got bare points, read as 0 requests: the endpoint was deleted."""
    from shared.clients import Clients
    from shared.sweep import Action, run_sweep

    busy = FakeEndpoint("tl-busy", created=NOW - 9 * DAY, modified=NOW - 8 * DAY,
                        tags=managed("busy"), requests=[3.0, 5.0, None, 1.0])
    idle = FakeEndpoint("tl-idle", created=NOW - 9 * DAY, modified=NOW - 8 * DAY,
                        tags=managed("idle"))
    azure = FakeAzure([busy, idle])
    s = settings.model_copy(update={"idle_after": DAY, "sweep_max_deletions": 5})
    c = Clients(s)
    c.storage.ensure_containers()

    report = run_sweep(platform=platform_for(azure), ledger=c.ledger, storage=c.storage,
                       settings=s, now=NOW)

    decisions = {d.endpoint: d for d in report.decisions}
    assert decisions["tl-busy"].action is Action.KEEP
    assert decisions["tl-busy"].requests == 9
    assert decisions["tl-idle"].action is Action.DELETE
    assert azure.deleted == ["tl-idle"]


def test_one_region_down_leaves_only_its_endpoints_unknown() -> None:
    """Endpoints across two regions: westus2's 503 makes its endpoints unknown, eastus counts."""
    eps = world(3) + world(2, location="westus2", prefix="wu")
    azure = FakeAzure(eps, metrics_status={"westus2": 503})
    platform = platform_for(azure)
    platform.metrics_client("westus2")._config.retry_policy.total_retries = 0
    counts = platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert set(counts) == {e.name for e in eps[:3]}


def test_metrics_outage_raises_unknown_traffic() -> None:
    """When every batch fails (503 everywhere), the adapter raises UnknownTrafficError."""
    azure = FakeAzure(world(3), metrics_status={"eastus": 503})
    platform = platform_for(azure)
    platform.metrics_client("eastus")._config.retry_policy.total_retries = 0
    with pytest.raises(UnknownTrafficError, match="every batch"):
        platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)


@pytest.mark.parametrize(
    ("status", "words"),
    [(401, "Monitoring Reader on subscription " + SUB), (403, "Microsoft.Insights")],
)
def test_metrics_refused_everywhere_is_permission_denied_naming_role_and_scope(
    status: int, words: str
) -> None:
    """401 (no Monitoring Reader on the subscription) or 403 (Microsoft.Insights not
    registered) on every batch: PermissionDeniedError whose hint names the role and scope."""
    azure = FakeAzure(world(3), metrics_status={"eastus": status})
    platform = platform_for(azure)
    with pytest.raises(PermissionDeniedError) as info:
        platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert words in str(info.value)
    assert "subscription-level" in (info.value.hint or "")
    assert len(azure.metrics_calls()) == 1  # not retried


def test_refused_in_one_region_and_down_in_another_is_unknown_traffic() -> None:
    """Mixed failures (401 in one region, 503 in the other) are UnknownTrafficError, whose
    hint still names the role the metrics need."""
    eps = world(2) + world(2, location="westus2", prefix="wu")
    azure = FakeAzure(eps, metrics_status={"eastus": 401, "westus2": 503})
    platform = platform_for(azure)
    platform.metrics_client("westus2")._config.retry_policy.total_retries = 0
    with pytest.raises(UnknownTrafficError) as info:
        platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert "Monitoring Reader on subscription" in (info.value.hint or "")


def test_endpoint_without_location_is_unknown_not_queried() -> None:
    """No region means no regional metrics endpoint: the endpoint's traffic is unknown."""
    azure = FakeAzure(world(1))
    platform = platform_for(azure)
    [ep] = platform.list_endpoints()
    from dataclasses import replace

    assert platform.endpoint_requests([replace(ep, location=None)], DAY, now=NOW) == {}
    assert azure.metrics_calls() == []


# -- deletion --------------------------------------------------------------------------------


def test_delete_starts_the_operation_without_waiting() -> None:
    """202 with an operation that stays InProgress: delete_endpoint returns at once."""
    azure = FakeAzure(world(1), operation_status="InProgress")
    platform = platform_for(azure)
    platform.delete_endpoint("ep-0000")
    [call] = azure.delete_calls()
    assert call.url.startswith(
        f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{WS}/onlineEndpoints/ep-0000?"
    )
    assert azure.deleted == ["ep-0000"]


def test_delete_of_a_missing_endpoint_is_success() -> None:
    """404 (already gone) is success."""
    azure = FakeAzure([])
    platform_for(azure).delete_endpoint("ep-gone")
    assert len(azure.delete_calls()) == 1


def test_delete_conflict_raises_conflict_error() -> None:
    """409 (an operation in progress) raises ConflictError with a hint."""
    azure = FakeAzure(world(1), delete_status={"ep-0000": 409})
    with pytest.raises(ConflictError) as info:
        platform_for(azure).delete_endpoint("ep-0000")
    assert info.value.code == "conflict"
    assert "next sweep" in (info.value.hint or "")
    assert json.dumps(info.value.to_dict())


# -- the whole sweep over the Azure adapter ------------------------------------------------------


@pytest.mark.integration
def test_sweep_over_azure_two_regions_one_metrics_outage(settings: Settings) -> None:
    """Real adapter + sweep shell + Azurite: eastus's idle endpoint is deleted (one list
    pass, no GET per endpoint); westus2's metrics fail, so its idle endpoint is kept."""
    from shared.clients import Clients
    from shared.ledger import RunState
    from shared.sweep import Action, run_sweep

    eps = [
        FakeEndpoint("tl-east-idle", created=NOW - 9 * DAY, modified=NOW - 8 * DAY,
                     tags=managed("east-idle"), requests=[0.0, None]),
        FakeEndpoint("tl-east-busy", created=NOW - 9 * DAY, modified=NOW - 8 * DAY,
                     tags=managed("east-busy"), requests=[1.0, 4.0]),
        FakeEndpoint("tl-east-skewed", created=NOW - 9 * DAY, modified=NOW + timedelta(minutes=3),
                     tags=managed("east-skewed"), requests=[]),
        FakeEndpoint("tl-west-idle", created=NOW - 9 * DAY, modified=NOW - 8 * DAY,
                     location="westus2", tags=managed("west-idle"), requests=[]),
        FakeEndpoint("someone-elses", created=NOW - 90 * DAY, modified=NOW - 90 * DAY,
                     tags={"team": "search"}, requests=[]),
    ]
    azure = FakeAzure(eps, page_size=2, metrics_status={"westus2": 403})
    s = settings.model_copy(update={"idle_after": DAY, "sweep_max_deletions": 5})
    c = Clients(s)
    c.storage.ensure_containers()
    c.ledger.create("east-idle", "run-live", RunState.PROMOTED)
    platform = platform_for(azure)

    report = run_sweep(platform=platform, ledger=c.ledger, storage=c.storage, settings=s, now=NOW)

    actions = {d.endpoint: d.action for d in report.decisions}
    assert actions == {
        "tl-east-idle": Action.DELETE,
        "tl-east-busy": Action.KEEP,
        "tl-east-skewed": Action.KEEP,
        "tl-west-idle": Action.KEEP,
        "someone-elses": Action.KEEP,
    }
    assert azure.deleted == ["tl-east-idle"]
    assert len(azure.list_calls()) == 3
    assert azure.endpoint_gets() == []
    # The unmanaged endpoint's traffic is never asked for.
    asked = [rid for call in azure.metrics_calls() for rid in call.json()["resourceids"]]
    assert not any(rid.endswith("/someone-elses") for rid in asked)
    assert c.ledger.get("east-idle", "run-live").state is RunState.RETIRED
    west = next(d for d in report.decisions if d.endpoint == "tl-west-idle")
    assert "request count unknown" in west.reason


@pytest.mark.integration
def test_sweep_command_without_monitoring_reader_is_one_line_and_exit_2(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tuneloop sweep` whose identity lacks Monitoring Reader on the subscription (getBatch
    answers 401): one line naming the role and scope, exit 2, nothing deleted."""
    import argparse

    from cli.commands import sweep as sweep_command
    from shared.clients import Clients

    idle = FakeEndpoint("tl-idle", created=NOW - 9 * DAY, modified=NOW - 8 * DAY,
                        tags=managed("idle"))
    azure = FakeAzure([idle], metrics_status={"eastus": 401})
    s = settings.model_copy(update={"idle_after": DAY})
    c = Clients(s, platform=platform_for(azure))

    code = sweep_command.run(argparse.Namespace(dry_run=False, json=False), clients=c)

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("tuneloop sweep: permission_denied: ")
    assert f"Monitoring Reader on subscription {SUB}" in err[0]
    assert azure.deleted == []


# -- the raw read of getBatch answers (no SDK models) ------------------------------------------


def _sdk_series(metric: object) -> Series:
    """The oracle: one metric read from azure-monitor-querymetrics' own models, by the rules of
    requests_in_window (usable Average: not None and >= 0; other values: foreign)."""
    values: list[float] = []
    foreign = False
    for series in metric.timeseries:  # type: ignore[attr-defined]
        for point in series.data:
            aggregations = [getattr(point, a) for a in ("minimum", "maximum", "total", "count")]
            if point.average is not None and float(point.average) >= 0:
                values.append(float(point.average))
            elif point.average is not None or any(v is not None for v in aggregations):
                foreign = True
    return Series(total=sum(values), samples=len(values),
                  positive=any(v > 0 for v in values), foreign=foreign)


def test_raw_read_matches_the_sdk_models_point_for_point() -> None:
    """Reading the raw answer gives, metric by metric, what the SDK's models give (sum and number
    of usable Averages, any > 0, values without a usable Average), over mixed points: fractions,
    bare minutes, other aggregations only, negative, Average beside another aggregation, and a
    key the REST reference does not list."""
    eps = world(6)
    eps[0].requests = [0.5, None, 2.0, 1.25, 0.0]
    eps[1].requests = [None, {"total": 12.0, "count": 3.0}, 1.0]
    eps[2].requests = [-1.0, 3.0]
    eps[3].requests = [{"average": 2.0, "maximum": 4.0}, {"average": 1.0, "unlisted": 7}]
    eps[3].connections = [{"unlisted": 1}, 0.0, 3.0]
    eps[4].requests = []
    eps[4].connections = [0.0, None, {"maximum": 0.0}]
    eps[5].requests = [0.1] * 1440
    azure = FakeAzure(eps)
    answers: list[bytes] = []

    def keep(req):  # type: ignore[no-untyped-def]
        reply = azure._metrics(req)
        answers.append(json.dumps(reply.body).encode())
        return reply

    azure.transport.add("POST", r"metrics:getBatch", keep)
    platform = platform_for(azure)
    results = platform.metrics_client("eastus").query_resources(
        resource_ids=[e.id for e in eps], metric_namespace=NAMESPACE,
        metric_names=["RequestsPerMinute", "ConnectionsActive"],
        timespan=(NOW - DAY, NOW), granularity=timedelta(minutes=1), aggregations=["Average"],
    )
    expected = {
        (metric.id.lower().split("/providers/microsoft.insights/")[0], metric.name.lower()):
            _sdk_series(metric)
        for result in results for metric in result.metrics
    }
    [answer] = answers
    read = _read_batch(answer, lambda resource: True)

    assert len(expected) == 12
    assert read == expected


def test_points_are_reduced_while_parsing() -> None:
    """The JSON object hook turns each point into (average, has values) as it is parsed, so an
    answer's 2 × 50 × 1,440 point objects are never held; other objects are left as they are."""
    point = {"timeStamp": "2026-03-01T11:59:00Z", "average": 2.0}
    assert _point(point) == (2.0, True)
    assert _point({"timeStamp": "2026-03-01T11:59:00Z"}) == (None, False)
    assert _point({"timeStamp": "2026-03-01T11:59:00Z", "total": 1.0}) == (None, True)
    other = {"timeStamp": "2026-03-01T11:59:00Z", "average": 2.0, "unlisted": 1}
    assert _point(other) is other
    assert _point({}) == {}


@pytest.mark.parametrize(
    "body",
    [
        {},  # no "values"
        {"values": {}},
        {"values": [{"value": [{"id": "ID", "name": {"value": "RequestsPerMinute"},
                                "timeseries": [{"data": [3.0]}]}]}]},  # a point not an object
        {"values": [{"value": [{"id": "ID", "name": {"value": "RequestsPerMinute"},
                                "timeseries": {"data": []}}]}]},  # timeseries not an array
    ],
    ids=["no-values", "values-not-array", "point-not-object", "timeseries-not-array"],
)
def test_malformed_answer_fails_the_batch_closed(body: dict[str, object]) -> None:
    """An answer that is not the REST shape fails its batch (its endpoints unknown, here every
    batch: UnknownTrafficError), as the SDK's models failed on it, never a count of 0."""
    eps = world(2)
    azure = FakeAzure(eps)
    metric_id = f"{eps[0].id}/providers/Microsoft.Insights/metrics/RequestsPerMinute"
    answer = json.loads(json.dumps(body).replace('"ID"', json.dumps(metric_id)))
    azure.transport.add("POST", r"metrics:getBatch", Reply(200, answer))
    platform = platform_for(azure)
    with pytest.raises(UnknownTrafficError, match="every batch"):
        platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)


def test_answer_served_as_a_json_string_is_read() -> None:
    """The service has been seen to send the answer as a JSON string of the JSON (the SDK's
    _patch.py handles it): it is read the same."""
    eps = world(2)
    eps[1].requests = [2.0, 3.0]
    azure = FakeAzure(eps)

    def as_string(req):  # type: ignore[no-untyped-def]
        reply = azure._metrics(req)
        return Reply(200, json.dumps(json.dumps(reply.body)).encode())

    azure.transport.add("POST", r"metrics:getBatch", as_string)
    platform = platform_for(azure)
    assert platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW) == {
        eps[0].name: 0, eps[1].name: 5,
    }


def test_request_is_the_one_query_resources_sends() -> None:
    """The getBatch request sent through the client's pipeline is the SDK's query_resources
    request: same URL (path, query parameters, their order and quoting), body and headers."""
    eps = world(3)
    ours = FakeAzure(eps)
    platform = platform_for(ours)
    platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    theirs = FakeAzure(eps)
    platform_for(theirs).metrics_client("eastus").query_resources(
        resource_ids=[e.id for e in eps], metric_namespace=NAMESPACE,
        metric_names=["RequestsPerMinute", "ConnectionsActive"],
        timespan=(NOW - DAY, NOW), granularity=timedelta(minutes=1), aggregations=["Average"],
    )
    [sent] = ours.metrics_calls()
    [expected] = theirs.metrics_calls()
    assert sent.url == expected.url
    assert sent.json() == expected.json()

    def comparable(headers: dict[str, str]) -> dict[str, str]:
        # per request: the client request id, and the W3C traceparent azure-core adds once
        # OpenTelemetry tracing is on in the process (shared.telemetry)
        per_request = {"x-ms-client-request-id", "traceparent"}
        return {k.lower(): v for k, v in headers.items() if k.lower() not in per_request}

    assert comparable(sent.headers) == comparable(expected.headers)


def test_getbatch_goes_through_the_clients_retry_policy() -> None:
    """The raw getBatch request still runs in the metrics client's pipeline: two 503s, then the
    answer, are retried by its retry policy and the counts read."""
    eps = world(2)
    eps[0].requests = [1.0]
    azure = FakeAzure(eps)
    served = azure._metrics
    busy = Reply(503, {"error": {"code": "ServiceUnavailable", "message": "try later"}},
                 {"Retry-After": "0"})
    replies = iter([busy, busy])
    azure.transport.add("POST", r"metrics:getBatch", lambda req: next(replies, None) or served(req))
    platform = platform_for(azure)
    counts = platform.endpoint_requests(platform.list_endpoints(), DAY, now=NOW)
    assert counts == {eps[0].name: 1, eps[1].name: 0}
    assert len(azure.metrics_calls()) == 3
