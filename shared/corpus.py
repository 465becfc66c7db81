"""The line's corpus (issue 11): which drops a run trains on, and the run's files built from them.

Data model:

* **Per-drop sides.** Each accepted drop is split once (:mod:`shared.dataset.split`: the side
  follows the prompt) into ``<prepared>/_drops/<line key>/<sha256>/train.jsonl`` and
  ``.../eval.jsonl`` (:func:`drop_refs`): the corpus's stored copies of the drop. A run's own
  files stay ``<prepared>/<run>/train.jsonl`` and ``<prepared>/<run>/validation.jsonl``.
* **The corpus of a new run** (:func:`resolve_corpus`): with ``data=cumulative`` (default) the
  drops behind the line's live run (its line corpus, see below: the live run is the latest
  PROMOTED one), minus retracted drops, plus the new drop last; with ``data=latest`` the new
  drop only.
  A drop whose run was HELD or FAILED never became live, so it never joins a later corpus. A
  new drop already in the corpus is a duplicate of the run that brought it.
* **The run's files** (:func:`assemble`): the train sides of the corpus drops, oldest first,
  each example once (an example seen in an earlier drop is counted as a cross-drop duplicate,
  not repeated), minus examples whose prompt is in the line's golden exam (with a warning),
  optionally capped (newest drops whole, older ones sampled deterministically by digest); the
  validation file is the eval sides, deduplicated. Streamed: memory is a set of 16-byte
  digests (plus one 8-byte key per example of the sampled drops when a cap applies).
* **RunData** (:class:`RunData`): what a run trained on, recorded on the run as ``data`` at
  ACCEPTED and shown in its reports and ``tuneloop status --json``. A drop list longer than
  :data:`INLINE_CHARS` is kept in a manifest blob ``<prepared>/<run>/data.json`` and the column
  keeps the summary and the manifest's path (:func:`data_column`); readers that need the list
  pass the storage (:meth:`RunData.from_record`, :func:`hydrated`).
* **The line's corpus** (:func:`carry_line_corpus`, :func:`line_drops`): recorded on a run when
  it is promoted (column ``line_corpus``): its own drops + the drops of the previous live run's
  line corpus it did not train on (minus retracted ones). A drop promoted with another run
  while this one was in flight stays in the line's corpus. New corpora, the sampled exam and
  retrains start from the live run's line corpus (its ``data.drops`` for rows written before).
* **Retractions** (:func:`record_retraction`, :func:`retracted`): one ledger claim row per
  line (``retracted-<line>``) holding the retracted drops, ETag-guarded like the version
  counter: reading them is one point read per new drop.
* **The golden exam** (:func:`read_golden_exam`): ``incoming/<line>/_exam/*.jsonl``; never a
  run (ingest validates and reports it and leaves it in place).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.dataset import (
    SplitInputError,
    _json,
    example_digest,
    prompt_digest,
    prompt_of,
    split_to,
)
from shared.errors import LedgerConflictError, NotFoundError
from shared.ledger import LedgerPort, RunRecord, RunState
from shared.naming import line_key
from shared.platform.port import ModelVersionInfo
from shared.storage import BlobRef

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Storage

__all__ = [
    "DROPS_DIR",
    "EXAM_DIR",
    "INLINE_CHARS",
    "Capped",
    "Corpus",
    "DropData",
    "ExamExample",
    "GoldenExam",
    "RunData",
    "assemble",
    "build_run_files",
    "carry_line_corpus",
    "corpus_sha256",
    "data_column",
    "drop_refs",
    "drops_of",
    "exam_example",
    "hydrated",
    "is_exam_name",
    "jsonl_lines",
    "line_drops",
    "live_run",
    "promoted_at",
    "read_golden_exam",
    "record_retraction",
    "resolve_corpus",
    "retracted",
    "retractions",
    "retrain_corpus",
]

log = logging.getLogger(__name__)

DROPS_DIR = "_drops"  # in the prepared container: the corpus's per-drop sides
EXAM_DIR = "_exam"  # in the incoming container, under the line: the golden exam
_JSONL = "application/jsonl"
_PREFIX = b'{"messages":'
_SUFFIX = b"}"

# A Table property is at most 64 KiB and a string is UTF-16 (2 bytes a character: 32 Ki
# characters); an entity is at most 1 MiB (https://learn.microsoft.com/rest/api/storageservices/
# understanding-the-table-service-data-model#property-types). Past it the write is refused (400
# PropertyValueTooLarge, on Azurite too: measured at ~178 drops of ~184 characters), which
# failed every new run of a long-lived line. A drop list longer than this many characters
# (about 90 drops) goes to a manifest blob instead; half the limit leaves room for the rest of
# the column, and the line corpus has its own column with the same bound.
INLINE_CHARS = 16_384
DATA_MANIFEST = "data.json"  # <prepared>/<run>/data.json: the run's data.drops, when long
LINE_MANIFEST = "line.json"  # <prepared>/<run>/line.json: the run's line corpus, when long

Mode = Literal["cumulative", "latest"]
Start = Literal["base", "live"]


def drop_refs(settings: Settings, line: str, sha256: str) -> tuple[BlobRef, BlobRef]:
    """(train side, eval side) of the drop ``sha256`` of ``line``."""
    base = f"{DROPS_DIR}/{line_key(line)}/{sha256}"
    container = settings.prepared_container
    return BlobRef(container, f"{base}/train.jsonl"), BlobRef(container, f"{base}/eval.jsonl")


def is_exam_name(name: str) -> bool:
    """Whether a dataset name (``<line>/<name>.jsonl`` without the line) is a golden exam file."""
    return name.startswith(f"{EXAM_DIR}/")


def corpus_sha256(sha256s: Iterable[str]) -> str:
    """The identity of a set of drops: sha256 of their sorted sha256s, one per line."""
    return hashlib.sha256("\n".join(sorted(set(sha256s))).encode()).hexdigest()


# -- what a run trained on --------------------------------------------------------------------
@dataclass(frozen=True)
class DropData:
    """One drop of a run's corpus; counts are what it contributed to that run's files."""

    name: str
    sha256: str
    run_id: str
    train_examples: int = 0
    eval_examples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "run_id": self.run_id,
                "train_examples": self.train_examples, "eval_examples": self.eval_examples}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DropData:
        return cls(str(data.get("name") or ""), str(data["sha256"]), str(data.get("run_id") or ""),
                   int(data.get("train_examples") or 0), int(data.get("eval_examples") or 0))


@dataclass(frozen=True)
class Capped:
    """The cap's effect: at most ``cap`` training examples; ``dropped`` left out by it."""

    cap: int
    dropped: int


