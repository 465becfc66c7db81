"""Endpoint listing, request metrics and deletion for the sweeper (Azure ML + Azure Monitor).

- ``list_endpoints``: one paged ``GET .../onlineEndpoints`` (``online_endpoints.list()``);
  created/modified come from ARM ``systemData``, which the SDK keeps in ``properties``.
- ``endpoint_requests``: metrics ``RequestsPerMinute`` and ``ConnectionsActive`` (aggregation
  Average, grain PT1M) through the regional ``metrics:getBatch`` API
  (sent with ``MetricsClient.send_request``, read as raw JSON: see :func:`_read_batch`): at
  most 50 resource ids per call, one group per (subscription, region), results matched by
  resource id. How a count is read, and when it is unknown, is explained at
  :func:`requests_in_window`.
- ``delete_endpoint``: ``begin_delete`` without waiting on the long-running operation.

Azure facts this module relies on (checked 2026-12):

- "Supported metrics for Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
  (learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/
  microsoft-machinelearningservices-workspaces-onlineendpoints-metrics): ``RequestsPerMinute``
  "The number of requests sent to online endpoint within a minute", unit Count, aggregation
  **Average** only (no Total, no Count), dimensions deployment/statusCode/statusCodeClass/
  modelStatusCode, time grain PT1M; ``ConnectionsActive`` "The total number of concurrent TCP
  connections active from clients", Count, Average, no dimensions, PT1M.
- "How to migrate from the metrics API to the getBatch API"
  (learn.microsoft.com/azure/azure-monitor/metrics/migrate-to-batch-api): up to 50 resource
  ids of one subscription, region and type per call; ``"timeseries": []`` "when no data is
  available for the specified time range"; a query without a ``*`` filter returns a single
  time series aggregated over the dimensions; **401** = the caller lacks Monitoring Reader on
  the *subscription* (getBatch is a subscription-level API: Monitoring Reader on every queried
  resource is not enough); **403** = the Microsoft.Insights resource provider is not
  registered on the subscription.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UnknownTrafficError,
    map_azure_errors,
)
from shared.platform.azureml._base import AzureMLBase
from shared.platform.azureml._jobs import map_sdk_errors
from shared.platform.port import EndpointInfo

if TYPE_CHECKING:
    from azure.monitor.querymetrics import MetricsClient

__all__ = [
    "AGGREGATION",
    "API_VERSION",
    "BATCH_SIZE",
    "GRAIN",
    "HEARTBEAT_METRIC",
    "METRICS_ROLE",
    "METRIC_NAME",
    "METRIC_NAMESPACE",
    "Series",
    "SweepMixin",
    "requests_in_window",
]

log = logging.getLogger(__name__)

METRIC_NAME = "RequestsPerMinute"
# Evidence that Azure Monitor reports on the endpoint when RequestsPerMinute has no sample at
# all in the window (see requests_in_window).
HEARTBEAT_METRIC = "ConnectionsActive"
METRIC_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
# The only aggregation the supported-metrics page lists for both metrics (module docstring).
# Asking for Total, as this module once did, gets points without a "total": read as 0, a busy
# endpoint looked idle.
AGGREGATION = "Average"
# The one time grain listed for RequestsPerMinute. At PT1M a point's Average is that minute's
# requests (see requests_in_window); at a coarser grain the Average divides by the number of
# samples, not minutes, and no count can be derived from it.
GRAIN = timedelta(minutes=1)
_GRAIN_ISO = "PT1M"  # GRAIN as the REST API's interval
# The Metrics Batch REST API version whose answer _read_batch parses: the one
# azure-monitor-querymetrics 1.0.0 sends by default (its _configuration.py), so the request on
# the wire is the one its query_resources sent. Pinned here: an SDK upgrade changes no shape.
API_VERSION = "2024-02-01"
BATCH_SIZE = 50  # metrics:getBatch takes at most 50 resource ids per call
_PARALLEL_QUERIES = 4  # modest: Azure Monitor throttles per caller
# The role metrics:getBatch needs, at the scope it needs it (module docstring: 401/403).
METRICS_ROLE = (
    "Monitoring Reader on subscription {subscription} (metrics:getBatch is a "
    "subscription-level API: a role on the workspace or the endpoints gives 401), and "
    "register the Microsoft.Insights resource provider on it (unregistered gives 403)"
)
_AGGREGATIONS = ("average", "minimum", "maximum", "total", "count")


def _error_map() -> dict[int, type[Any]]:
    """The generated getBatch operation's error map (azure-monitor-querymetrics 1.0.0,
    _operations.py): which azure-core error a non-200 status raises."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        ResourceExistsError,
        ResourceNotFoundError,
        ResourceNotModifiedError,
    )

    return {
        401: ClientAuthenticationError,
        404: ResourceNotFoundError,
        409: ResourceExistsError,
        304: ResourceNotModifiedError,
    }


