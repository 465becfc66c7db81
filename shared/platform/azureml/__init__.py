"""Azure ML through ``azure-ai-ml`` (and Azure Monitor metrics for the sweeper).

``AzureMLPlatform`` implements the platform port. Its operations are grouped by concern in
``_jobs`` (base model, submit, job status), ``_release`` (register, endpoints, deployments,
invoke, traffic) and ``_sweep`` (endpoint listing, request metrics, deletion); they share
the lazily-built clients of ``_base``. Importing this package imports ``azure.ai.ml``: only
the code paths that talk to Azure ML do so.
"""

from __future__ import annotations

from shared.platform.azureml._base import AzureMLBase
from shared.platform.azureml._jobs import JobsMixin
from shared.platform.azureml._release import ReleaseMixin
from shared.platform.azureml._sweep import SweepMixin

__all__ = ["AzureMLPlatform"]


class AzureMLPlatform(JobsMixin, ReleaseMixin, SweepMixin, AzureMLBase):
    """The Azure ML adapter of the platform port."""
