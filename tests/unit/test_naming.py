"""Names derived from lines: injective over valid lines (endpoints: over (workspace, line)),
valid for Azure ML, stable."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.naming import (
    deployment_name,
    endpoint_name,
    endpoint_scope,
    experiment_name,
    is_valid_endpoint_name,
    is_valid_job_name,
    is_valid_line,
    is_valid_model_name,
    line_key,
    model_name,
    run_id,
    scope_key,
)
from shared.settings import Settings

SHA = hashlib.sha256(b"dataset").hexdigest()
FP = hashlib.sha256(b"plan").hexdigest()
WORKSPACE = (
    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg-tuneloop/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws-tuneloop"
)
WS_KEY = hashlib.sha256(WORKSPACE.lower().encode()).hexdigest()[:8]

# Any valid line, and lines from a tiny alphabet, whose slugs collide all the time.
ANY_LINE = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
CLASHING_LINE = st.from_regex(r"\A[aA1][aA1._-]{0,62}\Z")
LINES = st.lists(st.one_of(ANY_LINE, CLASHING_LINE), min_size=2, max_size=12, unique=True)

NAMERS: dict[str, Callable[[str], str]] = {
    "run id": lambda line: run_id(line, SHA, FP),
    "experiment": experiment_name,
    "model": model_name,
    "endpoint": lambda line: endpoint_name(line, WORKSPACE),
}
VALID: dict[str, Callable[[str], bool]] = {
    "run id": is_valid_job_name,
    "experiment": is_valid_job_name,  # letters, digits, _ and -, ≤ 255: the job name shape
    "model": is_valid_model_name,
    "endpoint": is_valid_endpoint_name,
}


@pytest.mark.parametrize("kind", list(NAMERS))
@pytest.mark.parametrize(
    "lines", [("support", "Support"), ("a.b", "a-b", "a_b"), ("x--y", "x-y"), ("ab", "AB", "aB")]
)
def test_lines_a_slug_confuses_get_distinct_names(kind: str, lines: tuple[str, ...]) -> None:
    """Lines that differ only in case or punctuation get distinct names of every kind."""
    names = [NAMERS[kind](line) for line in lines]
    assert len(set(names)) == len(lines), names


@pytest.mark.parametrize("kind", list(NAMERS))
def test_long_lines_with_a_common_prefix_get_distinct_names(kind: str) -> None:
    """Lines that share the part of them a name has room for still get distinct names."""
    a, b = "a" * 62 + "1", "a" * 62 + "2"
    assert NAMERS[kind](a) != NAMERS[kind](b)


@settings(max_examples=300, deadline=None)
@given(LINES)
def test_distinct_valid_lines_get_distinct_valid_names(lines: list[str]) -> None:
    """For every kind of name: distinct valid lines give distinct names, each one valid."""
    for kind, namer in NAMERS.items():
        names = [namer(line) for line in lines]
        assert len(set(names)) == len(lines), (kind, lines, names)
        assert all(VALID[kind](n) for n in names), (kind, names)
        assert all(n == n.lower() for n in names), (kind, names)  # ARM ignores case


@settings(max_examples=300, deadline=None)
@given(st.one_of(ANY_LINE, CLASHING_LINE))
def test_a_line_key_is_the_line_itself_or_ends_with_its_hash(line: str) -> None:
    """A key is the line (lossless) or ``<slug>--<8 hex of the exact line's SHA-256>``."""
    assert is_valid_line(line)
    key = line_key(line)
    digest = hashlib.sha256(line.encode()).hexdigest()[:8]
    assert key == line or (key.endswith(f"--{digest}") and key.count("--") == 1)


def test_lossless_lines_keep_todays_names() -> None:
    """A line that is already its own slug keeps the names it had before hashing existed
    (endpoints add the workspace's key: names are unique per region, see below)."""
    assert endpoint_name("support", WORKSPACE) == f"tl-support-{WS_KEY}"
    assert model_name("order-status") == "tuneloop-order-status"
    assert experiment_name("support") == "tuneloop-support"
    assert run_id("support", SHA, FP) == f"tl-support-{SHA[:12]}-{FP[:8]}"


