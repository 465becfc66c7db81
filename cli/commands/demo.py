"""`tuneloop demo` — the loop on this machine: three drops, one exam, one line that learns.

Starts the devhost in the background (embedded local platform, Azurite of ``TUNELOOP_HOME``)
and tells issue 11's story on a new line (default ``support``) with the bundled data:

1. ``1-good`` (``shared/data/demo/support.jsonl``): trained, examined, promoted as v01;
2. ``2-bad`` (the same questions, final answers curt and wrong): trained on drops 1 + 2,
   examined beside v01 on the line's exam (a sample of drop 1's evaluation side), HELD;
3. ``3-more`` (new phrasings of the questions and new topics, good answers): trained on
   drops 1 + 3 (the held drop never joins the corpus), promoted with a better score: the
   line's second live version (model version 3: version 2 is the held candidate, kept
   registered so that ``tuneloop promote`` can still deploy it).

Each step prints the training, the exam table (the candidate's and the live model's scores)
and what the run trained on; the end prints the answer of the live endpoint, a ready-to-paste
``curl`` and the path of the line's exam chart (copied out of the reports container). The demo
sets, for its devhost only: the local platform, the exam gate, a cumulative corpus trained
from the live version, a 20 % evaluation side, and a fixed number of steps per training on
the tiny built-in model (:func:`story_settings`).

``--quick`` (or ``--dataset``) is the one-drop loop: drops ``support.jsonl`` (or the given
dataset) into ``incoming/demo/``, follows the run (validation, training steps and loss,
registration, deployment, smoke test, promotion) from the ledger and the job's log, then asks
the live endpoint a question over HTTP and prints the answer, the endpoint URL and a ``curl``.

Re-running is safe. The story needs a line with no runs: when ``support`` already has some,
it is told on ``support-2`` (then ``-3``, ...). In the quick loop the same dataset plans the
same run id, so the ingest records the drop as DUPLICATE and the demo talks to the endpoint
that run promoted (or follows it while it is in progress). A run whose job was lost because
the devhost stopped mid-training is retried by itself as ``<run>-r2`` when the devhost starts
again, so a re-run follows that attempt. When the run is no longer live (swept and RETIRED,
FAILED, or HELD), the quick loop drops a *variant*: the same conversations in another order,
which is a new dataset (new sha256) and therefore a new run.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shared

if TYPE_CHECKING:
    from functions.devhost import DevHost
    from shared.clients import Clients
    from shared.ledger import LedgerPort, RunRecord
    from shared.platform.local import LocalPlatform
    from shared.settings import Settings

__all__ = [
    "DEMO_DATASET",
    "STORY",
    "Chapter",
    "DemoError",
    "DemoUsageError",
    "OnDevHost",
    "add_arguments",
    "demo_settings",
    "exam_lines",
    "exam_table",
    "run",
    "story_line",
    "story_settings",
    "variant",
]

# Package data of ``shared`` (shipped in wheels; see pyproject's package-data).
DEMO_DATASET = Path(shared.__file__).resolve().parent / "data" / "demo" / "support.jsonl"
DEFAULT_QUESTION = "I forgot my password."
QUICK_LINE = "demo"
STORY_LINE = "support"
MAX_VARIANTS = 5
# The tiny model's own defaults (5 epochs) learn the style; 20 epochs (180 steps, ~25 s on
# one core) learn the answers too. The user's TUNELOOP_LINE_OVERRIDES for the line win.
TINY_MODEL_OVERRIDES: dict[str, Any] = {"num_train_epochs": 20}
_LIVE_WAIT = 180.0  # seconds for a restored endpoint to answer
# The story's trainings: a fixed number of steps, so that a run on a bigger corpus costs no
# more time (three trainings, deployments and exams: 138 s on two idle CPU cores). From the
# base model 160 steps give drop 1's exam chrF 60.6; from v01, on drops 1 + 3, 83.1. With
# start=base a fixed step count does not make 1 + 3 beat 1 (the same steps over more data).
STORY_MODEL_OVERRIDES: dict[str, Any] = {"max_steps": 160}
# A fifth of each drop on the evaluation side: drop 1 gives an exam of ~18 questions.
STORY_VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Chapter:
    """One drop of the story: its dataset name on the line, file, what it is, how it ends."""

    name: str
    file: str
    what: str
    expect: str  # the run's state the story expects: PROMOTED or HELD


STORY = (
    Chapter("1-good", "support.jsonl", "good answers", "PROMOTED"),
    Chapter("2-bad", "support-2-bad.jsonl",
            "the same questions answered badly (curt, wrong facts)", "HELD"),
    Chapter("3-more", "support-3-more.jsonl",
            "more good data: new phrasings of the questions, new topics", "PROMOTED"),
)


class DemoError(Exception):
    """The loop did not end with a live endpoint; the message says where and why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the one-drop loop: one dataset trained, deployed and promoted")
    parser.add_argument("--line", default=None,
                        help=f"the model line (default: {STORY_LINE}, or the next free "
                        f"{STORY_LINE}-N; with --quick: {QUICK_LINE})")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="with --quick (implied): a JSONL chat dataset to drop "
                        "(default: the bundled support dataset)")
    parser.add_argument("--question", default=DEFAULT_QUESTION,
                        help=f"what to ask the endpoint (default: {DEFAULT_QUESTION!r})")
    parser.add_argument("--keep-running", action="store_true",
                        help="keep the devhost and the endpoint serving until Ctrl-C")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="give up after this many seconds (default: 900)")
    parser.add_argument("--reconcile-every", type=float, default=2.0,
                        help="seconds between reconciler runs (default: 2)")


