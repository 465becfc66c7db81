"""Offline checks of infra/: every .bicep parses, and checkov finds nothing unexplained.

Run with the IaC venv's Python (``make iac``): its pycep-parser is the one checkov uses, so a
file that parses here is a file checkov reads. Fails (exit 1) on a parse error, a failed
check, a checkov parsing error, a suppression without a reason, or a suppression that
suppresses nothing (stale). Needs no network: ``--skip-download`` and ``BC_SKIP_MAPPING``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
SKIP = re.compile(r"^\s*//\s*checkov:skip=(?P<id>[A-Z0-9_]+)(?::\s*(?P<reason>.*))?$")
MIN_REASON = 20  # characters: a reason, not a placeholder


def parse_all() -> list[str]:
    from pycep import BicepParser

    parser = BicepParser()
    problems = []
    for path in sorted(INFRA.rglob("*.bicep")):
        try:
            parser.parse(file_path=path)
        except Exception as exc:  # lark raises several types; each is a parse failure
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(f"{path.relative_to(ROOT)}: does not parse: {first}")
    return problems


def suppressions() -> tuple[list[tuple[str, str]], list[str]]:
    found: list[tuple[str, str]] = []
    problems = []
    for path in sorted(INFRA.rglob("*.bicep")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = SKIP.match(line)
            if not match:
                continue
            where = f"{path.relative_to(ROOT)}:{number}"
            if len((match["reason"] or "").strip()) < MIN_REASON:
                problems.append(f"{where}: checkov:skip={match['id']} has no reason")
            found.append((f"/{path.relative_to(INFRA)}", match["id"]))
    return found, problems


def run_checkov() -> dict[str, object]:
    checkov = Path(sys.executable).with_name("checkov")
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")
    done = subprocess.run(
        [str(checkov), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "-o", "json"],
        capture_output=True, text=True, env=env, check=False, timeout=600,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        sys.exit(f"checkov did not report (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    reports = report if isinstance(report, list) else [report]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    if not bicep:
        sys.exit("checkov found no Bicep to check under infra/")
    return bicep[0]


def main() -> int:
    problems = parse_all()
    skips, reasonless = suppressions()
    problems += reasonless
    report = run_checkov()
    results = report["results"]
    assert isinstance(results, dict)
    summary = report["summary"]
    assert isinstance(summary, dict)
    for check in results.get("failed_checks", []):
        problems.append(
            f"infra{check['file_path']}:{check['file_line_range'][0]}: {check['check_id']} "
            f"{check['check_name']} ({check['resource']}): fix it, or suppress it next to the "
            "resource with `// checkov:skip=<id>: <reason>`"
        )
    if summary.get("parsing_errors"):
        problems.append(f"checkov could not parse {summary['parsing_errors']} file(s): "
                        f"{results.get('parsing_errors')}")
    used = {(c["file_path"], c["check_id"]) for c in results.get("skipped_checks", [])}
    for file_path, check_id in skips:
        if (file_path, check_id) not in used:
            problems.append(f"infra{file_path}: checkov:skip={check_id} suppresses nothing (stale)")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"iac: {len(list(INFRA.rglob('*.bicep')))} Bicep files parse; checkov: "
          f"{summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['skipped']} suppressed with a reason")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
