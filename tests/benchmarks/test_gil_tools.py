"""The small harnesses behind the query API's and the collector's figures run end to end."""

from __future__ import annotations

import gc

import pytest

from benchmarks import loop_collector, query_health


def test_query_health_times_health_while_lists_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert query_health.main(["--runs", "30", "--lists", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "health_max_ms" in out and "list_p50_ms" in out


def test_loop_collector_compares_both_ways_and_leaves_the_collector_as_it_was(
    capsys: pytest.CaptureFixture[str],
) -> None:
    thresholds = gc.get_threshold()
    assert loop_collector.main(["--runs", "20", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "automatic" in out and "loop / automatic" in out
    assert gc.isenabled() and gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
