"""The ``events`` check: are tuneloop's lifecycle events published, and how.

Read from the settings only (no request: publishing a test event would reach subscribers).
No ``TUNELOOP_EVENTS_ENDPOINT``: the ledger records no event and nothing is published (a
warning, not a failure: the loop runs the same without events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.doctor.checks import Check, ok, skip, warn
from shared.eventgrid import ROLE

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = ["events_check"]


def events_check(settings: Settings, *, signed_in: bool = True) -> Check:
    """``signed_in`` False: the identity check failed, so (as every other Azure row) this one
    is not checked."""
    if not signed_in:
        return skip("events", "not checked: no identity signed in", "fix the identity row first")
    endpoint = settings.events_endpoint
    if not endpoint:
        if settings.platform_kind == "local":
            fix = ("the devhost (tuneloop up) sets it for its own app to the home's topic; "
                   "set it here only to publish from this shell")
        else:
            fix = ("set TUNELOOP_EVENTS_ENDPOINT to the topic's endpoint (infra/ creates one: "
                   f"eventsTopic); the app's identity needs {ROLE}")
        return warn("events", "lifecycle events are not published (TUNELOOP_EVENTS_ENDPOINT "
                    "is not set; runs record no events)", fix)
    auth = ("the topic key (TUNELOOP_EVENTS_KEY)" if settings.events_key is not None
            else f"the app's identity ({ROLE})")
    return ok("events", f"lifecycle events are published to {endpoint} with {auth}")
