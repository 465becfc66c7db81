"""Blob I/O: streaming reads, staged writes, verified quarantine, reports.

Everything that touches blob content goes through here so that the core stays pure and
memory stays flat: reads are chunk iterators, writes are staged blocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings

from shared.errors import (
    AlreadyExistsError,
    BlobChangedError,
    NotFoundError,
    StorageError,
    TransientError,
    map_azure_errors,
)
from shared.settings import Settings

__all__ = ["BlobChangedError", "BlobRef", "BlockWriter", "Storage"]

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class BlobRef:
    container: str
    name: str

    def __str__(self) -> str:
        return f"{self.container}/{self.name}"


# The role a managed identity needs for our containers (Azure built-in roles).
_ROLE = "Storage Blob Data Contributor on the storage account"


def _mapped(what: str) -> AbstractContextManager[None]:
    """The one error mapper with the storage's meanings: 412 means the blob changed."""
    return map_azure_errors(
        f"storage: {what}", role=_ROLE, modified=BlobChangedError, other=StorageError
    )


class BlockWriter:
    """One blob written as staged blocks: ``write`` any sizes, ``commit`` once (atomic).

    Memory stays at one block; nothing is visible until :meth:`commit`, so a crash leaves
    the previous version (or nothing) in place. Several writers can be open at once, which
    is how one pass over a dataset fills two outputs.
    """

    def __init__(self, storage: Storage, ref: BlobRef, *, block_size: int = CHUNK) -> None:
        self.ref = ref
        self._blob = storage.service.get_blob_client(ref.container, ref.name)
        self._block_size = block_size
        self._digest = hashlib.sha256()
        self._ids: list[str] = []
        self._buffer = bytearray()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self.bytes += len(data)
        self._buffer += data
        if len(self._buffer) >= self._block_size:
            self._stage()

    def commit(self, *, content_type: str = "application/octet-stream") -> str:
        """Stage what is buffered, commit the block list; return the content's sha256."""
        if self._buffer or not self._ids:
            self._stage()
        with _mapped(f"writing {self.ref}"):
            self._blob.commit_block_list(
                [BlobBlock(block_id) for block_id in self._ids],
                content_settings=ContentSettings(content_type=content_type),
            )
        return self._digest.hexdigest()

    def _stage(self) -> None:
        import base64

        block_id = base64.b64encode(f"{len(self._ids):08d}".encode()).decode()
        with _mapped(f"writing {self.ref}"):
            self._blob.stage_block(block_id, bytes(self._buffer))
        self._ids.append(block_id)
        self._buffer.clear()


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
                with _mapped(f"creating container {name}"):
                    self.service.create_container(name)
            except AlreadyExistsError:
                pass

    # -- reading ------------------------------------------------------------------------
    def properties(self, ref: BlobRef) -> dict[str, Any]:
        """etag, size, version id and last-modified of a blob. Raises NotFoundError."""
        try:
            with _mapped(f"reading {ref}"):
                props = self.service.get_blob_client(ref.container, ref.name).get_blob_properties()
        except NotFoundError as exc:
            raise NotFoundError(f"blob {ref} does not exist") from exc
        return {
            "etag": props.etag,
            "size": props.size,
            "version_id": getattr(props, "version_id", None),
            "last_modified": props.last_modified,
        }

    def read_chunks(
        self, ref: BlobRef, *, etag: str | None = None, chunk_size: int = CHUNK
    ) -> Iterator[bytes]:
        """Stream a blob as ranged reads of ``chunk_size`` (memory: one chunk), one version.

        Pinned to ``etag`` when given, else to the version the first read saw, so a blob
        overwritten mid-read raises BlobChangedError instead of mixing two versions.
        """
        from azure.core import MatchConditions

        blob = self.service.get_blob_client(ref.container, ref.name)
        offset, pin = 0, etag
        while True:
            kwargs: dict[str, Any] = {"offset": offset, "length": chunk_size, "max_concurrency": 1}
            if pin:
                kwargs.update(etag=pin, match_condition=MatchConditions.IfNotModified)
            try:
                with _mapped(f"reading {ref}"):
                    downloader = blob.download_blob(**kwargs)
                    data = downloader.readall()
            except NotFoundError as exc:
                raise NotFoundError(f"blob {ref} does not exist") from exc
            except BlobChangedError as exc:
                raise BlobChangedError(
                    f"blob {ref} changed since version {pin} was read",
                    hint="the newer version is processed by its own event",
                ) from exc
            except StorageError as exc:
                if _status_of(exc) == 416 and offset == 0:
                    return  # an empty blob has no first range (preconditions are checked first)
                raise
            pin = pin or downloader.properties.etag
            # content_range is "bytes <start>-<end>/<blob size>"
            total = int(str(downloader.properties.content_range).rpartition("/")[2])
            if data:
                yield data
            offset += len(data)
            if not data or offset >= total:
                return

    def read_json(self, ref: BlobRef) -> Any:
        try:
            with _mapped(f"reading {ref}"):
                blob = self.service.get_blob_client(ref.container, ref.name)
                data = blob.download_blob().readall()
        except NotFoundError as exc:
            raise NotFoundError(f"blob {ref} does not exist") from exc
        return json.loads(data)

    def exists(self, ref: BlobRef) -> bool:
        with _mapped(f"checking {ref}"):
            return bool(self.service.get_blob_client(ref.container, ref.name).exists())

    def list_names(self, container: str, prefix: str | None = None) -> list[str]:
        with _mapped(f"listing {container}/{prefix or ''}"):
            client = self.service.get_container_client(container)
            return [b.name for b in client.list_blobs(name_starts_with=prefix)]

    # -- writing ------------------------------------------------------------------------
    def write_bytes(
        self, ref: BlobRef, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        with _mapped(f"writing {ref}"):
            self.service.get_blob_client(ref.container, ref.name).upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
            )

    def write_json(self, ref: BlobRef, obj: Any) -> None:
        body = json.dumps(obj, indent=2, sort_keys=False, default=str).encode()
        self.write_bytes(ref, body, content_type="application/json")

    def write_text(self, ref: BlobRef, text: str, *, content_type: str = "text/markdown") -> None:
        self.write_bytes(ref, text.encode(), content_type=f"{content_type}; charset=utf-8")

    def write_stream(self, ref: BlobRef, chunks: Iterable[bytes]) -> str:
        """Upload by staged blocks (flat memory); commit once; return the content's sha256."""
        writer = self.open_writer(ref)
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit()

    def open_writer(self, ref: BlobRef) -> BlockWriter:
        """A staged-block writer for ``ref`` (see :class:`BlockWriter`)."""
        return BlockWriter(self, ref)

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
                hint="the original is kept",
            )
        return written

    def delete(self, ref: BlobRef, *, etag: str | None = None) -> None:
        """Delete a blob (and its snapshots); already gone is success."""
        from azure.core import MatchConditions

        kwargs: dict[str, Any] = {"delete_snapshots": "include"}
        if etag:
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        try:
            with _mapped(f"deleting {ref}"):
                self.service.get_blob_client(ref.container, ref.name).delete_blob(**kwargs)
        except NotFoundError:
            return
        except BlobChangedError:
            log.warning("blob %s changed since it was read; not deleting it", ref)


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of the SDK error a tuneloop error was mapped from, if any."""
    status = getattr(exc.__cause__, "status_code", None)
    return status if isinstance(status, int) else None
