"""``python -m benchmarks.scale [--runs N | --quick]``: the runtime at a year of runs (issue 16).

Loads N runs through Kafka into two runtime workers (RocksDB, 6 partitions), then measures
what grows with N: list and get over HTTP, a restart that keeps the data, a full restore
from the changelog, memory and disk, and the longest pause of ``/health`` throughout. The
same figures at 10,000 runs come beside them, so the ratio shows what N costs.

Writes ``benchmarks/results/<timestamp>-scale-<label>.json`` and the "Scale" section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.scale_load import (
    HealthWatch,
    HealthWatches,
    RuntimeProcess,
    get_json,
    produce_in_child,
    run_id,
)
from runstate.streams.broker import free_port
from runstate.streams.reader import end_offsets

__all__ = ["main", "measure_size"]

RESULTS = h.ROOT / "benchmarks" / "results"
DOC = h.ROOT / "docs" / "benchmarks.md"
PARTITIONS = 6
SMALL = 10_000
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
_RESTORED = re.compile(
    r"^(\S+ [\d:]+,\d+) .*?partition (\d+) restored: (\d+) records \(.*?\) in ([\d.]+)s$",
    re.MULTILINE,
)
#: Log lines worth counting: none should appear but the aborts a rebalance causes.
_TROUBLE = {
    "fenced": re.compile(r"[Ff]enced"),
    "checkpoint_aborts": re.compile(r"aborting the checkpoint"),
    "partitions_lost": re.compile(r"partitions \[[\d, ]*\] lost"),
    "tracebacks": re.compile(r"Traceback"),
    "store_damaged": re.compile(r"store damaged"),
}


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed(samples: list[float], fn: Callable[[], None]) -> None:
    started = time.perf_counter()
    fn()
    samples.append((time.perf_counter() - started) * 1000)


def _wait(
    what: str, check: Callable[[], bool], timeout_s: float, workers: list[RuntimeProcess]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        dead = [w.worker_id for w in workers if not w.alive]
        if dead:
            raise RuntimeError(f"{what}: worker {dead} exited; see its log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.05)


def _health(w: RuntimeProcess) -> dict[str, Any]:
    return get_json(f"{w.url}/health", timeout_s=10)[1] if w.alive else {}


def _settled(workers: list[RuntimeProcess]) -> bool:
    """Every worker ready, every partition owned exactly once."""
    owned: list[int] = []
    for w in workers:
        body = _health(w)
        if not body.get("ready"):
            return False
        owned += body.get("active_partitions", [])
    return sorted(owned) == list(range(PARTITIONS))


def _caught_up(bootstrap: str, topic: str, workers: list[RuntimeProcess]) -> bool:
    committed: dict[int, int] = {}
    for w in workers:
        body = get_json(f"{w.url}/metrics.json", timeout_s=10)[1]
        for p, offset in body.get("committed_offsets", {}).items():
            if offset is not None:
                committed[int(p)] = offset
    ends = end_offsets(bootstrap, topic)
    return all(committed.get(p, -1) >= high for p, (_, high) in ends.items())


def _restores(text: str) -> list[dict[str, float]]:
    return [
        {"partition": int(p), "records": int(n), "seconds": float(s), "ended": _log_time(at)}
        for at, p, n, s in _RESTORED.findall(text)
    ]


def _log_time(stamp: str) -> float:
    """Seconds since the epoch of a worker log line's time stamp (logging's default)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _restore_wall_s(restores: list[dict[str, float]]) -> float:
    """From the first restore's start to the last one's end: a worker restores its
    partitions side by side, so their times overlap and do not add up."""
    if not restores:
        return 0.0
    return max(r["ended"] for r in restores) - min(r["ended"] - r["seconds"] for r in restores)


