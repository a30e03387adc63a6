"""Fixtures for the run-state tests: factories, never ready-made values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from runstate.runs.reducer import (
    Applied,
    Duplicate,
    DuplicateWhy,
    RejectCode,
    Rejected,
    apply,
    fold,
)
from runstate.runs.state import RunState, RunStatus
from runstate.schemas.events import AgentEvent, StepStarted
from tests.factories import T0, RunBuilder

RunStateFactory = Callable[..., RunState]
BuilderFactory = Callable[..., RunBuilder]


@pytest.fixture
def run_state_factory() -> RunStateFactory:
    """``make(**overrides)``: a freshly started run's state with any fields replaced.

    Built directly, so it can describe states the reducer would never reach; use
    :func:`folded` (through the ``builder`` fixture) when reachability matters.
    """

    def make(**overrides: Any) -> RunState:
        base = RunState(
            run_id="run-1",
            status=RunStatus.CREATED,
            agent="purchase-approver",
            owner="team-procurement",
            input="{}",
            prompt_version="p-7",
            source="crm",
            created_at=T0,
            updated_at=T0,
            version=1,
        )
        return replace(base, **overrides)

    return make


@pytest.fixture
def builder() -> BuilderFactory:
    """``make(run_id="run-1", **kw)``: a :class:`RunBuilder` that has emitted RunStarted."""

    def make(run_id: str = "run-1", **kw: Any) -> RunBuilder:
        b = RunBuilder(run_id, **kw)
        b.start()
        return b

    return make


def folded(b: RunBuilder) -> RunState:
    """The state of everything ``b`` emitted so far (which must include RunStarted)."""
    state = fold(b.events)
    assert state is not None
    return state


# Assertion helpers: the outcome kind is part of what each test checks.


def applied(state: RunState | None, event: AgentEvent) -> RunState:
    outcome = apply(state, event)
    assert isinstance(outcome, Applied), outcome
    return outcome.state


def rejected(state: RunState | None, event: AgentEvent) -> RejectCode:
    outcome = apply(state, event)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason
    return outcome.code


def duplicate(state: RunState, event: AgentEvent) -> DuplicateWhy:
    outcome = apply(state, event)
    assert isinstance(outcome, Duplicate), outcome
    assert outcome.state is state
    return outcome.why


def running(builder: BuilderFactory, step: str = "collect") -> RunBuilder:
    b = builder()
    b.step_index += 1
    b.emit(StepStarted, step=step, step_index=b.step_index, attempt=1)
    return b
