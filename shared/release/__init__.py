"""Release a trained run: register → endpoint → deployment at 0 % → smoke test → gate → promote.

One module per job:

* :mod:`~shared.release.jobs` — job events in, jobs polled and every run mid-release advanced
  by the reconciler;
* :mod:`~shared.release.steps` — the step machine that drives one run through the release;
* :mod:`~shared.release.smoke` — the smoke test of a new deployment at 0 % traffic;
* :mod:`~shared.release.exam` — the line's exam: the candidate and the live model answer it;
* :mod:`~shared.release.gate` — the pure promotion decision;
* :mod:`~shared.release.promote` — the last step, and the same step by hand on a HELD run;
* :mod:`~shared.release.context` — the ports and the ledger moves they all share.

One release at a time per line: the line lease and the version counter live in
:mod:`shared.leases`.
"""

from shared.release.context import ReleaseContext, write_run_report
from shared.release.gate import GateDecision, decide_exam, decide_promotion
from shared.release.jobs import ReconcileSummary, handle_delivery, handle_job_event, reconcile
from shared.release.promote import promote_held
from shared.release.smoke import answer_text
from shared.release.steps import advance_release, inference_allow_list

__all__ = [
    "GateDecision",
    "ReconcileSummary",
    "ReleaseContext",
    "advance_release",
    "answer_text",
    "decide_exam",
    "decide_promotion",
    "handle_delivery",
    "handle_job_event",
    "inference_allow_list",
    "promote_held",
    "reconcile",
    "write_run_report",
]
