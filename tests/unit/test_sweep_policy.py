"""The pure idle policy ``select_idle``: property-based and example tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.naming import endpoint_name as scoped_endpoint_name
from shared.platform.port import EndpointInfo
from shared.sweep import Action, Decision, SweepPolicy, select_idle

SCOPE = "tests:sweep-policy"  # endpoint names are per workspace (shared.naming.endpoint_scope)


def endpoint_name(line: str) -> str:
    return scoped_endpoint_name(line, SCOPE)


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = SweepPolicy(idle_after=DAY, max_requests=0, max_deletions=5)
LINES = ("alpha", "beta", "gamma", "delta")


def endpoint(
    name: str = "tl-alpha",
    *,
    line: str | None = "alpha",
    managed: str | None = "true",
    protect: str | None = None,
    state: str = "Succeeded",
    created: datetime | None = NOW - 10 * DAY,
    modified: datetime | None = NOW - 5 * DAY,
) -> EndpointInfo:
    tags: dict[str, str] = {}
    if managed is not None:
        tags["tuneloop_managed"] = managed
    if line is not None:
        tags["tuneloop_line"] = line
    if protect is not None:
        tags["tuneloop_protect"] = protect
    return EndpointInfo(
        name=name,
        id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices"
        f"/workspaces/ws/onlineEndpoints/{name}",
        tags=tags,
        created=created,
        modified=modified,
        provisioning_state=state,
        traffic={"blue": 100},
        location="eastus",
    )


def decide(
    endpoints: list[EndpointInfo],
    traffic: dict[str, int],
    *,
    policy: SweepPolicy = POLICY,
    in_release: frozenset[str] = frozenset(),
) -> list[Decision]:
    return select_idle(
        endpoints, traffic, now=NOW, policy=policy, lines_in_release=in_release, scope=SCOPE
    )


# -- generated worlds ------------------------------------------------------------------------

offsets = st.one_of(
    st.none(),
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=30)),
)


World = tuple[list[EndpointInfo], dict[str, int], SweepPolicy, frozenset[str]]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n = draw(st.integers(min_value=0, max_value=12))
    endpoints: list[EndpointInfo] = []
    traffic: dict[str, int] = {}
    for i in range(n):
        line = draw(st.one_of(st.none(), st.sampled_from(LINES)))
        name = endpoint_name(line) if line and draw(st.booleans()) else f"ep-{i}"
        if any(e.name == name for e in endpoints):
            name = f"ep-{i}"
        created_ago, modified_ago = draw(offsets), draw(offsets)
        endpoints.append(
            endpoint(
                name,
                line=line,
                managed=draw(st.sampled_from([None, "true", "TRUE", " True ", "false", "yes", ""])),
                protect=draw(st.sampled_from([None, None, "true", "True", "false", "1", ""])),
                state=draw(
                    st.sampled_from(["Succeeded", "succeeded", "Creating", "Updating",
                                     "Deleting", "Failed", "Canceled", ""])
                ),
                created=None if created_ago is None else NOW - created_ago,
                modified=None if modified_ago is None else NOW - modified_ago,
            )
        )
        count = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=5)))
        if count is not None:
            traffic[name] = count
    policy = SweepPolicy(
        idle_after=draw(st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=7))),
        max_requests=draw(st.integers(min_value=0, max_value=3)),
        max_deletions=draw(st.integers(min_value=0, max_value=6)),
    )
    in_release = frozenset(draw(st.sets(st.sampled_from(LINES))))
    return endpoints, traffic, policy, in_release


def _deletable(e: EndpointInfo, traffic: dict[str, int], policy: SweepPolicy,
               in_release: frozenset[str]) -> bool:
    """An independent statement of the rules, written plainly."""
    tags = {k.lower(): v for k, v in e.tags.items()}
    line = (tags.get("tuneloop_line") or "").strip() or None
    return (
        tags.get("tuneloop_managed", "").strip().lower() == "true"
        and ("tuneloop_protect" not in tags or tags["tuneloop_protect"].strip().lower() == "false")
        and e.provisioning_state.lower() == "succeeded"
        and e.created is not None
        and e.modified is not None
        and e.created <= NOW - policy.idle_after
        and e.modified <= NOW - policy.idle_after
        and e.name in traffic
        and traffic[e.name] <= policy.max_requests
        and line is not None
        and line not in in_release
        and e.name not in {endpoint_name(x) for x in in_release}
    )


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_only_endpoints_that_pass_every_rule_are_deleted(world: World) -> None:
    """No combination deletes an unmanaged, protected, young, recently modified, busy,
    unknown-traffic, non-Succeeded or mid-release endpoint."""
    endpoints, traffic, policy, in_release = world
    decisions = decide(endpoints, traffic, policy=policy, in_release=in_release)
    by_name = {e.name: e for e in endpoints}
    for d in decisions:
        if d.action is Action.DELETE:
            assert _deletable(by_name[d.endpoint], traffic, policy, in_release), d


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_cap_holds_and_the_longest_idle_go_first(world: World) -> None:
    """At most max_deletions are deleted, every other idle one is skipped over the cap, and
    no skipped endpoint has been idle longer than a deleted one."""
    endpoints, traffic, policy, in_release = world
    decisions = decide(endpoints, traffic, policy=policy, in_release=in_release)
    by_name = {e.name: e for e in endpoints}
    deleted = [d for d in decisions if d.action is Action.DELETE]
    skipped = [d for d in decisions if d.action is Action.SKIP_OVER_CAP]
    idle = [e for e in endpoints if _deletable(e, traffic, policy, in_release)]
    assert len(deleted) == min(policy.max_deletions, len(idle))
    assert len(deleted) + len(skipped) == len(idle)
    for s in skipped:
        assert _deletable(by_name[s.endpoint], traffic, policy, in_release)
        assert "cap" in s.reason
        for d in deleted:
            assert d.idle_since is not None
            assert s.idle_since is not None
            assert d.idle_since <= s.idle_since


@settings(max_examples=120, deadline=None)
@given(worlds())
def test_every_endpoint_gets_one_decision_with_a_reason(world: World) -> None:
    """Decisions come back one per endpoint, in input order, each with a non-empty reason."""
    endpoints, traffic, policy, in_release = world
    decisions = decide(endpoints, traffic, policy=policy, in_release=in_release)
    assert [d.endpoint for d in decisions] == [e.name for e in endpoints]
    assert all(d.reason.strip() for d in decisions)


@settings(max_examples=120, deadline=None)
@given(worlds())
def test_policy_is_deterministic_and_order_independent(world: World) -> None:
    """The same facts in another order delete the same endpoints."""
    endpoints, traffic, policy, in_release = world
    forward = decide(endpoints, traffic, policy=policy, in_release=in_release)
    backward = decide(endpoints[::-1], traffic, policy=policy, in_release=in_release)
    assert {d.endpoint for d in forward if d.action is Action.DELETE} == {
        d.endpoint for d in backward if d.action is Action.DELETE
    }


@settings(max_examples=120, deadline=None)
@given(worlds())
def test_unknown_traffic_never_deletes(world: World) -> None:
    """With no request counts at all (metrics outage), nothing is deleted."""
    endpoints, _, policy, in_release = world
    decisions = decide(endpoints, {}, policy=policy, in_release=in_release)
    assert all(d.action is Action.KEEP for d in decisions)


# -- examples: one rule at a time --------------------------------------------------------------


def test_idle_managed_endpoint_is_deleted_with_a_reason() -> None:
    """A managed, unprotected, old, unchanged, unused endpoint is deleted, saying why."""
    [d] = decide([endpoint()], {"tl-alpha": 0})
    assert d.action is Action.DELETE
    assert d.reason.startswith("idle: 0 requests in the last 1d")
    assert d.idle_since == NOW - 5 * DAY
    assert d.line == "alpha"


def test_each_rule_alone_keeps_the_endpoint() -> None:
    """Breaking any single rule keeps the endpoint and names the rule."""
    idle = {"tl-alpha": 0}
    none: frozenset[str] = frozenset()
    cases = [
        ("not managed", endpoint(managed=None), idle, none),
        ("not managed", endpoint(managed="false"), idle, none),
        ("protected", endpoint(protect="true"), idle, none),
        ("young", endpoint(created=NOW - timedelta(hours=3)), idle, none),
        ("recently modified", endpoint(modified=NOW - timedelta(hours=2)), idle, none),
        ("busy", endpoint(), {"tl-alpha": 1}, none),
        ("request count unknown", endpoint(), {}, none),
        ("provisioning state is Updating", endpoint(state="Updating"), idle, none),
        ("release is in progress", endpoint(), idle, frozenset({"alpha"})),
        ("no tuneloop_line tag", endpoint(line=None), idle, none),
        ("unknown", endpoint(created=None), idle, none),
        ("unknown", endpoint(modified=None), idle, none),
    ]
    for phrase, ep, traffic, in_release in cases:
        [d] = decide([ep], traffic, in_release=in_release)
        assert d.action is Action.KEEP, phrase
        assert phrase in d.reason, (phrase, d.reason)


def test_mid_release_matches_by_endpoint_name_when_the_line_tag_differs() -> None:
    """A release on a line protects that line's endpoint even if its tag was edited."""
    ep = endpoint(endpoint_name("alpha"), line="other")
    [d] = decide([ep], {ep.name: 0}, in_release=frozenset({"alpha"}))
    assert d.action is Action.KEEP


