"""The `tuneloop` shell: help for every command, one error line and one exit code per error type
in every command, invalid settings and odd specs as errors (never tracebacks), `plan` refusing
nonsense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli.main
from cli.main import COMMANDS, EXIT_FAILED, EXIT_USAGE, main
from shared.errors import ConfigError, NotFoundError, PlanError
from shared.finetune import BUNDLED_COMPONENT_SPEC
from tests.fixtures.chats import write_chats

pytestmark = pytest.mark.usefixtures("clean_env")  # tests/unit/conftest.py


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_chats(tmp_path / "chats.jsonl")


def argv_for(command: str, data: Path) -> list[str]:
    """The smallest valid command line of each command."""
    return {
        "validate": ["validate", str(data)],
        "plan": ["plan", str(data), "--line", "support"],
        "submit": ["submit", str(data), "--line", "support"],
        "status": ["status"],
        "promote": ["promote", "tl-support-0123456789ab-0123456789"],
        "retract": ["retract", "support-1", "--line", "support"],
        "sweep": ["sweep"],
        "up": ["up"],
        "demo": ["demo"],
        "upload": ["upload", str(data), "--line", "support"],
        "doctor": ["doctor"],
        "trace": ["trace", "tl-support-0123456789ab-0123456789"],
        "events": ["events"],
    }[command]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --- help ------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_renders_and_lists_every_command(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tuneloop --help` and `-h` print every command and exit 0 (no %-format crash)."""
    with pytest.raises(SystemExit) as exit_info:
        main([flag])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"    {name} " in out, name


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_renders(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`tuneloop <command> --help` renders and exits 0 for every command."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: tuneloop {command}")


def test_bare_tuneloop_lists_the_commands_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`tuneloop` alone prints the commands on stderr and exits 2, as a usage error."""
    assert main([]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: tuneloop")
    for name in COMMANDS:
        assert f"    {name} " in err, name


def test_every_command_has_a_minimal_command_line(dataset: Path) -> None:
    """The per-command tests below cover every command (a new one must be added to argv_for)."""
    parser = cli.main.build_parser()
    for name in COMMANDS:
        assert parser.parse_args(argv_for(name, dataset)).command == name


def test_verbose_is_accepted_after_the_command_too(dataset: Path) -> None:
    """`tuneloop plan ... -v` means the same as `tuneloop -v plan ...`."""
    parser = cli.main.build_parser()
    assert parser.parse_args([*argv_for("plan", dataset), "-v"]).verbose is True
    assert parser.parse_args(["-v", *argv_for("plan", dataset)]).verbose is True
    assert parser.parse_args(argv_for("plan", dataset)).verbose is False


# --- invalid settings, in every command ------------------------------------------------


# (setting, value, what the line says is wrong): the first two in every command, the rest in one
EVERY_COMMAND = [
    ("TUNELOOP_PROMOTION", "yolo", "should be 'exam', 'auto', 'manual' or 'gate'"),
    ("TUNELOOP_LINE_OVERRIDES", "{bad", "not JSON"),
]
MORE_SETTINGS = [
    ("TUNELOOP_IDLE_AFTER", "3h", "is not an ISO-8601 duration"),
    ("TUNELOOP_MIN_EXAMPLES", "0", "greater than or equal to 1"),
    ("TUNELOOP_VALIDATION_FRACTION", "lots", "valid number"),
    ("TUNELOOP_LINE_OVERRIDES", '{"support": 5}', "at support"),
    ("TUNELOOP_PLATFORM", "aws", "should be 'auto', 'local' or 'azureml'"),
]
SETTING_CASES = [
    *((command, *case) for case in EVERY_COMMAND for command in COMMANDS),
    *(("validate", *case) for case in MORE_SETTINGS),
]


@pytest.mark.parametrize(
    ("command", "name", "value", "wrong"),
    SETTING_CASES,
    ids=[f"{c}-{n.removeprefix('TUNELOOP_').lower()}-{v}" for c, n, v, _ in SETTING_CASES],
)
def test_invalid_setting_is_one_line_and_exit_2_in_every_command(
    command: str,
    name: str,
    value: str,
    wrong: str,
    dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An invalid TUNELOOP_* setting stops any command with one line (which, what, what to do)."""
    monkeypatch.setenv(name, value)
    code = main(argv_for(command, dataset))
    captured = capsys.readouterr()
    assert code == EXIT_USAGE
    lines = error_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"tuneloop {command}: config_error: {name}")
    assert wrong in lines[0]
    assert f"fix {name} or unset it" in lines[0]
    assert captured.out == ""


