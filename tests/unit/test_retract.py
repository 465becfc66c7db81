"""`tuneloop retract` without storage: which drop DATASET names, what a run's corpus is, and the
`status --json` contract (per run: state, exam once examined, data)."""

from __future__ import annotations

import json

import pytest

from cli.commands.status import run_json
from cli.main import EXIT_USAGE, main
from shared.errors import ConfigError, NotFoundError
from shared.ledger import ReleaseRecord, RunRecord, RunState
from shared.retract import (
    AmbiguousDatasetError,
    Drop,
    UnknownDatasetError,
    corpus_drops,
    corpus_shas,
    resolve_drop,
)

A, B, C = "a" * 64, "b" * 64, "ab" + "c" * 62


def drop(name: str, sha: str, train: int = 5) -> dict[str, object]:
    return {"name": name, "sha256": sha, "run_id": f"tl-{name}", "train_examples": train,
            "eval_examples": 1}


def run(run_id: str, state: RunState = RunState.PROMOTED, **fields: object) -> RunRecord:
    return RunRecord(line="support", run_id=run_id, state=state, fields=dict(fields))


def runs() -> list[RunRecord]:
    return [
        run("r1", RunState.RETIRED, name="support-1", dataset_sha256=A,
            data={"drops": [drop("support-1", A)]}),
        run("r2", name="support-2", dataset_sha256=B,
            data={"drops": [drop("support-1", A), drop("support-2", B)]}),
        run("r3", RunState.REJECTED, name="support-3", dataset_sha256=C),
    ]


# --- which drop -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("support-2", Drop("support-2", B)),
        ("support-2.jsonl", Drop("support-2", B)),
        (B, Drop("support-2", B)),
        (B[:12], Drop("support-2", B)),
        (A.upper(), Drop("support-1", A)),
        ("support-3", Drop("support-3", C)),
    ],
)
def test_dataset_is_a_name_or_a_sha256(given: str, expected: Drop) -> None:
    """DATASET resolves by the name it was dropped under (.jsonl optional) or its sha256
    (a prefix of 8+ hex digits, any case)."""
    assert resolve_drop(runs(), given, line="support") == expected


def test_a_name_dropped_twice_with_other_content_is_ambiguous() -> None:
    """A name that held two contents names both sha256s and asks for one: exit 2 (usage)."""
    recs = [*runs(), run("r4", RunState.HELD, name="support-1", dataset_sha256=C,
                         data={"drops": [drop("support-1", A), drop("support-1", C)]})]
    with pytest.raises(AmbiguousDatasetError) as info:
        resolve_drop(recs, "support-1", line="support")
    assert A[:12] in info.value.message
    assert C[:12] in info.value.message
    assert isinstance(info.value, ConfigError)
    assert "full sha256" in str(info.value.hint)


def test_a_name_rejected_once_then_trained_on_names_the_trained_drop() -> None:
    """support-3 was rejected (never trained on), then dropped again valid and trained on:
    the name means the drop that is in a corpus."""
    recs = [*runs(), run("r6", RunState.HELD, name="support-3", dataset_sha256="e" * 64,
                         data={"drops": [drop("support-3", "e" * 64)]})]
    assert resolve_drop(recs, "support-3", line="support") == Drop("support-3", "e" * 64)


def test_a_short_prefix_of_two_sha256s_is_ambiguous() -> None:
    """`aaaaaaaa` is A only, but a prefix two drops share is refused."""
    assert resolve_drop(runs(), "a" * 8, line="support").sha256 == A
    recs = [*runs(), run("r5", name="x", dataset_sha256="a" * 8 + "f" * 56)]
    with pytest.raises(AmbiguousDatasetError):
        resolve_drop(recs, "a" * 8, line="support")


def test_an_unknown_dataset_lists_the_lines_datasets() -> None:
    """An unknown name is not_found (exit 1, as an unknown run id) and lists the names."""
    with pytest.raises(UnknownDatasetError) as info:
        resolve_drop(runs(), "support-9", line="support")
    assert isinstance(info.value, NotFoundError)
    assert "support-1, support-2, support-3" in info.value.message
    assert "tuneloop status --line support" in str(info.value.hint)
    with pytest.raises(UnknownDatasetError, match="it has no datasets"):
        resolve_drop([], "support-1", line="support")
    with pytest.raises(UnknownDatasetError):
        resolve_drop(runs(), "1234", line="support")  # too short for a sha256 prefix


# --- a run's corpus -------------------------------------------------------------------------


