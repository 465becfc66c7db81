"""One drop to promotion with ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, in a process of
its own (configure_azure_monitor() sets the global OpenTelemetry providers for good):
tests/integration/test_telemetry_azure.py runs ``python -m tests.integration.azure_monitor_run
HOME`` with the storage connection string in ``TUNELOOP_STORAGE_CONNECTION_STRING`` and the
connection string pointing at its capture server.

The run goes through shared.telemetry's own API only (the ingest, job event, release and exam
spans, the metrics), then :func:`shared.telemetry.flush`; the process then ends with
``os._exit`` so that the providers' exit handlers flush nothing more: what the capture server
received was sent by the run's batches and that flush. Prints one JSON line: the run, its
state, its stored traceparent and the telemetry mode.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    # The Functions Python worker logs at INFO; tuneloop's records go out as traces then.
    logging.basicConfig(level=logging.INFO)
    # A hang (e.g. a flush that never returns) ends with every thread's stack on stderr.
    faulthandler.dump_traceback_later(240, exit=True)
    from shared import telemetry
    from tests.integration.test_ingest import invalid_dataset, valid_dataset
    from tests.integration.test_telemetry import LINE, drop_and_release, make_clients
    from tests.isolation import isolated_settings

    home = Path(argv[0])
    settings = isolated_settings(os.environ["TUNELOOP_STORAGE_CONNECTION_STRING"], home,
                                 min_examples=10)  # TUNELOOP_TELEMETRY: auto
    clients, fake = make_clients(settings)
    run_id = drop_and_release(clients, fake, "first.jsonl", valid_dataset())
    rejected = drop_and_release(clients, fake, "bad.jsonl", invalid_dataset())
    telemetry.flush()
    rec = clients.ledger.get(LINE, run_id)
    print(json.dumps({
        "run": run_id, "state": rec.state.value, "traceparent": rec.get("traceparent"),
        "rejected": rejected, "mode": telemetry.mode(settings),
    }), flush=True)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(code)  # no exit handler: only what flush() and the batches sent counts