@dataclass(frozen=True)
class RunData:
    """The ``data`` column of a run (issue 11): mode, start, drops and counts."""

    mode: Mode
    start: Start
    start_model: str
    drops: tuple[DropData, ...]
    train_examples: int = 0
    eval_examples: int = 0
    cross_drop_duplicates: int = 0
    exam_excluded: int = 0
    capped: Capped | None = None
    corpus_sha256: str = ""

    @property
    def sha256s(self) -> list[str]:
        return [d.sha256 for d in self.drops]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "start": self.start, "start_model": self.start_model,
            "drops": [d.to_dict() for d in self.drops],
            "train_examples": self.train_examples, "eval_examples": self.eval_examples,
            "cross_drop_duplicates": self.cross_drop_duplicates,
            "exam_excluded": self.exam_excluded,
            "capped": None if self.capped is None else
            {"cap": self.capped.cap, "dropped": self.capped.dropped},
            "corpus_sha256": self.corpus_sha256,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunData:
        capped = data.get("capped")
        mode: Mode = "latest" if data.get("mode") == "latest" else "cumulative"
        start: Start = "live" if data.get("start") == "live" else "base"
        return cls(
            mode=mode, start=start, start_model=str(data.get("start_model") or ""),
            drops=tuple(DropData.from_dict(d) for d in data.get("drops") or ()),
            train_examples=int(data.get("train_examples") or 0),
            eval_examples=int(data.get("eval_examples") or 0),
            cross_drop_duplicates=int(data.get("cross_drop_duplicates") or 0),
            exam_excluded=int(data.get("exam_excluded") or 0),
            capped=None if not capped else Capped(int(capped["cap"]), int(capped["dropped"])),
            corpus_sha256=str(data.get("corpus_sha256") or ""),
        )

    @classmethod
    def from_record(cls, rec: RunRecord, storage: Storage | None = None) -> RunData | None:
        """The run's ``data``, or None for a run recorded before corpora (or never accepted).

        A drop list kept in a manifest blob (:func:`data_column`) is read from ``storage``;
        without one such a row raises ValueError (never a silently empty list)."""
        data = _column(rec, "data")
        if data is None:
            return None
        if data.get("drops_manifest") and not data.get("drops"):
            if storage is None:
                raise ValueError(f"run {rec.run_id}: its drops are in the manifest "
                                 f"{data['drops_manifest']}; read it with the storage")
            data = {**data, "drops": _read_manifest(storage, str(data["drops_manifest"]))}
        return cls.from_dict(data) if data.get("drops") else None