def variant(data: bytes, k: int) -> bytes:
    """Variant ``k`` of a dataset: its lines in another fixed order (k = 0: unchanged)."""
    if k == 0:
        return data
    lines = [line for line in data.splitlines() if line.strip()]
    random.Random(k).shuffle(lines)  # noqa: S311 -- an order, not a secret
    return b"\n".join(lines) + b"\n"


@dataclass
class _Follow:
    """What has been printed about a run already."""

    timeline: int = 0
    log_offset: int = 0
    validation_shown: bool = False
    data_shown: bool = False
    first_loss: float | None = None
    steps_every: int = 1


class OnDevHost:
    """Something that drives a started devhost (``host``): the demo and the e2e tests' loop."""

    host: DevHost

    @property
    def clients(self) -> Clients:
        return self.host.started_clients

    @property
    def platform(self) -> LocalPlatform:
        return self.host.local_platform


@dataclass
class Demo(OnDevHost):
    host: DevHost
    line: str
    timeout: float
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def _check_time(self, what: str) -> None:
        if time.monotonic() - self.started > self.timeout:
            raise DemoError(f"timed out after {self.timeout:.0f}s while {what}")

    # -- drop and classify ------------------------------------------------------------------
    def drop(self, data: bytes, name: str) -> tuple[str, str]:
        """Upload the dataset; the ingest outcome and the run it names."""
        from cli.commands.upload import upload_dataset
        from shared.errors import NotFoundError
        from shared.ingest import delivery_key

        incoming = self.clients.settings.incoming_container
        blob, etag = upload_dataset(self.clients, data, line=self.line, name=name)
        self.say(f"dropped {len(data):,} bytes as {incoming}/{blob}")
        key = delivery_key(incoming, blob, etag)
        while True:
            self._check_time(f"waiting for the ingest of {blob}")
            try:
                claim = self.clients.ledger.get_claim(key)
            except NotFoundError:  # not claimed yet
                claim = None
            if claim is not None and claim.fields.get("done"):
                return str(claim.fields.get("outcome")), str(claim.fields.get("run_id"))
            time.sleep(0.3)

    def show_validation(self, rec: RunRecord) -> None:
        from shared.storage import BlobRef

        ref = (rec.get("reports") or {}).get("json")
        if not ref:
            return
        container, _, name = str(ref).partition("/")
        try:
            doc = self.clients.storage.read_json(BlobRef(container, name))
        except Exception:
            return
        stats, split = doc.get("stats") or {}, doc.get("split") or {}
        verdict = "valid" if doc.get("valid") else "INVALID"
        text = (
            f"validation: {verdict}: {stats.get('examples')} examples "
            f"({stats.get('distinct_examples')} distinct), {len(doc.get('errors') or [])} errors, "
            f"{len(doc.get('warnings') or [])} warnings"
        )
        if split:  # this drop's own sides; the run's files (its corpus) are shown after
            train = split.get("drop_train_examples", split.get("train_examples"))
            held = split.get("drop_validation_examples", split.get("validation_examples"))
            text += f"; this drop splits {train} train / {held} evaluation"
        self.say(text)
        for issue in (doc.get("errors") or [])[:5]:
            self.say(f"  line {issue.get('line')}: {issue.get('code')}: {issue.get('message')}")

    # -- follow a run ---------------------------------------------------------------------
    def show_data(self, rec: RunRecord) -> None:
        """What the run trains on: its corpus's drops and where training starts."""
        from cli.commands.status import run_json

        data = run_json(rec)["data"]
        if not data:
            return
        drops = ", ".join(f"{d.get('name')} ({d.get('train_examples')})" for d in data["drops"])
        start = data.get("start_model") or "the base model"
        self.say(f"trains on {data.get('train_examples')} examples of drops {drops}, "
                 f"{data.get('eval_examples')} for evaluation; starts from {start}")

    def follow(self, run_id: str, *, held_ok: bool = False) -> RunRecord:
        """Print the run's progress until it is PROMOTED (or HELD, with ``held_ok``);
        DemoError when it stops short."""
        from shared.ledger import RunState

        seen = _Follow()
        while True:
            self._check_time(f"following run {run_id}")
            rec = self.clients.ledger.get(self.line, run_id)
            if not seen.validation_shown and rec.get("reports"):
                self.show_validation(rec)
                seen.validation_shown = True
            if not seen.data_shown and rec.get("data"):
                self.show_data(rec)
                seen.data_shown = True
            self._tail_job(run_id, seen)  # before the timeline: training ends before TRAINED
            for event in rec.timeline[seen.timeline:]:
                note = f": {event['note']}" if event.get("note") else ""
                self.say(f"{event['state']}{note}")
            seen.timeline = len(rec.timeline)
            if rec.state == RunState.PROMOTED or (held_ok and rec.state == RunState.HELD):
                return rec
            if rec.state in (RunState.HELD, RunState.FAILED, RunState.REJECTED,
                             RunState.RETIRED):
                raise DemoError(f"run {run_id} ended {rec.state.value}: "
                                f"{rec.reason or 'no reason recorded'}")
            time.sleep(0.5)

    def _tail_job(self, run_id: str, seen: _Follow) -> None:
        path = self.platform.job_log(run_id)
        try:
            with open(path, encoding="utf-8") as fh:
                fh.seek(seen.log_offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        complete, _, _ = chunk.rpartition("\n")
        if not complete:
            return
        seen.log_offset += len(complete.encode()) + 1
        for raw in complete.splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            self._show_job_entry(entry, seen)

    def _show_job_entry(self, e: dict[str, Any], seen: _Follow) -> None:
        event = e.get("event")
        if event == "start":
            total = int(e.get("total_steps") or 1)
            seen.steps_every = max(1, -(-total // 12))
            base = Path(str(e.get("base_model", "?"))).name
            self.say(f"training: {total} steps on {e.get('train_examples')} examples "
                     f"({e.get('validation_examples')} for validation), base model {base}, "
                     f"LoRA {'on' if e.get('lora') else 'off'}")
        elif event == "completed":
            self.say(
                f"trained: {int(e.get('steps', 0))} steps, train loss "
                f"{_num(e.get('first_train_loss'))} -> {_num(e.get('train_loss'))}, eval loss "
                f"{_num(e.get('eval_loss'))}, {_num(e.get('steps_per_second'))} steps/s"
            )
        elif event == "failed":
            self.say(f"training failed: {e.get('error')}")
        elif "step" in e:
            step, total = int(e["step"]), int(e.get("total_steps") or 0)
            if seen.first_loss is None:
                seen.first_loss = float(e.get("loss") or 0.0)
            if step % seen.steps_every == 0 or step == total or step == 1:
                eval_text = f", eval {_num(e['eval_loss'])}" if e.get("eval_loss") else ""
                self.say(f"  step {step:>3}/{total}  loss {_num(e.get('loss'))}{eval_text}")

    # -- the live endpoint -------------------------------------------------------------------
    def endpoint_url(self, rec: RunRecord) -> tuple[str, str]:
        """(scoring URI, key) of the run's endpoint as the platform knows it now."""
        endpoint = rec.release.endpoint
        if not endpoint:
            raise DemoError(f"run {rec.run_id} is {rec.state.value} but has no endpoint "
                            "recorded in the ledger (its row was changed by hand): run "
                            "`tuneloop demo` again (it trains a variant of the dataset)")
        info = self.platform.get_endpoint(endpoint)
        return str(info.scoring_uri), self.platform.endpoint_key(endpoint)

    def ask(self, url: str, key: str, question: str) -> str:
        """POST a chat request to ``/score`` with the key, retrying while servers start."""
        body = chat_request(question)
        deadline = time.monotonic() + _LIVE_WAIT
        while True:
            try:
                status, answer = post_json(url, body, key)
            except OSError as exc:
                status, answer = 0, {"error": str(exc)}
            if status == 200:
                return str(answer.get("output", answer)) if isinstance(answer, dict) else str(
                    answer)
            if time.monotonic() > deadline:
                raise DemoError(f"the endpoint {url} did not answer: {status} {answer}")
            time.sleep(1.0)


def chat_request(question: str) -> dict[str, Any]:
    return {
        "input_data": {
            "input_string": [[{"role": "user", "content": question}]],
            "parameters": {"do_sample": False, "max_new_tokens": 80},
        }
    }


def post_json(url: str, body: Any, key: str | None) -> tuple[int, Any]:
    """POST JSON; (status, parsed body). Raises OSError when nothing answers."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(  # noqa: S310 -- a loopback http URL we built
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return int(exc.code), json.loads(raw)
        except ValueError:
            return int(exc.code), raw.decode(errors="replace")


def curl_command(url: str, key: str, question: str) -> str:
    body = json.dumps(chat_request(question))
    return (
        f"curl -s {shlex.quote(url)} -H 'Content-Type: application/json' "
        f"-H {shlex.quote('Authorization: Bearer ' + key)} -d {shlex.quote(body)}"
    )


def _num(value: Any) -> str:
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return "?"


def _live_run(demo: Demo, data: bytes, stem: str) -> RunRecord:
    """Drop the dataset (or a variant) until a run is, or becomes, live on the line."""
    from shared.ledger import TERMINAL, RunState

    for k in range(MAX_VARIANTS + 1):
        name = stem if k == 0 else f"{stem}-variant{k}"
        outcome, run_id = demo.drop(variant(data, k), name)
        rec = demo.clients.ledger.get(demo.line, run_id)
        if outcome == "submitted":
            demo.say(f"accepted as run {run_id}; fine-tune job submitted")
            return demo.follow(run_id)
        if outcome == "rejected":
            demo.show_validation(rec)
            raise DemoError(f"the dataset was rejected: {rec.reason or 'see the report'}")
        if outcome != "duplicate":
            raise DemoError(f"ingest ended {outcome}: {rec.reason or 'no reason recorded'}")
        original = demo.clients.ledger.get(demo.line, str(rec.get("duplicate_of")))
        demo.say(f"DUPLICATE: the same dataset and plan as run {original.run_id} "
                 f"(now {original.state.value}); nothing new to train")
        if original.state == RunState.PROMOTED and _endpoint_exists(demo, original):
            demo.say(f"talking to the endpoint it promoted: {original.release.endpoint}/"
                     f"{original.release.deployment}")
            return original
        if original.state not in TERMINAL and original.state != RunState.HELD:
            demo.say("that run is still in progress; following it")
            return demo.follow(original.run_id)
        demo.say(f"run {original.run_id} is not live ({original.reason or original.state.value});"
                 " dropping a variant (same conversations, another order: a new run)")
    raise DemoError(f"no live run after {MAX_VARIANTS} dataset variants")


def _endpoint_exists(demo: Demo, rec: RunRecord) -> bool:
    from shared.errors import NotFoundError

    if not rec.release.endpoint:
        return False
    try:
        demo.platform.get_endpoint(rec.release.endpoint)
    except NotFoundError:
        return False
    return True


def _wait_for_interrupt(demo: Demo) -> None:
    demo.say("serving until Ctrl-C (the devhost keeps running: drop more datasets any time)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()


def demo_settings(settings: Settings, line: str) -> Settings:
    """The local platform; on the tiny built-in model, enough epochs to learn the answers."""
    update: dict[str, Any] = {"platform": "local"}
    if not settings.local_base_model:
        ours = {**TINY_MODEL_OVERRIDES, **settings.line_overrides.get(line, {})}
        update["line_overrides"] = {**settings.line_overrides, line: ours}
    return settings.model_copy(update=update)


def story_settings(settings: Settings, line: str) -> Settings:
    """The story's devhost: the local platform, the exam gate, a cumulative corpus trained
    from the live version, a fifth of each drop on the evaluation side (the exam's pool) and,
    on the tiny built-in model, a fixed number of steps per training. The user's own
    TUNELOOP_LINE_OVERRIDES and TUNELOOP_LINE_POLICY entries for the line win."""
    update: dict[str, Any] = {
        "platform": "local",
        "promotion": "exam",
        "validation_fraction": STORY_VALIDATION_FRACTION,
        "line_policy": {**settings.line_policy,
                        line: {"data": "cumulative", "start": "live",
                               **settings.line_policy.get(line, {})}},
    }
    if not settings.local_base_model:
        ours = {**STORY_MODEL_OVERRIDES, **settings.line_overrides.get(line, {})}
        update["line_overrides"] = {**settings.line_overrides, line: ours}
    return settings.model_copy(update=update)


def _score(value: Any) -> str:
    try:
        return f"{float(value):.1f}"
    except (TypeError, ValueError):
        return "-"


def exam_lines(exam: Mapping[str, Any] | None) -> list[str]:
    """One run's exam as printed after its step: both models' scores, the decision, and the
    new drop's own evaluation side (reported, never deciding)."""
    if not exam:
        return ["no exam recorded for this run"]
    scores = exam.get("scores") or {}
    metric = str(exam.get("metric") or "chrf")
    source = "golden set" if exam.get("source") == "golden" else (
        "sample of the line's trusted evaluation side")
    out = [f"exam: {exam.get('examples')} questions ({source}), "
           f"{exam.get('calls', '?')} endpoint calls",
           f"  {'':<26}{'chrF':>7}{'BLEU':>7}{'exact':>7}"]
    for who, label in (("candidate", "candidate (this run)"), ("champion", "champion (live)")):
        row = scores.get(who) or ({metric: exam.get(who)} if exam.get(who) is not None else None)
        if row is None:
            out.append(f"  {label:<26}{'(none: the first version of the line)':>21}")
            continue
        cells = "".join(f"{_score(row.get(k)):>7}" for k in ("chrf", "bleu", "exact"))
        out.append(f"  {label:<26}{cells}")
    decision = str(exam.get("decision") or "?").upper()
    champion = exam.get("champion")
    versus = (f"{metric} {_score(exam.get('candidate'))} vs {_score(champion)}, tolerance "
              f"{_score(exam.get('tolerance') or 0)}" if champion is not None
              else f"{metric} {_score(exam.get('candidate'))}, nothing to beat")
    out.append(f"  decision: {decision} ({versus})")
    own = exam.get("own_eval")
    if isinstance(own, Mapping) and own.get("examples"):
        out.append(f"  the new drop's own evaluation side, never deciding: chrF "
                   f"{_score(own.get('chrf'))} on {own.get('examples')} examples")
    return out


def exam_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The story so far, one row per drop: its run's state and version, its exam score beside
    the live model's, and the drops it trained on. ``rows``: ``{"drop": name, **run_json}``."""
    header = ("drop", "state", "version", "exam", "live", "trained on")
    table = [header]
    for row in rows:
        exam = row.get("exam") or {}
        data = row.get("data") or {}
        drops = " + ".join(str(d.get("name")) for d in data.get("drops") or ())
        version = str((row.get("release") or {}).get("model_version")
                      or row.get("model_version") or "")
        table.append((
            str(row.get("drop")), str(row.get("state")),
            f"v{int(version):02d}" if version.isdigit() else "-",
            _score(exam.get("candidate")), _score(exam.get("champion")), drops or "-",
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     .rstrip() for r in table)


def story_line(ledger: LedgerPort, wanted: str | None) -> str:
    """The line the story is told on: ``wanted`` if it has no run yet (else a usage error),
    or the first of ``support``, ``support-2``, ... that has none."""
    from shared.naming import is_valid_line

    if wanted is not None:
        if not is_valid_line(wanted):
            raise DemoUsageError(f"--line {wanted!r} is not a valid line name (letters, digits, "
                              "'.', '_', '-'; up to 63 characters)")
        if ledger.list(line=wanted):
            raise DemoUsageError(f"line {wanted!r} already has runs and the story needs a new "
                              "line: pass another --line, or leave it out to use the next free "
                              f"{STORY_LINE}-N")
        return wanted
    for n in range(1, 1000):
        line = STORY_LINE if n == 1 else f"{STORY_LINE}-{n}"
        if not ledger.list(line=line):
            return line
    raise DemoUsageError(f"no free line among {STORY_LINE}-1..999: pass --line")


class DemoUsageError(Exception):
    """A demo that cannot start as asked (exit 2)."""


def _copy_chart(demo: Demo, run_id: str, home: Path) -> tuple[str, Path | None]:
    """Copy the line's exam chart out of the reports container: (blob, local path or None)."""
    from shared.release.exam_report import exam_report_refs

    ref = exam_report_refs(demo.clients.settings, demo.line, run_id).history_chart
    try:
        data = b"".join(demo.clients.storage.read_chunks(ref))
    except Exception:
        return str(ref), None
    target = home / "demo" / f"{demo.line}-history.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return str(ref), target


def _tell_story(demo: Demo, home: Path) -> RunRecord:
    """The three drops; the last promoted run. DemoError when a step ends otherwise."""
    from cli.commands.status import run_json

    rows: list[dict[str, Any]] = []
    live: RunRecord | None = None
    chart: tuple[str, Path | None] = ("", None)
    for i, chapter in enumerate(STORY, start=1):
        print(flush=True)
        demo.say(f"drop {i} of {len(STORY)}: {chapter.name}: {chapter.what}")
        data = (DEMO_DATASET.parent / chapter.file).read_bytes()
        outcome, run_id = demo.drop(data, chapter.name)
        rec = demo.clients.ledger.get(demo.line, run_id)
        if outcome != "submitted":
            demo.show_validation(rec)
            raise DemoError(f"drop {chapter.name} ended {outcome} at the ingest: "
                            f"{rec.reason or 'no reason recorded'}")
        demo.say(f"accepted as run {run_id}; fine-tune job submitted")
        rec = demo.follow(run_id, held_ok=True)
        doc = run_json(rec)
        rows.append({"drop": chapter.name, **doc})
        print(flush=True)
        for text in exam_lines(doc.get("exam")):
            print(f"  {text}")
        report = (doc.get("exam") or {}).get("report")
        if report:
            print(f"  report: {report} (and .md beside it)")
        chart = _copy_chart(demo, run_id, home)
        print(f"\n  the line so far ({demo.line}):\n{exam_table(rows)}\n", flush=True)
        if rec.state.value != chapter.expect:
            raise DemoError(f"run {run_id} of drop {chapter.name} ended {rec.state.value}, "
                            f"where the story expects {chapter.expect}: "
                            f"{rec.reason or 'no reason recorded'}")
        if rec.state.value == "PROMOTED":
            live = rec
    blob, local = chart
    if local is not None:
        print(f"exam chart of the line: {local} (blob {blob})")
    elif blob:
        print(f"exam chart of the line: blob {blob} (could not be copied out)")
    assert live is not None  # the story's last chapter is promoted (checked above)
    return live


def _interrupt(signum: int, frame: Any) -> None:
    del signum, frame
    raise KeyboardInterrupt


def _demo(settings: Settings, args: argparse.Namespace, line: str, started: float) -> Demo:
    from functions.devhost import DevHost

    # One torch thread per child: on a busy 2-core machine two OpenMP threads per process
    # made training 10x slower (45 LoRA steps: 6 s with 1 thread, 58 s with 2).
    host = DevHost(settings, poll_every=0.5, reconcile_every=args.reconcile_every, threads=1)
    return Demo(host=host, line=line, timeout=args.timeout, started=started)


def _start(demo: Demo) -> None:
    demo.say(f"starting the devhost (home {Path(demo.host.settings.home).resolve()})")
    demo.host.start_background()
    demo.say(f"storage: {demo.host.blob_endpoint} (Azurite); local platform on 127.0.0.1")


def _serve(demo: Demo, rec: RunRecord, args: argparse.Namespace) -> None:
    """Ask the live endpoint, print how to call it, and serve on with --keep-running."""
    url, key = demo.endpoint_url(rec)
    demo.say(f"asking the endpoint: {args.question!r}")
    answer = demo.ask(url, key, args.question)
    print(f"\nanswer: {answer!r}\n")
    r = rec.release
    print(f"endpoint: {r.endpoint} (deployment {r.deployment}, model "
          f"{r.model_name}:{r.model_version})")
    print(f"scoring URL: {url}")
    print(f"try it:\n  {curl_command(url, key, args.question)}\n")
    if args.keep_running:
        _wait_for_interrupt(demo)
    else:
        print("stopping the devhost and the endpoint; `tuneloop up` serves it again")


def run(args: argparse.Namespace) -> int:
    from shared.settings import load_settings

    quick = bool(args.quick or args.dataset is not None)
    dataset: Path = args.dataset or DEMO_DATASET
    if quick and not dataset.is_file():
        print(f"error: dataset {dataset} not found", file=sys.stderr)
        return 2
    if not quick:
        missing = [c.file for c in STORY if not (DEMO_DATASET.parent / c.file).is_file()]
        if missing:
            print(f"error: the demo's data {', '.join(missing)} is missing from "
                  f"{DEMO_DATASET.parent}: reinstall tuneloop", file=sys.stderr)
            return 2
    base = load_settings()
    line = args.line or (QUICK_LINE if quick else STORY_LINE)
    settings = demo_settings(base, line) if quick else story_settings(base, line)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    demo = _demo(settings, args, line, started)
    code = 0
    try:
        _start(demo)
        if quick:
            rec = _live_run(demo, dataset.read_bytes(), dataset.stem)
        else:
            free = story_line(demo.clients.ledger, args.line)
            if free != line:  # the line's settings are the devhost's: start one for it
                demo.say(f"line {line} already has runs; the story is told on the new line "
                         f"{free}")
                demo.host.stop()
                line, settings = free, story_settings(base, free)
                demo = _demo(settings, args, line, started)
                _start(demo)
            demo.say(f"line {line}: cumulative corpus, trained from the live version, "
                     f"promotion by exam ({settings.gate_metric}, tolerance "
                     f"{settings.gate_tolerance:g})")
            rec = _tell_story(demo, Path(settings.home).resolve())
        _serve(demo, rec, args)
    except DemoUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        print(f"details: `tuneloop status --line {line}`, logs under "
              f"{Path(settings.home).resolve()}/local/", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    finally:
        demo.host.stop()
        print(f"total wall time: {time.monotonic() - started:.1f}s", flush=True)
    return code
