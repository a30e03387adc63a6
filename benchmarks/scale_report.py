"""The "Scale" section of ``docs/benchmarks.md`` from one ``benchmarks.scale`` results file.

The section sits between markers, so ``benchmarks.report`` (which rewrites the rest of the
page) keeps it, and a new scale run replaces only it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["BEGIN", "END", "keep_section", "render", "write_section"]

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


def _ms(d: dict[str, float]) -> str:
    return f"{d['p50']:.1f} / {d['p99']:.1f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _process_pauses(size: dict[str, Any], key: str = "health_process") -> str:
    process = size.get(key)
    if not process:
        return "n/a"
    p99 = process.get("pause_p99_ms_by_phase", {})
    return (
        ", ".join(
            f"{phase} {max(p.values()):,.0f} / {p99.get(phase, 0):,.0f}"
            for phase, p in process.get("longest_pause_ms_by_phase", {}).items()
            if p
        )
        or "n/a"
    )


def _rows(size: dict[str, Any]) -> dict[str, str]:
    q, m, kept, full = (
        size["queries"],
        size["memory"],
        size["restart_kept"],
        size["restart_restore"],
    )
    pauses = size["health"]["longest_pause_ms"]
    worst = max(pauses, key=lambda k: pauses[k])
    troubles = {w: v["log_troubles"] for w, v in size["workers"].items() if v["log_troubles"]}
    exits = {w: v["exit_codes"] for w, v in size["workers"].items()}
    return {
        "Events loaded (produced events/s; processed events/s)": (
            f"{size['load']['events']:,} ({size['load']['produce_events_per_s']:,}; "
            f"{size['load']['processed_events_per_s']:,})"
        ),
        "List waiting_approval, first page of 100, p50 / p99 (ms)": _ms(q["list_waiting_ms"]),
        "Get by id, p50 / p99 (ms)": _ms(q["get_ms"]),
        "Restart, data kept: start to ready with partitions / group settled (s)": (
            f"{kept['ready_s']:.2f} / {kept['group_settled_s']:.2f}"
        ),
        "... records restored by it (by the other worker meanwhile)": (
            f"{kept['restored_records']:,} "
            f"({sum(int(r['records']) for rs in kept['others_restored'].values() for r in rs):,})"
        ),
        "Full restore, data dir deleted: ready / settled (s)": (
            f"{full['ready_s']:.2f} / {full['group_settled_s']:.2f}"
        ),
        "... records restored, records/s": (
            f"{full['restored_records']:,}, {full['restore_records_per_s'] or 0:,}"
        ),
        "RSS, both workers (MB; MB per million runs)": (
            f"{m['rss_bytes'] / 2**20:,.0f}; {m['rss_mb_per_million_runs']:,.0f}"
        ),
        "Disk, both data dirs (MB; MB per million runs)": (
            f"{m['disk_bytes'] / 2**20:,.0f}; {m['disk_mb_per_million_runs']:,.0f}"
        ),
        "Longest /health pause (ms, where)": (
            f"{pauses[worst]:,.0f} ({worst}, {size['health']['longest_pause_during'][worst]})"
        ),
        "Longest /health pause by phase (ms, worse worker)": ", ".join(
            f"{phase} {max(p.values()):,.0f}"
            for phase, p in size["health"].get("longest_pause_ms_by_phase", {}).items()
            if p
        )
        or "n/a",
        "Health process's /health (health port): longest pause by phase, worse worker /"
        " p99, both workers (ms)": _process_pauses(size),
        "Control /health (reads nothing): longest pause by phase / p99 (ms)": _process_pauses(
            size, "health_control"
        ),
        "... over the query API's /health in the same run, longest / p99": ", ".join(
            f"{phase} {_ratio(r['longest'])} / {_ratio(r['p99'])}"
            for phase, r in size.get("health_process_over_api", {}).items()
        )
        or "n/a",
        "Stall probe by phase: latest wake / most loop CPU in one / longest GC (ms)": (
            ", ".join(
                f"{phase} {v['late_ms']:,.0f} / {v['loop_cpu_ms']:,.0f} / {v['gc_ms']:,.0f}"
                for phase, v in size["health"].get("stall_probe", {}).items()
                if phase != "start"
            )
            or "n/a"
        ),
        "/health pause p99 by phase, both workers (ms)": (
            ", ".join(
                f"{phase} {value:,.0f}"
                for phase, value in size["health"].get("pause_p99_ms_by_phase", {}).items()
            )
            or "n/a"
        ),
        "Late wakes by cause, longest (ms): probe kept out while the loop ran / while the"
        " loop waited for a core holding the GIL / probe waiting for a core": (
            ", ".join(
                f"{phase} {v['blocked_loop_running_ms']:,.0f} / "
                f"{v['blocked_loop_preempted_ms']:,.0f} / {v['probe_core_wait_ms']:,.0f}"
                for phase, v in size["health"].get("stall_probe", {}).items()
                if phase != "start" and "blocked_loop_running_ms" in v
            )
            or "n/a"
        ),
        "RocksDB write stalls logged (delayed / stopped)": (
            ", ".join(
                f"{w} {c['stalling']} / {c['stopping']}"
                for w, c in size.get("rocksdb_write_stalls", {}).items()
            )
            or "n/a"
        ),
        "Machine load: highest 1-minute load average by phase (cores)": (
            ", ".join(
                f"{phase} {value:.1f}"
                for phase, value in size["health"].get("load_average_max_by_phase", {}).items()
            )
            + f" ({size['health'].get('cpus', '?')})"
            if size["health"].get("load_average_max_by_phase")
            else "n/a"
        ),
        "Exit codes; log lines (fenced, aborted checkpoints, lost, tracebacks)": (
            f"{exits}; {troubles or 'none'}"
        ),
    }


def render(results: dict[str, Any], results_path: Path) -> str:
    sizes = results["sizes"]
    rows = [_rows(s) for s in sizes]
    head = "| Figure | " + " | ".join(f"{s['runs']:,} runs" for s in sizes)
    if len(sizes) == 2:
        head += " | large / small"
    lines = [head + " |", "|---" * (len(sizes) + 1 + (len(sizes) == 2)) + "|"]
    ratio_keys = {
        "List waiting_approval, first page of 100, p50 / p99 (ms)": ("queries", "list_waiting_ms"),
        "Get by id, p50 / p99 (ms)": ("queries", "get_ms"),
    }
    for key in rows[0]:
        cells = [r[key] for r in rows]
        if len(sizes) == 2:
            where = ratio_keys.get(key)
            if where is not None:
                a, b = (s[where[0]][where[1]] for s in sizes)
                cells.append(f"{b['p50'] / a['p50']:.2f}x / {b['p99'] / a['p99']:.2f}x")
            else:
                cells.append("")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if len(sizes) == 2 and sizes[1]["runs"] > sizes[0]["runs"]:
        # What the extra runs cost: a fixed per-process base does not hide in the ratio.
        a, b = (s["memory"] for s in sizes)
        extra = (sizes[1]["runs"] - sizes[0]["runs"]) / 1e6
        for label, field in (("RSS", "rss_bytes"), ("Disk", "disk_bytes")):
            grown = (b[field] - a[field]) / 2**20 / extra
            lines.append(f"| {label} growth per million runs (MB) | | | {grown:,.0f} |")
    try:
        rel = Path("..") / results_path.relative_to(ROOT)
    except ValueError:
        rel = results_path
    return "\n".join(
        [
            BEGIN,
            "## Scale (issue 16)",
            "",
            f"_Generated by `python -m benchmarks.scale` ({results['mode']}) on "
            f"{results['started']}, {results['seconds']:,} s; raw numbers: [`{rel.name}`]({rel})._",
            "",
            "Two runtime workers (`python -m runstate.runtime`, RocksDB, 6 partitions) on one "
            "local broker; runs of RunStarted, StepStarted, StepCompleted, then 1 % "
            "ApprovalRequested (due in a year), half of the rest RunCompleted, produced with a "
            "raw confluent-kafka producer from pre-encoded templates. Queries over HTTP, "
            "alternating between the workers (so half are forwarded). The restart stops worker "
            "w2 with SIGTERM and starts it again; /health of each worker is polled every 50 ms "
            "throughout (the restarting worker is left out from its stop to its ready), by a "
            "poller process of its own in a session of its own per worker and endpoint: the "
            "query API's /health (in the worker), the health process's (health port) and a "
            "control that reads nothing (`benchmarks/null_health.py`), whose pauses are the "
            "machine's floor. "
            "A stall probe in each worker (`benchmarks/stall_probe`) wakes every 10 ms and "
            "logs each wake more than 50 ms late with the CPU the loop's thread used meanwhile: "
            "loop CPU near the delay is the worker holding the GIL, little loop CPU is the "
            "machine's scheduler; it also logs where the loop's thread was (the line after a "
            "long call that held the GIL) and which thread ran each collection over 20 ms. "
            "Its late wakes are split by cause: the probe kept out (late without waiting for a "
            "core) while the loop's thread ran (its code held the GIL: the worker's doing) or "
            "while the loop's thread waited for a core holding the GIL (preempted by the "
            "scheduler), or the probe itself waiting for a core (the machine). "
            "A worker restores its partitions side by side: records/s is over the wall time "
            "from the first one's start to the last one's end. "
            "**A shared 2-core machine** (other engineers' brokers and benchmarks ran at the "
            "same time; the load row says how busy it was): absolute figures are context only, "
            "and a /health pause while the load average is far above the core count is mostly "
            "the scheduler's (the worker's threads wait for a core).",
            "",
            *lines,
            "",
            "Reproduce: `make bench-scale` (1,000,000 runs against 10,000), "
            "`python -m benchmarks.scale --quick` (100,000 against 10,000), "
            "`--runs N` for another size.",
            END,
        ]
    )


def keep_section(old_page: str, begin: str = BEGIN, end: str = END) -> str:
    """The section of ``old_page`` between the markers, markers included (the Scale
    section by default); empty when it has none."""
    first, last = old_page.find(begin), old_page.find(end)
    if first < 0 or last < first:
        return ""
    return old_page[first : last + len(end)]


def write_section(results: dict[str, Any], results_path: Path, doc: Path = DOC) -> None:
    """Replace (or append) the Scale section of ``doc``."""
    page = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = render(results, results_path)
    old = keep_section(page)
    page = page.replace(old, section) if old else page.rstrip("\n") + "\n\n" + section
    doc.write_text(page.rstrip("\n") + "\n")


if __name__ == "__main__":
    path = Path(sys.argv[1]).resolve()
    write_section(json.loads(path.read_text()), path)