def _column(rec: RunRecord, key: str) -> dict[str, Any] | None:
    """A JSON column of the run as a dict (None when absent or not a JSON object)."""
    value = rec.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return dict(value) if isinstance(value, Mapping) else None


def _manifest_ref(settings: Settings, run_id: str, leaf: str) -> BlobRef:
    return BlobRef(settings.prepared_container, f"{run_id}/{leaf}")


def _read_manifest(storage: Storage, path: str) -> list[dict[str, Any]]:
    """The drop list of a manifest ``<container>/<name>`` (:func:`data_column`)."""
    container, _, name = path.partition("/")
    try:
        doc = storage.read_json(BlobRef(container, name))
    except NotFoundError as exc:
        raise NotFoundError(f"the drop list {path} of a run is missing",
                            hint="it is written before its run's ledger row; restore it "
                            "from a backup or retract the line's drops") from exc
    drops = doc.get("drops") if isinstance(doc, Mapping) else None
    return [dict(d) for d in drops or () if isinstance(d, Mapping) and d.get("sha256")]


def _compact(drops: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(drops), separators=(",", ":"), sort_keys=True)


def _spill(storage: Storage, settings: Settings, run_id: str, leaf: str,
           drops: list[dict[str, Any]]) -> str | None:
    """Write ``drops`` to the manifest ``<prepared>/<run>/<leaf>`` when they are too long for
    a column (:data:`INLINE_CHARS`); its ``<container>/<name>``, or None to keep them inline.
    The content is a function of the list, so a replay rewrites the same blob."""
    if len(_compact(drops)) <= INLINE_CHARS:
        return None
    ref = _manifest_ref(settings, run_id, leaf)
    storage.write_json(ref, {"run_id": run_id, "drops": drops})
    return f"{ref.container}/{ref.name}"


def data_column(storage: Storage, settings: Settings, run_id: str, data: RunData
                ) -> dict[str, Any]:
    """The ``data`` column to record for ``data``: :meth:`RunData.to_dict`, or, for a drop
    list too long for a Table property, the summary with ``drops_manifest`` (the list, written
    here first: a crash before the ledger write leaves a blob the replay rewrites) and
    ``drop_count`` instead of ``drops``. ``data.drops`` stays exactly what the run trained on;
    readers get it back with :meth:`RunData.from_record` (``storage``) or :func:`hydrated`."""
    column = data.to_dict()
    path = _spill(storage, settings, run_id, DATA_MANIFEST, column["drops"])
    if path is None:
        return column
    del column["drops"]
    return {**column, "drops_manifest": path, "drop_count": len(data.drops)}


def drops_in_manifest(rec: RunRecord) -> bool:
    """Whether ``rec``'s drop list is in its manifest blob (:func:`hydrated` reads storage)."""
    data = _column(rec, "data")
    return data is not None and not data.get("drops") and bool(data.get("drops_manifest"))


def hydrated(storage: Storage, rec: RunRecord) -> RunRecord:
    """A copy of ``rec`` whose ``data`` holds its whole drop list (read from its manifest), for
    readers of raw records (status, retract). Never write it back: the list is why it left
    the column. ``rec`` itself when there is nothing to read."""
    data = _column(rec, "data")
    if data is None or not drops_in_manifest(rec):
        return rec
    full = {**data, "drops": _read_manifest(storage, str(data["drops_manifest"]))}
    return replace(rec, fields={**rec.fields, "data": full})