def _q(value: str) -> str:
    """A query/path value quoted as the generated client quotes it (azure-core's rest
    HttpRequest sends ``params`` as given)."""
    return quote(value, safe="")


def _iso(value: datetime) -> str:
    """A query time as the REST API documents it: ``yyyy-MM-ddTHH:mm:ss.fffZ`` (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def requests_in_window(
    requests: Series | None, heartbeat: Series | None
) -> tuple[int | None, str]:
    """Requests over the window from one endpoint's two metrics (each read by
    :func:`_read_series`; None when missing from the answer): ``(count, "")``, or
    ``(None, why)`` when it is unknown.

    The count: RequestsPerMinute's Average at PT1M is the mean of the samples of that minute,
    each "the number of requests ... within a minute", so the minute's requests are its
    Average × 1 minute, and the window's are the sum over its minutes (and over series, if
    Azure Monitor returns several). Rounded **up**: a minute whose samples average 0.5 had a
    request. When one minute's requests are reported as several samples (one per
    deployment/status code), their Average is below their sum: the count is then a lower
    bound, still exact about zero (an average of non-negative samples is 0 only if all are),
    which is what the default ``TUNELOOP_IDLE_MAX_REQUESTS=0`` compares.

    Unknown (never 0), so the endpoint is kept:

    - the metric is missing from the answer (or failed: handled by the caller);
    - a point carries values but no Average (the service answered with something else than
      what was asked: reading that as 0 is exactly how a busy endpoint looked idle);
    - RequestsPerMinute has no sample at all in the window (``"timeseries": []``, or only
      points with a timestamp and no value, which is how Azure Monitor returns minutes without
      data) and ConnectionsActive does not show the endpoint being reported on with no client
      connected (no sample either, or a connection while no request was recorded). An endpoint
      with no requests emits no request sample, so "no sample" alone cannot tell idle from a
      metrics pipeline that is not reporting; a ConnectionsActive series of zeros can.
    """
    if requests is None:
        return None, f"no {METRIC_NAME} metric in the answer"
    if requests.foreign:
        return None, f"a {METRIC_NAME} point has values but no {AGGREGATION}"
    if requests.samples:
        return math.ceil(round(requests.total, 6)), ""
    if heartbeat is None:
        return None, f"no {METRIC_NAME} sample in the window and no {HEARTBEAT_METRIC} metric"
    if heartbeat.foreign:
        return None, f"a {HEARTBEAT_METRIC} point has values but no {AGGREGATION}"
    if not heartbeat.samples:
        return None, f"no {METRIC_NAME} or {HEARTBEAT_METRIC} sample in the window"
    if heartbeat.positive:
        return None, f"no {METRIC_NAME} sample but {HEARTBEAT_METRIC} shows clients connected"
    return 0, ""


@dataclass(frozen=True, slots=True)
class Series:
    """One metric of one resource, reduced to what :func:`requests_in_window` reads: the sum
    and the number of its usable Averages, whether one was > 0, and whether a point had values
    but no usable Average (other aggregations only, or a negative Average)."""

    total: float = 0.0
    samples: int = 0
    positive: bool = False
    foreign: bool = False


# -- reading the raw getBatch answer -----------------------------------------------------------
#
# Why raw JSON and not the SDK's models (measured with bench/sweep.py and on one answer): at
# PT1M over a 24 h window a 50-endpoint answer holds 2 × 50 × 1,440 points (~7 MB).
# query_resources parses it twice (ContentDecodePolicy, response.json()), then builds a model
# object per point (model_base._deserialize, then MetricValue._from_generated, which parses
# every timestamp): ~3 s of CPU per answer, against ~0.15 s for one json.loads with the object
# hook below, which also reduces each point as it is parsed (~47 MB of dicts per answer become
# ~10 MB). 1,000 endpoints: ~100 s of CPU per sweep became ~5 s. The operation's cls= hook
# cannot skip the models cleanly (query_resources indexes its return value), so the request
# is sent with the same MetricsClient's send_request (its pipeline: auth, retry, user agent,
# transport), and errors are raised exactly as the generated operation raises them
# (_query_batch). Field names are the REST API's
# (Metrics Batch - Batch, learn.microsoft.com/rest/api/monitor/metrics-batch/batch):
# values[].resourceid, values[].value[] (Metric: id, name.value, errorCode, timeseries[]),
# timeseries[].data[] (MetricValue: timeStamp, average, minimum, maximum, total, count).
_POINT_KEYS = frozenset({"timeStamp", *_AGGREGATIONS})


def _point(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: a point (a MetricValue: ``timeStamp`` and aggregations, no
    other key) becomes ``(average, other aggregations present)``, a tuple (JSON never yields
    one, so a malformed point is still told apart); every other object is left as it is."""
    if "timeStamp" in obj and obj.keys() <= _POINT_KEYS:
        return _reduced(obj)
    return obj


