"""What a launch check reports: a verdict, one line of evidence, and the details behind it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckResult", "LaunchReport", "NotRun", "Verdict"]


class Verdict(enum.StrEnum):
    """PASS: the promise held. WARN: it held, but something deserves a look. FAIL: broken."""

    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


class NotRun(Exception):
    """A check could not run because an earlier one left nothing to check (said why)."""


@dataclass(frozen=True)
class CheckResult:
    """One of the five checks.

    Attributes:
        number: 1 to 5, in the article's order.
        name: What was checked, in words.
        verdict: PASS, WARN or FAIL.
        evidence: What was seen, in one or a few lines (the table's last column).
        details: Everything measured, for ``--json``.
    """

    number: int
    name: str
    verdict: Verdict
    evidence: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.number,
            "name": self.name,
            "result": self.verdict.value,
            "evidence": self.evidence,
            "details": self.details,
        }


@dataclass
class LaunchReport:
    """Every check's result for one synthetic run."""

    run_id: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings do not fail a launch)."""
        return all(r.verdict is not Verdict.FAIL for r in self.results)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "checks": [r.as_json() for r in self.results],
        }
