"""`ingest_dataset`: a dataset dropped into the incoming container (Event Grid blob trigger).

The binding is the SDK type ``BlobClient`` (azurefunctions-extensions-bindings-blob): the host
passes only the blob's coordinates, never its content, and we stream the blob ourselves.
Connection ``TUNELOOP_STORAGE``: a connection string, or ``TUNELOOP_STORAGE__blobServiceUri``
(+ ``__queueServiceUri``) for the function app's managed identity.
"""

import logging
from collections.abc import Mapping
from typing import Any

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from functions._root import clients
from shared.clients import Clients
from shared.errors import TransientError
from shared.ingest import blob_from_subject, ingest_blob

log = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("ingest_dataset")
@bp.blob_trigger(
    arg_name="client",
    path="%TUNELOOP_INCOMING_CONTAINER%/{name}",
    connection="TUNELOOP_STORAGE",
    source=func.BlobSource.EVENT_GRID,
)
def ingest_dataset(client: blob.BlobClient) -> None:
    """Validate, report, quarantine or split + submit one dataset; only transient errors raise."""
    c = clients()
    try:
        ingest_blob(c, client.container_name, client.blob_name)
    except TransientError as exc:
        # Raising makes the host retry the delivery; the ledger claim makes the retry resume.
        log.warning("ingest transient failure blob=%s/%s: %s", client.container_name,
                    client.blob_name, exc)
        raise
    finally:
        c.publish_events()  # the lifecycle events of the step (never raises)


def binding_for_blob_event(event: Mapping[str, Any], via: Clients) -> Any:
    """What the host binds for a BlobCreated event: a BlobClient on its blob (for the devhost)."""
    container, name = blob_from_subject(str(event["subject"]))
    return via.blob_service.get_blob_client(container, name)
