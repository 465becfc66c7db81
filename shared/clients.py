"""Lazy client factories: each client is created once, on first use, from the settings.

Tests build a :class:`Clients` with their own settings (an Azurite connection string, a
fake transport) instead of monkey-patching; nothing here runs at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient, TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from shared.ledger import Ledger
    from shared.platform import Platform
    from shared.storage import Storage

__all__ = ["Clients"]


@dataclass
class Clients:
    """The composition root's client cache. ``transport`` is passed to every Azure SDK client."""

    settings: Settings
    transport: Any = None
    _overrides: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def credential(self) -> TokenCredential:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def _kwargs(self) -> dict[str, Any]:
        return {"transport": self.transport} if self.transport is not None else {}

    @cached_property
    def blob_service(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        s = self.settings
        if s.storage_connection_string:
            return BlobServiceClient.from_connection_string(
                s.storage_connection_string, **self._kwargs()
            )
        if s.storage_account_url:
            return BlobServiceClient(s.storage_account_url, self.credential, **self._kwargs())
        raise ConfigError(
            "no storage configured",
            hint="set TUNELOOP_STORAGE_CONNECTION_STRING (Azurite) or TUNELOOP_STORAGE_ACCOUNT_URL",
        )

    @cached_property
    def table_service(self) -> TableServiceClient:
        from azure.data.tables import TableServiceClient

        s = self.settings
        if s.storage_connection_string:
            return TableServiceClient.from_connection_string(
                s.storage_connection_string, **self._kwargs()
            )
        if s.storage_account_url:
            table_url = s.storage_account_url.replace(".blob.", ".table.")
            return TableServiceClient(table_url, credential=self.credential, **self._kwargs())
        raise ConfigError(
            "no storage configured",
            hint="set TUNELOOP_STORAGE_CONNECTION_STRING (Azurite) or TUNELOOP_STORAGE_ACCOUNT_URL",
        )

    @cached_property
    def ledger_table(self) -> TableClient:
        return self.table_service.get_table_client(self.settings.ledger_table)

    @cached_property
    def ledger(self) -> Ledger:
        from shared.ledger import Ledger

        ledger = Ledger(self.ledger_table)
        ledger.ensure_table()
        return ledger

    @cached_property
    def storage(self) -> Storage:
        from shared.storage import Storage

        return Storage(self.blob_service, self.settings)

    @cached_property
    def platform(self) -> Platform:
        if "platform" in self._overrides:
            platform: Platform = self._overrides["platform"]
            return platform
        if self.settings.platform_kind == "azureml":
            from shared.platform.azureml import AzureMLPlatform

            azureml: Platform = AzureMLPlatform.from_settings(
                self.settings, credential=self.credential
            )
            return azureml
        from shared.platform.local import LocalPlatform

        return LocalPlatform.from_settings(self.settings, storage=self.storage)

    def use_platform(self, platform: Platform) -> None:
        """Wire a specific platform (tests, devhost) instead of the one settings select."""
        self._overrides["platform"] = platform
        self.__dict__.pop("platform", None)
