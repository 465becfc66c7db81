"""Parts of the line's corpus on in-memory storage: RunData round trip, exam exclusion by the
prompt of multi-turn examples, a missing drop copy, the corpus identity."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.corpus import (
    Capped,
    Corpus,
    DropData,
    RunData,
    assemble,
    corpus_sha256,
    drop_refs,
    exam_example,
)
from shared.dataset import prompt_digest, prompt_of, split_to
from shared.errors import NotFoundError
from shared.ledger import RunRecord, RunState
from shared.settings import Settings
from shared.storage import BlobRef
from tests.fakes.storage import FakeStorage

SETTINGS = Settings(platform="local", validation_fraction=0.0)


def turns(i: int) -> dict[str, Any]:
    return {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"},
        {"role": "user", "content": f"and {i}?"},
        {"role": "assistant", "content": f"b{i}", "weight": 1},
        {"role": "user", "content": "thanks"},
    ]}


def put_drop(storage: FakeStorage, sha: str, rows: list[dict[str, Any]]) -> None:
    train, validation = drop_refs(SETTINGS, "l", sha)
    t, v = storage.open_writer(train), storage.open_writer(validation)
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    split_to([data], t.write, v.write, validation_fraction=0.0, max_line_bytes=1 << 20)
    t.commit()
    v.commit()


def test_run_data_round_trips_through_a_ledger_record() -> None:
    """RunData.from_record reads back what to_dict wrote (the ledger stores it as JSON text);
    a run without data reads as None."""
    data = RunData("cumulative", "live", "azureml:tl-l:3",
                   (DropData("one", "a" * 64, "r1", 5, 1), DropData("two", "b" * 64, "r2", 7, 0)),
                   12, 1, 2, 1, Capped(12, 3), corpus_sha256(["a" * 64, "b" * 64]))
    rec = RunRecord("l", "r2", RunState.ACCEPTED, {"data": json.dumps(data.to_dict())})
    assert RunData.from_record(rec) == data
    assert RunData.from_record(RunRecord("l", "r0", RunState.SUBMITTED, {})) is None
    assert corpus_sha256(["b" * 64, "a" * 64, "a" * 64]) == data.corpus_sha256


def test_exam_prompts_are_left_out_by_the_prompt_of_multi_turn_examples() -> None:
    """The exam compares the prompt up to the last assistant turn (a trailing user message is
    not part of it), the same digest as shared.dataset.prompt_digest."""
    storage = FakeStorage(SETTINGS)
    storage.ensure_containers()
    put_drop(storage, "a" * 64, [turns(i) for i in range(6)])
    exam = frozenset(prompt_digest(prompt_of(turns(i)["messages"])[0]) for i in (1, 4))
    corpus = Corpus("l", "cumulative", "base", (DropData("one", "a" * 64, "r1"),))
    data, _, _ = assemble(storage, SETTINGS, corpus, train=BlobRef("prepared", "r/train.jsonl"),
                          validation=BlobRef("prepared", "r/validation.jsonl"), exam=exam)
    assert data.exam_excluded == 2
    assert data.train_examples == 4
    kept = storage.read("prepared", "r/train.jsonl").splitlines()
    assert {exam_example(line).reference for line in kept} == {"b0", "b2", "b3", "b5"}


def test_a_missing_drop_copy_is_a_not_found_naming_it() -> None:
    """A corpus drop whose stored copy is gone stops the assembly with a clear NotFoundError."""
    storage = FakeStorage(SETTINGS)
    storage.ensure_containers()
    corpus = Corpus("l", "cumulative", "base", (DropData("one", "c" * 64, "r1"),))
    with pytest.raises(NotFoundError, match="_drops/l/" + "c" * 64):
        assemble(storage, SETTINGS, corpus, train=BlobRef("prepared", "r/train.jsonl"),
                 validation=BlobRef("prepared", "r/validation.jsonl"))


def test_concurrent_retractions_of_different_drops_are_all_recorded() -> None:
    """Eight retractions at once on one line (ETag-guarded read-modify-write of its row): all
    eight are recorded, each once, and recording one again changes nothing."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from shared.corpus import record_retraction, retracted, retractions
    from tests.fakes.ledger import FakeLedger

    ledger = FakeLedger()
    now = datetime(2026, 12, 2, tzinfo=UTC)
    shas = [f"{i:064x}" for i in range(8)]

    def record(sha: str) -> bool:
        return record_retraction(ledger, "l", sha, name=sha[-1], by="t", reason="r", now=now)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(record, shas))
    assert retracted(ledger, "l") == set(shas)
    assert not record(shas[3])
    assert len(retractions(ledger, "l")) == 8
