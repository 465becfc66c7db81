"""In-memory blob storage: the real :class:`shared.storage.Storage` over an in-memory service.

As with the ledger fake, only the store is faked: ``InMemoryBlobService`` answers the calls
``Storage`` makes on ``BlobServiceClient`` the way Blob storage does — 404 for a missing
container or blob, 409 for an existing container, 412 when a pinned ETag no longer matches,
416 for a ranged read of an empty blob, staged blocks invisible until committed — by raising
the azure-core exceptions the SDK raises, so ``Storage``'s pinning, streaming and error
mapping run unchanged. tests/contract/test_storage_contract.py runs the same suite against
Azurite and this fake.

Fault injection: ``fail_next(exc, method=..., times=1)``; ``faults_fired`` and ``calls``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.pipeline.transport import HttpRequest

from shared.settings import Settings
from shared.storage import Storage
from tests.fakes.faults import FaultInjection
from tests.fakes.transport import FakeResponse, Reply

__all__ = ["FakeStorage", "InMemoryBlobService", "http_error"]


@dataclass
class _Blob:
    data: bytes
    etag: str
    last_modified: datetime
    content_type: str | None = None


@dataclass(frozen=True)
class BlobProps:
    etag: str
    size: int
    last_modified: datetime
    content_range: str | None = None
    version_id: str | None = None


@dataclass(frozen=True)
class _Listed:
    name: str


class _Downloader:
    def __init__(self, data: bytes, properties: BlobProps) -> None:
        self._data = data
        self.properties = properties

    def readall(self) -> bytes:
        return self._data


class InMemoryBlobService(FaultInjection):
    """The part of ``azure.storage.blob.BlobServiceClient`` that ``Storage`` uses."""

    url = "http://in-memory/devstoreaccount1"

    def __init__(self) -> None:
        super().__init__()
        self.containers: dict[str, dict[str, _Blob]] = {}
        self.staged: dict[tuple[str, str], dict[str, bytes]] = {}
        self._lock = threading.RLock()

    def _etag(self) -> str:
        return f'"0x{next(self._etags):016X}"'

    # -- the service surface ----------------------------------------------------------------
    def create_container(self, name: str) -> None:
        with self._lock:
            self._enter("create_container")
            if name in self.containers:
                raise ResourceExistsError(message="ContainerAlreadyExists")
            self.containers[name] = {}

    def get_blob_client(self, container: str, blob: str) -> _BlobClient:
        return _BlobClient(self, container, blob)

    def get_container_client(self, container: str) -> _ContainerClient:
        return _ContainerClient(self, container)

    def _container(self, name: str) -> dict[str, _Blob]:
        try:
            return self.containers[name]
        except KeyError:
            raise ResourceNotFoundError(message="ContainerNotFound") from None

    def _put(self, container: str, name: str, data: bytes, content_type: str | None) -> str:
        blobs = self._container(container)
        etag = self._etag()
        blobs[name] = _Blob(bytes(data), etag, datetime.now(UTC), content_type)
        return etag


def http_error(status: int, message: str) -> HttpResponseError:
    """The SDK error Blob storage raises for ``status`` (for fault injection)."""
    response = FakeResponse(HttpRequest("GET", "http://in-memory/"), Reply(status, message))
    return HttpResponseError(message=message, response=response)


def _check(blob: _Blob, etag: str | None, match_condition: Any) -> None:
    if etag and match_condition == MatchConditions.IfNotModified and etag != blob.etag:
        raise ResourceModifiedError(message="ConditionNotMet")


class _BlobClient:
    def __init__(self, service: InMemoryBlobService, container: str, blob: str) -> None:
        self._service = service
        self.container_name = container
        self.blob_name = blob

    def _get(self) -> _Blob:
        blob = self._service._container(self.container_name).get(self.blob_name)
        if blob is None:
            raise ResourceNotFoundError(message="BlobNotFound")
        return blob

    def get_blob_properties(self) -> BlobProps:
        with self._service._lock:
            self._service._enter("get_blob_properties")
            blob = self._get()
            return BlobProps(blob.etag, len(blob.data), blob.last_modified)

    def exists(self) -> bool:
        with self._service._lock:
            self._service._enter("exists")
            try:
                self._get()
            except ResourceNotFoundError:
                return False
            return True

    def download_blob(
        self, offset: int | None = None, length: int | None = None, *,
        etag: str | None = None, match_condition: Any = None, **_: Any,
    ) -> _Downloader:
        with self._service._lock:
            self._service._enter("download_blob")
            blob = self._get()
            _check(blob, etag, match_condition)
            size = len(blob.data)
            start = offset or 0
            if offset is not None and start >= size:
                raise http_error(416, "InvalidRange")  # what Blob storage answers for an empty blob
            end = size if length is None else min(size, start + length)
            part = blob.data[start:end]
            content_range = f"bytes {start}-{end - 1}/{size}"
            return _Downloader(
                part, BlobProps(blob.etag, size, blob.last_modified, content_range)
            )

    def upload_blob(
        self, data: bytes | Any, *, overwrite: bool = False, content_settings: Any = None,
        **_: Any,
    ) -> dict[str, Any]:
        body = data if isinstance(data, bytes | bytearray) else data.read()
        with self._service._lock:
            self._service._enter("upload_blob")
            if not overwrite and self.blob_name in self._service._container(self.container_name):
                raise ResourceExistsError(message="BlobAlreadyExists")
            etag = self._service._put(
                self.container_name, self.blob_name, body,
                getattr(content_settings, "content_type", None),
            )
            return {"etag": etag}

    def stage_block(self, block_id: str, data: bytes, **_: Any) -> None:
        with self._service._lock:
            self._service._enter("stage_block")
            self._service._container(self.container_name)
            key = (self.container_name, self.blob_name)
            self._service.staged.setdefault(key, {})[block_id] = bytes(data)

    def commit_block_list(
        self, blocks: Sequence[Any], *, content_settings: Any = None, **_: Any
    ) -> dict[str, Any]:
        with self._service._lock:
            self._service._enter("commit_block_list")
            staged = self._service.staged.pop((self.container_name, self.blob_name), {})
            try:
                data = b"".join(staged[block.id] for block in blocks)
            except KeyError:
                raise http_error(400, "InvalidBlockList") from None
            etag = self._service._put(
                self.container_name, self.blob_name, data,
                getattr(content_settings, "content_type", None),
            )
            return {"etag": etag}

    def delete_blob(
        self, delete_snapshots: str | None = None, *, etag: str | None = None,
        match_condition: Any = None, **_: Any,
    ) -> None:
        del delete_snapshots
        with self._service._lock:
            self._service._enter("delete_blob")
            blob = self._get()
            _check(blob, etag, match_condition)
            del self._service._container(self.container_name)[self.blob_name]


class _ContainerClient:
    def __init__(self, service: InMemoryBlobService, container: str) -> None:
        self._service = service
        self.container_name = container

    def list_blobs(self, name_starts_with: str | None = None, **_: Any) -> Iterator[_Listed]:
        with self._service._lock:
            self._service._enter("list_blobs")
            names = sorted(self._service._container(self.container_name))
        return iter([_Listed(n) for n in names if n.startswith(name_starts_with or "")])


class FakeStorage(Storage):
    """The real ``Storage`` over :class:`InMemoryBlobService` (``blobs`` for inspection)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.blobs = InMemoryBlobService()
        super().__init__(self.blobs, settings or Settings())  # type: ignore[arg-type]
        self.ensure_containers()

    def read(self, container: str, name: str) -> bytes:
        """A blob's content (test helper)."""
        return self.blobs.containers[container][name].data
