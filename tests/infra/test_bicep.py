"""infra/ parses, and its parameters say what they are and what Azure allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicep import BICEP_FILES, INFRA, ROOT, parse

# Parameters whose values Azure constrains, and the decorator that states the rule.
_RULES = {"string": {"min_length", "allowed"}, "int": {"min_value", "allowed"}}
# Free-form by nature: tags (any object), settings objects, arrays checked by @minLength.
_FREE = {"tags", "tuneloopSettings", "principalId", "userPrincipalId"}


def test_there_is_infra_to_check() -> None:
    """azd's entry point and its modules exist."""
    assert (INFRA / "main.bicep").is_file()
    assert (ROOT / "azure.yaml").is_file()
    assert len(BICEP_FILES) >= 5


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    """Each .bicep parses with pycep-parser (what checkov reads it with)."""
    parsed = parse(path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path}: declares nothing"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_parameter_has_a_description_and_its_rule(path: Path) -> None:
    """Each param has @description; strings and ints Azure constrains state @minLength/@allowed."""
    problems = []
    for name, param in parse(path).get("parameters", {}).items():
        kinds = {d["type"] for d in param["decorators"]}
        if "description" not in kinds:
            problems.append(f"{name}: no @description")
        rule = _RULES.get(param["type"])
        if rule and name not in _FREE and not kinds & rule:
            problems.append(f"{name}: no {' or '.join(sorted('@' + r for r in rule))}")
    assert not problems, f"{path.relative_to(ROOT)}: {problems}"


def test_no_registry_modules() -> None:
    """Modules are local files (br/public:avm needs the network; checkov cannot see inside)."""
    for path in BICEP_FILES:
        for name, module in parse(path).get("modules", {}).items():
            source = str(module.get("path", module))
            assert "br/" not in source, f"{path}: module {name}"
            assert "br:" not in source, f"{path}: module {name}"


def test_no_shared_keys_on_the_data_and_host_accounts() -> None:
    """The accounts tuneloop's identity uses allow no shared key, TLS 1.2, no public blobs."""
    storage = parse(INFRA / "modules" / "storage.bicep")
    common = storage["variables"]["commonProperties"]["value"]
    assert common["allowSharedKeyAccess"] is False
    assert common["allowBlobPublicAccess"] is False
    assert common["minimumTlsVersion"] == "TLS1_2"
    for name in ("data", "host"):
        assert storage["resources"][name]["config"]["properties"] == "commonProperties"


def test_the_ledger_table_and_its_active_table_are_declared() -> None:
    """storage.bicep creates the ledger table and the active table the ledger derives from its
    name (shared.ledger.active_table_name), on the data account."""
    from shared.ledger import active_table_name

    storage = parse(INFRA / "modules" / "storage.bicep")
    tables = {
        r["config"]["name"] for r in storage["resources"].values()
        if r["type"] == "Microsoft.Storage/storageAccounts/tableServices/tables"
    }
    assert tables == {"ledgerTable", active_table_name("${ledgerTable}")}
    longest = storage["parameters"]["ledgerTable"]["decorators"]
    assert {"type": "max_length", "argument": 63 - len(active_table_name(""))} in longest


def test_the_gpu_cluster_scales_to_zero() -> None:
    """Min 0 nodes: an idle cluster costs nothing."""
    ml = parse(INFRA / "modules" / "ml.bicep")
    scale = ml["resources"]["cluster"]["config"]["properties"]["properties"]["scaleSettings"]
    assert scale["minNodeCount"] == 0


def test_both_event_subscriptions_dead_letter_and_retry() -> None:
    """No event is lost: each subscription has a retry policy and a dead-letter destination."""
    subs = parse(INFRA / "events" / "subscriptions.bicep")
    found = {
        name: r["config"]["properties"] for name, r in subs["resources"].items()
        if r["type"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    }
    assert set(found) == {"blobCreated", "jobEvents"}
    for props in found.values():
        assert props["retryPolicy"] == "retryPolicy"
        assert props["deadLetterWithResourceIdentity"] == "deadLetter"
    jobs = found["jobEvents"]
    assert jobs["destination"]["endpointType"] == "AzureFunction"
    assert set(jobs["filter"]["includedEventTypes"]) == {
        "Microsoft.MachineLearningServices.RunCompleted",
        "Microsoft.MachineLearningServices.RunStatusChanged",
    }
    assert found["blobCreated"]["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]


def test_event_subscriptions_name_our_functions_and_tag() -> None:
    """The endpoints are the functions the app registers; the filter is on our run tag."""
    from shared.naming import RUN_TAG

    text = (INFRA / "events" / "subscriptions.bicep").read_text()
    assert f"var runTag = '{RUN_TAG}'" in text
    assert "/functions/on_job_event'" in text
    assert "functionName=Host.Functions.ingest_dataset&" in text
    functions = {p.stem: p.read_text() for p in (ROOT / "functions").glob("*.py")}
    assert '@bp.function_name("on_job_event")' in functions["job_events"]
    assert '@bp.function_name("ingest_dataset")' in functions["ingest"]


def test_the_azd_parameters_file_names_only_parameters_of_main() -> None:
    """main.parameters.json maps azd variables onto parameters main.bicep declares."""
    import json

    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = parse(INFRA / "main.bicep")["parameters"]
    assert set(mapped) <= set(declared)
    required = {name for name, p in declared.items() if p["default"] is None}
    assert required <= set(mapped), "azd cannot fill these parameters"


def test_the_deployment_package_leaves_out_what_the_host_does_not_need() -> None:
    """.funcignore keeps venvs, node_modules, tests and cli/ out of the package, the app in."""
    ignored = {
        line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv/", ".venv-iac/", "node_modules/", "tests/", "infra/", "cli/"} <= ignored
    kept = {"function_app.py", "host.json", "requirements.txt", "functions/", "shared/"}
    assert not kept & ignored
