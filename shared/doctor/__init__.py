"""``tuneloop doctor``: preflight checks of a configured environment, before data is dropped.

Each check is a small function returning :class:`Check` results (ok / warn / fail, what was
found, the fix); :func:`run_checks` runs them all and never stops at the first failure, so one
run lists everything to fix. The checks take their clients as parameters (credential, HTTP
transport, environment); the CLI only renders the :class:`Report`.

- :mod:`shared.doctor.checks`: the result types and the one place a check's error becomes a
  result (:func:`attempt`);
- :mod:`shared.doctor.azure`: the Azure checks (identity and tokens, workspace, registry,
  the planner's rules, datastore, storage, roles);
- :mod:`shared.doctor.eventgrid`: the two Event Grid subscriptions, read through ARM REST;
- :mod:`shared.doctor.local`: the local platform's home (devhost.json, Azurite, MLflow store,
  ports).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.doctor.checks import Check, Outcome, Report, Role, attempt
from shared.errors import ConfigError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.settings import Settings

__all__ = ["Check", "Outcome", "Report", "Role", "attempt", "run_checks"]


def run_checks(
    settings: Settings,
    *,
    credential: TokenCredential | None = None,
    transport: Any = None,
    environ: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Report:
    """Run the checks of the configured platform: Azure ML when a workspace is configured
    (``credential`` required), else the local platform's home.

    Raises ConfigError (exit 2) when Azure ML is asked for without a workspace: nothing could
    be checked, which is a configuration error rather than a failed check."""
    if settings.platform_kind == "azureml":
        from shared.doctor.azure import azure_checks

        if not settings.workspace_configured:  # TUNELOOP_PLATFORM=azureml without a workspace
            raise ConfigError(
                "TUNELOOP_PLATFORM=azureml but the Azure ML workspace is not configured",
                hint="set TUNELOOP_SUBSCRIPTION_ID, TUNELOOP_RESOURCE_GROUP and "
                "TUNELOOP_WORKSPACE_NAME, or unset TUNELOOP_PLATFORM to check the local home",
            )

        if credential is None:
            raise ValueError("the Azure checks need a credential")
        checks = azure_checks(
            settings, credential=credential, transport=transport, environ=environ, now=now
        )
        signed_in = not any(c.name == "identity" and c.outcome == Outcome.FAIL for c in checks)
        return Report("azureml", (*checks, *_events(settings, signed_in=signed_in)))
    from shared.doctor.local import local_checks

    return Report("local", (*local_checks(settings, environ=environ), *_events(settings)))


def _events(settings: Settings, *, signed_in: bool = True) -> list[Check]:
    from shared.doctor.events import events_check

    return attempt("events", lambda: events_check(settings, signed_in=signed_in))
