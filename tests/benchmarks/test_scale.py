"""The scale benchmark end to end at a few hundred runs: every figure is produced (no timing
is asserted: the machine is shared), and its templated events are valid."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from benchmarks.scale import measure_size
from benchmarks.scale_load import _PLACEHOLDER, _shape_events, run_id, shape_of
from benchmarks.scale_report import BEGIN, END, keep_section, render, write_section

from runstate.runs.reducer import fold
from runstate.runs.state import RunStatus
from runstate.schemas.convert import decode_event, encode_event


@pytest.mark.parametrize(
    ("shape", "status"),
    [
        ("waiting", RunStatus.WAITING_APPROVAL),
        ("completed", RunStatus.COMPLETED),
        ("open", RunStatus.IN_PROGRESS),
    ],
)
def test_a_template_with_a_run_id_put_in_decodes_to_that_run(shape: str, status: RunStatus) -> None:
    rid = run_id(123_456)
    encoded = [encode_event(e) for e in _shape_events(shape, datetime.now(UTC))]
    events = [decode_event(b.replace(_PLACEHOLDER.encode(), rid.encode())) for b in encoded]
    assert {e.run_id for e in events} == {rid}
    state = fold(events)
    assert state is not None and state.status is status


def test_about_one_run_in_a_hundred_waits_for_approval() -> None:
    shapes = [shape_of(i) for i in range(10_000)]
    assert shapes.count("waiting") == 100
    assert abs(shapes.count("completed") - shapes.count("open")) <= len(shapes) // 100


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_every_figure_is_produced_at_a_few_hundred_runs(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    size = measure_size(kafka_bootstrap, tmp_path, 300, lists=5, gets=10)
    assert size["load"]["events"] == 300 * 3 + 3 + 150
    assert size["queries"]["list_page_sizes"] == [3]
    for figure in ("list_waiting_ms", "get_ms"):
        assert set(size["queries"][figure]) == {"p50", "p99"}
    assert size["memory"]["rss_bytes"] > 0 and size["memory"]["disk_bytes"] > 0
    for restart in ("restart_kept", "restart_restore"):
        assert size[restart]["ready_s"] > 0 and size[restart]["partitions"]
    assert size["restart_restore"]["restored_records"] > 0
    assert set(size["health"]["longest_pause_ms"]) == {"w1", "w2"}
    assert size["health"]["longest_pause_ms_by_phase"]  # at 300 runs the load may be too short
    assert size["workers"]["w2"]["exit_codes"] == [0, 0, 0]
    assert "stall_probe" in size["health"]
    assert set(size["health"]["pause_p99_ms_by_phase"]) == set(
        size["health"]["longest_pause_ms_by_phase"]
    )
    # the health process's /health watched beside the query API's, every phase of both
    process = size["health_process"]
    assert set(process["longest_pause_ms_by_phase"]) == set(
        size["health"]["longest_pause_ms_by_phase"]
    )
    assert process["polls"] > 0 and size["health_control"]["polls"] > 0
    assert set(size["health_process_over_api"]) == set(size["health"]["longest_pause_ms_by_phase"])
    assert set(size["rocksdb_write_stalls"]) == {"w1", "w2"}
    for worker in size["workers"].values():  # the probe ran in each worker process
        assert Path(worker["log"]).with_suffix(".probe.jsonl").exists()
        # one poller process per worker and endpoint, each its own lines
        api, process = (
            Path(worker["log"]).with_suffix(f".health-{name}.jsonl").read_text()
            for name in ("api", "process")
        )
        assert api and process and api != process

    results = {"mode": "smoke", "started": "now", "seconds": 1, "sizes": [size, size]}
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{BEGIN}\nthe previous section\n{END}\n")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "smoke.json"
    write_section(results, path, doc)
    page = doc.read_text()
    assert "the previous section" not in page and "intro" in page
    assert keep_section(page) == render(results, path)
    assert "large / small" in page
