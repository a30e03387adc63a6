"""Retry policy arithmetic: delays, limits, reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runstate.agents.retry import NO_RETRY, RetryPolicy
from runstate.schemas.events import FailureReason

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=1.0, factor=2.0, max_s=5.0)
    assert [policy.delay(n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_next_attempt_waits_from_when_the_failed_attempt_ended() -> None:
    policy = RetryPolicy(max_attempts=3, base_s=2.0, factor=3.0)
    first = policy.decide(failed_attempt=1, reason=FailureReason.TIMEOUT, failed_at=T0)
    second = policy.decide(failed_attempt=2, reason=FailureReason.TIMEOUT, failed_at=T0)
    assert (first.next_attempt, first.not_before) == (2, T0 + timedelta(seconds=2))
    assert (second.next_attempt, second.not_before) == (3, T0 + timedelta(seconds=6))


def test_gives_up_after_max_attempts() -> None:
    decision = RetryPolicy(max_attempts=3).decide(
        failed_attempt=3, reason=FailureReason.TIMEOUT, failed_at=T0
    )
    assert decision.next_attempt is None and "all 3 attempts failed" in decision.why


@pytest.mark.parametrize(
    "reason",
    [FailureReason.REJECTED_BY_SERVICE, FailureReason.INVALID_FORMAT, FailureReason.OTHER],
)
def test_only_retryable_reasons_are_retried_by_default(reason: FailureReason) -> None:
    decision = RetryPolicy().decide(failed_attempt=1, reason=reason, failed_at=T0)
    assert decision.next_attempt is None and "not retryable" in decision.why


def test_a_policy_can_retry_other_reasons() -> None:
    policy = RetryPolicy(retry_on=frozenset({FailureReason.INVALID_FORMAT}))
    assert (
        policy.decide(
            failed_attempt=1, reason=FailureReason.INVALID_FORMAT, failed_at=T0
        ).next_attempt
        == 2
    )
    assert (
        NO_RETRY.decide(failed_attempt=1, reason=FailureReason.TIMEOUT, failed_at=T0).next_attempt
        is None
    )


def test_nonsense_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(factor=0.5)
