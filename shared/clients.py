"""The composition root's clients: each created once, on first use, from the settings.

Every port can be handed in instead (keyword-only, all alike): ``ledger``, ``storage``,
``platform``, ``events_publisher``, ``clock`` and ``transport`` (given to every Azure SDK
client). Tests and the
devhost wire fakes that way instead of monkey-patching; nothing here runs at import.

``close()`` (or leaving ``with Clients(...)``) closes what this object created — the SDK
clients, the credential, a platform it built — and never what it was given.

``sdk_options`` are extra keyword arguments for the storage SDK clients (retry counts,
timeouts): the Functions host keeps the SDK defaults, a terminal command asks for
:data:`CLI_SDK_OPTIONS` so that a storage that is not there fails in seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient, TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from shared.ledger import Ledger
    from shared.lifecycle import Origin
    from shared.outbox import DrainReport, EventPublisher
    from shared.platform import Platform
    from shared.storage import Storage

__all__ = [
    "CLI_SDK_OPTIONS",
    "Clients",
    "StorageAccess",
    "sdk_kwargs",
    "utcnow",
]

log = logging.getLogger(__name__)

# A terminal command waits for a person: one retry, short connect timeout. The storage SDK's
# defaults (blob: ExponentialRetry, retry_total=3, 15 s initial backoff + 3**n; tables:
# RetryPolicy, retry_connect=3, 0.8 s backoff factor; azure-storage-blob
# _shared/policies.py, azure-data-tables _policies.py) keep a refused connection retrying for
# over a minute. ``initial_backoff``/``increment_base`` are ExponentialRetry's (blob) and
# ``retry_backoff_factor`` is RetryPolicy's (tables); each client ignores the other's.
CLI_SDK_OPTIONS: Mapping[str, Any] = {
    "retry_total": 1,
    "retry_connect": 1,
    "initial_backoff": 1,
    "increment_base": 1,
    "random_jitter_range": 1,
    "retry_backoff_factor": 0.2,
    "connection_timeout": 5,
}

_NO_STORAGE_HINT = (
    "set TUNELOOP_STORAGE_CONNECTION_STRING (Azurite) or TUNELOOP_STORAGE_ACCOUNT_URL"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def sdk_kwargs(options: Mapping[str, Any], transport: Any) -> dict[str, Any]:
    """The storage SDK clients' keyword arguments: ``options``, plus ``transport`` if given."""
    kwargs = dict(options)
    if transport is not None:
        kwargs["transport"] = transport
    return kwargs