def _restart(
    w: RuntimeProcess, others: list[RuntimeProcess], watch: HealthWatches, *, wipe: bool
) -> dict[str, Any]:
    """Stop ``w`` (SIGTERM), optionally delete its data, start it; time it until ready."""
    watch.suspend(w.worker_id)
    before = {o.worker_id: len(o.log_text()) for o in [w, *others]}
    w.stop()
    exit_code = w.exits[-1]
    if wipe:
        shutil.rmtree(w.data_dir, ignore_errors=True)
    w.start()
    started = w.started_at
    everyone = [w, *others]
    _wait("HTTP up", lambda: get_json(f"{w.url}/health", 2)[0] == 200, 120, everyone)
    http_s = time.monotonic() - started

    def own_share() -> bool:
        body = _health(w)
        return bool(body.get("ready")) and len(body.get("active_partitions", [])) > 0

    _wait("ready with partitions", own_share, 3600, everyone)
    ready_s = time.monotonic() - started
    _wait("group settled", lambda: _settled(everyone), 3600, everyone)
    settled_s = time.monotonic() - started
    watch.resume(w.worker_id)
    logs = {o.worker_id: o.log_text()[before[o.worker_id] :] for o in everyone}
    mine = _restores(logs[w.worker_id])
    records = sum(int(r["records"]) for r in mine)
    seconds = _restore_wall_s(mine)
    return {
        "stop_exit_code": exit_code,
        "http_up_s": round(http_s, 3),
        "ready_s": round(ready_s, 3),
        "group_settled_s": round(settled_s, 3),
        "partitions": _health(w).get("active_partitions"),
        "restored": mine,
        "restored_records": records,
        "restore_wall_s": round(seconds, 2),
        "restore_records_per_s": round(records / seconds) if seconds else None,
        "others_restored": {o.worker_id: _restores(logs[o.worker_id]) for o in others},
    }


def _stall_summary(
    workers: list[RuntimeProcess], phases: list[tuple[float, str]]
) -> dict[str, dict[str, float]]:
    """Per phase, over both workers: the latest wake of the stall probe, the most CPU the
    loop's thread used within one late wake, and the longest garbage collection (ms;
    ``benchmarks/stall_probe``). Then the late wakes split by cause, each the longest stretch
    the probe was kept out while ... ``blocked_loop_running_ms``: the loop's thread ran (its
    code held the GIL: the worker's own doing); ``blocked_loop_preempted_ms``: the loop's
    thread waited for a core while holding the GIL (the scheduler took the core from it);
    ``probe_core_wait_ms``: the probe itself waited for a core (the machine)."""
    summary: dict[str, dict[str, float]] = {}
    for w in workers:
        for line in w.probe_lines():
            phase = next((name for at, name in reversed(phases) if at <= line["at"]), "start")
            into = summary.setdefault(
                phase,
                {
                    "late_ms": 0.0,
                    "loop_cpu_ms": 0.0,
                    "gc_ms": 0.0,
                    "late_wakes": 0,
                    "blocked_loop_running_ms": 0.0,
                    "blocked_loop_preempted_ms": 0.0,
                    "probe_core_wait_ms": 0.0,
                },
            )
            if "gc_ms" in line:
                into["gc_ms"] = max(into["gc_ms"], line["gc_ms"])
                continue
            into["late_wakes"] += 1
            into["late_ms"] = max(into["late_ms"], line["late_ms"])
            into["loop_cpu_ms"] = max(into["loop_cpu_ms"], line["loop_cpu_ms"])
            blocked = line["late_ms"] - line["probe_waited_ms"]
            for key, value in (
                ("blocked_loop_running_ms", min(blocked, line["loop_cpu_ms"])),
                ("blocked_loop_preempted_ms", min(blocked, line["loop_waited_ms"])),
                ("probe_core_wait_ms", line["probe_waited_ms"]),
            ):
                into[key] = round(max(into[key], value), 1)
    return summary


def _queries(workers: list[RuntimeProcess], runs: int, *, lists: int, gets: int) -> dict[str, Any]:
    list_ms: list[float] = []
    sizes: list[int] = []
    for i in range(lists):
        w = workers[i % len(workers)]

        def one_list(w: RuntimeProcess = w) -> None:
            status, body = get_json(f"{w.url}/runs?status=waiting_approval&limit=100")
            if status != 200 or not body.get("complete"):
                raise RuntimeError(f"list answered {status}: {str(body)[:300]}")
            sizes.append(len(body["runs"]))

        _timed(list_ms, one_list)
    rng = random.Random(16)
    get_ms: list[float] = []
    for i in range(gets):
        w, rid = workers[i % len(workers)], run_id(rng.randrange(runs))

        def one_get(w: RuntimeProcess = w, rid: str = rid) -> None:
            status, body = get_json(f"{w.url}/runs/{rid}")
            if status != 200 or body.get("run_id") != rid:
                raise RuntimeError(f"get {rid} answered {status}: {str(body)[:300]}")

        _timed(get_ms, one_get)
    return {
        "list_waiting_ms": {"p50": _percentile(list_ms, 0.5), "p99": _percentile(list_ms, 0.99)},
        "list_page_sizes": sorted(set(sizes)),
        "get_ms": {"p50": _percentile(get_ms, 0.5), "p99": _percentile(get_ms, 0.99)},
        "requests": {"lists": lists, "gets": gets},
    }