def test_clock_skew_future_timestamps_keep() -> None:
    """Created or modified in the future (skewed clocks) keeps the endpoint."""
    for ep in (
        endpoint(created=NOW + timedelta(minutes=5)),
        endpoint(modified=NOW + timedelta(hours=1)),
    ):
        [d] = decide([ep], {"tl-alpha": 0})
        assert d.action is Action.KEEP
        assert "clock skew" in d.reason


def test_naive_timestamps_are_read_as_utc() -> None:
    """Timestamps without a zone are taken as UTC rather than crashing the comparison."""
    ep = endpoint(created=datetime(2026, 2, 1), modified=datetime(2026, 2, 2))
    [d] = decide([ep], {"tl-alpha": 0})
    assert d.action is Action.DELETE


def test_tag_names_and_values_are_case_insensitive() -> None:
    """Azure tag names are case-insensitive; so is the managed flag's value."""
    ep = EndpointInfo(
        name="tl-alpha", id="/subscriptions/s/x", tags={"TuneLoop_Managed": "TRUE",
                                                         "TUNELOOP_LINE": "alpha"},
        created=NOW - 9 * DAY, modified=NOW - 9 * DAY, provisioning_state="Succeeded",
        traffic={},
    )
    [d] = decide([ep], {"tl-alpha": 0})
    assert d.action is Action.DELETE
    protected = EndpointInfo(**{**ep.__dict__, "tags": {**ep.tags, "TuneLoop_Protect": "yes"}})
    [d] = decide([protected], {"tl-alpha": 0})
    assert d.action is Action.KEEP


