"""The per-event cost figure: long runs are valid, and the figure has what the report reads."""

from __future__ import annotations

from benchmarks.run_length import run_length_cost
from benchmarks.workload import long_run

from runstate.runs.reducer import Applied, apply


def test_a_long_run_has_exactly_n_events_and_every_one_applies() -> None:
    pairs = long_run(150, seed=5)
    assert len(pairs) == 150
    assert len({e.run_id for e, _ in pairs}) == 1
    state = None
    for offset, (event, _) in enumerate(pairs):
        outcome = apply(state, event, offset=offset)
        assert isinstance(outcome, Applied)
        state = outcome.state


def test_the_figure_reports_each_position_up_to_the_run_length() -> None:
    fig = run_length_cost((10, 100), repeats=1, window=2)
    assert set(fig["runs"]) == {"10", "100"}
    assert set(fig["runs"]["10"]["at"]) == {"10"}
    at = fig["runs"]["100"]["at"]
    assert set(at) == {"10", "100"}
    assert at["100"]["state_bytes"] > at["10"]["state_bytes"]
    assert at["100"]["summary_bytes"] - at["10"]["summary_bytes"] <= 4  # only varints grow
    assert all(v["task_us"] > 0 and v["encode_summary_us"] > 0 for v in at.values())
    assert fig["ratio_last_to_10th"] > 0