def test_a_lossy_line_reads_as_its_slug_and_a_hash() -> None:
    """``Support`` stays recognisable: its slug, then the hash that tells it from ``support``."""
    digest = hashlib.sha256(b"Support").hexdigest()[:8]
    assert endpoint_name("Support", WORKSPACE) == f"tl-support--{digest}-{WS_KEY}"
    assert model_name("Support") == f"tuneloop-support--{digest}"


def test_the_longest_lines_fit_the_endpoint_limit() -> None:
    """A 63-character line still gives a 32-character endpoint name."""
    name = endpoint_name("Z" * 63, WORKSPACE)
    assert len(name) == 32
    assert is_valid_endpoint_name(name)


# --- endpoint names are unique per Azure region, across customers (issue 10, defect 6) ----

WORKSPACES = st.builds(
    lambda sub, rg, ws: (
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{ws}"
    ),
    st.uuids().map(str),
    st.from_regex(r"\A[A-Za-z0-9_.()-]{1,20}\Z"),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{2,32}\Z"),
)


def test_the_same_line_in_two_workspaces_gets_two_endpoint_names() -> None:
    """``support`` in two workspaces (two customers in one region) is not one name any more."""
    other = WORKSPACE.replace("ws-tuneloop", "ws-elsewhere")
    assert endpoint_name("support", WORKSPACE) != endpoint_name("support", other)
    assert endpoint_name("support", WORKSPACE) != "tl-support"


def test_the_workspace_key_ignores_case_like_arm() -> None:
    """ARM ids compare case-insensitively: one workspace, however spelled, one name."""
    assert scope_key(WORKSPACE.upper()) == scope_key(WORKSPACE) == WS_KEY
    assert scope_key(WORKSPACE + "/") == WS_KEY


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(WORKSPACES, st.one_of(ANY_LINE, CLASHING_LINE)), min_size=2,
                max_size=12, unique_by=lambda p: (p[0].lower(), p[1])))
def test_endpoint_names_are_injective_over_workspace_and_line(
    pairs: list[tuple[str, str]],
) -> None:
    """Distinct (workspace, line) pairs give distinct endpoint names, each valid (3-32,
    letter first, letters/digits/hyphens, lower case)."""
    names = [endpoint_name(line, ws) for ws, line in pairs]
    assert len(set(names)) == len(pairs), (pairs, names)
    for name in names:
        assert is_valid_endpoint_name(name), name
        assert len(name) <= 32
        assert name == name.lower()


def test_endpoint_scope_is_the_workspace_or_the_local_home(tmp_path: Path) -> None:
    """Azure ML: the workspace's ARM id; local: the resolved home, stable and distinct per home."""
    azure = Settings(
        platform="azureml", subscription_id="00000000-1111-2222-3333-444444444444",
        resource_group="rg-tuneloop", workspace_name="ws-tuneloop",
    )
    assert endpoint_scope(azure) == WORKSPACE
    one = Settings(platform="local", home=tmp_path / "a")
    again = Settings(platform="local", home=tmp_path / "x" / ".." / "a")
    other = Settings(platform="local", home=tmp_path / "b")
    assert endpoint_scope(one) == endpoint_scope(again) == f"local:{(tmp_path / 'a').resolve()}"
    assert endpoint_scope(one) != endpoint_scope(other)


def test_deployment_names_are_valid_and_per_version() -> None:
    """Deployments are named by version (unique on the line's own endpoint), ≥ 3 characters."""
    assert deployment_name(1) == "v01"
    assert deployment_name("12") == "v12"
    with pytest.raises(ValueError, match="invalid deployment name"):
        deployment_name("1.2")
