"""The line's history for the exam report, read from a real ledger (Azurite), and the report
written to real blob storage."""

from __future__ import annotations

import json

from shared.clients import Clients
from shared.ledger import RunState
from shared.release.exam_report import (
    ExamItem,
    ExamOutcome,
    HistoryPoint,
    line_history,
    write_exam_report,
)

LINE = "support"


def exam(score: float, decision: str) -> dict[str, object]:
    """The ledger's ``exam`` column as the exam records it."""
    return {"metric": "chrf", "candidate": score, "champion": None, "examples": 5,
            "decision": decision, "digest": "d" * 64, "source": "sample", "calls": 10}


def seed(clients: Clients) -> None:
    """v1 promoted then retired, v2 held by the exam, v3 promoted (live), v4 promoted
    earlier than v3 (an old row not retired yet), a failed run, a run not trained yet, and a
    run of another line."""
    ledger = clients.ledger
    runs = [
        ("r1", RunState.RETIRED, {"model_version": "1", "eval_loss": 1.7,
                                  "exam": exam(50.0, "promote")}),
        ("r2", RunState.HELD, {"model_version": "2", "eval_loss": 0.23,
                               "exam": exam(20.0, "hold")}),
        ("r3", RunState.PROMOTED, {"model_version": "3", "eval_loss": 1.5,
                                   "exam": exam(55.0, "promote"),
                                   "promoted_at": "2026-12-01T10:00:00+00:00"}),
        ("r4", RunState.PROMOTED, {"model_version": "4", "eval_loss": 1.6,
                                   "promoted_at": "2026-12-01T09:00:00+00:00"}),
        ("r5", RunState.FAILED, {"reason": "job failed"}),
        ("r6", RunState.ACCEPTED, {}),
    ]
    for i, (run_id, state, fields) in enumerate(runs):
        ledger.create(LINE, run_id, state, created=f"2026-12-01T0{i}:00:00+00:00", **fields)
    ledger.create("other", "x1", RunState.PROMOTED, model_version="9",
                  promoted_at="2026-12-01T11:00:00+00:00")


def test_line_history_reads_versions_scores_losses_and_the_live_one(clients: Clients) -> None:
    """The history lists the line's runs that produced a model, oldest first, with the exam
    score each got as a candidate, its eval loss and state; the live version is the latest
    PROMOTED one; failed, untrained and other lines' runs are left out."""
    seed(clients)
    history = line_history(clients.ledger, LINE)
    assert history == [
        HistoryPoint("r1", "1", "RETIRED", score=50.0, metric="chrf", eval_loss=1.7),
        HistoryPoint("r2", "2", "HELD", score=20.0, metric="chrf", eval_loss=0.23),
        HistoryPoint("r3", "3", "PROMOTED", score=55.0, metric="chrf", eval_loss=1.5,
                     live=True),
        HistoryPoint("r4", "4", "PROMOTED", eval_loss=1.6),
    ]
    assert history[1].held
    assert line_history(clients.ledger, "nothing-here") == []


def test_the_report_of_a_held_candidate_goes_to_blob_storage(clients: Clients) -> None:
    """write_exam_report writes the JSON, Markdown and both charts to the reports container;
    the JSON's history is the ledger's with the examined run placed as held."""
    seed(clients)
    run = clients.ledger.create(LINE, "r7", RunState.DEPLOYED, model_version="5", eval_loss=0.4,
                                created="2026-12-01T08:00:00+00:00")
    result = ExamOutcome(
        metric="chrf", candidate={"chrf": 30.0, "bleu": 10.0, "exact": 0.0},
        champion={"chrf": 55.0, "bleu": 25.0, "exact": 0.2}, decision="hold",
        reason="candidate chrF 30.00 < champion 55.00 - tolerance 0.0", digest="d" * 64,
        source="sample", calls=10, champion_run="r3",
        items=[ExamItem([{"role": "user", "content": "q"}], "ref", "bad", {"chrf": 30.0},
                        "good", {"chrf": 55.0})],
    )
    refs = write_exam_report(clients.storage, clients.settings, run, result,
                             line_history(clients.ledger, LINE))
    doc = clients.storage.read_json(refs.json)
    assert [(p["run_id"], p["state"], p["live"]) for p in doc["history"]] == [
        ("r1", "RETIRED", False), ("r2", "HELD", False), ("r3", "PROMOTED", True),
        ("r4", "PROMOTED", False), ("r7", "HELD", False),
    ]
    assert doc["decision"] == "hold"
    assert json.dumps(doc)  # plain JSON all the way down
    names = set(clients.storage.list_names(clients.settings.reports_container, f"{LINE}/_exams/"))
    assert names == {f"{LINE}/_exams/r7.json", f"{LINE}/_exams/r7.md", f"{LINE}/_exams/r7.png",
                     f"{LINE}/_exams/history.png"}
    png = b"".join(clients.storage.read_chunks(refs.chart))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
