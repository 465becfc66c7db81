"""Not built yet: see the open issue that owns these operations."""

from __future__ import annotations

from shared.platform.azureml._base import AzureMLBase

__all__ = ["SweepMixin"]


class SweepMixin(AzureMLBase):
    pass
