"""The report: every contender gets a column and every (ours, baseline) pair a ratio."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import Received
from benchmarks.live import output_counts
from benchmarks.workload import generate

from benchmarks import report
from runstate.runs.reducer import Applied, apply
from runstate.runs.state_codec import StateCodec


def _round(system: str, round_no: int, rate: float, cpu: float) -> dict[str, Any]:
    return {
        "system": system,
        "round": round_no,
        "throughput": {"steady_events_per_s": rate, "cpu_ms_per_event": cpu},
        "latency": {"500": {"p50_ms": 10.0, "p99_ms": 20.0}},
    }


def test_ratios_are_per_round_and_per_pair() -> None:
    results = {
        "params": {"latency_rates": [500]},
        "systems": ["runtime-eos", "quix-eos", "runtime-alo", "quix-alo"],
        "pairs": [["runtime-eos", "quix-eos"], ["runtime-alo", "quix-alo"]],
        "rounds": [
            _round("runtime-eos", 1, 200.0, 1.0),
            _round("quix-eos", 1, 100.0, 2.0),
            _round("runtime-alo", 1, 300.0, 1.0),
            _round("quix-alo", 1, 300.0, 1.0),
            _round("runtime-eos", 2, 400.0, 1.0),
            _round("quix-eos", 2, 100.0, 1.0),
        ],
    }
    row = report.summarise(results)["throughput"]
    eos = row["ratios"]["runtime-eos / quix-eos"]
    assert (eos["median"], eos["min"], eos["max"], eos["n"]) == (3.0, 2.0, 4.0, 2)
    assert row["ratios"]["runtime-alo / quix-alo"]["median"] == 1.0
    assert row["quix-alo"]["n"] == 1
    assert report.summarise(results)["cpu"]["ratios"]["runtime-eos / quix-eos"]["min"] == 0.5


def test_results_from_before_the_runtime_still_summarise() -> None:
    results = {
        "params": {"latency_rates": []},
        "rounds": [_round("runstate", 1, 50.0, 1.0), _round("quix", 1, 100.0, 1.0)],
    }
    row = report.summarise(results)["throughput"]
    assert row["ratios"]["runstate / quix"]["median"] == 0.5


def test_a_run_version_seen_twice_is_counted_as_doubled() -> None:
    codec = StateCodec()
    changes = []
    state = None
    for event in generate(1, seed=3).runs[0]:
        outcome = apply(state, event)
        assert isinstance(outcome, Applied)
        state = outcome.state
        changes.append(Received(0.0, 0, codec.encode_change(outcome.change)))
    assert output_counts(changes)["doubled"] == 0
    counts = output_counts([*changes, changes[0], changes[0]])
    assert (counts["records"], counts["doubled"]) == (len(changes) + 2, 2)
