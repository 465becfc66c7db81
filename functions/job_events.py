"""Event Grid trigger for the Azure ML workspace's job events (RunStatusChanged, RunCompleted).

Thin: hand the decoded event to ``shared.release``. Transient and platform failures are
raised so the host reports the delivery as failed and Event Grid redelivers; every other
tuneloop error has been recorded on the run already and is only logged here.
"""

import logging

import azure.functions as func

from functions._root import clients
from shared.errors import PlatformError, TransientError, TuneloopError
from shared.release import ReleaseContext, handle_delivery

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@bp.function_name("on_job_event")
@bp.event_grid_trigger(arg_name="event")
def on_job_event(event: func.EventGridEvent) -> None:
    """One Event Grid delivery (Event Grid schema or CloudEvents) from the workspace topic."""
    c = clients()
    try:
        handle_delivery(ReleaseContext.from_clients(c), event)
    except (TransientError, PlatformError):
        raise
    except TuneloopError as exc:
        log.error("job event %s not processed: %s", event.id, exc)
    finally:
        c.publish_events()  # the lifecycle events of the step (never raises)