def _line_entry(d: DropData) -> dict[str, Any]:
    return {"name": d.name, "sha256": d.sha256, "run_id": d.run_id}


def line_drops(storage: Storage | None, rec: RunRecord) -> tuple[DropData, ...]:
    """The line's corpus as of ``rec``'s promotion (:func:`carry_line_corpus`), oldest first;
    for a run promoted before it was recorded (or never promoted): its own ``data.drops``.
    Retracted drops are not filtered here (a retraction may come after the promotion)."""
    line = _column(rec, "line_corpus")
    if line is None or line.get("same"):
        return drops_of(rec, storage)
    if line.get("manifest") and "drops" not in line:
        if storage is None:
            raise ValueError(f"run {rec.run_id}: its line corpus is in the manifest "
                             f"{line['manifest']}; read it with the storage")
        entries: Sequence[Mapping[str, Any]] = _read_manifest(storage, str(line["manifest"]))
    else:
        entries = [d for d in line.get("drops") or () if isinstance(d, Mapping)]
    return tuple(DropData.from_dict(d) for d in entries if d.get("sha256"))


def carry_line_corpus(storage: Storage, settings: Settings, ledger: LedgerPort,
                      run: RunRecord) -> dict[str, Any] | None:
    """The ``line_corpus`` column to record on ``run`` in the write that makes it PROMOTED.

    = the run's drops ∪ (the previous live run's line corpus − the run's drops − retracted),
    oldest first: the previous line corpus in its order (retracted drops left out), then the
    run's drops it did not hold, in the run's order. So a drop whose run was promoted while
    this one was in flight (its corpus resolved before that promotion) stays in the line's
    corpus. Cost: one point read of the previous live run (``release.previous_run``, recorded
    before traffic moved), one of the retractions (+ a manifest read for a long list): O(1) in
    the line's history. ``latest`` mode carries nothing (the line's data is its latest drop).
    None for a run recorded before corpora (readers fall back to its drops). A replay (a
    promotion cut short) computes it again from the same rows; a retraction recorded in
    between is left out, one recorded after is filtered by every reader."""
    data = RunData.from_record(run, storage)
    if data is None:
        return None
    own = list(data.drops)
    previous = run.release.previous_run
    prior: tuple[DropData, ...] = ()
    if previous and previous != run.run_id and data.mode == "cumulative":
        try:
            prior = line_drops(storage, ledger.get(run.line, previous))
        except NotFoundError:
            prior = ()
    own_by_sha = {d.sha256: d for d in own}
    gone = retracted(ledger, run.line) if prior else set()
    merged = [own_by_sha.get(d.sha256, d) for d in prior
              if d.sha256 in own_by_sha or d.sha256 not in gone]
    held = {d.sha256 for d in merged}
    merged += [d for d in own if d.sha256 not in held]
    column: dict[str, Any] = {"of": previous, "count": len(merged),
                              "corpus_sha256": corpus_sha256(d.sha256 for d in merged)}
    if [d.sha256 for d in merged] == [d.sha256 for d in own]:
        return {**column, "same": True}  # the usual case: the run trained on the line's corpus
    entries = [_line_entry(d) for d in merged]
    path = _spill(storage, settings, run.run_id, LINE_MANIFEST, entries)
    return {**column, "manifest": path} if path else {**column, "drops": entries}


