"""`tuneloop upload PATH --line L [--name N]` — drop a dataset into ``incoming/<line>/``.

This is all a user does to start the loop: the blob lands at
``<incoming container>/<line>/<name>.jsonl`` and the BlobCreated event (the devhost's watcher
locally, Event Grid in Azure) does the rest. Storage: the configured account
(``TUNELOOP_STORAGE_CONNECTION_STRING`` / ``TUNELOOP_STORAGE_ACCOUNT_URL``), else the Azurite
that ``tuneloop up`` runs for ``TUNELOOP_HOME``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from shared.clients import Clients
    from shared.settings import Settings

__all__ = ["add_arguments", "local_settings", "run", "upload_dataset"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="the JSONL chat dataset to upload")
    parser.add_argument("--line", required=True, help="the model line (folder under incoming/)")
    parser.add_argument("--name", help="the dataset name (default: the file name without .jsonl)")


def local_settings(settings: Settings) -> Settings:
    """``settings``, with the home's running Azurite filled in when no storage is configured."""
    if settings.storage_connection_string or settings.storage_account_url:
        return settings
    from shared.platform.local.azurite import local_storage

    found = local_storage(Path(settings.home))
    if found is None:
        return settings
    return settings.model_copy(update={"storage_connection_string": found})


def upload_dataset(
    clients: Clients, source: BinaryIO | bytes, *, line: str, name: str
) -> tuple[str, str]:
    """Upload (overwriting) to ``<incoming>/<line>/<name>.jsonl``; (blob name, new etag)."""
    from azure.storage.blob import ContentSettings

    from shared.errors import ConfigError
    from shared.naming import is_valid_line

    if not is_valid_line(line):
        raise ConfigError(
            f"line {line!r} is not a valid line name",
            hint="use 1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )
    blob = f"{line}/{name.removesuffix('.jsonl')}.jsonl"
    client = clients.blob_service.get_blob_client(clients.settings.incoming_container, blob)
    result: dict[str, Any] = client.upload_blob(
        source, overwrite=True,
        content_settings=ContentSettings(content_type="application/jsonl"),
    )
    return blob, str(result["etag"])


def run(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError

    from shared.clients import Clients
    from shared.errors import TuneloopError
    from shared.settings import load_settings

    path: Path = args.path
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    settings = local_settings(load_settings())
    clients = Clients(settings)
    try:
        clients.storage.ensure_containers(settings.incoming_container)
        with open(path, "rb") as fh:
            blob, etag = upload_dataset(clients, fh, line=args.line, name=args.name or path.stem)
    except (TuneloopError, AzureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("hint: start `tuneloop up` (local) or set TUNELOOP_STORAGE_CONNECTION_STRING",
              file=sys.stderr)
        return 2
    print(f"uploaded {path} to {settings.incoming_container}/{blob} (etag {etag})")
    print(f"reports: {settings.reports_container}/{blob.removesuffix('.jsonl')}/ ; "
          f"follow with `tuneloop status --line {args.line}`")
    return 0
