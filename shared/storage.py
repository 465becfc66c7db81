"""Blob I/O: streaming reads, staged writes, verified quarantine, reports.

Everything that touches blob content goes through here so that the core stays pure and
memory stays flat: reads are chunk iterators, writes are staged blocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings

from shared.errors import NotFoundError, TransientError
from shared.settings import Settings

__all__ = ["BlobRef", "Storage"]

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class BlobRef:
    container: str
    name: str

    def __str__(self) -> str:
        return f"{self.container}/{self.name}"


def _transient(exc: Exception, what: str) -> TransientError:
    return TransientError(f"storage unavailable while {what}: {exc}", hint="the host will retry")


class Storage:
    """Blob operations on one account. Transient failures raise TransientError."""

    def __init__(self, service: BlobServiceClient, settings: Settings) -> None:
        self.service = service
        self.settings = settings

    def ensure_containers(self, *names: str) -> None:
        s = self.settings
        wanted = names or (
            s.incoming_container,
            s.reports_container,
            s.rejected_container,
            s.prepared_container,
        )
        for name in wanted:
            try:
                self.service.create_container(name)
            except ResourceExistsError:
                pass
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise _transient(exc, f"creating container {name}") from exc

    # -- reading ------------------------------------------------------------------------
    def properties(self, ref: BlobRef) -> dict[str, Any]:
        """etag, size, version id and last-modified of a blob. Raises NotFoundError."""
        try:
            props = self.service.get_blob_client(ref.container, ref.name).get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {ref} does not exist") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _transient(exc, f"reading {ref}") from exc
        return {
            "etag": props.etag,
            "size": props.size,
            "version_id": getattr(props, "version_id", None),
            "last_modified": props.last_modified,
        }

    def read_chunks(self, ref: BlobRef, *, etag: str | None = None) -> Iterator[bytes]:
        """Stream a blob in chunks (never whole in memory); pinned to ``etag`` when given."""
        from azure.core import MatchConditions

        blob = self.service.get_blob_client(ref.container, ref.name)
        kwargs: dict[str, Any] = {"max_concurrency": 1}
        if etag:
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        try:
            downloader = blob.download_blob(**kwargs)
            yield from downloader.chunks()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {ref} does not exist") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _transient(exc, f"reading {ref}") from exc

    def read_json(self, ref: BlobRef) -> Any:
        try:
            data = self.service.get_blob_client(ref.container, ref.name).download_blob().readall()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {ref} does not exist") from exc
        return json.loads(data)

    def exists(self, ref: BlobRef) -> bool:
        try:
            return bool(self.service.get_blob_client(ref.container, ref.name).exists())
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _transient(exc, f"checking {ref}") from exc

    def list_names(self, container: str, prefix: str | None = None) -> list[str]:
        client = self.service.get_container_client(container)
        return [b.name for b in client.list_blobs(name_starts_with=prefix)]

    # -- writing ------------------------------------------------------------------------
    def write_bytes(
        self, ref: BlobRef, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        try:
            self.service.get_blob_client(ref.container, ref.name).upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
            )
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _transient(exc, f"writing {ref}") from exc

    def write_json(self, ref: BlobRef, obj: Any) -> None:
        body = json.dumps(obj, indent=2, sort_keys=False, default=str).encode()
        self.write_bytes(ref, body, content_type="application/json")

    def write_text(self, ref: BlobRef, text: str, *, content_type: str = "text/markdown") -> None:
        self.write_bytes(ref, text.encode(), content_type=f"{content_type}; charset=utf-8")

    def write_stream(self, ref: BlobRef, chunks: Iterable[bytes]) -> str:
        """Upload by staged blocks (flat memory); commit once; return the content's sha256."""
        import base64

        blob = self.service.get_blob_client(ref.container, ref.name)
        digest = hashlib.sha256()
        block_ids: list[str] = []
        buffer = bytearray()

        def stage(data: bytes) -> None:
            block_id = base64.b64encode(f"{len(block_ids):08d}".encode()).decode()
            blob.stage_block(block_id, data)
            block_ids.append(block_id)

        try:
            for chunk in chunks:
                digest.update(chunk)
                buffer += chunk
                if len(buffer) >= CHUNK:
                    stage(bytes(buffer))
                    buffer.clear()
            if buffer or not block_ids:
                stage(bytes(buffer))
            blob.commit_block_list(block_ids)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _transient(exc, f"writing {ref}") from exc
        return digest.hexdigest()

    def copy_verified(self, src: BlobRef, dst: BlobRef, *, etag: str | None = None) -> str:
        """Copy ``src`` to ``dst`` by streaming and verify the copy's sha256; return it.

        Raises TransientError if the copy cannot be verified (the original is then kept).
        """
        written = self.write_stream(dst, self.read_chunks(src, etag=etag))
        check = hashlib.sha256()
        for chunk in self.read_chunks(dst):
            check.update(chunk)
        if check.hexdigest() != written:
            raise TransientError(
                f"copy {src} -> {dst} did not verify (sha256 mismatch)",
                hint="the original is kept; the host will retry",
            )
        return written

    def delete(self, ref: BlobRef, *, etag: str | None = None) -> None:
        """Delete a blob (and its snapshots); already gone is success."""
        from azure.core import MatchConditions

        kwargs: dict[str, Any] = {"delete_snapshots": "include"}
        if etag:
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        try:
            self.service.get_blob_client(ref.container, ref.name).delete_blob(**kwargs)
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if exc.status_code == 412:
                log.warning("blob %s changed since it was read; not deleting it", ref)
                return
            raise
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _transient(exc, f"deleting {ref}") from exc