def _reduced(point: dict[str, Any]) -> tuple[Any, bool]:
    return point.get("average"), any(point.get(name) is not None for name in _AGGREGATIONS)


def _objects(value: Any, what: str) -> list[Any]:
    """A JSON array of the answer (absent or null: empty); anything else is a malformed
    answer, which fails the batch (its endpoints are unknown), as it failed the SDK's models."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"metrics:getBatch answer: {what} is not an array")
    return value


def _read_series(metric: dict[str, Any]) -> Series:
    """One metric's points in one pass (rules: :func:`requests_in_window`)."""
    values: list[float] = []
    foreign = False
    for series in _objects(metric.get("timeseries"), "timeseries"):
        if not isinstance(series, dict):
            raise ValueError("metrics:getBatch answer: a timeseries is not an object")
        for point in _objects(series.get("data"), "data"):
            if isinstance(point, dict):  # a point with a key the REST API does not list
                point = _reduced(point)
            elif not isinstance(point, tuple):
                raise ValueError("metrics:getBatch answer: a data point is not an object")
            average, valued = point
            if average is not None and float(average) >= 0:
                values.append(float(average))
            elif valued:
                foreign = True  # values but not the Average asked for; or a negative one
    return Series(
        total=sum(values),  # over all its series, in order: the same float sum as before
        samples=len(values),
        positive=any(value > 0 for value in values),
        foreign=foreign,
    )


def _read_batch(
    content: bytes, wanted: Callable[[str], bool]
) -> dict[tuple[str, str], Series]:
    """The ``(resource id, metric name)`` (lower case) → :class:`Series` of a getBatch answer,
    for the resources ``wanted`` accepts; a metric whose ``errorCode`` is not Success is left
    out (its endpoint is unknown: the SDK's models dropped errorCode, so it was read from the
    raw answer before as well). Peak memory is this one answer, never the whole sweep."""
    body: Any = json.loads(content, object_hook=_point)
    if isinstance(body, str):  # seen from the service, per azure-monitor-querymetrics' _patch
        body = json.loads(body, object_hook=_point)
    if not isinstance(body, dict) or not isinstance(body.get("values"), list):
        raise ValueError("metrics:getBatch answer has no 'values' array")
    read: dict[tuple[str, str], Series] = {}
    failed: set[tuple[str, str]] = set()
    for value in body["values"]:
        if not isinstance(value, dict):
            raise ValueError("metrics:getBatch answer: a values entry is not an object")
        for metric in _objects(value.get("value"), "value"):
            if not isinstance(metric, dict):
                raise ValueError("metrics:getBatch answer: a metric is not an object")
            name = str((metric.get("name") or {}).get("value") or "").lower()
            code = metric.get("errorCode")
            if code and str(code).lower() != "success":
                where = value.get("resourceid") or _resource_of_metric(metric.get("id"))
                if where:
                    failed.add((str(where).lower(), name))
                continue
            resource = _resource_of_metric(metric.get("id"))
            if resource is not None and wanted(resource):
                read[(resource, name)] = _read_series(metric)
    for key in failed:
        read.pop(key, None)
    return read


