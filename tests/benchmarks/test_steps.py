"""The step benchmark's figures and its section of docs/benchmarks.md (no servers here: the
anchors themselves run in ``make bench-steps``)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import ROOT
from benchmarks.steps import percentiles, timed

from benchmarks import steps_report


def test_percentiles_are_nearest_rank() -> None:
    p = percentiles([float(i) for i in range(100, 0, -1)])
    assert (p["n"], p["p50"], p["p95"], p["p99"], p["mean"]) == (100, 50.0, 95.0, 99.0, 50.5)
    assert percentiles([3.0])["p99"] == 3.0


def test_timed_counts_only_the_samples_after_the_warmup() -> None:
    calls: list[int] = []
    figures = timed(lambda: calls.append(1), 7, warmup=3)
    assert len(calls) == 10 and figures["n"] == 7


def _results() -> dict[str, object]:
    fig = {"n": 10, "p50": 1.0, "p95": 2.0, "p99": 4.0, "mean": 1.2}
    return {
        "command": "python -m benchmarks.steps --samples 10",
        "started_at": "2026-12-05T03:00:00+00:00",
        "samples": 10,
        "kafka": "4.1.1",
        "cpus": 2,
        "loadavg_start": [9.5, 8.0, 7.0],
        "loadavg_end": [11.0, 9.0, 8.0],
        "note": "shared machine",
        "runstate": {"fresh_step": {**fig, "p50": 2.0, "p99": 8.0, "reads_per_step": 0.0}},
        "anchors": {
            "redis_get_set": {**fig, "p50": 0.5, "p99": 2.0},
            "restate_step": {"unavailable": "no server"},
        },
    }


def test_the_section_reports_ratios_load_and_what_was_unavailable(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n")
    results_path = ROOT / "benchmarks" / "results" / "x-steps.json"
    steps_report.write_section(_results(), results_path, doc)
    page = doc.read_text()
    assert page.startswith("# Benchmarks\n\nkept\n")
    assert (
        "| Redis GET + SET of a run's state (no persistence) | 0.50 | 2.00 | 2.00 | 4.00x / 4.00x |"
        in page
    )
    assert "unavailable: no server" in page
    assert "load average 9.5 at the start, 11.0 at the end; shared machine" in page
    assert "PostgreSQL transaction: 1 UPDATE + 1 INSERT (fsync on) | not measured" in page
    # Written again, the section is replaced, not appended.
    steps_report.write_section(_results(), results_path, doc)
    assert doc.read_text().count(steps_report.BEGIN) == 1


def test_earlier_commits_get_rows_and_ratios_and_dbos_its_row(tmp_path: Path) -> None:
    results = _results()
    ours = results["runstate"]
    assert isinstance(ours, dict)
    fig = {"n": 10, "p50": 1.0, "p95": 2.0, "p99": 4.0, "mean": 1.2}
    ours["attach"] = {**fig, "p50": 20.0, "p99": 50.0}
    ours["emit"] = {**fig, "p95": 4.0, "p99": 4.0}
    ours["fresh_step"] |= {"gc_in_slowest_1pct": 0, "gc_max_ms": 1.5}
    ours["before"] = [
        {"ref": "abc1234", "fresh_step": {**fig, "p50": 4.0, "p99": 16.0},
         "attach": {**fig, "p50": 100.0, "p99": 200.0}},
        {"ref": "def5678", "unavailable": "git archive def5678: unknown revision"},
    ]  # fmt: skip
    anchors = results["anchors"]
    assert isinstance(anchors, dict)
    anchors["dbos_step"] = {**fig, "p50": 4.0, "p99": 8.0, "version": "dbos 3.4.0"}
    doc = tmp_path / "benchmarks.md"
    steps_report.write_section(results, ROOT / "benchmarks" / "results" / "x-steps.json", doc)
    page = doc.read_text()
    assert "| attach, SDK and worker of commit abc1234 | 100.00 | 2.00 | 200.00 |" in page
    assert (
        "Ours ÷ commit abc1234: attach p50 0.20, p99 0.25; fresh step p50 0.50, p99 0.50." in page
    )
    assert "| commit def5678 | unavailable: git archive def5678: unknown revision |" in page
    assert (
        "| DBOS Transact on PostgreSQL: one `@DBOS.step` (timed in the workflow) | 4.00 |" in page
    )
    assert "DBOS: dbos 3.4.0 (PyPI)" in page
    assert "fresh step p99 ÷ one produce's p99 2.00 (p95 0.50); garbage collections ran" in page
    assert (
        "during 0 of the slowest 1 % of the steps (the longest collection of the run: 1.5 ms)"
        in page
    )