def test_two_invalid_settings_are_named_on_one_line(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every invalid setting is named at once, not one per run."""
    monkeypatch.setenv("TUNELOOP_PROMOTION", "yolo")
    monkeypatch.setenv("TUNELOOP_SMOKE_EXAMPLES", "9")
    assert main(argv_for("status", dataset)) == EXIT_USAGE
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "TUNELOOP_PROMOTION" in lines[0]
    assert "TUNELOOP_SMOKE_EXAMPLES" in lines[0]


# --- one exit code per error type, in every command ------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("TUNELOOP_COMPUTE names no cluster", hint="set it"), EXIT_USAGE),
        (PlanError(["input lora_r = -4 is below 1"]), EXIT_USAGE),
        (NotFoundError("endpoint tl-x not found"), EXIT_FAILED),
    ],
    ids=["config", "plan", "platform"],
)
def test_errors_map_to_the_same_code_in_every_command(
    command: str,
    error: Exception,
    code: int,
    dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A TuneloopError out of any command is one line (command, code, what) and its exit code."""
    module = __import__(f"cli.commands.{command}", fromlist=["run"])

    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(module, "run", fail)
    assert main(argv_for(command, dataset)) == code
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0].startswith(f"tuneloop {command}: {error.code}: ")  # type: ignore[attr-defined]
    assert "Traceback" not in lines[0]


