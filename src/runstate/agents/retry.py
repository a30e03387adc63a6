"""Retry policy of a durable step: how many attempts, how long to wait, for which reasons.

The policy is pure arithmetic over recorded facts (the failed attempt's number, its reason and
when it ended), so the same answer comes out before and after a crash: the next attempt's
``not_before`` is written to the log as ``RetryScheduled`` and a restarted agent reads it back
from the state instead of retrying at once. That is the article's "time of the last attempt":
without it, a crashing step retries in a tight loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from runstate.schemas.events import FailureReason

__all__ = ["DEFAULT_RETRYABLE", "NO_RETRY", "RetryDecision", "RetryPolicy"]

#: Reasons worth another attempt by default: the service may answer next time. A rejection or
#: a malformed answer usually repeats, so those fail the run unless a policy says otherwise.
DEFAULT_RETRYABLE = frozenset({FailureReason.TIMEOUT, FailureReason.EMPTY_RESPONSE})


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt: retry at ``not_before``, or give up (``None``)."""

    next_attempt: int | None
    not_before: datetime | None
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff: attempt ``n`` failed -> wait ``min(max, base * factor**(n-1))``.

    No jitter: delays are reproducible in tests and the demo. Agents of many runs hitting one
    service at once should add their own spread (e.g. a per-run ``base_s``).
    """

    max_attempts: int = 3
    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 300.0
    retry_on: frozenset[FailureReason] = field(default=DEFAULT_RETRYABLE)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_s < 0 or self.max_s < 0 or self.factor < 1:
            raise ValueError("base_s and max_s must be >= 0 and factor >= 1")

    def delay(self, failed_attempt: int) -> timedelta:
        """How long to wait after attempt ``failed_attempt`` (1-based) failed."""
        seconds = self.base_s * self.factor ** max(0, failed_attempt - 1)
        return timedelta(seconds=min(self.max_s, seconds))

    def decide(
        self, *, failed_attempt: int, reason: FailureReason, failed_at: datetime
    ) -> RetryDecision:
        """Retry or give up after attempt ``failed_attempt`` failed at ``failed_at``.

        ``failed_at`` is when the attempt ended (the ``StepFailed`` time), so a slow attempt
        that timed out still waits the full delay before the next one.
        """
        if reason not in self.retry_on:
            return RetryDecision(None, None, f"{reason.value} is not retryable by this policy")
        if failed_attempt >= self.max_attempts:
            return RetryDecision(
                None, None, f"all {self.max_attempts} attempts failed (last: {reason.value})"
            )
        return RetryDecision(
            failed_attempt + 1,
            failed_at + self.delay(failed_attempt),
            f"{reason.value}; attempt {failed_attempt + 1} of {self.max_attempts}",
        )


#: One attempt, no retry: for steps whose failure a person should look at.
NO_RETRY = RetryPolicy(max_attempts=1)