def measure_size(
    bootstrap: str, workdir: Path, runs: int, *, lists: int = 50, gets: int = 200
) -> dict[str, Any]:
    """Every figure at ``runs`` runs, on fresh topics and two fresh workers."""
    prefix = f"scale-{runs}-{int(time.time())}"
    names = h.create_topics(bootstrap, prefix, partitions=PARTITIONS)
    workers = [
        RuntimeProcess(
            worker_id=f"w{i}",
            bootstrap=bootstrap,
            prefix=prefix,
            partitions=PARTITIONS,
            data_dir=workdir / f"{prefix}-w{i}",
            log_path=workdir / f"{prefix}-w{i}.log",
            web_port=free_port(),
            health_port=free_port(),
        )
        for i in (1, 2)
    ]
    watches = HealthWatches(workers)
    watch = watches.api
    result: dict[str, Any] = {"runs": runs}
    try:
        for w in workers:
            w.start()
        _wait("workers ready", lambda: _settled(workers), 300, workers)
        watches.start()
        watches.phase = "load"
        began = time.monotonic()
        produced = produce_in_child(bootstrap, prefix, runs)
        timeout = 600 + runs / 100
        _wait("caught up", lambda: _caught_up(bootstrap, names.events, workers), timeout, workers)
        result["load"] = {
            "events": produced.events,
            "produce_events_per_s": round(produced.events_per_s),
            "processed_events_per_s": round(produced.events / (time.monotonic() - began)),
            "seconds": round(time.monotonic() - began, 1),
            # checkpoint_max_records bounds it (the store write of a checkpoint holds the GIL)
            "largest_checkpoint_records": {
                w.worker_id: get_json(f"{w.url}/metrics.json", timeout_s=10)[1].get(
                    "largest_checkpoint_records"
                )
                for w in workers
            },
        }
        watches.phase = "queries"
        result["queries"] = _queries(workers, runs, lists=lists, gets=gets)
        rss = sum(w.rss_bytes() for w in workers)
        result["memory"] = {
            "rss_bytes": rss,
            "rss_mb_per_million_runs": round(rss / 2**20 * 1e6 / runs, 1),
            # While running, RocksDB keeps recent writes in memtables: see disk_bytes.
            "disk_bytes_running": sum(w.disk_bytes() for w in workers),
        }
        watches.phase = "restart (data kept)"
        result["restart_kept"] = _restart(workers[1], workers[:1], watches, wipe=False)
        watches.phase = "restart (full restore)"
        result["restart_restore"] = _restart(workers[1], workers[:1], watches, wipe=True)
        watches.phase = "queries after restarts"
        result["queries_after"] = _queries(workers, runs, lists=10, gets=20)
        owned = {w.worker_id: _health(w).get("active_partitions", []) for w in workers}
    finally:
        watches.close()
        for w in workers:
            w.stop()
    # Closed stores (memtables flushed), one copy of each partition: a worker keeps the
    # stores of partitions it held during a takeover, which are stale copies.
    disk = sum(w.disk_bytes(owned[w.worker_id]) for w in workers)
    result["memory"]["disk_bytes"] = disk
    result["memory"]["disk_mb_per_million_runs"] = round(disk / 2**20 * 1e6 / runs, 1)
    result["memory"]["disk_bytes_all_copies"] = sum(w.disk_bytes() for w in workers)
    result["health"] = {
        "longest_pause_ms": {k: round(v * 1000, 1) for k, v in watch.longest.items()},
        "longest_pause_during": watch.longest_at,
        "longest_pause_ended_utc": watch.longest_ended,
        "longest_pause_ms_by_phase": {
            phase: {k: round(v * 1000, 1) for k, v in pauses.items()}
            for phase, pauses in watch.by_phase.items()
        },
        "pause_p99_ms_by_phase": watch.p99_by_phase(),
        "load_average_max_by_phase": {k: round(v, 1) for k, v in watch.load_by_phase.items()},
        "cpus": os.cpu_count(),
        "stall_probe": _stall_summary(workers, watch.phases),
        "polls": watch.polls,
        "not_ready_answers": watch.not_ready,
        "degraded_answers": watch.degraded,
    }
    result["health"] |= {
        k: v for k, v in _pauses(watch).items() if k.startswith(("answer", "poller"))
    }
    result["health_process"] = _pauses(watches.process)
    result["health_process_over_api"] = _ratios(watches.process, watch)
    result["health_control"] = _pauses(watches.control)
    result["health_process_over_control"] = _ratios(watches.process, watches.control)
    result["health_api_over_control"] = _ratios(watch, watches.control)
    result["workers"] = {
        w.worker_id: {
            "exit_codes": w.exits,
            "log_troubles": {
                name: n
                for name, pattern in _TROUBLE.items()
                if (n := len(pattern.findall(w.log_text())))
            },
            "log": str(w.log_path),
        }
        for w in workers
    }
    result["rocksdb_write_stalls"] = {w.worker_id: _rocksdb_stalls(w.data_dir) for w in workers}
    for w in workers:
        shutil.rmtree(w.data_dir, ignore_errors=True)
    return result


