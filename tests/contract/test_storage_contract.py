"""The storage contract: ``Storage`` on Azurite and on the in-memory blob service behave alike.

Versions pinned by ETag, empty and missing blobs, staged writes, verified copies, deletes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from shared.clients import Clients
from shared.errors import BlobChangedError, NotFoundError
from shared.settings import Settings
from shared.storage import BlobRef, Storage
from tests.fakes.storage import FakeStorage


@pytest.fixture(params=["azurite", "fake"])
def storage(request: pytest.FixtureRequest) -> Iterator[Storage]:
    """Storage on the session's Azurite (fresh containers) or the in-memory fake."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "incoming_container": f"incoming-{tag}", "reports_container": f"reports-{tag}",
        "rejected_container": f"rejected-{tag}", "prepared_container": f"prepared-{tag}",
    }
    if request.param == "fake":
        yield FakeStorage(Settings(**names))
        return
    azurite: str = request.getfixturevalue("azurite")
    with Clients(Settings(storage_connection_string=azurite, **names)) as clients:
        clients.storage.ensure_containers()
        yield clients.storage


def _ref(storage: Storage, name: str = "chat/a.jsonl") -> BlobRef:
    return BlobRef(storage.settings.incoming_container, name)


def test_written_bytes_read_back_in_chunks_with_properties(storage: Storage) -> None:
    """write_bytes → properties (etag, size) and read_chunks in ranged chunks of one version."""
    ref = _ref(storage)
    storage.write_bytes(ref, b"0123456789")
    props = storage.properties(ref)
    assert props["size"] == 10
    assert props["etag"]
    assert list(storage.read_chunks(ref, chunk_size=4)) == [b"0123", b"4567", b"89"]
    assert storage.exists(ref)


def test_an_empty_blob_reads_as_no_chunks(storage: Storage) -> None:
    """An empty blob yields nothing (not an error)."""
    ref = _ref(storage)
    storage.write_bytes(ref, b"")
    assert list(storage.read_chunks(ref)) == []


def test_missing_blobs_raise_not_found_and_deleting_them_succeeds(storage: Storage) -> None:
    """properties/read of a missing blob raise NotFoundError; delete of one is a success."""
    ref = _ref(storage, "chat/missing.jsonl")
    with pytest.raises(NotFoundError):
        storage.properties(ref)
    with pytest.raises(NotFoundError):
        list(storage.read_chunks(ref))
    assert not storage.exists(ref)
    storage.delete(ref)


def test_a_read_pinned_to_an_old_etag_raises_blob_changed(storage: Storage) -> None:
    """After an overwrite, reading the old version by its ETag raises BlobChangedError."""
    ref = _ref(storage)
    storage.write_bytes(ref, b"first")
    old = str(storage.properties(ref)["etag"])
    storage.write_bytes(ref, b"second")
    with pytest.raises(BlobChangedError):
        list(storage.read_chunks(ref, etag=old))


def test_staged_writes_are_invisible_until_commit(storage: Storage) -> None:
    """A BlockWriter's data appears only on commit, which returns the content's sha256."""
    import hashlib

    ref = _ref(storage, "chat/staged.jsonl")
    writer = storage.open_writer(ref)
    writer.write(b"a" * 10)
    writer.write(b"b" * 10)
    assert not storage.exists(ref)
    digest = writer.commit()
    assert digest == hashlib.sha256(b"a" * 10 + b"b" * 10).hexdigest()
    assert b"".join(storage.read_chunks(ref)) == b"a" * 10 + b"b" * 10


def test_copy_verified_and_a_guarded_delete(storage: Storage) -> None:
    """copy_verified copies the pinned version; delete with a stale ETag keeps the blob."""
    src, dst = _ref(storage), BlobRef(storage.settings.rejected_container, "chat/a.jsonl")
    storage.write_bytes(src, b"data\n")
    etag = str(storage.properties(src)["etag"])
    storage.copy_verified(src, dst, etag=etag)
    assert b"".join(storage.read_chunks(dst)) == b"data\n"
    storage.write_bytes(src, b"newer\n")
    storage.delete(src, etag=etag)  # changed since: kept
    assert storage.exists(src)
    storage.delete(src)
    assert not storage.exists(src)


def test_json_round_trip_and_listing(storage: Storage) -> None:
    """write_json/read_json round-trip; list_names lists by prefix, sorted."""
    reports = storage.settings.reports_container
    storage.write_json(BlobRef(reports, "chat/b/run.json"), {"state": "ACCEPTED"})
    storage.write_text(BlobRef(reports, "chat/a/validation.md"), "# ok\n")
    storage.write_json(BlobRef(reports, "faq/c/run.json"), {})
    assert storage.read_json(BlobRef(reports, "chat/b/run.json")) == {"state": "ACCEPTED"}
    assert storage.list_names(reports, "chat/") == ["chat/a/validation.md", "chat/b/run.json"]
    storage.ensure_containers()  # idempotent
