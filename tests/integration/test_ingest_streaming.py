"""The blob I/O ingest relies on streams: bounded memory, one version per read, atomic writes."""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest

from shared.clients import Clients
from shared.storage import BlobChangedError, BlobRef

pytestmark = pytest.mark.integration

KIB = 1024


def test_reads_hold_one_chunk_not_the_blob(clients: Clients) -> None:
    """Reading an 8 MiB blob in 64 KiB ranges never holds more than a small multiple of a range."""
    ref = BlobRef(clients.settings.incoming_container, "chat/big.jsonl")
    data = bytes(range(256)) * (32 * KIB)  # 8 MiB
    clients.storage.write_bytes(ref, data)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        for chunk in clients.storage.read_chunks(ref, chunk_size=64 * KIB):
            digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert peak < 2 * 1024 * KIB  # the SDK copies each range a few times; 8 MiB would fail


def test_a_read_never_mixes_two_versions(clients: Clients) -> None:
    """A blob overwritten between two ranges raises BlobChangedError instead of splicing."""
    ref = BlobRef(clients.settings.incoming_container, "chat/moving.jsonl")
    clients.storage.write_bytes(ref, b"a" * (256 * KIB))
    chunks = clients.storage.read_chunks(ref, chunk_size=64 * KIB)
    assert next(chunks) == b"a" * (64 * KIB)
    clients.storage.write_bytes(ref, b"b" * (256 * KIB))
    with pytest.raises(BlobChangedError):
        list(chunks)


def test_empty_blob_reads_as_no_chunks(clients: Clients) -> None:
    """A 0-byte blob is a valid (empty) stream, not an error."""
    ref = BlobRef(clients.settings.incoming_container, "chat/empty.jsonl")
    clients.storage.write_bytes(ref, b"")
    assert list(clients.storage.read_chunks(ref)) == []


def test_two_block_writers_fill_two_blobs_atomically(clients: Clients) -> None:
    """Interleaved writers stage blocks independently; nothing is visible before commit."""
    container = clients.settings.prepared_container
    train = clients.storage.open_writer(BlobRef(container, "run/train.jsonl"))
    validation = clients.storage.open_writer(BlobRef(container, "run/validation.jsonl"))
    for i in range(1000):
        (validation if i % 10 == 0 else train).write(f'{{"i":{i}}}\n'.encode())
    assert clients.storage.list_names(container) == []
    train_sha, validation_sha = train.commit(), validation.commit()
    got = b"".join(clients.storage.read_chunks(BlobRef(container, "run/train.jsonl")))
    assert got.count(b"\n") == 900
    assert hashlib.sha256(got).hexdigest() == train_sha
    assert validation_sha != train_sha
