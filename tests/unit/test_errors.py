"""The one error mapper: Azure SDK errors land in shared/errors.py's tree, and the core never
imports azure.core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpRequest
from azure.data.tables import TableClient
from azure.storage.blob import BlobServiceClient

from shared import errors
from shared.errors import (
    AlreadyExistsError,
    BlobChangedError,
    ConflictError,
    LedgerConflictError,
    NotFoundError,
    PermissionDeniedError,
    PlatformError,
    StorageError,
    TransientError,
    TuneloopError,
    UnreachableError,
    map_azure_errors,
    translate_azure_error,
)
from shared.ledger import Ledger, RunRecord, RunState
from shared.settings import Settings
from shared.storage import BlobRef, Storage
from tests.fakes.transport import FakeResponse, FakeTransport, Reply

ROOT = Path(__file__).resolve().parents[2]
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
CONN = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:1/devstoreaccount1;"
)


def _http(cls: type[HttpResponseError], status: int, message: str = "boom") -> HttpResponseError:
    """An SDK error carrying a real (fake-transport) response with ``status``."""
    response = FakeResponse(HttpRequest("GET", "https://example.invalid/x"), Reply(status, message))
    return cls(message=message, response=response)


# -- the mapping, one case each -------------------------------------------------------------
CASES: list[tuple[str, Exception, type[TuneloopError]]] = [
    ("refused connection", ServiceRequestError("connection refused"), UnreachableError),
    ("connect timeout", ServiceRequestTimeoutError("timed out"), UnreachableError),
    ("dropped connection", ServiceResponseError("reset by peer"), TransientError),
    ("read timeout", ServiceResponseTimeoutError("read timed out"), TransientError),
    ("408", _http(HttpResponseError, 408), TransientError),
    ("429 throttled", _http(HttpResponseError, 429), TransientError),
    ("500", _http(HttpResponseError, 500), TransientError),
    ("503 server busy", _http(HttpResponseError, 503), TransientError),
    ("401", _http(ClientAuthenticationError, 401), PermissionDeniedError),
    ("403", _http(HttpResponseError, 403), PermissionDeniedError),
    ("no credential", ClientAuthenticationError("no credential"), PermissionDeniedError),
    ("409 on create", _http(ResourceExistsError, 409), AlreadyExistsError),
    ("409 busy", _http(HttpResponseError, 409), ConflictError),
    ("412 modified", _http(ResourceModifiedError, 412), ConflictError),
    ("412 plain", _http(HttpResponseError, 412), ConflictError),
    ("404 typed", _http(ResourceNotFoundError, 404), NotFoundError),
    ("404 plain", _http(HttpResponseError, 404), NotFoundError),
    ("400", _http(HttpResponseError, 400), PlatformError),
]


@pytest.mark.parametrize(("name", "exc", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_azure_error_maps_to_its_class(
    name: str, exc: Exception, expected: type[TuneloopError]
) -> None:
    """Each SDK failure (transient, permission, conflict, not found, other) has one class."""
    mapped = translate_azure_error(exc, "reading x")
    assert type(mapped) is expected
    assert mapped is not None
    assert mapped.message.startswith("reading x: ")


def test_the_context_manager_raises_the_mapped_error_from_the_sdk_error() -> None:
    """map_azure_errors re-raises the mapped error, chained to the SDK error."""
    original = _http(HttpResponseError, 503)
    with pytest.raises(TransientError) as info, map_azure_errors("listing"):
        raise original
    assert info.value.__cause__ is original


def test_permission_errors_name_the_role_to_grant() -> None:
    """A 403 says which role to grant the identity."""
    mapped = translate_azure_error(
        _http(HttpResponseError, 403), "reading runs", role="Storage Table Data Contributor"
    )
    assert isinstance(mapped, PermissionDeniedError)
    assert mapped.hint == "grant the identity Storage Table Data Contributor"


def test_adapters_choose_what_412_404_409_and_other_statuses_mean() -> None:
    """The keyword classes replace the defaults for 412, 404, 409-on-create and the rest."""
    kinds: dict[str, Any] = {
        "modified": LedgerConflictError, "not_found": BlobChangedError,
        "exists": StorageError, "other": StorageError,
    }
    assert type(translate_azure_error(_http(ResourceModifiedError, 412), "w", **kinds)) is (
        LedgerConflictError
    )
    assert type(translate_azure_error(_http(ResourceNotFoundError, 404), "w", **kinds)) is (
        BlobChangedError
    )
    assert type(translate_azure_error(_http(ResourceExistsError, 409), "w", **kinds)) is (
        StorageError
    )
    assert type(translate_azure_error(_http(HttpResponseError, 400), "w", **kinds)) is (
        StorageError
    )


def test_other_errors_pass_through_unchanged() -> None:
    """Errors that are not the SDK's (bugs, our own errors) are not translated."""
    assert translate_azure_error(ValueError("bug"), "x") is None
    ours = NotFoundError("run r is not in the ledger")
    assert translate_azure_error(ours, "x") is ours
    with pytest.raises(ValueError, match="bug"), map_azure_errors("x"):
        raise ValueError("bug")
    with pytest.raises(NotFoundError) as info, map_azure_errors("x"):
        raise ours
    assert info.value is ours


def test_unreachable_is_transient_for_the_host() -> None:
    """A refused connection is still a TransientError (the Functions host retries it)."""
    assert issubclass(UnreachableError, TransientError)
    assert issubclass(PermissionDeniedError, PlatformError)
    assert issubclass(AlreadyExistsError, ConflictError)


def test_every_error_class_is_drawn_in_the_module_docstring() -> None:
    """The tree in errors.py's docstring names every error class with its code."""
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, TuneloopError):
            assert f"{name} [{cls.code}]" in doc, name


def test_no_message_promises_a_host_retry() -> None:
    """Hints never say "the host will retry" (the CLI shows the same errors)."""
    for path in [*(ROOT / "shared").rglob("*.py")]:
        assert "host will retry" not in path.read_text(encoding="utf-8"), path


# -- the adapters use it, through the real SDK clients ---------------------------------------
def _ledger(transport: FakeTransport) -> Ledger:
    table = TableClient.from_connection_string(
        CONN, "runs", transport=transport, retry_total=0
    )
    return Ledger(table)


def _storage(transport: FakeTransport) -> Storage:
    service = BlobServiceClient.from_connection_string(CONN, transport=transport, retry_total=0)
    return Storage(service, Settings(storage_connection_string=CONN))


def test_ledger_maps_a_503_to_transient_and_a_403_to_permission() -> None:
    """The ledger's table calls go through the mapper (503 transient, 403 names the role)."""
    transport = FakeTransport()
    transport.add("GET", r"/runs\(", Reply(503, {"odata.error": {"code": "ServerBusy"}}))
    with pytest.raises(TransientError):
        _ledger(transport).get("chat", "run-1")
    transport.add("GET", r"/runs\(", Reply(403, {"odata.error": {"code": "AuthorizationFailure"}}))
    with pytest.raises(PermissionDeniedError) as info:
        _ledger(transport).get("chat", "run-1")
    assert "Storage Table Data Contributor" in (info.value.hint or "")


def test_ledger_maps_409_on_create_to_already_exists_and_412_to_a_ledger_conflict() -> None:
    """A run that exists is AlreadyExistsError; a stale ETag is LedgerConflictError."""
    transport = FakeTransport()
    transport.add("PUT", r"/runs\(PartitionKey=.*_runs-", Reply(204))  # the run directory row
    transport.add("POST", r"/runs", Reply(409, {"odata.error": {"code": "EntityAlreadyExists"}}))
    with pytest.raises(AlreadyExistsError):
        _ledger(transport).create("chat", "run-1", RunState.RECEIVED)
    stale = {"odata.error": {"code": "UpdateConditionNotSatisfied"}}
    transport.add("PUT", r"/runs\(", Reply(412, stale))
    rec = RunRecord(line="chat", run_id="run-1", state=RunState.RECEIVED, etag='W/"1"')
    with pytest.raises(LedgerConflictError):
        _ledger(transport).advance(rec, RunState.ACCEPTED)


def test_storage_maps_a_refused_connection_403_and_404() -> None:
    """Blob calls go through the mapper: unreachable, permission (role named), not found."""
    ref = BlobRef("incoming", "chat/a.jsonl")
    transport = FakeTransport()
    transport.add("HEAD", r"/incoming/", Reply(403))
    with pytest.raises(PermissionDeniedError) as info:
        _storage(transport).properties(ref)
    assert "Storage Blob Data Contributor" in (info.value.hint or "")
    transport.add("HEAD", r"/incoming/", Reply(404))
    with pytest.raises(NotFoundError, match="does not exist"):
        _storage(transport).properties(ref)
    refused = BlobServiceClient.from_connection_string(CONN, retry_total=0)  # port 1: closed
    with pytest.raises(UnreachableError):
        Storage(refused, Settings(storage_connection_string=CONN)).properties(ref)


# -- the core stays free of azure.core ------------------------------------------------------
CORE = [
    "shared/ingest.py", "shared/sweep.py", "shared/finetune.py", "shared/events.py",
    "shared/naming.py", "shared/reports.py", "shared/schedule.py", "shared/settings.py",
    "shared/errors.py",
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "shared" / "release").glob("*.py"))),
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "shared" / "dataset").glob("*.py"))),
]


def _module_level_azure_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [n for n in names if n == "azure" or n.startswith("azure.")]
    return found


@pytest.mark.parametrize("module", CORE)
def test_the_core_does_not_import_the_azure_sdk(module: str) -> None:
    """Core modules import no azure.* (errors.py only inside the mapper, checked below)."""
    path = ROOT / module
    if not path.exists():
        pytest.skip(f"{module} is not in this tree")
    found = _module_level_azure_imports(path)
    if module == "shared/errors.py":
        assert found == ["azure.core"]  # the lazy import inside translate_azure_error
    else:
        assert found == [], f"{module} imports {found}"


def test_importing_the_errors_module_does_not_load_azure_core() -> None:
    """`import shared.errors` stays light: azure.core loads only when an error is mapped."""
    code = "import sys, shared.errors; print('azure.core' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
