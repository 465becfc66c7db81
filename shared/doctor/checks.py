"""What a doctor check returns, and the one place where a check's error becomes a result."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.errors import NotFoundError, PermissionDeniedError, TuneloopError, UnreachableError

__all__ = ["Check", "Outcome", "Report", "Role", "attempt"]

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """ok: as it must be; warn: works, but worth a look (exit 0); fail: fix it (exit 1);
    skip: not checked because a check it depends on failed (that one carries the exit 1)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One finding: ``name`` is stable (``workspace``, ``role.table`` ...), ``what`` says what
    was found, ``fix`` what to do (empty when nothing is to be done)."""

    name: str
    outcome: Outcome
    what: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "outcome": self.outcome.value, "what": self.what,
                "fix": self.fix}


def ok(name: str, what: str) -> Check:
    return Check(name, Outcome.OK, what)


def warn(name: str, what: str, fix: str) -> Check:
    return Check(name, Outcome.WARN, what, fix)


def fail(name: str, what: str, fix: str) -> Check:
    return Check(name, Outcome.FAIL, what, fix)


def skip(name: str, what: str, fix: str) -> Check:
    return Check(name, Outcome.SKIP, what, fix)


@dataclass(frozen=True)
class Role:
    """An RBAC role the code needs, on a scope (``workspace ws-tuneloop``)."""

    name: str
    scope: str

    def missing(self) -> str:
        return f"missing {self.name} on {self.scope}"


@dataclass(frozen=True)
class Report:
    """Every check of one run of ``tuneloop doctor``."""

    platform: str  # azureml | local
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """No check failed (warnings allowed)."""
        return all(c.outcome != Outcome.FAIL for c in self.checks)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.checks if c.outcome == outcome)

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "passed": self.passed,
            "counts": {o.value: self.count(o) for o in Outcome},
            "checks": [c.to_dict() for c in self.checks],
        }


def attempt(
    name: str,
    check: Callable[[], Check | Iterable[Check]],
    *,
    role: Role | None = None,
    not_found: str | None = None,
) -> list[Check]:
    """Run one check; any error becomes a failed result instead of stopping the doctor.

    A 401/403 (PermissionDeniedError) with a ``role`` reads "missing <role> on <scope>"; a
    404 (NotFoundError) gets the ``not_found`` fix; other tuneloop errors keep their message
    and hint; anything else is a bug in the check,
    reported as such.
    """
    try:
        found = check()
        results = [found] if isinstance(found, Check) else list(found)
    except PermissionDeniedError as exc:
        if role is not None:
            return [fail(name, f"{role.missing()}: {exc.message}",
                         f"grant the identity {role.name} on {role.scope}")]
        return [fail(name, exc.message, exc.hint or "check the identity's role assignments")]
    except NotFoundError as exc:
        return [fail(name, exc.message, not_found or exc.hint or "see the message")]
    except UnreachableError as exc:
        return [fail(name, exc.message, exc.hint or "check the address, the network and "
                     "that the service runs")]
    except TuneloopError as exc:
        return [fail(name, exc.message, exc.hint or "see the message")]
    except Exception as exc:  # a doctor lists every problem; one broken check must not hide them
        log.debug("doctor check %s raised", name, exc_info=True)
        return [fail(name, f"the check itself failed: {type(exc).__name__}: {exc}",
                     "run `tuneloop -v doctor` and report it")]
    return results
