"""The ML platform port: one Protocol, two adapters (Azure ML and the embedded local platform).

The verbs follow the Azure SDK guidelines: ``get_*`` raises :class:`~shared.errors.NotFoundError`
when missing, ``list_*`` returns a (possibly empty) list, ``delete_*`` succeeds when the thing
is already gone. Long operations never block: ``ensure_endpoint`` and ``deploy`` start the work
if needed and return the current state; callers come back later (the reconciler) and call again.
"""

from __future__ import annotations

from shared.platform.port import (
    BaseModelInfo,
    ComponentInput,
    ComponentInterface,
    ComputeInfo,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    FinetunePlan,
    JobInfo,
    ModelVersionInfo,
    Platform,
    ProvisioningState,
)

__all__ = [
    "BaseModelInfo",
    "ComponentInput",
    "ComponentInterface",
    "ComputeInfo",
    "DeploymentInfo",
    "DeploymentSpec",
    "EndpointInfo",
    "FinetunePlan",
    "JobInfo",
    "ModelVersionInfo",
    "Platform",
    "ProvisioningState",
]
