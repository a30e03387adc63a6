"""The report: every contender gets a column and every (ours, baseline) pair a ratio."""

from __future__ import annotations

from typing import Any

from benchmarks import report


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
