"""What an event costs to store: constant with the layout, growing with the whole state.

Bytes are asserted (a size does not flake); times are only printed (``pytest -s``), as a
record of the in-process cost next to the whole-state encode this layout replaces.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runstate.runs.layout import run_writes
from runstate.runs.reducer import Applied, apply
from runstate.runs.state import RECENT_EVENT_IDS_LIMIT, RunState
from runstate.runs.state_codec import encode_state
from runstate.schemas.events import StepStarted
from tests.factories import RunBuilder

_SIZES = (10, 100, 200, 1000)


def _model_call_run(events: int) -> list[RunState]:
    """The states after each event of a run that starts, starts a step, then calls models."""
    b = RunBuilder("run-cost")
    b.start()
    b.emit(StepStarted, step="draft", step_index=0, attempt=1)
    while len(b.events) < events:
        b.model_call("draft")
    out: list[RunState] = []
    state: RunState | None = None
    for event in b.events:
        outcome = apply(state, event)
        assert isinstance(outcome, Applied)
        state = outcome.state
        out.append(state)
    return out


def _written(old: RunState, new: RunState) -> int:
    return sum(len(k) + len(v or b"") for k, v in run_writes(old, new))


def _per_call_us(work: Callable[[], object], repeat: int = 300) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - start) / repeat * 1e6


def test_the_thousandth_event_writes_what_the_tenth_did() -> None:
    """Flat in the run's length; the one bounded growth is the head's deduplication window
    (8 bytes per remembered event id, full at :data:`RECENT_EVENT_IDS_LIMIT` events)."""
    states = _model_call_run(max(_SIZES))
    tenth = _written(states[8], states[9])
    window = (RECENT_EVENT_IDS_LIMIT - 10) * 8
    after_window = _written(states[198], states[199])
    thousandth = _written(states[998], states[999])
    # Beyond the window only varints grow (the version; positions are fixed-width).
    assert thousandth <= after_window + 4, (after_window, thousandth)
    assert thousandth <= tenth + window + 4, (tenth, thousandth)
    assert len(encode_state(states[999])) > 10 * len(encode_state(states[9]))


def test_print_cost_per_event_layout_vs_whole_state() -> None:
    states = _model_call_run(max(_SIZES))
    print("\nevent  layout bytes  whole bytes  layout us  whole us")
    for n in _SIZES:
        old, new = states[n - 2], states[n - 1]
        layout_us = _per_call_us(lambda: run_writes(old, new))  # noqa: B023
        whole_us = _per_call_us(lambda: encode_state(new))  # noqa: B023
        print(
            f"{n:>5}  {_written(old, new):>12}  {len(encode_state(new)):>11}"
            f"  {layout_us:>9.1f}  {whole_us:>8.1f}"
        )