# -- the corpus of a run ----------------------------------------------------------------------
@dataclass(frozen=True)
class Corpus:
    """The drops a run is to train on (oldest first; a new drop last, its ``run_id`` empty
    until planned) and where it starts."""

    line: str
    mode: Mode
    start: Start
    drops: tuple[DropData, ...]
    cap: int | None = None
    start_model: ModelVersionInfo | None = None
    live_run: str | None = None
    duplicate_of: str | None = None  # the run that brought the new drop into the corpus
    new_drop_retracted: bool = False
    legacy_live: bool = False  # the live run predates corpora: its data is not in the corpus

    @property
    def sha256s(self) -> list[str]:
        return [d.sha256 for d in self.drops]

    @property
    def sha256(self) -> str:
        return corpus_sha256(self.sha256s)

    def with_run(self, run_id: str) -> Corpus:
        """The corpus with the new drop (the last, if it has no run yet) owned by ``run_id``."""
        drops = tuple(replace(d, run_id=d.run_id or run_id) for d in self.drops)
        return replace(self, drops=drops)

    @classmethod
    def from_run_data(cls, line: str, data: RunData, start_model: ModelVersionInfo | None,
                      cap: int | None) -> Corpus:
        """The corpus a run recorded (a resumed ingest keeps what it accepted)."""
        drops = tuple(DropData(d.name, d.sha256, d.run_id) for d in data.drops)
        return cls(line, data.mode, data.start, drops, cap, start_model)


def promoted_at(run: RunRecord) -> datetime:
    """When the run was promoted (its last update for rows that did not record it)."""
    when = run.release.promoted_at
    if when is None:
        try:
            when = datetime.fromisoformat(str(run.get("updated")))
        except ValueError:
            when = datetime.min
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def live_run(
    ledger: LedgerPort, line: str, *, other_than: str | None = None
) -> RunRecord | None:
    """The line's live run: its latest PROMOTED run (by :func:`promoted_at`), leaving out
    ``other_than`` (a run being promoted: the live run it replaces)."""
    promoted = [
        r for r in ledger.list(line=line, states=[RunState.PROMOTED]) if r.run_id != other_than
    ]
    promoted.sort(key=promoted_at)
    return promoted[-1] if promoted else None


def _live_model(live: RunRecord) -> ModelVersionInfo | None:
    r = live.release
    if r.model_name and r.model_version:
        return ModelVersionInfo(r.model_name, r.model_version,
                                r.model_id or f"{r.model_name}:{r.model_version}")
    return None


def _live_drops(ledger: LedgerPort, settings: Settings, line: str, storage: Storage | None
                ) -> tuple[RunRecord | None, list[DropData], set[str], bool]:
    """(live run, its line corpus minus retracted drops, retracted sha256s, legacy live run)."""
    live = live_run(ledger, line)
    gone = retracted(ledger, line)
    if live is None:
        return None, [], gone, False
    line_corpus = line_drops(storage, live)
    if not line_corpus:
        log.warning("line %s: live run %s predates corpora (no data recorded); the corpus "
                    "starts from the new drop", line, live.run_id)
        return live, [], gone, True
    drops = [DropData(d.name, d.sha256, d.run_id) for d in line_corpus if d.sha256 not in gone]
    return live, drops, gone, False


def resolve_corpus(
    ledger: LedgerPort, settings: Settings, line: str, *, sha256: str, name: str,
    storage: Storage | None = None,
) -> Corpus:
    """The corpus of a run for the new drop ``sha256`` (named ``name``) of ``line``, by the
    line's policy (:meth:`Settings.policy_for`): the live run's line corpus
    (:func:`line_drops`). Reads: the line's PROMOTED runs (one partition query), the
    retractions (one point read) and, for a long corpus, its manifest (``storage``)."""
    policy = settings.policy_for(line)
    live, prior, gone, legacy = _live_drops(ledger, settings, line, storage)
    if policy.data == "latest":
        prior = []
    duplicate_of = next((d.run_id for d in prior if d.sha256 == sha256), None)
    drops = (*prior, DropData(name, sha256, "")) if duplicate_of is None else tuple(prior)
    start_model = _live_model(live) if policy.start == "live" and live is not None else None
    return Corpus(
        line=line, mode=policy.data, start=policy.start, drops=tuple(drops),
        cap=policy.max_train_examples, start_model=start_model,
        live_run=live.run_id if live else None, duplicate_of=duplicate_of,
        new_drop_retracted=sha256 in gone, legacy_live=legacy,
    )