@dataclass(frozen=True)
class StorageAccess:
    """How the storage SDK clients reach the data account: the settings' connection string
    (Azurite, keys) if set, else the account URL with ``credential()`` (called only then);
    ``kwargs`` go to every client; ``hint`` ends the ``ConfigError`` when neither is set."""

    settings: Settings
    credential: Callable[[], TokenCredential]
    kwargs: Mapping[str, Any]
    hint: str = _NO_STORAGE_HINT

    def _account_url(self, service: str) -> str:
        """The account URL for ``service`` (its ``.blob.`` read as ``.table.`` for tables)."""
        url = self.settings.storage_account_url
        if not url:
            raise ConfigError("no storage configured", hint=self.hint)
        return url.replace(".blob.", f".{service}.")

    def blob_service(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        conn = self.settings.storage_connection_string
        if conn:
            return BlobServiceClient.from_connection_string(conn, **self.kwargs)
        return BlobServiceClient(self._account_url("blob"), self.credential(), **self.kwargs)

    def table_service(self) -> TableServiceClient:
        from azure.data.tables import TableServiceClient

        conn = self.settings.storage_connection_string
        if conn:
            return TableServiceClient.from_connection_string(conn, **self.kwargs)
        url = self._account_url("table")
        return TableServiceClient(url, credential=self.credential(), **self.kwargs)


class Clients:
    """The composition root's client cache; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger | None = None,
        storage: Storage | None = None,
        platform: Platform | None = None,
        events_publisher: EventPublisher | None = None,
        clock: Callable[[], datetime] | None = None,
        transport: Any = None,
        sdk_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.sdk_options: dict[str, Any] = dict(sdk_options or {})
        self.clock: Callable[[], datetime] = clock or utcnow
        # Given objects are cached as if created, and remembered so that close() spares them.
        given = {
            "ledger": ledger, "storage": storage, "platform": platform,
            "events_publisher": events_publisher,
        }
        self._given: set[str] = {name for name, value in given.items() if value is not None}
        for name in self._given:
            self.__dict__[name] = given[name]

    # -- SDK clients ----------------------------------------------------------------------
    @cached_property
    def credential(self) -> TokenCredential:
        from azure.identity import DefaultAzureCredential

        # A user-assigned identity is picked only by its client id (AZURE_CLIENT_ID, read into
        # the settings); passed explicitly so that the identity infra/ gives the app is the one
        # every SDK client uses, the same as the trigger's and the host's connections.
        client_id = self.settings.azure_client_id
        if client_id:
            return DefaultAzureCredential(managed_identity_client_id=client_id)
        return DefaultAzureCredential()

    def _kwargs(self) -> dict[str, Any]:
        return sdk_kwargs(self.sdk_options, self.transport)

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        return StorageAccess(self.settings, lambda: self.credential, self._kwargs()).blob_service()

    @cached_property
    def table_service(self) -> TableServiceClient:
        return StorageAccess(self.settings, lambda: self.credential, self._kwargs()).table_service()

    @cached_property
    def ledger_table(self) -> TableClient:
        return self.table_service.get_table_client(self.settings.ledger_table)

    # -- ports ----------------------------------------------------------------------------
    @cached_property
    def ledger(self) -> Ledger:
        from shared.ledger import Ledger

        ledger = Ledger(self.ledger_table, events=self._events_origin())
        ledger.ensure_table()
        return ledger

    def _events_origin(self) -> Origin | None:
        """Where lifecycle events come from, or None when none are published (no endpoint
        configured and no publisher given): then the ledger records no event at all."""
        if not self.settings.events_endpoint and "events_publisher" not in self._given:
            return None
        from shared.lifecycle import Origin

        return Origin.from_settings(self.settings)

    @cached_property
    def events_publisher(self) -> EventPublisher | None:
        """The Event Grid publisher of ``TUNELOOP_EVENTS_ENDPOINT`` (None: not configured):
        ``TUNELOOP_EVENTS_KEY`` as the topic key if set, else the app's credential."""
        endpoint = self.settings.events_endpoint
        if not endpoint:
            return None
        from shared.eventgrid import EventGridPublisher

        key = self.settings.events_key
        if key is not None:
            from azure.core.credentials import AzureKeyCredential

            return EventGridPublisher.create(
                endpoint, AzureKeyCredential(key.get_secret_value()),
                **sdk_kwargs({}, self.transport),
            )
        return EventGridPublisher.create(
            endpoint, self.credential, **sdk_kwargs({}, self.transport)
        )

    def publish_events(self, *, undelivered: bool = False) -> DrainReport:
        """Send the lifecycle events the step that just ran on this thread wrote (the drain
        after a step), or with ``undelivered`` every run's undelivered events (the
        reconciler's drain: 1 + such runs Table reads). Never raises: what is not sent stays
        in the outbox for the next drain."""
        from shared.outbox import DrainReport, drain_after

        if "ledger" not in self.__dict__ and not undelivered:  # nothing written through us
            return DrainReport()
        return drain_after(
            self.ledger, self.events_publisher, now=self.clock(), undelivered=undelivered
        )

    @cached_property
    def storage(self) -> Storage:
        from shared.storage import Storage

        return Storage(self.blob_service, self.settings)

    @cached_property
    def platform(self) -> Platform:
        if self.settings.platform_kind == "azureml":
            from shared.platform.azureml import AzureMLPlatform

            azureml: Platform = AzureMLPlatform.from_settings(
                self.settings, credential=self.credential
            )
            return azureml
        from shared.platform.local import LocalPlatform

        return LocalPlatform.from_settings(self.settings, storage=self.storage)

    def use_platform(self, platform: Platform) -> None:
        """Wire a specific platform after construction (the devhost, older tests)."""
        self._close_created("platform")
        self.__dict__["platform"] = platform
        self._given.add("platform")

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Close every client this object created (not the ones it was given); idempotent."""
        for name in (
            "platform", "events_publisher", "ledger_table", "table_service", "blob_service",
            "credential",
        ):
            self._close_created(name)

    def _close_created(self, name: str) -> None:
        if name in self._given or name not in self.__dict__:
            return
        created = self.__dict__.pop(name)
        close = getattr(created, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # one client failing to close must not keep the others open
                log.warning("closing %s failed", name, exc_info=True)
        if name in ("table_service", "blob_service", "ledger_table"):
            # The ports built on a closed SDK client go with it.
            for port in ("ledger", "storage"):
                if port not in self._given:
                    self.__dict__.pop(port, None)

    def __enter__(self) -> Clients:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
