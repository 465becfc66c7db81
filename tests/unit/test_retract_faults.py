"""A retract cut short between any two writes is finished by running it again: on in-memory
ports, each kind of write the retraction makes fails once (a storage or platform outage), the
retract stops with the error, and a second retract ends where an uninterrupted one ends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from shared.corpus import retracted
from shared.errors import TransientError, TuneloopError
from shared.finetune import Planner
from shared.retract import Retraction
from shared.settings import Settings
from tests.fakes.ledger import FakeLedger
from tests.fakes.platform import FakePlatform
from tests.fakes.storage import FakeStorage, http_error
from tests.integration.test_retract import LINE, seed

SETTINGS = Settings(platform="local", min_examples=10)


@dataclass
class Ports:
    ledger: FakeLedger
    storage: FakeStorage
    platform: FakePlatform

    def retraction(self) -> Retraction:
        return Retraction(
            settings=SETTINGS, storage=self.storage, ledger=self.ledger,
            platform=self.platform, planner=Planner(SETTINGS, self.platform).plan,
        )

    def end_state(self) -> dict[str, Any]:
        """What a finished retraction leaves: records, runs, blobs, tags, jobs."""
        return {
            "retracted": retracted(self.ledger, LINE),
            "runs": sorted(
                (r.run_id, r.state.value, str(r.get("data"))) for r in self.ledger.list(line=LINE)
            ),
            "blobs": {
                c: sorted(self.storage.list_names(c))
                for c in (SETTINGS.incoming_container, SETTINGS.prepared_container)
            },
            "tags": {k: dict(m.tags) for k, m in self.platform.models.items()},
            "jobs": sorted(self.platform.jobs),
        }


def seeded() -> Ports:
    ports = Ports(FakeLedger(), FakeStorage(SETTINGS), FakePlatform())
    seed(ports.ledger, ports.storage, ports.platform, SETTINGS)
    return ports


def _outage() -> Exception:
    return http_error(503, "ServerBusy")


# (port, method): every kind of write the retraction makes, each failed at its first call
WRITES = [
    ("table", "create_entity"),
    ("table", "update_entity"),
    ("blobs", "delete_blob"),
    ("blobs", "commit_block_list"),
    ("platform", "update_model_tags"),
    ("platform", "submit_finetune"),
]


@pytest.mark.parametrize(("port", "method"), WRITES, ids=[m for _, m in WRITES])
def test_a_retract_cut_short_is_finished_by_running_it_again(port: str, method: str) -> None:
    """The first retract fails at the write; the second ends as an uninterrupted retract
    does, with one retrain job submitted."""
    clean = seeded()
    clean.retraction().retract(LINE, "support-2")
    expected = clean.end_state()

    ports = seeded()
    if port == "platform":
        ports.platform.fail_once(method, TransientError("platform outage"))
    else:
        fakes = ports.ledger.table if port == "table" else ports.storage.blobs
        fakes.fail_next(_outage(), method=method)
    with pytest.raises(TransientError):
        ports.retraction().retract(LINE, "support-2")
    if port == "platform":
        ports.platform.assert_faults_fired()
    else:
        assert fakes.faults_fired == 1
    again = ports.retraction().retract(LINE, "support-2")
    assert again.already or method == "create_entity"
    assert ports.end_state() == expected
    assert ports.platform.calls["submit_finetune"] <= 2
    assert len(ports.platform.jobs) == 1


# Every call of the fakes' service surfaces that changes something.
_WRITE_CALLS = frozenset({
    "create_entity", "update_entity", "upsert_entity", "delete_entity", "submit_transaction",
    "upload_blob", "stage_block", "commit_block_list", "delete_blob",
    "submit_finetune", "update_model_tags", "register_model", "deploy", "delete_deployment",
})


def _crash_at(ports: Ports, n: int | None) -> dict[str, int]:
    """Make the ``n``-th write of the retraction, over all ports, fail as an outage (None:
    count the writes only). Returns the live counters (``writes``, ``fired``)."""
    state = {"writes": 0, "fired": 0}
    fakes: list[tuple[Any, Callable[[], Exception]]] = [
        (ports.ledger.table, _outage), (ports.ledger.active, _outage),
        (ports.storage.blobs, _outage),
        (ports.platform, lambda: TransientError("platform outage")),
    ]
    for fake, outage in fakes:
        original = fake._enter

        def enter(method: str, original: Any = original, outage: Any = outage) -> None:
            if method in _WRITE_CALLS:
                state["writes"] += 1
                if state["writes"] == n:
                    state["fired"] += 1
                    raise outage()
            original(method)

        fake._enter = enter  # this instance only
    return state


def test_a_crash_between_any_two_writes_is_finished_by_running_it_again() -> None:
    """For every write the retraction makes (ledger rows, blobs, platform calls), one retract
    stopped at that write and a second one end where an uninterrupted retract ends."""
    clean = seeded()
    counted = _crash_at(clean, None)
    clean.retraction().retract(LINE, "support-2")
    expected = clean.end_state()
    assert counted["writes"] >= 10  # records, deletes, tags, the run and its files, submit

    for n in range(1, counted["writes"] + 1):
        ports = seeded()
        state = _crash_at(ports, n)
        with contextlib.suppress(TuneloopError):
            ports.retraction().retract(LINE, "support-2")
        assert state["fired"] == 1, n
        _crash_at(ports, None)
        ports.retraction().retract(LINE, "support-2")
        assert ports.end_state() == expected, f"crash at write {n}"
        assert len(ports.platform.jobs) == 1, n
