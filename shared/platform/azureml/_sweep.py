"""Endpoint listing, request metrics and deletion for the sweeper (Azure ML + Azure Monitor).

- ``list_endpoints``: one paged ``GET .../onlineEndpoints`` (``online_endpoints.list()``);
  created/modified come from ARM ``systemData``, which the SDK keeps in ``properties``.
- ``endpoint_requests``: metric ``RequestsPerMinute`` (aggregation Total) through the
  regional ``metrics:getBatch`` API (``MetricsClient.query_resources``): at most 50 resource
  ids per call, one group per (subscription, region), results matched by resource id.
- ``delete_endpoint``: ``begin_delete`` without waiting on the long-running operation.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from shared.errors import (
    ConflictError,
    NotFoundError,
    UnknownTrafficError,
)
from shared.platform.azureml._base import AzureMLBase
from shared.platform.azureml._jobs import map_sdk_errors
from shared.platform.port import EndpointInfo

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineResponse
    from azure.monitor.querymetrics import MetricsClient

__all__ = [
    "BATCH_SIZE",
    "METRIC_NAME",
    "METRIC_NAMESPACE",
    "SweepMixin",
    "metrics_interval",
]

log = logging.getLogger(__name__)

METRIC_NAME = "RequestsPerMinute"
METRIC_NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
BATCH_SIZE = 50  # metrics:getBatch takes at most 50 resource ids per call
_PARALLEL_QUERIES = 4  # modest: Azure Monitor throttles per caller

# Time grains Azure Monitor accepts; we take the largest that divides the window (≤ 1 h, so
# a bucket straddling the window start over-counts by under an hour: safe, never under).
_GRAINS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
)


def metrics_interval(window: timedelta) -> timedelta:
    """The time grain for a window: the largest supported grain ≤ 1 h dividing it evenly."""
    best = _GRAINS[0]
    for grain in _GRAINS:
        if grain <= window and window % grain == timedelta(0):
            best = grain
    return best


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

        Raises UnknownTrafficError when no query succeeds at all.
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
        interval = metrics_interval(window)
        counts: dict[str, int] = {}
        errors: list[str] = []
        workers = min(_PARALLEL_QUERIES, len(batches))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep-metrics") as pool:
            futures = [
                pool.submit(self._query_batch, region, batch, start, now, interval)
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
                    errors.append(f"{region}: {type(exc).__name__}: {exc}")
        if len(errors) == len(batches):
            raise UnknownTrafficError(
                f"Azure Monitor metrics query failed for every batch ({errors[0]})",
                hint="check the identity has Monitoring Reader on the workspace; "
                "nothing is deleted until request counts are known",
            )
        return counts

    def _query_batch(
        self,
        region: str,
        batch: Sequence[EndpointInfo],
        start: datetime,
        end: datetime,
        interval: timedelta,
    ) -> dict[str, int]:
        """One ``metrics:getBatch`` call; endpoints missing or errored in the answer are omitted."""
        by_id = {e.id.lower(): e.name for e in batch}
        failed: set[str] = set()

        def note_errors(response: PipelineResponse[Any, Any]) -> None:
            # The SDK drops each metric's errorCode; a failed metric must read as unknown.
            failed.update(_errored_resources(response))

        results = self.metrics_client(region).query_resources(
            resource_ids=[e.id for e in batch],
            metric_namespace=METRIC_NAMESPACE,
            metric_names=[METRIC_NAME],
            timespan=(start, end),
            granularity=interval,
            aggregations=["Total"],
            raw_response_hook=note_errors,
        )
        counts: dict[str, int] = {}
        for result in results:
            for metric in result.metrics:
                if (metric.name or "").lower() != METRIC_NAME.lower():
                    continue
                resource = _resource_of_metric(metric.id)
                if resource is None or resource not in by_id or resource in failed:
                    continue
                total = sum(
                    point.total or 0.0 for series in metric.timeseries for point in series.data
                )
                counts[by_id[resource]] = counts.get(by_id[resource], 0) + round(total)
        missing = len(batch) - len(counts)
        if missing:
            log.warning(
                "sweep: metrics answer for %s lacked %d of %d endpoints (kept as unknown)",
                region, missing, len(batch),
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


def _errored_resources(response: PipelineResponse[Any, Any]) -> Iterator[str]:
    """Resource ids (lower case) whose metric came back with an errorCode other than Success."""
    http = response.http_response
    try:
        http.read()
        body = http.json()
    except Exception:  # unreadable here means unparseable for the SDK too: the call fails
        return
    if not isinstance(body, dict):
        return
    for value in body.get("values") or []:
        for metric in value.get("value") or []:
            code = metric.get("errorCode")
            if code and code.lower() != "success":
                resource = value.get("resourceid") or _resource_of_metric(metric.get("id"))
                if resource:
                    yield resource.lower()
