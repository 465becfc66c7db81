"""The plan's fingerprint (so the run id) covers the corpus a run trains on (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.finetune import Planner, bundled_base_model, bundled_component, plan_finetune
from shared.platform.port import ComputeInfo, FinetunePlan
from shared.settings import Settings
from tests.fakes.platform import FakePlatform

NEW = "a" * 64
OLD = "b" * 64
OLDER = "c" * 64
A100 = ComputeInfo("gpu-a100", "Standard_NC24ads_A100_v4", "Succeeded", gpus_per_node=1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(platform="local", home=tmp_path)


def _plan(settings: Settings, corpus: list[str]) -> FinetunePlan:
    return plan_finetune(
        settings, line="support", dataset_sha256=NEW, base_model=bundled_base_model(),
        component=bundled_component(), data_container="prepared", compute=A100, corpus=corpus,
    )


def test_the_same_drop_on_another_corpus_is_another_run(settings: Settings) -> None:
    """The new drop trained with the live corpus and without it are two jobs; the same corpus
    in any order is the same job (exactly once)."""
    alone, with_old = _plan(settings, [NEW]), _plan(settings, [OLD, NEW])
    assert alone.run_id != with_old.run_id
    assert _plan(settings, [NEW, OLDER, OLD]).run_id == _plan(settings, [OLD, NEW, OLDER]).run_id
    assert _plan(settings, [OLD, NEW]).run_id != _plan(settings, [OLDER, NEW]).run_id


def test_a_corpus_of_the_new_drop_alone_keeps_the_old_run_id(settings: Settings) -> None:
    """A line's first run (corpus = its one drop) has the id it had before corpora existed."""
    assert _plan(settings, [NEW]).run_id == _plan(settings, []).run_id


def test_the_planner_passes_the_corpus_through(settings: Settings) -> None:
    """Planner.plan(corpus=...) plans with it."""
    planner = Planner(settings, FakePlatform())
    with_old = planner.plan(line="support", dataset_sha256=NEW, compute=A100, corpus=[OLD, NEW])
    alone = planner.plan(line="support", dataset_sha256=NEW, compute=A100)
    assert with_old.run_id != alone.run_id
    again = planner.plan(line="support", dataset_sha256=NEW, compute=A100, corpus=[NEW, OLD])
    assert again.run_id == with_old.run_id