def test_requests_up_to_the_threshold_are_idle() -> None:
    """``idle_max_requests`` is inclusive: 2 requests with a threshold of 2 is idle."""
    policy = SweepPolicy(idle_after=DAY, max_requests=2, max_deletions=5)
    [d] = decide([endpoint()], {"tl-alpha": 2}, policy=policy)
    assert d.action is Action.DELETE
    [d] = decide([endpoint()], {"tl-alpha": 3}, policy=policy)
    assert d.action is Action.KEEP


def test_cap_picks_the_oldest_idle_and_says_why_for_the_rest() -> None:
    """With a cap of 2, the two longest-idle go; the third is skipped over the cap."""
    eps = [
        endpoint("tl-a", line="a", modified=NOW - 2 * DAY),
        endpoint("tl-b", line="b", modified=NOW - 9 * DAY),
        endpoint("tl-c", line="c", modified=NOW - 4 * DAY),
    ]
    policy = SweepPolicy(idle_after=DAY, max_requests=0, max_deletions=2)
    decisions = decide(eps, dict.fromkeys(("tl-a", "tl-b", "tl-c"), 0), policy=policy)
    actions = {d.endpoint: d.action for d in decisions}
    assert actions == {"tl-a": Action.SKIP_OVER_CAP, "tl-b": Action.DELETE, "tl-c": Action.DELETE}
    assert "cap of 2" in decisions[0].reason


def test_traffic_error_is_quoted_in_the_reason() -> None:
    """When the metrics query failed, each managed endpoint's reason says why."""
    [d] = select_idle(
        [endpoint()], {}, now=NOW, policy=POLICY, lines_in_release=(),
        traffic_error="metrics query failed: 503",
    )
    assert d.action is Action.KEEP
    assert "request count unknown: metrics query failed: 503" in d.reason
