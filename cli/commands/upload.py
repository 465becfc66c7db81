"""`tuneloop upload PATH --line L [--name N]` — drop a dataset into ``incoming/<line>/``.

This is all a user does to start the loop: the blob lands at
``<incoming container>/<line>/<name>.jsonl`` and the BlobCreated event (the devhost's watcher
locally, Event Grid in Azure) does the rest. Storage: the configured account
(``TUNELOOP_STORAGE_CONNECTION_STRING`` / ``TUNELOOP_STORAGE_ACCOUNT_URL``), else the Azurite
that ``tuneloop up`` runs for ``TUNELOOP_HOME``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from shared.clients import Clients

__all__ = ["add_arguments", "check_line", "run", "upload_dataset"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="the JSONL chat dataset to upload")
    parser.add_argument("--line", required=True, help="the model line (folder under incoming/)")
    parser.add_argument("--name", help="the dataset name (default: the file name without .jsonl)")


def check_line(line: str) -> None:
    """ConfigError unless ``line`` can be a line's folder name (checked before any I/O)."""
    from shared.errors import ConfigError
    from shared.naming import is_valid_line

    if not is_valid_line(line):
        raise ConfigError(
            f"--line {line!r} is not a valid line name",
            hint="use 1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )


def upload_dataset(
    clients: Clients, source: BinaryIO | bytes, *, line: str, name: str
) -> tuple[str, str]:
    """Upload (overwriting) to ``<incoming>/<line>/<name>.jsonl``; (blob name, new etag)."""
    from azure.storage.blob import ContentSettings

    from shared.errors import map_azure_errors

    check_line(line)
    blob = f"{line}/{name.removesuffix('.jsonl')}.jsonl"
    container = clients.settings.incoming_container
    with map_azure_errors(f"storage: uploading {container}/{blob}"):
        client = clients.blob_service.get_blob_client(container, blob)
        result: dict[str, Any] = client.upload_blob(
            source, overwrite=True,
            content_settings=ContentSettings(content_type="application/jsonl"),
        )
    return blob, str(result["etag"])


def run(args: argparse.Namespace) -> int:
    from cli.storage import cli_clients, fail
    from shared.errors import TuneloopError

    path: Path = args.path
    try:
        check_line(args.line)  # before touching storage: a typo costs nothing
        if not path.is_file():
            from shared.errors import DatasetUnreadableError

            raise DatasetUnreadableError(
                f"{path} is not a file", hint="give the path of a .jsonl dataset"
            )
        with cli_clients() as clients, open(path, "rb") as fh:
            settings = clients.settings
            clients.storage.ensure_containers(settings.incoming_container)
            blob, etag = upload_dataset(clients, fh, line=args.line, name=args.name or path.stem)
    except TuneloopError as exc:
        return fail("upload", exc)
    print(f"uploaded {path} to {settings.incoming_container}/{blob} (etag {etag})")
    print(f"reports: {settings.reports_container}/{blob.removesuffix('.jsonl')}/ ; "
          f"follow with `tuneloop status --line {args.line}`")
    return 0
