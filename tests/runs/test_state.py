"""The run state value: helpers and the digests it remembers events by."""

from __future__ import annotations

import pytest

from runstate.runs.state import (
    TERMINAL_STATUSES,
    ActionState,
    ExternalAction,
    ModelCall,
    RunStatus,
    event_digest,
)
from tests.factories import T0
from tests.runs.conftest import RunStateFactory


def test_event_digest_is_stable_and_64_bit() -> None:
    digest = event_digest("019550ef-1668-7774-b93c-74eacae9e7a7")
    assert digest == event_digest("019550ef-1668-7774-b93c-74eacae9e7a7")
    assert 0 <= digest < 2**64
    assert digest != event_digest("019550ef-1668-7774-b93c-74eacae9e7a8")
    # Pinned: a changed digest function would make every stored state forget its events.
    assert event_digest("e-1") == 0x9F0DF14B49867331


def test_saw_event(run_state_factory: RunStateFactory) -> None:
    state = run_state_factory(recent_event_digests=(event_digest("a"), event_digest("b")))
    assert state.saw_event("a")
    assert not state.saw_event("c")


def test_external_action_lookup_and_unrecorded(run_state_factory: RunStateFactory) -> None:
    intended = ExternalAction(
        idempotency_key="k1", system="email", step="s", state=ActionState.INTENDED, intended_at=T0
    )
    recorded = ExternalAction(
        idempotency_key="k2",
        system="crm",
        step="s",
        state=ActionState.RECORDED,
        intended_at=T0,
        external_id="c-1",
        recorded_at=T0,
    )
    state = run_state_factory(external_actions=(intended, recorded))
    assert state.external_action("k2") is recorded
    assert state.external_action("k3") is None
    assert state.unrecorded_actions() == (intended,)


def test_model_requests(run_state_factory: RunStateFactory) -> None:
    state = run_state_factory(model_calls=(ModelCall(request_id="r1", model="m"),))
    assert state.has_model_request("r1")
    assert not state.has_model_request("r2")


@pytest.mark.parametrize("status", list(RunStatus))
def test_is_terminal(run_state_factory: RunStateFactory, status: RunStatus) -> None:
    assert run_state_factory(status=status).is_terminal == (status in TERMINAL_STATUSES)