def _parse_time(value: Any) -> datetime | None:
    """A systemData time as the SDK stores it (``%Y-%m-%dT%H:%M:%S.%f%z``) or a datetime."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _region(location: str | None) -> str | None:
    """ARM locations come as ``eastus``; display names (``East US``) are normalised too."""
    if not location:
        return None
    return location.replace(" ", "").lower()


def _subscription(resource_id: str) -> str | None:
    parts = resource_id.strip("/").split("/")
    if len(parts) >= 2 and parts[0].lower() == "subscriptions":
        return parts[1]
    return None


def _resource_of_metric(metric_id: str | None) -> str | None:
    """``<resource id>/providers/Microsoft.Insights/metrics/<name>`` → the resource id, lower."""
    if not metric_id:
        return None
    lowered = metric_id.lower()
    marker = "/providers/microsoft.insights/metrics/"
    cut = lowered.rfind(marker)
    return lowered[:cut] if cut >= 0 else None


def _value(state: Any) -> str:
    """The SDK returns enums for some strings (provisioning state); the port wants str."""
    return str(getattr(state, "value", state) or "")


def _listed_endpoint(
    endpoint: Any, *, state: Callable[[Any], str] = _value
) -> EndpointInfo:
    """The port's view of a listed endpoint. The SDK keeps ARM systemData in ``properties``
    (``createdAt``/``lastModifiedAt``); ``creation_context`` is not set for endpoints.
    ``state`` maps the SDK's provisioning state (the release reads a missing one as Creating).
    """
    props = dict(getattr(endpoint, "properties", None) or {})
    return EndpointInfo(
        name=str(endpoint.name),
        id=str(endpoint.id or ""),
        tags=dict(endpoint.tags or {}),
        created=_parse_time(props.get("createdAt")),
        modified=_parse_time(props.get("lastModifiedAt")),
        provisioning_state=state(endpoint.provisioning_state),
        traffic={str(k): int(v) for k, v in (endpoint.traffic or {}).items()},
        scoring_uri=endpoint.scoring_uri,
        location=endpoint.location,
    )


class SweepMixin(AzureMLBase):
    """The port's sweeping operations on Azure ML."""

    # -- listing --------------------------------------------------------------------------
    def list_endpoints(self) -> list[EndpointInfo]:
        """Every online endpoint of the workspace, from one paged list (no per-endpoint GET)."""
        with map_sdk_errors("listing online endpoints"):
            return [_listed_endpoint(e) for e in self.ml_client.online_endpoints.list()]

    # -- metrics --------------------------------------------------------------------------
    @cached_property
    def _metrics_clients(self) -> dict[str, MetricsClient]:
        return {}

    @cached_property
    def _metrics_lock(self) -> threading.Lock:
        return threading.Lock()

    def metrics_client(self, region: str) -> MetricsClient:
        """The Azure Monitor metrics client of one region, built once, on first use."""
        with self._metrics_lock:
            client = self._metrics_clients.get(region)
            if client is None:
                from azure.monitor.querymetrics import MetricsClient

                client = MetricsClient(
                    f"https://{region}.metrics.monitor.azure.com",
                    self.credential,
                    **self._client_kwargs(),
                )
                self._metrics_clients[region] = client
            return client

    def endpoint_requests(
        self, endpoints: Sequence[EndpointInfo], window: timedelta, *, now: datetime
    ) -> dict[str, int]:
        """Requests per endpoint name over ``[now - window, now]`` (absent = unknown).

        Raises PermissionDeniedError when every query was refused (401/403: the hint names
        Monitoring Reader on the subscription), UnknownTrafficError when no query succeeded.
        """
        groups: dict[tuple[str, str], list[EndpointInfo]] = defaultdict(list)
        for endpoint in endpoints:
            sub, region = _subscription(endpoint.id), _region(endpoint.location)
            if sub is None or region is None:
                log.warning(
                    "sweep: endpoint %s has no subscription/region in its id/location; "
                    "its traffic is unknown", endpoint.name,
                )
                continue
            groups[(sub, region)].append(endpoint)
        batches = [
            (region, members[i : i + BATCH_SIZE])
            for (_, region), members in sorted(groups.items())
            for i in range(0, len(members), BATCH_SIZE)
        ]
        if not batches:
            return {}
        for region in {region for region, _ in batches}:
            self.metrics_client(region)  # build clients here, not racing in the pool
        start = now - window
        counts: dict[str, int] = {}
        errors: list[Exception] = []
        workers = min(_PARALLEL_QUERIES, len(batches))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep-metrics") as pool:
            futures = [
                pool.submit(self._query_batch, region, batch, start, now)
                for region, batch in batches
            ]
            for (region, batch), future in zip(batches, futures, strict=True):
                try:
                    counts.update(future.result())
                except Exception as exc:  # any failure: this batch's traffic is unknown
                    log.warning(
                        "sweep: metrics query for %d endpoints in %s failed: %s",
                        len(batch), region, exc,
                    )
                    errors.append(exc)
        if len(errors) == len(batches):
            if all(isinstance(e, PermissionDeniedError) for e in errors):
                raise errors[0]  # the identity lacks the role: say so, not "unknown traffic"
            first = errors[0]
            raise UnknownTrafficError(
                f"Azure Monitor metrics query failed for every batch "
                f"({type(first).__name__}: {first})",
                hint="nothing is deleted until request counts are known; the identity needs "
                + METRICS_ROLE.format(subscription=_subscription(batches[0][1][0].id)),
            )
        return counts

    def _query_batch(
        self,
        region: str,
        batch: Sequence[EndpointInfo],
        start: datetime,
        end: datetime,
    ) -> dict[str, int]:
        """One ``metrics:getBatch`` call; endpoints whose count is unknown are omitted."""
        from azure.core.exceptions import HttpResponseError, map_error
        from azure.core.rest import HttpRequest

        by_id = {e.id.lower(): e.name for e in batch}
        subscription = _subscription(batch[0].id)
        # The request azure-monitor-querymetrics' query_resources sends (same path, query
        # parameters in the same order and quoting, same body), through the same client's
        # pipeline; times to the millisecond, the REST reference's format.
        request = HttpRequest(
            "POST",
            f"/subscriptions/{_q(subscription or '')}/metrics:getBatch",
            params={
                "api-version": API_VERSION,
                "starttime": _q(_iso(start)),
                "endtime": _q(_iso(end)),
                "interval": _GRAIN_ISO,
                "metricnamespace": _q(METRIC_NAMESPACE),
                "metricnames": ",".join(_q(name) for name in (METRIC_NAME, HEARTBEAT_METRIC)),
                "aggregation": AGGREGATION,
            },
            json={"resourceids": [e.id for e in batch]},
            headers={"Accept": "application/json"},
        )
        with map_azure_errors(
            f"querying Azure Monitor metrics:getBatch in {region} for {len(batch)} endpoints",
            role=METRICS_ROLE.format(subscription=subscription),
        ):
            # stream=True: the pipeline's ContentDecodePolicy would otherwise json.loads the
            # whole answer into dicts once more (for nothing: the body is read below, once).
            response = self.metrics_client(region).send_request(request, stream=True)
            try:
                content = response.read()
                if response.status_code != 200:
                    # What the generated operation does with a non-200 (same error map).
                    map_error(status_code=response.status_code, response=response,
                              error_map=_error_map())
                    raise HttpResponseError(response=response)
            finally:
                response.close()
            metrics = _read_batch(content, by_id.__contains__)
            del content, response  # this answer's bytes go now, not when the batch returns
        counts: dict[str, int] = {}
        unknown: list[str] = []
        for resource, endpoint in by_id.items():
            count, why = requests_in_window(
                metrics.get((resource, METRIC_NAME.lower())),
                metrics.get((resource, HEARTBEAT_METRIC.lower())),
            )
            if count is None:
                unknown.append(f"{endpoint} ({why})")
            else:
                counts[endpoint] = count
        if unknown:
            log.warning(
                "sweep: request count unknown for %d of %d endpoints in %s (kept): %s",
                len(unknown), len(batch), region, "; ".join(unknown),
            )
        return counts

    # -- deletion -------------------------------------------------------------------------
    def delete_endpoint(self, name: str) -> None:
        """Start deleting the endpoint and return (the poller finishes in the background)."""
        try:
            with map_sdk_errors(f"deleting endpoint {name}"):
                self.ml_client.online_endpoints.begin_delete(name=name)
        except NotFoundError:
            log.info("sweep: endpoint %s already gone", name)
        except ConflictError as exc:
            raise ConflictError(
                exc.message, hint="another operation is running on it; the next sweep tries again"
            ) from exc

