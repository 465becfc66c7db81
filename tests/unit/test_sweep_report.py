"""The sweep report, the CLI's decision table and the adapter's parsing helpers (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cli.commands.sweep import format_table
from shared.platform.azureml._sweep import _parse_time, _region, _resource_of_metric
from shared.sweep import Action, Decision, SweepPolicy, SweepReport

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def decision(name: str, action: Action, **kw: object) -> Decision:
    base: dict[str, object] = {
        "endpoint": name, "line": name.removeprefix("tl-"), "action": action,
        "reason": f"because {name}", "requests": 0, "created": NOW - timedelta(days=3, hours=4),
        "modified": NOW - timedelta(days=2), "idle_since": NOW - timedelta(days=2),
        "provisioning_state": "Succeeded", "location": "eastus",
    }
    base.update(kw)
    return Decision(**base)  # type: ignore[arg-type]


def report() -> SweepReport:
    r = SweepReport(
        started=NOW, mode="delete", platform="azureml",
        policy=SweepPolicy(idle_after=timedelta(hours=24), max_requests=0, max_deletions=1),
    )
    r.decisions = [
        decision("tl-a", Action.DELETE, outcome="deletion-started"),
        decision("tl-b", Action.SKIP_OVER_CAP),
        decision("tl-c", Action.KEEP, requests=None, created=None, reason="request count unknown"),
        decision("tl-d", Action.DELETE, outcome="failed", error="conflict: busy"),
    ]
    r.finished = NOW + timedelta(seconds=3)
    return r


def test_report_is_json_with_every_decision_and_a_summary() -> None:
    """The report serialises to JSON: policy, summary counts and one entry per endpoint."""
    data = json.loads(json.dumps(report().to_dict()))
    assert data["policy"] == {"idle_after": "1d", "idle_max_requests": 0, "max_deletions": 1}
    assert data["summary"] == {
        "endpoints": 4, "delete": 2, "keep": 1, "skip-over-cap": 1,
        "deletion_started": 1, "failed": 1,
    }
    assert [d["endpoint"] for d in data["decisions"]] == ["tl-a", "tl-b", "tl-c", "tl-d"]
    assert data["decisions"][0]["age"] == "3d4h"
    assert data["decisions"][2]["age"] is None
    assert data["metrics"] == {"available": True, "error": None, "note": None}


def test_table_has_one_row_per_endpoint_and_shows_failures() -> None:
    """The CLI table lists name, line, requests, age, decision (with outcome) and reason."""
    text = format_table(report().to_dict())
    lines = text.splitlines()
    assert lines[0].split() == ["endpoint", "line", "requests", "age", "decision", "reason"]
    assert "delete (deletion-started)" in lines[1]
    assert "skip-over-cap" in lines[2]
    assert lines[3].split()[:4] == ["tl-c", "c", "?", "?"]
    assert "[error: conflict: busy]" in lines[4]
    assert "4 endpoints: 2 to delete, 1 kept, 1 over the cap" in text


def test_table_says_when_metrics_were_unavailable() -> None:
    """A metrics outage is spelled out under the table."""
    r = report()
    r.metrics_error = "metrics query failed: 503"
    assert "metrics unavailable, nothing deleted: metrics query failed: 503" in format_table(
        r.to_dict()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00.123000+0000", datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)),
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T02:00:00+02:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.000000", datetime(2026, 1, 1, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_system_data_times_parse_or_read_as_unknown(
    text: str | None, expected: datetime | None
) -> None:
    """systemData times in the SDK's format (or ISO) parse to aware UTC; junk is unknown."""
    assert _parse_time(text) == expected


def test_regions_and_metric_ids_normalise() -> None:
    """Display names become region codes; a metric id yields its resource id, lower case."""
    assert _region("East US 2") == "eastus2"
    assert _region("westeurope") == "westeurope"
    assert _region(None) is None
    rid = "/subscriptions/S/resourceGroups/RG/providers/X/onlineEndpoints/E"
    assert _resource_of_metric(
        f"{rid}/providers/Microsoft.Insights/metrics/RequestsPerMinute"
    ) == rid.lower()
    assert _resource_of_metric("/not/a/metric") is None