def test_plan_error_prints_one_line_per_problem_then_the_hint(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several problems: one `error:` line each, then one `hint:` line."""

    def fail(args: object) -> int:
        raise PlanError(["first problem", "second problem"], hint="fix them")

    monkeypatch.setattr(cli.commands.plan, "run", fail)  # type: ignore[attr-defined]
    assert main(argv_for("plan", dataset)) == EXIT_USAGE
    assert error_lines(capsys.readouterr().err) == [
        "tuneloop plan: plan_error: first problem",
        "tuneloop plan: plan_error: second problem",
        "tuneloop plan: hint: fix them",
    ]


def test_unexpected_error_is_one_line_and_the_traceback_only_with_v(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug is one line saying how to see more; -v shows the traceback."""

    def boom(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.commands.status, "run", boom)  # type: ignore[attr-defined]
    assert main(["status"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert error_lines(err) == [
        "tuneloop status: internal_error: unexpected RuntimeError: boom (run `tuneloop -v status "
        "...` for the traceback; please report it)"
    ]
    assert main(["-v", "status"]) == EXIT_FAILED
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# --- odd specs --------------------------------------------------------------------------

SPEC_HEAD = "name: my_pipeline\nversion: 1\ntype: pipeline\n"


@pytest.mark.parametrize("command", ["plan", "submit"])
@pytest.mark.parametrize(
    ("content", "wrong"),
    [
        (SPEC_HEAD + "inputs: 5\n", "inputs is a int, not a mapping"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a text file"),
        (SPEC_HEAD + "inputs:\n  lr:\n    default: 1\n", "inputs.lr has no type"),
        (SPEC_HEAD + "inputs:\n  lr:\n    type: number\n    min: abc\n", "inputs.lr.min = 'abc'"),
        (SPEC_HEAD + "inputs:\n  lr: 5\n", "inputs.lr is a int, not a mapping"),
        ("- just\n- a list\n", "is not a YAML mapping but list"),
        ("name: [unclosed\n", "is not valid YAML"),
    ],
    ids=["inputs-5", "binary", "no-type", "min-abc", "input-not-mapping", "list", "bad-yaml"],
)
def test_odd_component_spec_is_one_error_naming_file_and_field(
    command: str,
    content: str | bytes,
    wrong: str,
    dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A component spec that is not one exits 2 with a line naming the file and what is wrong."""
    monkeypatch.setenv("TUNELOOP_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    spec = tmp_path / "component.yaml"
    if isinstance(content, bytes):
        spec.write_bytes(content)
    else:
        spec.write_text(content, encoding="utf-8")
    argv = [*argv_for(command, dataset), "--component-spec", str(spec),
            "--compute-size", "Standard_NC24ads_A100_v4", "--gpus-per-node", "1"]  # fmt: skip
    assert main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert str(spec) in lines[0]
    assert wrong in lines[0]
    assert "Traceback" not in captured.err


def test_component_yaml_given_as_model_spec_is_refused(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The component spec passed as --model-spec is named as such, exit 2, nothing planned."""
    argv = [*argv_for("plan", dataset), "--model-spec", str(BUNDLED_COMPONENT_SPEC),
            "--compute-size", "Standard_NC24ads_A100_v4", "--gpus-per-node", "1"]  # fmt: skip
    assert main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = error_lines(captured.err)
    assert lines == [
        f"tuneloop plan: plan_error: model spec {BUNDLED_COMPONENT_SPEC} is a component spec "
        "(type: pipeline), not a "
        "model spec (pass a component spec (azureml-assets spec.yaml) as --component-spec and a "
        "model spec as --model-spec)"
    ]


# --- plan refuses nonsense -------------------------------------------------------------

A100 = ["--compute-size", "Standard_NC24ads_A100_v4", "--gpus-per-node", "1"]


@pytest.mark.parametrize(
    ("extra", "wrong"),
    [
        (["--set", "learning_rate=-0.1"], "input learning_rate = -0.1 (command line) is not above "
                                          "0, tuneloop's sanity minimum"),
        (["--set", "lora_r=-4"], "input lora_r = -4 (command line) is below 1, tuneloop's sanity "
                                 "minimum"),
        (["--set", "max_seq_length=-5"], "input max_seq_length = -5 (command line) is below 1"),
        (["--set", "max_seq_length=10000000"], "is above 131072, tuneloop's sanity maximum"),
        (["--set", "max_seq_length=20000"], "above Phi-4's context window of "
                                            "16384 tokens"),
        (["--set", "num_train_epochs=1000"], "input num_train_epochs = 1000 (command line) is "
                                             "above 100, tuneloop's sanity maximum"),
        (["--set", "num_nodes_finetune=500"], "is above 16, tuneloop's sanity maximum"),
    ],
    ids=["lr", "lora_r", "seqlen-neg", "seqlen-huge", "seqlen-context", "epochs", "nodes"],
)
def test_plan_refuses_values_beyond_reason_naming_the_bound(
    extra: list[str], wrong: str, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value past tuneloop's sanity bound exits 2 with one line saying which bound it hit."""
    assert main([*argv_for("plan", dataset), *A100, *extra]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = error_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert wrong in lines[0]


def test_plan_refuses_gpus_per_node_beyond_any_vm(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--gpus-per-node 64 is past the 8 GPUs of the largest Azure GPU VM: exit 2, which bound."""
    argv = [*argv_for("plan", dataset), "--compute-size", "Standard_NC24ads_A100_v4",
            "--gpus-per-node", "64"]  # fmt: skip
    assert main(argv) == EXIT_USAGE
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "number_of_gpu_to_use_finetuning = 64 (the GPUs per node of Standard_NC24ads_A100_v4)" \
        " is above 8, tuneloop's sanity maximum" in lines[0]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "empty_dataset"),
        (b"\x00\x01\x02\xff\xfe binary \x00" * 50 + b"\n", None),
    ],
    ids=["empty", "binary"],
)
def test_plan_validates_the_dataset_first(
    content: bytes,
    code: str | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty or binary dataset exits 1 with its problems; nothing is planned or printed."""
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    assert main([*argv_for("plan", data), *A100]) == EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = error_lines(captured.err)
    assert lines[-1].startswith(f"tuneloop plan: dataset_invalid: {data}: the dataset is not valid")
    assert "nothing was planned" in lines[-1]
    if code:
        assert lines[0].startswith(f"tuneloop plan: {code}: {data}: ")


def test_plan_of_a_valid_dataset_still_exits_0(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sane values within every bound plan as before."""
    argv = [*argv_for("plan", dataset), *A100, "--set", "learning_rate=1e-4", "--set",
            "lora_r=16", "--set", "max_seq_length=-1", "--json"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["parameters"]["lora_r"] == 16
    assert doc["parameters"]["max_seq_length"] == -1


def test_plan_text_output_names_serverless_and_no_minus_one(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text plan says serverless (not "compute None") and no "seqlen-1" in the job name."""
    assert main([*argv_for("plan", dataset), *A100]) == 0
    out = capsys.readouterr().out
    compute = next(line for line in out.splitlines() if line.startswith("compute "))
    assert compute.split(None, 1)[1] == "serverless (no cluster)"
    display = next(line for line in out.splitlines() if line.startswith("display_name "))
    assert display.endswith("-save_limit1-seqlen_model_max")
    assert "None" not in out.split("parameters:")[0]


def test_a_closed_stdout_is_not_an_error(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tuneloop plan ... | head`: the reader going away is exit 141 with no error line."""

    def closed(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli.commands.plan, "run", closed)  # type: ignore[attr-defined]
    assert main(argv_for("plan", dataset)) == cli.main.EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""
