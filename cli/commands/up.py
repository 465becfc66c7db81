"""`tuneloop up` — run the app locally until Ctrl-C: Azurite, the local platform, the triggers.

The devhost (``functions/devhost.py``) watches the incoming container, delivers the local
platform's job events and fires the timers. State lives under ``TUNELOOP_HOME`` (default
``.tuneloop/``); endpoints recorded there by an earlier run (or ``tuneloop demo``) are
restarted on the same ports when those are free.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from functions.devhost import DevHost

__all__ = ["add_arguments", "banner", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poll-every", type=float, default=1.0,
                        help="seconds between passes over blobs and events (default: 1)")
    parser.add_argument("--reconcile-every", type=float, default=None,
                        help="run the reconciler every N seconds instead of "
                        "TUNELOOP_RECONCILE_SCHEDULE")
    parser.add_argument("--sweep-every", type=float, default=None,
                        help="run the sweeper every N seconds instead of TUNELOOP_SWEEP_SCHEDULE")


def _timer_text(every: float | None, schedule: str) -> str:
    return f"every {every:g}s" if every is not None else f"NCRONTAB '{schedule}'"


def banner(host: DevHost) -> str:
    """Where everything is, and how to use it."""
    s = host.settings
    home = Path(s.home).resolve()
    lines = [f"tuneloop is up: home {home} (Ctrl-C stops it; `tuneloop up` again restores "
             "the endpoints)", ""]
    storage = host.local_storage
    if storage is not None:
        blob, queue, table = storage.ports
        how = "started" if storage.process is not None else (
            "adopted from a devhost that stopped" if storage.owned else "shared with a devhost")
        lines += [
            f"storage      Azurite ({how}): blob :{blob}, queue :{queue}, table :{table} on "
            f"127.0.0.1 (data in {home / 'azurite'})",
            "             for other shells (tuneloop status / upload / sweep):",
            f"             export TUNELOOP_STORAGE_CONNECTION_STRING='{storage.connection_string}'",
        ]
    else:
        lines.append(f"storage      {host.blob_endpoint} (configured)")
    lines += [
        f"containers   {s.incoming_container} (watched), {s.reports_container}, "
        f"{s.rejected_container}, {s.prepared_container}; ledger table {s.ledger_table}",
        "drop a dataset",
        "             tuneloop upload my.jsonl --line support",
        "             az storage blob upload --connection-string "
        f"\"$TUNELOOP_STORAGE_CONNECTION_STRING\" -c {s.incoming_container} "
        "-n support/my.jsonl -f my.jsonl",
        f"reports      {s.reports_container}/<line>/<name>/validation.md, run.json; "
        "`tuneloop status`",
        f"timers       reconcile_runs {_timer_text(host.reconcile_every, s.reconcile_schedule)}; "
        f"sweep_idle_endpoints {_timer_text(host.sweep_every, s.sweep_schedule)} "
        f"(idle after {s.idle_after})",
        f"platform     local: jobs and their logs in {home / 'local' / 'jobs'}; MLflow registry "
        f"sqlite:///{home / 'mlflow.db'}",
    ]
    lines += _events_lines(host, home)
    lines += _endpoint_lines(host, home)
    return "\n".join(lines)


def _events_lines(host: DevHost, home: Path) -> list[str]:
    """Where tuneloop's lifecycle events go: the devhost's local Event Grid topic."""
    topic = host.topic
    if topic is None:
        return []
    configured = getattr(host.settings, "events_endpoint", None)
    to = "the app publishes here" if configured == topic.url else f"the app publishes to " \
        f"{configured} (configured)"
    out = [f"events       {topic.url} (Event Grid topic, CloudEvents; {to}); stored in "
           f"{home / 'events' / 'received.jsonl'}; `tuneloop events --follow`",
           f"             key: aeg-sas-key from {home / 'events' / 'topic.key'}"]
    if topic.webhook_url:
        out.append("             forwarded to TUNELOOP_WEBHOOK_URL")
    return out


def _endpoint_lines(host: DevHost, home: Path) -> list[str]:
    from shared.platform.local import LocalPlatform

    platform = host.platform
    if not isinstance(platform, LocalPlatform):
        return []
    endpoints = platform.list_endpoints()
    if not endpoints:
        return ["endpoints    none yet (a promoted run creates tl-<line>-<home key>)"]
    out = ["endpoints"]
    for ep in endpoints:
        traffic = ", ".join(f"{k}={v}%" for k, v in sorted(ep.traffic.items())) or "no traffic"
        key_file = home / "local" / "endpoints" / ep.name / "endpoint.json"
        out += [
            f"  {ep.name:<12} {ep.scoring_uri}  ({traffic}; {ep.provisioning_state})",
            f"    KEY=$(python -c \"import json;print(json.load(open('{key_file}'))['key'])\")",
            f"    curl -s {ep.scoring_uri} -H \"Authorization: Bearer $KEY\" "
            "-H 'Content-Type: application/json' -d '{\"input_data\": {\"input_string\": "
            "[[{\"role\": \"user\", \"content\": \"Hello\"}]], \"parameters\": "
            "{\"max_new_tokens\": 40}}}'",
        ]
    return out


def _interrupt(signum: int, frame: Any) -> None:
    del signum, frame
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from functions.devhost import DevHost
    from shared.settings import load_settings

    settings = load_settings().model_copy(update={"platform": "local"})
    host = DevHost(settings, poll_every=args.poll_every, reconcile_every=args.reconcile_every,
                   sweep_every=args.sweep_every)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        host.start()
        print(banner(host), flush=True)
        host.serve()
    except KeyboardInterrupt:
        print("\nstopping (endpoints, jobs and Azurite stop with the devhost; `tuneloop up` "
              "again restores the endpoints and retries the jobs it stopped)", file=sys.stderr)
    finally:  # a TuneloopError goes on to cli.main: one line, the exit code of its type
        host.stop()
    return 0
