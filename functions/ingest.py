"""`ingest_dataset`: a dataset dropped into the incoming container (Event Grid blob trigger).

The binding is the SDK type ``BlobClient`` (azurefunctions-extensions-bindings-blob): the host
passes only the blob's coordinates, never its content, and we stream the blob ourselves.
Connection ``TUNELOOP_STORAGE``: a connection string, or ``TUNELOOP_STORAGE__blobServiceUri``
(+ ``__queueServiceUri``) for the function app's managed identity.
"""

import logging

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob  # type: ignore[import-untyped]  # no py.typed

from functions._root import clients
from shared.errors import TransientError
from shared.ingest import ingest_blob

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
    try:
        ingest_blob(clients(), client.container_name, client.blob_name)
    except TransientError as exc:
        # Raising makes the host retry the delivery; the ledger claim makes the retry resume.
        log.warning("ingest transient failure blob=%s/%s: %s", client.container_name,
                    client.blob_name, exc)
        raise
