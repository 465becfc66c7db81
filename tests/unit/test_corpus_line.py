"""The line corpus recorded at promotion (shared.corpus.carry_line_corpus), on the in-memory
ledger and storage: order, modes, retractions, old rows, and where a long list goes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from shared.corpus import (
    INLINE_CHARS,
    DropData,
    RunData,
    carry_line_corpus,
    data_column,
    line_drops,
    record_retraction,
)
from shared.ledger import RunRecord, RunState
from shared.settings import Settings
from tests.fakes.ledger import FakeLedger
from tests.fakes.storage import FakeStorage

SETTINGS = Settings(platform="local")
LINE = "l"


def d(n: str) -> DropData:
    return DropData(n, n * 64 if len(n) == 1 else n, f"run-{n}")


def run(ledger: FakeLedger, run_id: str, drops: list[str], *, previous: str | None = None,
        mode: str = "cumulative", state: RunState = RunState.DEPLOYED) -> RunRecord:
    data = RunData("latest" if mode == "latest" else "cumulative", "base", "",
                   tuple(d(n) for n in drops))
    rec = ledger.create(LINE, run_id, state, data=data.to_dict())
    return ledger.update(rec, release=replace(rec.release, previous_run=previous))


def promoted(ledger: FakeLedger, storage: FakeStorage, rec: RunRecord) -> RunRecord:
    column = carry_line_corpus(storage, SETTINGS, ledger, rec)
    extra = {} if column is None else {"line_corpus": column}
    return ledger.advance(rec, RunState.PROMOTED, **extra)


def names(storage: FakeStorage, rec: RunRecord) -> list[str]:
    return [x.name for x in line_drops(storage, rec)]


def test_the_previous_line_corpus_keeps_its_order_and_the_runs_new_drops_follow() -> None:
    """Live {a, b}; a run planned on {a, c} (and one held on {a, b, x} promoted by hand
    later): each promotion keeps every drop of the line, in the order they joined it."""
    ledger, storage = FakeLedger(), FakeStorage()
    first = promoted(ledger, storage, run(ledger, "r1", ["a", "b"]))
    assert first.get("line_corpus")["same"] is True  # trained on the line corpus: no copy
    second = promoted(ledger, storage, run(ledger, "r2", ["a", "c"], previous="r1"))
    assert names(storage, second) == ["a", "b", "c"]
    third = promoted(ledger, storage, run(ledger, "r3", ["a", "b", "x"], previous="r2"))
    assert names(storage, third) == ["a", "b", "c", "x"]
    assert third.get("line_corpus")["of"] == "r2"
    assert third.get("line_corpus")["count"] == 4


def test_retracted_drops_are_not_carried_but_the_runs_own_drops_are_kept() -> None:
    """Carried drops retracted by the time of the PROMOTED write are left out; the run's own
    drops stay (its data.drops is what it trained on; readers filter retractions)."""
    ledger, storage = FakeLedger(), FakeStorage()
    promoted(ledger, storage, run(ledger, "r1", ["a", "b", "c"]))
    now = datetime(2026, 12, 2, tzinfo=UTC)
    for sha in ("b" * 64, "d" * 64):
        record_retraction(ledger, LINE, sha, name="x", by="t", reason="r", now=now)
    rec = promoted(ledger, storage, run(ledger, "r2", ["a", "d"], previous="r1"))
    assert names(storage, rec) == ["a", "c", "d"]


def test_latest_mode_old_rows_and_a_missing_previous_run() -> None:
    """A latest-mode run's line corpus is its own drop; a run without data records nothing
    (readers fall back to its drops); a previous run that is gone carries nothing."""
    ledger, storage = FakeLedger(), FakeStorage()
    promoted(ledger, storage, run(ledger, "r1", ["a", "b"]))
    latest = promoted(ledger, storage, run(ledger, "r2", ["c"], previous="r1", mode="latest"))
    assert names(storage, latest) == ["c"]
    old = ledger.create(LINE, "r0", RunState.DEPLOYED, name="old")
    assert carry_line_corpus(storage, SETTINGS, ledger, old) is None
    assert line_drops(storage, old) == ()
    orphan = promoted(ledger, storage, run(ledger, "r3", ["e"], previous="gone"))
    assert names(storage, orphan) == ["e"]
    unpromoted = run(ledger, "r4", ["f", "g"])
    assert names(storage, unpromoted) == ["f", "g"]  # its own drops


def test_a_long_list_goes_to_a_manifest_and_a_short_one_stays_in_the_column() -> None:
    """The boundary: a drop list up to INLINE_CHARS characters stays in the column; longer,
    it is written to <prepared>/<run>/data.json and read back the same."""
    storage = FakeStorage()
    few = tuple(DropData(f"n{i}", f"{i:064x}", "r") for i in range(3))
    data = RunData("cumulative", "base", "", few)
    assert data_column(storage, SETTINGS, "r", data) == data.to_dict()
    many = tuple(DropData(f"n{i}", f"{i:064x}", "r", 1, 1) for i in range(200))
    data = RunData("cumulative", "base", "", many, 200, 200)
    column = data_column(storage, SETTINGS, "r", data)
    assert column["drops_manifest"] == f"{SETTINGS.prepared_container}/r/data.json"
    assert len(str(data.to_dict()["drops"])) > INLINE_CHARS
    rec = RunRecord(LINE, "r", RunState.ACCEPTED, fields={"data": column})
    assert RunData.from_record(rec, storage) == data
