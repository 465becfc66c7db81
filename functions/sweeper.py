"""Timer trigger: sweep idle endpoints on ``%TUNELOOP_SWEEP_SCHEDULE%`` (NCRONTAB)."""

import logging

import azure.functions as func

from functions._root import clients
from shared.sweep import run_sweep

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@bp.function_name("sweep_idle_endpoints")
@bp.timer_trigger(arg_name="timer", schedule="%TUNELOOP_SWEEP_SCHEDULE%", use_monitor=True)
def sweep_idle_endpoints(timer: func.TimerRequest) -> None:
    """List, decide, delete idle endpoints (capped, fail-closed) and write the sweep report."""
    if timer.past_due:
        log.warning("sweep: timer is past due; sweeping now")
    c = clients()
    try:
        report = run_sweep(
            platform=c.platform, ledger=c.ledger, storage=c.storage, settings=c.settings
        )
    finally:
        c.publish_events()  # the lifecycle events of the runs it retired (never raises)
    log.info("sweep report %s: %s", report.blob, report.summary())
