"""The :class:`shared.outbox.EventPublisher` adapter over ``azure-eventgrid``'s
``EventGridPublisherClient``: CloudEvents 1.0 to an Event Grid topic.

Facts this relies on (azure-eventgrid 4.x, ``_legacy/_publisher_client.py`` and
``_legacy/_helpers.py``): a list of ``CloudEvent`` is POSTed as one batch to
``<endpoint>?api-version=2018-01-01`` with ``Content-Type:
application/cloudevents-batch+json; charset=utf-8``; an ``AzureKeyCredential`` is sent as the
``aeg-sas-key`` header, a ``TokenCredential`` as a bearer token for
``https://eventgrid.azure.net/.default`` (the identity needs the **EventGrid Data Sender**
role on the topic). Event Grid refuses a batch over 1 MB (HTTP 413) and any event over 1 MB
(learn.microsoft.com/azure/event-grid/event-schema … "Event Grid quotas and limits"); a run's
outbox holds a few KiB.

The client is ``azure.eventgrid._legacy.EventGridPublisherClient``: the class the public
``azure.eventgrid.EventGridPublisherClient`` delegates every basic-topic send to. The public
one (azure-eventgrid 4.22.1, ``_patch.py`` ``EventGridPublisherClient.__init__``) builds it
with the endpoint, credential and api_version only and drops every other keyword argument, so
the app's ``transport`` and retry options (and a test's fake transport) would never reach the
pipeline that sends; built directly, they do. Same requests, same policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared.errors import map_azure_errors

if TYPE_CHECKING:
    from azure.core.credentials import AzureKeyCredential, TokenCredential
    from azure.core.messaging import CloudEvent
    from azure.eventgrid._legacy import EventGridPublisherClient

__all__ = ["ROLE", "EventGridPublisher"]

ROLE = "EventGrid Data Sender on the events topic"


class EventGridPublisher:
    """Sends a batch of CloudEvents with one ``EventGridPublisherClient.send``; Azure errors
    through the one mapper (401/403 → PermissionDeniedError naming the role; 408/429/5xx and
    connection failures → TransientError; other 4xx → PlatformError from the HTTP error)."""

    def __init__(self, client: EventGridPublisherClient, endpoint: str) -> None:
        self._client = client
        self.endpoint = endpoint

    @classmethod
    def create(
        cls,
        endpoint: str,
        credential: AzureKeyCredential | TokenCredential,
        **kwargs: Any,
    ) -> EventGridPublisher:
        """A publisher for the topic at ``endpoint`` (``https://<topic>.<region>-1.eventgrid.
        azure.net/api/events``); ``kwargs`` go to the SDK client (``transport``, retries)."""
        from azure.eventgrid._legacy import EventGridPublisherClient

        return cls(EventGridPublisherClient(endpoint, credential, **kwargs), endpoint)

    def send(self, events: Sequence[CloudEvent[Any]]) -> None:
        if not events:
            return
        with map_azure_errors(f"events: publishing {len(events)} event(s) to {self.endpoint}",
                              role=ROLE):
            self._client.send(list(events))

    def close(self) -> None:
        self._client.close()