def retrain_corpus(ledger: LedgerPort, settings: Settings, line: str,
                   storage: Storage | None = None) -> Corpus:
    """The corpus of a retrain run (no new data): the live run's line corpus minus retracted
    drops. Its ``drops`` may be empty (every drop retracted): nothing to train on."""
    policy = settings.policy_for(line)
    live, prior, _, legacy = _live_drops(ledger, settings, line, storage)
    start_model = _live_model(live) if policy.start == "live" and live is not None else None
    return Corpus(line=line, mode="cumulative", start=policy.start, drops=tuple(prior),
                  cap=policy.max_train_examples, start_model=start_model,
                  live_run=live.run_id if live else None, legacy_live=legacy)


# -- building the run's files -----------------------------------------------------------------
def jsonl_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The non-empty lines of a file we wrote (canonical JSONL: no raw newline inside a line)."""
    rest = b""
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from (p for p in parts if p)
    if rest:
        yield rest


def _canonical(line: bytes) -> bytes:
    """The canonical messages JSON of a side-file line ``{"messages":[...]}``."""
    if not (line.startswith(_PREFIX) and line.endswith(_SUFFIX)):
        raise SplitInputError(f"not a canonical side-file line: {line[:60]!r}")
    return line[len(_PREFIX):-len(_SUFFIX)]


def _prompt_key(line: bytes) -> bytes:
    """The prompt digest of a side-file line (msgspec's typed decoder when present: the line
    is canonical, so the prompt's canonical bytes are the encoded slice; the same bytes
    :func:`shared.dataset.prompt_digest` hashes)."""
    decode = _json.decode_example  # our own canonical line: no check beyond the schema needed
    if decode is None:
        prompt, _ = prompt_of(_json.loads(_canonical(line)))
        return prompt_digest(prompt)
    messages = decode(line).messages
    cut = len(messages) - 1
    while messages[cut].role != "assistant":
        cut -= 1
    return hashlib.blake2b(_json.encode(messages[:cut]), digest_size=16).digest()


def _sample_key(digest: bytes) -> int:
    """Where an example of an older drop ranks for the cap (bytes 8-16 of its digest: the
    split's side uses the prompt digest, so this does not favour either side)."""
    return int.from_bytes(digest[8:16], "big")


def _read(storage: Storage, ref: BlobRef) -> Iterator[bytes]:
    try:
        yield from jsonl_lines(storage.read_chunks(ref))
    except NotFoundError as exc:
        raise NotFoundError(
            f"the corpus's copy {ref} of a drop is missing",
            hint="the drop was retracted or its copy deleted; drop the data again",
        ) from exc


@dataclass
class _Pass:
    seen: set[bytes] = field(default_factory=set)
    duplicates: int = 0
    excluded: int = 0


def _train_examples(
    storage: Storage, settings: Settings, corpus: Corpus, exam: frozenset[bytes], state: _Pass
) -> Iterator[tuple[int, bytes, bytes]]:
    """(drop index, digest, line) of each training example kept before the cap."""
    for i, drop in enumerate(corpus.drops):
        train_ref, _ = drop_refs(settings, corpus.line, drop.sha256)
        for line in _read(storage, train_ref):
            canonical = _canonical(line)
            digest = example_digest(canonical)
            if digest in state.seen:
                state.duplicates += 1
                continue
            state.seen.add(digest)
            if exam and _prompt_key(line) in exam:
                state.excluded += 1
                continue
            yield i, digest, line


def _cap_plan(
    storage: Storage, settings: Settings, corpus: Corpus, exam: frozenset[bytes], cap: int
) -> tuple[set[int], int] | None:
    """(indexes of the drops to sample, largest key kept) when the cap bites, else None.

    Newest drops whole while they fit; of the rest, the examples with the smallest keys fill
    what is left of the cap (deterministic: a pure function of the corpus)."""
    counts = [0] * len(corpus.drops)
    keys: list[list[int]] = [[] for _ in corpus.drops]
    for i, digest, _ in _train_examples(storage, settings, corpus, exam, _Pass()):
        counts[i] += 1
        keys[i].append(_sample_key(digest))
    if sum(counts) <= cap:
        return None
    room, whole = cap, len(counts)
    while whole > 0 and counts[whole - 1] <= room:
        whole -= 1
        room -= counts[whole]
    sampled = set(range(whole))
    if room <= 0:
        return sampled, -1
    kept = heapq.nsmallest(room, (k for i in sampled for k in keys[i]))
    return sampled, kept[-1]


def assemble(
    storage: Storage,
    settings: Settings,
    corpus: Corpus,
    *,
    train: BlobRef,
    validation: BlobRef,
    exam: frozenset[bytes] = frozenset(),
) -> tuple[RunData, str, str]:
    """Write the run's train and validation files from the corpus drops' sides (each read once,
    twice with a cap that bites); returns (RunData, train sha256, validation sha256).

    ``exam``: prompt digests of the line's golden exam, left out of training with a warning."""
    plan = _cap_plan(storage, settings, corpus, exam, corpus.cap) if corpus.cap else None
    train_counts = [0] * len(corpus.drops)
    state, capped_out = _Pass(), 0
    writer = storage.open_writer(train)
    for i, digest, line in _train_examples(storage, settings, corpus, exam, state):
        if plan is not None and i in plan[0] and _sample_key(digest) > plan[1]:
            capped_out += 1
            continue
        writer.write(line + b"\n")
        train_counts[i] += 1
    train_sha = writer.commit(content_type=_JSONL)
    state.seen.clear()
    eval_counts = [0] * len(corpus.drops)
    seen: set[bytes] = set()
    eval_duplicates = 0
    writer = storage.open_writer(validation)
    for i, drop in enumerate(corpus.drops):
        _, eval_ref = drop_refs(settings, corpus.line, drop.sha256)
        for line in _read(storage, eval_ref):
            digest = example_digest(_canonical(line))
            if digest in seen:
                eval_duplicates += 1
                continue
            seen.add(digest)
            writer.write(line + b"\n")
            eval_counts[i] += 1
    validation_sha = writer.commit(content_type=_JSONL)
    if state.excluded:
        log.warning("line %s: %d training example(s) left out: their prompt is in the line's "
                    "golden exam", corpus.line, state.excluded)
    drops = tuple(replace(d, train_examples=t, eval_examples=e)
                  for d, t, e in zip(corpus.drops, train_counts, eval_counts, strict=True))
    data = RunData(
        mode=corpus.mode, start=corpus.start,
        start_model=corpus.start_model.id if corpus.start_model else "",
        drops=drops, train_examples=sum(train_counts), eval_examples=sum(eval_counts),
        cross_drop_duplicates=state.duplicates + eval_duplicates,
        exam_excluded=state.excluded,
        capped=Capped(corpus.cap, capped_out) if plan is not None and corpus.cap else None,
        corpus_sha256=corpus.sha256,
    )
    return data, train_sha, validation_sha


def build_run_files(
    storage: Storage,
    settings: Settings,
    corpus: Corpus,
    *,
    run_id: str,
    base_model_id: str = "",
) -> RunData:
    """Build ``<prepared>/<run_id>/train.jsonl`` and ``validation.jsonl`` from ``corpus``
    (a retrain: :func:`retrain_corpus`, no new drop), leaving out the golden exam's prompts.

    ``base_model_id`` is recorded as ``start_model`` when the corpus starts from the base."""
    container = settings.prepared_container
    exam = read_golden_exam(storage, settings, corpus.line)
    data, _, _ = assemble(
        storage, settings, corpus.with_run(run_id),
        train=BlobRef(container, f"{run_id}/train.jsonl"),
        validation=BlobRef(container, f"{run_id}/validation.jsonl"),
        exam=exam.prompt_digests if exam else frozenset(),
    )
    if not data.start_model and base_model_id:
        data = replace(data, start_model=base_model_id)
    return data


# -- retractions ------------------------------------------------------------------------------
def _retraction_key(line: str) -> str:
    return f"retracted-{line}"


def retractions(ledger: LedgerPort, line: str) -> list[dict[str, Any]]:
    """The line's retracted drops as recorded (sha256, name, by, reason, at), oldest first."""
    try:
        claim = ledger.get_claim(_retraction_key(line))
    except NotFoundError:
        return []
    entries = json.loads(str(claim.fields.get("drops") or "[]"))
    return [e for e in entries if isinstance(e, dict) and e.get("sha256")]


def retracted(ledger: LedgerPort, line: str) -> set[str]:
    """The sha256s of the line's retracted drops (one point read)."""
    return {str(e["sha256"]) for e in retractions(ledger, line)}


def record_retraction(
    ledger: LedgerPort, line: str, sha256: str, *, name: str, by: str, reason: str,
    now: datetime,
) -> bool:
    """Record that drop ``sha256`` of ``line`` is retracted; True when this call recorded it,
    False when it was already (idempotent; ETag-guarded against concurrent writers)."""
    key = _retraction_key(line)
    entry = {"sha256": sha256, "name": name, "by": by, "reason": reason, "at": now.isoformat()}
    while True:
        try:
            claim = ledger.get_claim(key)
        except NotFoundError:
            if ledger.claim(key, kind="retractions", line=line,
                            drops=json.dumps([entry], separators=(",", ":"))) is not None:
                return True
            continue
        entries = json.loads(str(claim.fields.get("drops") or "[]"))
        if any(e.get("sha256") == sha256 for e in entries):
            return False
        try:
            ledger.update_claim(claim, drops=json.dumps([*entries, entry], separators=(",", ":")))
            return True
        except LedgerConflictError:
            continue


# -- the golden exam --------------------------------------------------------------------------
@dataclass(frozen=True)
class ExamExample:
    """One exam question: the prompt (messages before the final assistant turn), the reference
    answer (that turn's content) and the prompt's digest."""

    prompt: list[dict[str, Any]]
    reference: str
    prompt_digest: bytes


@dataclass(frozen=True)
class GoldenExam:
    """The line's golden exam: every example of its valid ``_exam/*.jsonl`` files (each
    distinct example once) and ``digest``: sha256 over the sorted file sha256s."""

    examples: list[ExamExample]
    digest: str
    files: tuple[str, ...] = ()

    @property
    def prompt_digests(self) -> frozenset[bytes]:
        return frozenset(e.prompt_digest for e in self.examples)


def exam_example(line: bytes) -> ExamExample:
    """The exam question of a canonical side-file line (``{"messages":[...]}``)."""
    prompt, reference = prompt_of(_json.loads(_canonical(line.rstrip(b"\n"))))
    return ExamExample(prompt, reference, prompt_digest(prompt))


def read_golden_exam(storage: Storage, settings: Settings, line: str) -> GoldenExam | None:
    """The golden exam of ``line`` (``incoming/<line>/_exam/*.jsonl``), or None without one.

    An invalid exam file is skipped with a warning (ingest quarantines it). Cost: one list
    request, and a read of each exam file when there is one."""
    container = settings.incoming_container
    names = sorted(n for n in storage.list_names(container, f"{line}/{EXAM_DIR}/")
                   if n.lower().endswith(".jsonl"))
    examples: dict[bytes, ExamExample] = {}
    shas: list[str] = []
    files: list[str] = []
    for name in names:
        lines: list[bytes] = []
        try:
            counts = split_to(storage.read_chunks(BlobRef(container, name)), lines.append,
                              lines.append, validation_fraction=0.0,
                              max_line_bytes=settings.max_line_bytes)
            found = [exam_example(out) for out in lines]
        except (SplitInputError, ValueError) as exc:
            log.warning("line %s: exam file %s skipped: %s", line, name, exc)
            continue
        except NotFoundError:
            continue  # quarantined or deleted meanwhile
        for example in found:
            examples.setdefault(example_digest(json.dumps(
                [example.prompt, example.reference], sort_keys=True).encode()), example)
        shas.append(counts.sha256)
        files.append(name)
    if not files:
        return None
    return GoldenExam(list(examples.values()), hashlib.sha256(
        "\n".join(sorted(shas)).encode()).hexdigest(), tuple(files))


def drops_of(rec: RunRecord, storage: Storage | None = None) -> tuple[DropData, ...]:
    """The drops a run trained on (empty for a run recorded before corpora); a list kept in a
    manifest is read from ``storage``."""
    data = RunData.from_record(rec, storage)
    return data.drops if data else ()
