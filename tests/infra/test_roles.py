"""docs/roles.md lists exactly the role assignments infra/ makes (role, scope, identity)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.infra.bicep import INFRA, ROOT, accessor, parse, resource_config

ROLE_MODULES = [
    INFRA / "modules" / "roles.bicep",
    INFRA / "modules" / "subscription-roles.bicep",
    INFRA / "modules" / "lifecycle-topic-role.bicep",
]
# Built-in role ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
BUILT_IN = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Storage Account Contributor": "17d1049b-9a84-46fb-8f53-869881c3d3ab",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Monitoring Reader": "43d0d8ad-25c7-4714-9337-8ba259a9fe05",
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
}


def bicep_assignments(path: Path) -> list[tuple[str, str, str]]:
    """(role name, scope symbol, principal symbol) of each role assignment in a module."""
    parsed = parse(path)
    roles: dict[str, Any] = parsed["variables"]["roles"]["value"]
    found = []
    for name, resource in parsed["resources"].items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource_config(resource)
        props = config["properties"]
        role_id = props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        path_ = accessor(role_id)
        assert path_[0] == "roles", f"{name}: role id not from var roles"
        assert path_[-1] == "id", f"{name}: role id not from var roles"
        role = roles[path_[1]]
        assert BUILT_IN[role["name"]] == role["id"], f"{name}: {role['name']} has the wrong id"
        scope = config.get("scope", "subscription()")
        found.append((role["name"], str(scope), str(props["principalId"])))
    return found


def docs_assignments() -> list[tuple[str, str, str]]:
    """The same triples from docs/roles.md's table (code names in backticks)."""
    rows = []
    for line in (ROOT / "docs" / "roles.md").read_text("utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("role", "---"):
            continue
        scope = re.search(r"`([^`]+)`", cells[1])
        who = re.search(r"`([^`]+)`", cells[2])
        assert scope, line
        assert who, line
        rows.append((cells[0], scope.group(1), who.group(1)))
    return rows


def test_the_roles_table_equals_the_role_assignments_in_bicep() -> None:
    """Row for row: a role added to Bicep without the table (or the reverse) fails."""
    in_bicep = sorted(a for path in ROLE_MODULES for a in bicep_assignments(path))
    assert len(in_bicep) == len(set(in_bicep)), "the same assignment twice"
    assert sorted(docs_assignments()) == in_bicep


def test_the_blob_trigger_identity_has_owner_and_queue_roles_on_the_data_account() -> None:
    """Defect 5: Storage Blob Data Owner + Storage Queue Data Contributor on the data account,
    and the host-storage roles for identity-based AzureWebJobsStorage."""
    app = {(r, s) for r, s, p in bicep_assignments(ROLE_MODULES[0]) if p == "appPrincipalId"}
    assert ("Storage Blob Data Owner", "dataAccount") in app
    assert ("Storage Queue Data Contributor", "dataAccount") in app
    assert ("Storage Blob Data Owner", "hostAccount") in app
    assert ("Storage Queue Data Contributor", "hostAccount") in app
    assert ("Storage Account Contributor", "hostAccount") in app


def test_subscription_scope_roles_are_in_the_subscription_module() -> None:
    """Monitoring Reader (metrics:getBatch, vmSizes) is assigned at subscription scope."""
    module = parse(ROLE_MODULES[1])
    assert module["globals"]["scope"]["value"] == "subscription"
    assert bicep_assignments(ROLE_MODULES[1]) == [
        ("Monitoring Reader", "subscription()", "appPrincipalId")
    ]
    rg_roles = {r for r, _, _ in bicep_assignments(ROLE_MODULES[0])}
    assert "Monitoring Reader" not in rg_roles
