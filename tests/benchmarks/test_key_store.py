"""The data-keys benchmark's table (ratios of 10 N over N, medians of rounds), and the
benchmarks page keeping its section when the main report rewrites the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from benchmarks.key_store import table

from benchmarks import report


def _figure(scale: float, **extra: float) -> dict[str, Any]:
    return {"seconds": 0.1 * scale, "records_read": 100 * scale, "rss_mb": 100.0, **extra}


def test_table_gives_medians_and_ratios() -> None:
    groups = ("agent", "kept_start", "first_build", "old")

    def size(scale: float) -> dict[str, list[dict[str, Any]]]:
        return {
            g: [_figure(scale, lookup_us=5.0 * r) for r in (1, 2, 9)]
            if g == "kept_start"
            else [_figure(scale * r) for r in (1, 3, 2)]
            for g in groups
        }

    result = {"keys": {"N": 10, "10N": 100}, "figures": {"N": size(1), "10N": size(10)}}
    lines = table(result).splitlines()
    assert lines[0] == "| Figure | 10 keys | 100 keys | 10N / N |"
    old_records = next(
        line for line in lines if line.startswith("| Old store, first sealed value: records")
    )
    assert old_records == "| Old store, first sealed value: records read | 200 | 2,000 | 10.00x |"
    lookup = next(line for line in lines if line.startswith("| Key lookup"))
    assert lookup.endswith("| 10.0 | 10.0 | 1.00x |")


def test_report_keeps_the_data_keys_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "benchmarks.md"
    section = f"{report.KEYS[0]}\n## Data keys\nfigures\n{report.KEYS[1]}"
    doc.write_text(f"# Benchmarks\nold body\n\n{section}\n")
    monkeypatch.setattr(report, "DOC", doc)
    monkeypatch.setattr(report, "summarise", lambda results: {})
    monkeypatch.setattr(report, "_plot", lambda results, table: False)
    monkeypatch.setattr(report, "_markdown", lambda *args: "# Benchmarks\nnew body\n")
    report.write_docs({}, tmp_path / "r.json")
    page = doc.read_text()
    assert "new body" in page and "old body" not in page and section in page