def test_corpus_is_the_data_drops_or_the_runs_own_dataset() -> None:
    """Runs with `data` train on its drops; older runs on their own dataset; a rejected or
    duplicate run on nothing."""
    _r1, r2, r3 = runs()
    assert corpus_shas(r2) == {A, B}
    legacy = run("old", RunState.RETIRED, name="old", dataset_sha256=C,
                 split={"train_examples": 9, "validation_examples": 2})
    assert corpus_drops(legacy) == [
        {"name": "old", "sha256": C, "train_examples": 9, "eval_examples": 2}
    ]
    assert corpus_shas(r3) == set()
    assert corpus_shas(run("d", RunState.DUPLICATE, dataset_sha256=A)) == set()


# --- status --json contract -----------------------------------------------------------------


def test_status_json_has_state_exam_and_data_per_run() -> None:
    """Per run: state; exam {metric, candidate, champion, examples, decision} once examined;
    data {drops [{name, sha256, train_examples}], train_examples, eval_examples, start_model}."""
    exam = {"metric": "chrf", "candidate": 61.2, "champion": 55.0, "examples": 50,
            "decision": "promote", "digest": "d" * 64}
    rec = run("r2", data={
        "mode": "cumulative", "start": "base", "start_model": "azureml:base:1",
        "drops": [drop("support-1", A, 7), drop("support-2", B, 3)],
        "train_examples": 10, "eval_examples": 2,
    })
    rec.release = ReleaseRecord(exam=exam)
    out = json.loads(json.dumps(run_json(rec), default=str))
    assert out["state"] == "PROMOTED"
    assert {k: out["exam"][k] for k in ("metric", "candidate", "champion", "examples",
                                        "decision")} == {
        "metric": "chrf", "candidate": 61.2, "champion": 55.0, "examples": 50,
        "decision": "promote",
    }
    d = out["data"]
    assert [(x["name"], x["sha256"], x["train_examples"]) for x in d["drops"]] == [
        ("support-1", A, 7), ("support-2", B, 3)
    ]
    assert (d["train_examples"], d["eval_examples"], d["start_model"]) == (
        10, 2, "azureml:base:1"
    )


def test_status_json_reads_runs_recorded_before_the_contract() -> None:
    """A run without exam or data keeps the keys: exam null, data from its own split; a run
    that never trained has data null."""
    legacy = run("old", RunState.HELD, name="old", dataset_sha256=C, base_model="azureml:m:2",
                 split={"train_examples": 9, "validation_examples": 2})
    out = run_json(legacy)
    assert out["exam"] is None
    assert out["data"]["drops"] == [
        {"name": "old", "sha256": C, "train_examples": 9, "eval_examples": 2}
    ]
    assert (out["data"]["train_examples"], out["data"]["eval_examples"]) == (9, 2)
    assert out["data"]["start_model"] == "azureml:m:2"
    rejected = run_json(run("rej", RunState.REJECTED, name="bad", dataset_sha256=A))
    assert rejected["data"] is None
    assert rejected["exam"] is None


# --- the command line -----------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["retract", "support-1", "--line", "../etc"], EXIT_USAGE,
         "--line '../etc' is not a valid line name"),
        (["retract", " ", "--line", "support"], EXIT_USAGE, "DATASET is empty"),
    ],
)
def test_bad_arguments_are_refused_before_storage(
    argv: list[str], code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --line or an empty DATASET is one line, exit 2, and no storage is looked for
    (this home has no storage: reaching it would say so instead)."""
    assert main(argv) == code
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("tuneloop retract: config_error: ")
    assert says in lines[0]
    assert "no storage" not in lines[0]


@pytest.mark.usefixtures("clean_env")
def test_no_storage_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Valid arguments without a storage: one line naming what to start (exit 2)."""
    assert main(["retract", "support-1", "--line", "support"]) == EXIT_USAGE
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1
    assert "tuneloop up" in lines[0]


def test_help_names_name_or_sha256(capsys: pytest.CaptureFixture[str]) -> None:
    """`tuneloop retract --help` says what DATASET may be."""
    with pytest.raises(SystemExit):
        main(["retract", "--help"])
    out = capsys.readouterr().out
    assert "DATASET" in out
    assert "sha256" in out
    assert "--line" in out
    assert "8+ hex digits" in " ".join(out.split())  # a prefix works too (resolve_drop)


def test_status_table_shows_each_runs_data_and_exam() -> None:
    """The table prints what a run trains on and its exam under its timeline."""
    from cli.commands.status import format_runs

    rec = run("r2", data={"drops": [drop("support-1", A), drop("support-2", B)],
                          "train_examples": 10, "eval_examples": 2, "start_model": None})
    rec.release = ReleaseRecord(exam={"metric": "chrf", "candidate": 48.0, "champion": 55.0,
                                      "examples": 50, "decision": "hold"})
    text = format_runs([rec])
    assert "    data: support-1, support-2 (10 train / 2 eval), start base" in text
    assert "    exam: chrf 48.0 vs champion 55.0 on 50 examples -> hold" in text
