"""Shared state of the Azure ML adapter: settings, credential, transport and lazy clients."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

__all__ = ["AzureMLBase", "quiet_sdk_pollers"]


def quiet_sdk_pollers() -> None:
    """Stop azure-ai-ml's pollers printing a dot to stdout on every poll.

    ``AzureMLPolling.update_status`` prints ``.`` from the poller's background thread. We
    start long operations without waiting on them (the reconciler comes back), so those
    threads print into whatever owns stdout later: the Functions worker's log, or the
    ``--json`` output of a CLI command. Polling itself is unchanged.
    """
    from azure.ai.ml._utils._azureml_polling import AzureMLPolling
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    AzureMLPolling.update_status = ARMPolling.update_status  # type: ignore[method-assign]


class AzureMLBase:
    """Holds what every group of operations needs. ``transport`` goes to every SDK client."""

    kind = "azureml"

    def __init__(
        self,
        settings: Settings,
        *,
        credential: TokenCredential,
        transport: Any = None,
    ) -> None:
        if not settings.workspace_configured:
            raise ConfigError(
                "Azure ML workspace is not configured",
                hint="set TUNELOOP_SUBSCRIPTION_ID, TUNELOOP_RESOURCE_GROUP, "
                "TUNELOOP_WORKSPACE_NAME",
            )
        self.settings = settings
        self.credential = credential
        self.transport = transport

    @classmethod
    def from_settings(
        cls, settings: Settings, *, credential: TokenCredential, transport: Any = None
    ) -> Any:
        return cls(settings, credential=credential, transport=transport)

    def _client_kwargs(self) -> dict[str, Any]:
        return {"transport": self.transport} if self.transport is not None else {}

    @cached_property
    def ml_client(self) -> MLClient:
        """The workspace's MLClient."""
        from azure.ai.ml import MLClient

        quiet_sdk_pollers()
        s = self.settings
        return MLClient(
            self.credential,
            subscription_id=s.subscription_id,
            resource_group_name=s.resource_group,
            workspace_name=s.workspace_name,
            **self._client_kwargs(),
        )

    @cached_property
    def registry_client(self) -> MLClient:
        """An MLClient on the model/component registry (``azureml`` by default)."""
        from azure.ai.ml import MLClient

        return MLClient(
            self.credential,
            registry_name=self.settings.registry_name,
            **self._client_kwargs(),
        )