def _pauses(watch: HealthWatch) -> dict[str, Any]:
    """The pauses of one endpoint: longest per phase (ms, per worker), p99 per phase."""
    return {
        "longest_pause_ms_by_phase": {
            phase: {k: round(v * 1000, 1) for k, v in pauses.items()}
            for phase, pauses in watch.by_phase.items()
        },
        "pause_p99_ms_by_phase": watch.p99_by_phase(),
        "answer_ms_by_phase": _longest_p99(watch.answers),
        "poller_late_ms_by_phase": _longest_p99(watch.poller_late),
        "polls": watch.polls,
        "not_ready_answers": watch.not_ready,
        "degraded_answers": watch.degraded,
    }


def _longest_p99(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per phase, the longest and the 99th percentile of ``samples`` (s), in ms."""
    return {
        phase: {
            "longest": round(max(values) * 1000, 1),
            "p99": round(_percentile(values, 0.99) * 1000, 1),
        }
        for phase, values in samples.items()
        if values
    }


def _ratios(new: HealthWatch, old: HealthWatch) -> dict[str, dict[str, float | None]]:
    """Per phase, the health process's figure over the query API's, both measured in this
    run: the longest pause (worse worker of each) and the p99 (both workers)."""
    out: dict[str, dict[str, float | None]] = {}
    p99_new, p99_old = new.p99_by_phase(), old.p99_by_phase()
    for phase, pauses in old.by_phase.items():
        longest_old = max(pauses.values(), default=0.0)
        longest_new = max(new.by_phase.get(phase, {}).values(), default=0.0)
        answers_new = new.answers.get(phase, [])
        answers_old = old.answers.get(phase, [])
        out[phase] = {
            "longest": round(longest_new / longest_old, 3) if longest_old else None,
            "p99": (
                round(p99_new[phase] / p99_old[phase], 3)
                if p99_old.get(phase) and phase in p99_new
                else None
            ),
            "answer_longest": (
                round(max(answers_new) / max(answers_old), 3)
                if answers_new and answers_old
                else None
            ),
            "answer_p99": (
                round(_percentile(answers_new, 0.99) / _percentile(answers_old, 0.99), 3)
                if answers_new and answers_old
                else None
            ),
        }
    return out


def _rocksdb_stalls(data_dir: Path) -> dict[str, int]:
    """Lines of the partition databases' own logs saying RocksDB delayed or stopped writes
    (a write waiting there holds the GIL in rocksdict unless it is told not to wait)."""
    counts = {"stalling": 0, "stopping": 0}
    for log in data_dir.glob("partition-*/LOG*"):
        text = log.read_text(errors="replace")
        counts["stalling"] += text.count("Stalling writes")
        counts["stopping"] += text.count("Stopping writes")
    return counts


def run(
    sizes: list[int], *, workdir: Path | None = None, lists: int = 50, gets: int = 200
) -> dict[str, Any]:
    """Every figure at each size, on one broker of our own; returns the results."""
    base = Path(tempfile.mkdtemp(prefix="runstate-scale-", dir=workdir))
    started = datetime.now(UTC)
    with h.bench_broker(base) as bootstrap:
        per_size = []
        for n in sizes:
            print(f"scale: {n:,} runs ...", flush=True)
            per_size.append(measure_size(bootstrap, base, n, lists=lists, gets=gets))
            print(json.dumps(per_size[-1], indent=1), flush=True)
    return {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds()),
        "partitions": PARTITIONS,
        "workers": 2,
        "sizes": per_size,
        "workdir": str(base),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000, help="the large size")
    parser.add_argument("--quick", action="store_true", help="10,000 against 100,000 runs")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument(
        "--large-only",
        action="store_true",
        help=f"skip the {SMALL:,}-run baseline (implies --no-docs; for before/after runs)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="where the JSON goes (%(default)s)"
    )
    args = parser.parse_args(argv)
    large = 100_000 if args.quick else args.runs
    results = run([large] if args.large_only or large == SMALL else [SMALL, large])
    results["mode"] = "quick" if args.quick else f"runs-{large}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{stamp}-scale-{results['mode']}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")
    if not (args.no_docs or args.large_only):
        from benchmarks.scale_report import write_section

        write_section(results, path)
        print(f"wrote the Scale section of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
