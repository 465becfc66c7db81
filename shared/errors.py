"""Every error a user can see: a type, a stable code and a message that says what to do.

The tree (``code`` in brackets)::

    TuneloopError [tuneloop_error]
    ├── ConfigError [config_error]                 a setting or file is missing or invalid
    ├── DatasetUnreadableError [dataset_unreadable]
    ├── PlanError [plan_error]                     the plan breaks the component or model rules
    ├── InvalidTransitionError [invalid_transition] a run would move backwards (ledger)
    ├── LedgerConflictError [ledger_conflict]      412: a run or claim changed since it was read
    ├── BlobChangedError [blob_changed]            412: a blob changed since the pinned version
    ├── NotPromotableError [not_promotable]
    ├── StorageError [storage_error]               storage answered with an unexpected error
    ├── PlatformError [platform_error]             a service refused or failed an operation
    │   ├── NotFoundError [not_found]              404 (also a run, claim or blob)
    │   ├── ConflictError [conflict]               409: exists, or busy with another operation
    │   │   ├── AlreadyExistsError [already_exists]  409 on create
    │   │   └── NameOwnedByAnotherLineError [owned_by_another_line]  the model or endpoint
    │   │                                      is tagged with another line: never reused
    │   ├── PermissionDeniedError [permission_denied]  401/403; the hint names the role
    │   ├── SmokeTestError [smoke_test_failed]
    │   └── UnknownTrafficError [unknown_traffic]
    └── TransientError [transient]                 408, 429, 5xx, timeouts, dropped connections
        └── UnreachableError [unreachable]         no connection at all (refused, DNS)

Who decides what: the Functions entry points retry a ``TransientError`` (the host redelivers)
and record every other error on the run; the CLI prints one line and exits 2 for a
configuration problem (``ConfigError``, ``UnreachableError``, ``PermissionDeniedError``)
and 1 otherwise. Messages say what happened and where; they never promise a retry, which
is the entry point's business.

SDK errors enter the tree in one place, :func:`map_azure_errors` (httpx's
``map_exceptions`` is the model): the storage, ledger and Azure ML adapters wrap their SDK
calls in it, so the core never imports ``azure.core``. This module stays light: azure-core
is imported only when an exception is being translated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypedDict, Unpack

__all__ = [
    "AlreadyExistsError",
    "BlobChangedError",
    "ConfigError",
    "ConflictError",
    "DatasetUnreadableError",
    "InvalidTransitionError",
    "LedgerConflictError",
    "NameOwnedByAnotherLineError",
    "NotFoundError",
    "NotPromotableError",
    "PermissionDeniedError",
    "PlanError",
    "PlatformError",
    "SmokeTestError",
    "StorageError",
    "TransientError",
    "TuneloopError",
    "UnknownTrafficError",
    "UnreachableError",
    "map_azure_errors",
    "translate_azure_error",
]


class TuneloopError(Exception):
    """Base of every tuneloop error. ``code`` is stable; ``hint`` says what to do."""

    code = "tuneloop_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


class ConfigError(TuneloopError):
    """A setting is missing or invalid."""

    code = "config_error"


class DatasetUnreadableError(TuneloopError):
    """The dataset cannot be read at all (missing file, permission, not a file)."""

    code = "dataset_unreadable"


class PlanError(TuneloopError):
    """A fine-tune plan violates the component interface or the model's allow-lists."""

    code = "plan_error"

    def __init__(self, problems: Sequence[str], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems), hint=hint)


class InvalidTransitionError(TuneloopError):
    """The requested state change would move a run backwards or out of a terminal state."""

    code = "invalid_transition"


class LedgerConflictError(TuneloopError):
    """Another worker changed the run since we read it (ETag mismatch); re-read and retry."""

    code = "ledger_conflict"


class BlobChangedError(TuneloopError):
    """The blob was overwritten since the version we pinned (ETag no longer matches)."""

    code = "blob_changed"


class NotPromotableError(TuneloopError):
    """A run cannot be promoted by hand: not HELD, its deployment is gone, or its line is busy."""

    code = "not_promotable"


class StorageError(TuneloopError):
    """Blob or table storage answered with an error no caller expects (e.g. 400)."""

    code = "storage_error"


class PlatformError(TuneloopError):
    """The ML platform (or another service) refused or failed an operation."""

    code = "platform_error"


class NotFoundError(PlatformError):
    """The named resource does not exist (``get_*`` raises this; also runs, claims, blobs)."""

    code = "not_found"


class ConflictError(PlatformError):
    """The resource exists already or is in a state that forbids the operation."""

    code = "conflict"


class AlreadyExistsError(ConflictError):
    """A create found the resource there already (HTTP 409 on create); callers usually read it."""

    code = "already_exists"


