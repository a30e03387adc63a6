"""The demo's "each notification was sent exactly once" line, from the service's counts.

The line is the demo's promise to the person watching, so it is computed from what the
counting service saw and must turn false on every way the promise can break.
"""

from __future__ import annotations

from runstate.cli.demo import notification_problems
from runstate.testing.credit_limit import notification_keys
from runstate.testing.effects import EffectCount, EffectsClient, EffectsService

RUN = "run-1"
KEYS = list(notification_keys(RUN).values())


def _counts(effects: dict[str, int]) -> dict[str, dict[str, EffectCount]]:
    return {"notification": {key: EffectCount(n, n) for key, n in effects.items()}}


def test_each_expected_notification_once_is_the_only_true_case() -> None:
    assert notification_problems(_counts(dict.fromkeys(KEYS, 1)), KEYS) == []


def test_a_notification_sent_twice_is_named() -> None:
    doubled = {**dict.fromkeys(KEYS, 1), f"{RUN}:notify-manager": 2}
    assert notification_problems(_counts(doubled), KEYS) == [
        f"{RUN}:notify-manager was sent 2 time(s)"
    ]


def test_no_notification_at_all_is_not_exactly_once() -> None:
    assert notification_problems({}, KEYS) == [f"{key} was sent 0 time(s)" for key in KEYS]
    assert notification_problems({"scoring": {"x": EffectCount(1, 1)}}, KEYS) != []


def test_a_missing_or_unexpected_notification_is_named() -> None:
    counts = _counts({**dict.fromkeys(KEYS[:2], 1), f"{RUN}:stray": 1})
    assert notification_problems(counts, KEYS) == [
        f"{KEYS[2]} was sent 0 time(s)",
        f"{RUN}:stray was sent 1 time(s), and was not expected",
    ]


def test_the_verdict_reads_the_real_service_counts() -> None:
    with EffectsService(honour_keys=False) as service:
        client = EffectsClient(service.url)
        for key in KEYS:
            client.perform("notification", key=key)
        assert notification_problems(service.counts(), KEYS) == []
        client.perform("notification", key=KEYS[0])  # the doubled effect the demo must catch
        assert notification_problems(service.counts(), KEYS) == [f"{KEYS[0]} was sent 2 time(s)"]
