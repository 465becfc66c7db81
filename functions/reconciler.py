"""Timer trigger: advance every run mid-release and poll jobs whose events never came.

It also finishes ingest deliveries whose handler died and whose host retries ran out
(a stale ingest claim), so no dropped dataset is left half-processed, and publishes the
lifecycle events left in the ledger's outbox (shared/outbox.py).
"""

import azure.functions as func

from functions._root import clients
from shared.ingest import Ingest
from shared.release import ReleaseContext, reconcile

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("reconcile_runs")
@bp.timer_trigger(arg_name="timer", schedule="%TUNELOOP_RECONCILE_SCHEDULE%")
def reconcile_runs(timer: func.TimerRequest) -> None:
    """Events make the loop fast; this makes it certain."""
    del timer
    c = clients()
    try:
        Ingest.from_clients(c).resume_stale()
        reconcile(ReleaseContext.from_clients(c))
    finally:
        # every run's undelivered lifecycle events (this pass's and those a crash left)
        c.publish_events(undelivered=True)