class NameOwnedByAnotherLineError(ConflictError):
    """A model or endpoint name is tagged with another line (the port's ownership rule,
    ``shared.platform.port.check_line_owner``). Permanent: retrying cannot change the owner,
    so the release holds the run at once."""

    code = "owned_by_another_line"


class PermissionDeniedError(PlatformError):
    """The identity is not authenticated or not authorised (401/403); the hint names the role."""

    code = "permission_denied"


class SmokeTestError(PlatformError):
    """A new deployment did not answer a smoke-test request with non-empty text."""

    code = "smoke_test_failed"


class UnknownTrafficError(PlatformError):
    """Request counts for an endpoint could not be established (never guessed as zero)."""

    code = "unknown_traffic"


class TransientError(TuneloopError):
    """A failure worth retrying later (throttling, timeouts, 5xx, a dropped connection)."""

    code = "transient"


class UnreachableError(TransientError):
    """No connection could be made at all (refused, unknown host): nothing was sent.

    Transient for a deployed app (the host retries), but in a terminal it usually means
    that the storage or service is not running or not configured.
    """

    code = "unreachable"


# -- the one mapper from Azure SDK errors into the tree ---------------------------------------

# Statuses a retry can cure: 408 request timeout, 429 throttling, every 5xx. Azure Storage
# returns 503 ServerBusy / 500 OperationTimedOut and Azure Resource Manager 429 when
# throttling ("Retry guidance for Azure services", learn.microsoft.com/azure/architecture/
# best-practices/retry-service-specific).
_TRANSIENT_STATUS = frozenset({408, 429})


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _service_message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:500]


def translate_azure_error(
    exc: BaseException,
    what: str,
    *,
    role: str | None = None,
    exists: type[TuneloopError] = AlreadyExistsError,
    modified: type[TuneloopError] = ConflictError,
    not_found: type[TuneloopError] = NotFoundError,
    other: type[TuneloopError] = PlatformError,
) -> TuneloopError | None:
    """The tuneloop error for an azure-core exception, or None if ``exc`` is not one.

    ``what`` says what was being done ("reading incoming/a/b.jsonl"); ``role`` names the
    RBAC role to grant on a 401/403. The keyword classes let an adapter say what 409-on-create,
    412 (precondition failed), 404 and any other HTTP error mean for it.
    """
    if isinstance(exc, TuneloopError):
        return exc
    from azure.core import exceptions as az  # lazy: importing this module stays light

    if not isinstance(exc, az.AzureError):
        return None
    message = _service_message(exc)
    if isinstance(exc, az.ServiceRequestError):
        # Raised before anything reached the service: refused, DNS, connect timeout
        # (azure-core: "An error occurred while attempt to make a request to the service.
        # No request was sent.").
        return UnreachableError(f"{what}: cannot connect ({message})")
    if isinstance(exc, az.ServiceResponseError):
        return TransientError(f"{what}: the connection failed mid-request ({message})")
    status = _status(exc)
    if isinstance(exc, az.ClientAuthenticationError) or status in (401, 403):
        hint = f"grant the identity {role}" if role else "check the identity's role assignments"
        return PermissionDeniedError(f"{what}: not authorised ({message})", hint=hint)
    if isinstance(exc, az.ResourceExistsError):
        # azure-core maps every 409 to ResourceExistsError, "busy" included: say what was sent.
        return exists(f"{what}: HTTP 409 conflict ({message})")
    if isinstance(exc, az.ResourceModifiedError) or status == 412:
        return modified(f"{what}: changed since it was read ({message})")
    if isinstance(exc, az.ResourceNotFoundError) or status == 404:
        return not_found(f"{what}: not found ({message})")
    if status == 409:
        return ConflictError(f"{what}: conflict ({message})")
    if status is not None and (status in _TRANSIENT_STATUS or status >= 500):
        return TransientError(f"{what}: HTTP {status} ({message})")
    if status is not None:
        return other(f"{what}: HTTP {status} ({message})")
    return other(f"{what}: {message}")


class _Meanings(TypedDict, total=False):
    """:func:`translate_azure_error`'s keyword arguments, which :func:`map_azure_errors`
    passes on as given (the defaults stand in one place)."""

    role: str | None
    exists: type[TuneloopError]
    modified: type[TuneloopError]
    not_found: type[TuneloopError]
    other: type[TuneloopError]


@contextmanager
def map_azure_errors(what: str, **meanings: Unpack[_Meanings]) -> Iterator[None]:
    """Run the block; re-raise any azure-core error as its tuneloop error (``from`` it).

    ``meanings`` are :func:`translate_azure_error`'s keywords. Errors that are not Azure SDK
    errors (and tuneloop errors) pass through unchanged.
    """
    try:
        yield
    except Exception as exc:
        mapped = translate_azure_error(exc, what, **meanings)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc
