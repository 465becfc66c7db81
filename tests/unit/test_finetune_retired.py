"""Retired base models and retired VM sizes are refused by the plan (issue 10, defects 1 and 2).

Every Phi-3 / Phi-3.5 in the azureml registry has ``finetuneRetirementDate: 2025-08-30``; Azure
retired Standard_NC6s_v3 on 2025-09-30. The clock is injected: each test fixes "today".
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest

from shared.errors import PlanError
from shared.finetune import (
    DEFAULT_BASE_MODEL,
    RETIRED_MODEL_SPEC,
    Planner,
    bundled_base_model,
    bundled_component,
    load_model_spec,
    plan_finetune,
)
from shared.platform.metadata import RETIRED_VM_SIZES
from shared.platform.port import BaseModelInfo, ComputeInfo, FinetunePlan
from shared.release import inference_allow_list
from shared.settings import Settings
from tests.fakes.platform import FakePlatform
from tests.fixtures.chats import write_chats

SHA = "00112233445566778899aabbccddeeff" * 2
A100 = ComputeInfo("gpu-a100", "Standard_NC24ads_A100_v4", "Succeeded", gpus_per_node=1)
TODAY = date(2026, 12, 1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(platform="local", home=tmp_path)


def plan(
    settings: Settings,
    base_model: BaseModelInfo,
    *,
    today: date = TODAY,
    compute: ComputeInfo = A100,
) -> FinetunePlan:
    return plan_finetune(
        settings,
        line="support",
        dataset_sha256=SHA,
        base_model=base_model,
        component=bundled_component(),
        data_container="prepared",
        compute=compute,
        today=today,
    )


def phi3() -> BaseModelInfo:
    return load_model_spec(RETIRED_MODEL_SPEC)


def test_a_model_past_its_finetune_retirement_is_refused_naming_the_date(
    settings: Settings,
) -> None:
    """Phi-3-mini (retired 2025-08-30, archived) is a plan error naming the date and Phi-4."""
    with pytest.raises(PlanError) as excinfo:
        plan(settings, phi3())
    problems = excinfo.value.problems
    assert any(
        "Phi-3-mini-4k-instruct 15: fine-tuning was retired on 2025-08-30" in p for p in problems
    )
    assert any("is archived" in p for p in problems)
    assert "use Phi-4, tuneloop's default base model" in (excinfo.value.hint or "")


def test_the_injected_clock_decides_retirement(settings: Settings) -> None:
    """The day before the retirement date plans (with a warning); the date itself is refused."""
    unarchived = dataclasses.replace(phi3(), archived=False)
    before = plan(settings, unarchived, today=date(2025, 8, 29))
    assert any("fine-tuning retired from 2025-08-30" in w for w in before.warnings)
    with pytest.raises(PlanError, match="fine-tuning was retired on 2025-08-30"):
        plan(settings, unarchived, today=date(2025, 8, 30))


def test_the_planner_uses_its_clock(settings: Settings) -> None:
    """Planner(today=...) reaches plan_finetune: a fixed 2025 day plans the Phi-3 model."""
    model = dataclasses.replace(phi3(), archived=False)
    early = Planner(settings, FakePlatform(), today=lambda: date(2025, 1, 1))
    assert early.plan(line="support", dataset_sha256=SHA, base_model=model, compute=A100)
    late = Planner(settings, FakePlatform(), today=lambda: TODAY)
    with pytest.raises(PlanError, match="2025-08-30"):
        late.plan(line="support", dataset_sha256=SHA, base_model=model, compute=A100)


def test_an_archived_model_is_refused(settings: Settings) -> None:
    """isArchived alone (no retirement date) is a plan error."""
    archived = dataclasses.replace(bundled_base_model(), archived=True)
    with pytest.raises(PlanError, match=r"Phi-4 8 is archived in its registry \(isArchived\)"):
        plan(settings, archived)


@pytest.mark.parametrize(
    ("tasks", "listed"),
    [
        ({"fineTuningTasks": ["text-classification"]}, "lists text-classification"),
        ({"inferenceTasks": ["chat-completion"]}, "lists no fine-tuning task"),
    ],
    ids=["other-task", "inference-only"],
)
def test_a_model_not_fine_tunable_for_chat_is_refused(
    settings: Settings, tasks: dict[str, list[str]], listed: str
) -> None:
    """A model whose fineTuningTasks lacks chat-completion is refused, naming the task list."""
    base = bundled_base_model()
    model = dataclasses.replace(base, system_metadata={**base.system_metadata, "tasks": tasks})
    with pytest.raises(PlanError) as excinfo:
        plan(settings, model)
    assert excinfo.value.problems == [
        f"Phi-4 8 is not fine-tunable for chat-completion: its system metadata "
        f"tasks.fineTuningTasks {listed}"
    ]


def test_the_default_base_model_is_phi4_and_plans_today(settings: Settings) -> None:
    """The settings' default and the bundled spec are Phi-4 v8, which plans on 2026-12-01."""
    assert Settings().base_model == DEFAULT_BASE_MODEL == bundled_base_model().name == "Phi-4"
    done = plan(settings, bundled_base_model())
    assert done.base_model.id == "azureml://registries/azureml/models/Phi-4/versions/8"
    assert not any("retired" in w for w in done.warnings)


