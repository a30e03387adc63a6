"""What a refused claim or a fenced event says, in full: the writer acts on the advice.

``test_reducer_lease.py`` proves which claims and events are refused and with which code;
here the reason each one is dead-lettered with, whose advice (the epoch to claim next, that
the run must be claimed first, that the fenced process must stop) is what the writer reads.
Found by mutation testing (docs/testing.md).
"""

from __future__ import annotations

from runstate.runs.reducer import Rejected, apply
from runstate.runs.state import RunState
from runstate.schemas.events import AgentEvent, StepStarted
from tests.runs.conftest import BuilderFactory, folded


def reason(state: RunState | None, event: AgentEvent) -> str:
    outcome = apply(state, event)
    assert isinstance(outcome, Rejected), outcome
    return outcome.reason


def step_started(builder: BuilderFactory, epoch: int) -> tuple[RunState, StepStarted]:
    """A run started (never claimed) and a StepStarted of it written under ``epoch`` (ids of
    another seed than the other builders', so no event reads as a duplicate)."""
    b = builder(seed=7)
    state = folded(b)
    b.epoch = epoch
    b.step("collect", complete=False)
    event = b.events[-1]
    assert isinstance(event, StepStarted)
    return state, event


def test_a_claim_that_lost_the_race_says_which_epoch_to_claim(builder: BuilderFactory) -> None:
    b = builder()
    b.claim("agent-a")
    b.claim("agent-a")
    state = folded(b)
    late = b.claim("agent-b", epoch=2)

    assert reason(state, late) == (
        "fenced: run claimed by agent-a (epoch 2); the claim of epoch 2 by 'agent-b' lost to"
        " it: read the run and claim epoch 3 to take it over"
    )


def test_a_claim_that_skips_epochs_says_which_epoch_to_claim(builder: BuilderFactory) -> None:
    b = builder()
    b.claim("agent-a")
    state = folded(b)
    skipping = b.claim("agent-b", epoch=4)

    assert reason(state, skipping) == (
        "claim of epoch 4 by 'agent-b' for run 'run-1' skips epochs (the run's is 1); claim epoch 2"
    )


def test_an_event_under_an_epoch_no_claim_started_says_claim_first(
    builder: BuilderFactory,
) -> None:
    never, event = step_started(builder, epoch=1)
    assert reason(never, event) == (
        f"StepStarted {event.event_id!r} of run 'run-1' carries epoch 1, which no claim"
        " started (the run's is none); claim the run (RunClaimed) before writing under an"
        " epoch"
    )

    b = builder()
    b.claim("agent-a")
    claimed = folded(b)
    ahead = event.model_copy(update={"epoch": 3})
    assert "carries epoch 3, which no claim started (the run's is 1);" in reason(claimed, ahead)


def test_an_event_of_an_older_epoch_says_its_writer_no_longer_drives_the_run(
    builder: BuilderFactory,
) -> None:
    b = builder()
    b.claim("agent-a")
    b.claim("agent-b")
    state = folded(b)
    _, stale = step_started(builder, epoch=1)

    assert reason(state, stale) == (
        f"fenced: run claimed by agent-b (epoch 2); StepStarted {stale.event_id!r} was written"
        f" under epoch 1 by {stale.producer!r} and is not applied: that process no longer"
        " drives the run (its next read raises RunFenced)"
    )
