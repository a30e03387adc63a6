"""The counting side-effect service over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runstate.errors import StepAttemptFailed
from runstate.schemas.events import FailureReason
from runstate.testing.effects import EffectCount, EffectsClient, EffectsService


@pytest.fixture
def service() -> Iterator[EffectsService]:
    with EffectsService() as svc:
        yield svc


def test_idempotent_key_mode_performs_once_per_key(service: EffectsService) -> None:
    client = EffectsClient(service.url)
    first = client.perform("email", key="k1")
    again = client.perform("email", key="k1")
    assert (again.external_id, again.replayed) == (first.external_id, True)
    client.perform("email")
    assert client.counts() == {
        "email": {"k1": EffectCount(requests=2, effects=1), "-": EffectCount(1, 1)}
    }
    assert client.lookup("email", "k1") == first.external_id
    assert client.lookup("email", "k2") is None


def test_no_key_mode_performs_every_request() -> None:
    with EffectsService(honour_keys=False) as svc:
        client = EffectsClient(svc.url)
        a, b = client.perform("email", key="k1"), client.perform("email", key="k1")
        assert a.external_id != b.external_id
        assert svc.counts()["email"]["k1"] == EffectCount(2, 2)


def test_injected_timeout_fails_only_the_next_call(service: EffectsService) -> None:
    client = EffectsClient(service.url, timeout_s=0.3)
    client.fail_next("scoring", 1, mode="timeout", delay_s=1.0)
    with pytest.raises(StepAttemptFailed) as failed:
        client.perform("scoring", key="s")
    assert failed.value.reason == FailureReason.TIMEOUT
    assert client.perform("scoring", key="s2").replayed is False
    assert service.counts()["scoring"]["s"].requests == 1


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("reject", FailureReason.REJECTED_BY_SERVICE), ("empty", FailureReason.EMPTY_RESPONSE)],
)
def test_injected_faults_map_to_the_articles_reasons(
    service: EffectsService, mode: str, reason: FailureReason
) -> None:
    client = EffectsClient(service.url)
    client.fail_next("scoring", 1, mode=mode)
    with pytest.raises(StepAttemptFailed) as failed:
        client.perform("scoring")
    assert failed.value.reason == reason


def test_reset_forgets_everything(service: EffectsService) -> None:
    client = EffectsClient(service.url)
    client.perform("email", key="k")
    client.reset()
    assert client.counts() == {}