def test_plan_command_refuses_the_phi3_example(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tuneloop plan --model-spec <the kept Phi-3 spec>` exits 2 naming 2025-08-30 and Phi-4."""
    from cli.main import main

    dataset = write_chats(tmp_path / "chats.jsonl", 20)
    code = main(
        [
            "plan", str(dataset), "--line", "support", "--model-spec", str(RETIRED_MODEL_SPEC),
            "--compute-size", "Standard_NC24ads_A100_v4", "--gpus-per-node", "1",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "fine-tuning was retired on 2025-08-30" in err
    assert "use Phi-4" in err


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("Phi-3-mini-4k-instruct", "fine-tuning was retired on 2025-08-30"),
        ("Llama-3-8B", "no bundled spec for base model Llama-3-8B"),
    ],
)
def test_plan_command_plans_the_model_the_setting_names(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], model: str, says: str,
) -> None:
    """`tuneloop plan` reads the bundled spec of TUNELOOP_BASE_MODEL, never Phi-4 in its place:
    Phi-3-mini is refused, a model tuneloop does not ship asks for --model-spec (exit 2)."""
    from cli.main import main

    monkeypatch.setenv("TUNELOOP_BASE_MODEL", model)
    dataset = write_chats(tmp_path / "chats.jsonl", 20)
    code = main(
        ["plan", str(dataset), "--line", "support",
         "--compute-size", "Standard_NC24ads_A100_v4", "--gpus-per-node", "1"]
    )  # fmt: skip
    assert code == 2
    assert says in capsys.readouterr().err


# --- retired VM sizes (defect 2) -------------------------------------------------------


def test_a_retired_size_is_refused_even_when_the_allow_list_names_it(settings: Settings) -> None:
    """A stale allow-list naming Standard_NC6s_v3 does not save it after 2025-09-30."""
    stale = dataclasses.replace(
        bundled_base_model(), tags={"finetune_compute_allow_list": "Standard_NC6s_v3"}
    )
    v100 = ComputeInfo("gpu-v100", "Standard_NC6s_v3", "Succeeded", gpus_per_node=1)
    assert plan(settings, stale, compute=v100, today=date(2025, 9, 29))
    with pytest.raises(PlanError) as excinfo:
        plan(settings, stale, compute=v100)
    (problem,) = excinfo.value.problems
    assert problem.startswith(
        "compute gpu-v100: VM size Standard_NC6s_v3 was retired by Azure on 2025-09-30"
    )
    assert "ncv3-nc6s-nc12s-nc24s-retirement" in problem  # the cited source


def test_every_retired_size_has_a_date_and_a_source() -> None:
    """The list is keyed by lower-case size and each entry cites where its date comes from."""
    assert RETIRED_VM_SIZES["standard_nc6s_v3"].retired == date(2025, 9, 30)
    for key, retired in RETIRED_VM_SIZES.items():
        assert key == retired.size.lower()
        assert "learn.microsoft.com" in retired.source


def test_the_default_inference_size_is_allowed_for_the_default_model() -> None:
    """Standard_NC24ads_A100_v4 is on Phi-4's inference allow-list and not retired."""
    size = Settings().inference_instance_type
    assert size == "Standard_NC24ads_A100_v4"
    assert size in (inference_allow_list(bundled_base_model()) or [])
    assert size.lower() not in RETIRED_VM_SIZES


@pytest.mark.parametrize("size", ["Standard_NC6s_v3", "standard_nc6s_v3"])
def test_the_release_holds_on_a_retired_inference_size(tmp_path: Path, size: str) -> None:
    """Phi-3's stale inference list names Standard_NC6s_v3: the release refuses it anyway."""
    from datetime import UTC, datetime

    from shared.release.context import ReleaseContext
    from shared.release.steps import _check_instance_type
    from tests.fakes.ledger import FakeLedger
    from tests.fakes.storage import FakeStorage

    base = dataclasses.replace(phi3(), archived=False)  # its inference list names NC6s_v3
    assert "Standard_NC6s_v3" in (inference_allow_list(base) or [])
    s = Settings(
        platform="local", home=tmp_path, base_model=base.name, inference_instance_type=size
    )

    def ctx(day: datetime) -> ReleaseContext:
        return ReleaseContext(
            s, FakeLedger(), FakePlatform(base_model=base), FakeStorage(s),
            now=lambda: day,
        )

    assert _check_instance_type(ctx(datetime(2025, 9, 29, tzinfo=UTC))) is None
    held = _check_instance_type(ctx(datetime(2026, 12, 1, tzinfo=UTC)))
    assert held is not None
    assert f"VM size {size} was retired by Azure on 2025-09-30" in held
    assert "TUNELOOP_INFERENCE_INSTANCE_TYPE" in held
