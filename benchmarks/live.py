"""The figures on the real broker, for one system in one round: throughput from a
preloaded topic, latency at fixed offered rates, restart after ``kill -9`` and full restore
from the changelog; plus a py-spy pass over a worker and the replay figure.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.workload import Workload, generate
from runstate.runs.state_codec import decode_change
from runstate.schemas.events import ModelCalled
from runstate.streams.producer import EventProducer

__all__ = ["replay_figure", "spy_worker", "system_round"]

#: A rate is measured only below this share of the round's measured capacity: above it the
#: queue grows for as long as the test runs, so any percentile is the test length, not a
#: property of the system.
SATURATION_SHARE = 0.8
#: Records arriving this soon after the first output are one burst (a transaction's worth,
#: or what was fetched together), not steady progress.
FIRST_BURST_S = 0.25


def system_round(
    system: str, round_no: int, bootstrap: str, workload: Workload, mode: Any, base: Path
) -> dict[str, Any]:
    prefix = h.new_prefix(system, round_no)
    names = h.create_topics(bootstrap, prefix)
    out: dict[str, Any] = {"system": system, "round": round_no, "prefix": prefix}
    out["producer_events_per_s"] = h.preload(bootstrap, prefix, workload.events)
    watch = h.OutputWatch(bootstrap, names.state_changes)
    worker = h.WorkerProcess(system, bootstrap, prefix, base / prefix)
    try:
        out["throughput"] = throughput(worker, watch, len(workload.events))
        capacity = out["throughput"]["steady_events_per_s"]
        with h.producer(bootstrap, prefix) as sdk:
            out["latency"] = {
                str(rate): latency(sdk, worker, watch, rate, mode.latency_s, capacity, round_no)
                for rate in mode.latency_rates
            }
            out["restart"] = restart(sdk, worker, watch, workload.run_ids[0], bootstrap, names)
    except Exception as exc:  # one failed round must not lose the others
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  ! {system} round {round_no} failed: {out['error'][:2000]}", flush=True)
    finally:
        worker.stop()
        watch.close()
    out["outputs"] = output_counts(watch.records)
    if out["outputs"]["doubled"]:
        print(f"  ! {system} round {round_no}: doubled outputs {out['outputs']}", flush=True)
    return out


def output_counts(records: Sequence[h.Received]) -> dict[str, Any]:
    """State changes seen over the whole round (throughput, latency, every restart): a run
    version seen twice is an output doubled (allowed at least once after a kill -9, never
    exactly once)."""
    versions = Counter((c.run_id, c.version) for c in (decode_change(r.value) for r in records))
    doubled = sum(n - 1 for n in versions.values() if n > 1)
    return {"records": len(records), "distinct": len(versions), "doubled": doubled}


def throughput(worker: h.WorkerProcess, watch: h.OutputWatch, n: int) -> dict[str, Any]:
    """Start the worker on a preloaded topic; time until all ``n`` state changes are out."""
    started = worker.start()
    _wait(watch, 1, worker, timeout_s=120)
    cpu_first = worker.cpu_seconds()
    _wait(watch, n, worker, timeout_s=60 + n / 20)
    cpu_s = worker.cpu_seconds() - cpu_first
    done = watch.records[n - 1].at
    first = watch.records[0].at
    # An exactly-once worker's outputs show up one transaction at a time (a burst per
    # commit interval), so "steady" starts after the first burst: the last record to arrive
    # within FIRST_BURST_S of the first, counted as the fencepost.
    head = [r.at for r in watch.records[:n] if r.at - first <= FIRST_BURST_S]
    first_batch, steady_from = len(head), head[-1]
    steady_s = done - steady_from
    # CPU from the first output on, per record that arrived after the first burst (the
    # burst's records were computed before the first sample). An exactly-once worker may be
    # up to one commit interval ahead of what is visible when sampled: its figure can be low
    # by that interval's work, which is why the workload takes several intervals.
    cpu_ms = cpu_s * 1000 / max(n - first_batch, 1)
    return {
        "events": n,
        "wall_s": done - started,
        "wall_events_per_s": n / (done - started),
        "startup_s": first - started,
        "first_burst_events": first_batch,
        "steady_s": steady_s,
        "steady_events_per_s": (n - first_batch) / steady_s if steady_s > 0 else math.nan,
        # CPU the worker used per state change once it was producing (start-up excluded)
        "cpu_ms_per_event": cpu_ms,
    }


def _wait(watch: h.OutputWatch, n: int, worker: h.WorkerProcess, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not watch.wait_for(n, 1.0):
        worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{watch.count}/{n} state changes after {timeout_s:.0f}s")


def latency(
    sdk: EventProducer,
    worker: h.WorkerProcess,
    watch: h.OutputWatch,
    rate: int,
    seconds: float,
    capacity: float,
    round_no: int,
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds``; produce-call to state-change-arrival times."""
    if not capacity or rate > SATURATION_SHARE * capacity:
        return {"saturated": True, "capacity_events_per_s": capacity}
    k = int(rate * seconds)
    wl = generate(k // 12 + 10, seed=1000 * round_no + rate)
    events = wl.events[:k]  # each run's prefix of a valid run is valid
    base = watch.count
    sent: dict[str, float] = {}
    began = time.perf_counter()
    for i, event in enumerate(events):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[event.event_id] = time.time()
        sdk.send(event)
    sdk.flush()
    achieved = k / (time.perf_counter() - began)
    _wait(watch, base + k, worker, timeout_s=30 + k / max(capacity, 1))
    lat = []
    for record in watch.records[base : base + k]:
        at = sent.get(decode_change(record.value).event_id)
        if at is not None:
            lat.append((record.at - at) * 1000)
    return {"offered": rate, "achieved": achieved, **_percentiles(lat)}


def _percentiles(ms: Sequence[float]) -> dict[str, Any]:
    if len(ms) < 2:
        return {"n": len(ms)}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(ms), "p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "max_ms": max(ms)}


def _probe(
    sdk: EventProducer,
    worker: h.WorkerProcess,
    watch: h.OutputWatch,
    run_id: str,
    *,
    timeout_s: float = 120.0,
) -> float:
    """Send a ModelCalled for ``run_id`` every 100 ms until one's state change arrives;
    returns its arrival time (ModelCalled is legal in any status, so any run will do)."""
    ids: set[str] = set()
    seen = watch.count
    next_at = 0.0
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        now = time.time()
        if now >= next_at:
            event = sdk.new_event(
                ModelCalled, run_id, model_request_id=f"probe-{uuid.uuid4().hex}", model="probe"
            )
            ids.add(event.event_id)
            sdk.send(event)
            next_at = now + 0.1
        records = watch.records[seen:]
        seen += len(records)
        for record in records:
            if decode_change(record.value).event_id in ids:
                return record.at
        worker.check_alive()
        time.sleep(0.01)
    raise TimeoutError(f"no probe processed within {timeout_s:.0f}s")


def restart(
    sdk: EventProducer,
    worker: h.WorkerProcess,
    watch: h.OutputWatch,
    run_id: str,
    bootstrap: str,
    names: Any,
) -> dict[str, Any]:
    """kill -9 then restart on intact state; clean restart; restart with the state deleted."""
    _probe(sdk, worker, watch, run_id)  # warm: the worker is processing
    killed = worker.kill9()
    worker.start()
    kill9_s = _probe(sdk, worker, watch, run_id) - killed
    worker.stop()
    started = worker.start()
    clean_s = _probe(sdk, worker, watch, run_id) - started
    worker.stop()
    changelogs = _changelog_topics(bootstrap, worker.system, names)
    records = h.topic_records(bootstrap, changelogs)
    worker.delete_state()
    started = worker.start()
    restore_s = _probe(sdk, worker, watch, run_id) - started
    internal = worker.metrics()
    excess = restore_s - clean_s
    return {
        "kill9_to_processing_s": kill9_s,
        "clean_restart_s": clean_s,
        "restore_s": restore_s,
        "changelog_records": records,
        "restore_records_per_s": records / restore_s,
        "restore_excess_s": excess,
        "restore_excess_records_per_s": records / excess if excess > 0.05 else None,
        "worker_restore_metrics": (internal or {}).get("restore"),
    }


def _changelog_topics(bootstrap: str, system: str, names: Any) -> list[str]:
    if system in (h.RUNTIME_EOS, h.RUNTIME_ALO):
        return [names.runs_changelog]
    # Quix names it changelog__<consumer group>--<topic>--<store>
    return [t for t in h.list_topics(bootstrap, "changelog__") if names.prefix in t]


def spy_worker(
    system: str, bootstrap: str, workload: Workload, mode: Any, base: Path
) -> dict[str, Any]:
    """py-spy over a worker while it works through a preloaded topic (not a timed run)."""
    prefix = h.new_prefix(f"spy-{system}", 0)
    names = h.create_topics(bootstrap, prefix)
    h.preload(bootstrap, prefix, workload.events)
    watch = h.OutputWatch(bootstrap, names.state_changes)
    worker = h.WorkerProcess(system, bootstrap, prefix, base / prefix)
    raw = base / f"{prefix}.folded"
    try:
        worker.start()
        _wait(watch, 1, worker, timeout_s=60)
        spy = subprocess.run(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(worker.pid),
             "--duration", str(int(mode.spy_s)), "--rate", "200", "--nonblocking",
             "--format", "raw", "--output", str(raw)],
            capture_output=True, text=True, timeout=mode.spy_s + 30,
        )  # fmt: skip
        processed = watch.count
    finally:
        worker.stop()
        watch.close()
    if spy.returncode != 0 or not raw.exists():
        return {"available": False, "note": spy.stderr.strip()[-500:]}
    return {"available": True, "events_during": processed, **fold_stacks(raw.read_text())}


def fold_stacks(folded: str, *, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (folded) output."""
    self_count: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_count[frames[-1]] += count
        by_package[_package(frames[-1])] += count
        for frame in set(frames):
            incl[frame] += count
    if not total:
        return {"samples": 0}

    def share(c: Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"function": f, "share": v / total} for f, v in c.most_common(n)]

    interesting = Counter(
        {f: v for f, v in incl.items() if any(p in f for p in ("runstate/", "baseline_quix"))}
    )
    return {
        "samples": total,
        "top_self": share(self_count, top),
        "top_inclusive_runstate": share(interesting, top),
        "self_by_package": share(by_package, 12),
    }


def _package(frame: str) -> str:
    """``fn (aiokafka/conn.py:12)`` -> ``aiokafka``; ``fn (selectors.py:3)`` -> ``stdlib``."""
    _, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    if "/" not in path:
        return "stdlib" if path.endswith(".py") else path or "?"
    top = path.split("/", 1)[0]
    return "stdlib (asyncio)" if top == "asyncio" else top


def replay_figure(
    command: list[str], bootstrap: str, workload: Workload, base: Path
) -> dict[str, Any]:
    """``runstate replay --all`` from the topic, then from the archive (``runstate archive run
    --once`` first); events/s over the whole command, process start-up included."""
    prefix = h.new_prefix("replay", 0)
    names = h.create_topics(bootstrap, prefix)
    h.preload(bootstrap, prefix, workload.events)
    folder = base / prefix
    folder.mkdir(parents=True, exist_ok=True)
    n = len(workload.events)
    exe = command[:-1]  # the runstate command without "replay"
    common = ["--bootstrap", bootstrap, "--topic-prefix", prefix]

    def policy(archive: bool) -> Path:
        # replay needs an archive target; an empty one makes it read everything from Kafka
        path = folder / f"policy-{'archive' if archive else 'topic'}.yaml"
        target = folder / ("archive" if archive else "empty-archive")
        target.mkdir(exist_ok=True)
        path.write_text(
            f"version: 1\ntopics:\n  {names.events}:\n    hot: 7d\n    archive:\n"
            f"      enabled: true\n      target: local:{target}\n    archive_retention: 30d\n"
        )
        return path

    def timed(args: list[str]) -> tuple[float, str | None]:
        started = time.perf_counter()
        out = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=folder)
        elapsed = time.perf_counter() - started
        return elapsed, None if out.returncode == 0 else (out.stdout + out.stderr)[-1500:]

    def replay(archive: bool) -> dict[str, Any]:
        elapsed, error = timed(
            [*command, "--all", "--policy", str(policy(archive)), "--no-progress", "--json",
             "--output", str(folder / f"states-{archive}.json"), *common]
        )  # fmt: skip
        if error:
            return {"error": error}
        return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed}

    startup, _ = timed([*exe, "replay", "--help"])
    result: dict[str, Any] = {"available": True, "cli_startup_s": startup}
    result["from_topic"] = replay(archive=False)
    archived, error = timed(
        [*exe, "archive", "run", "--policy", str(policy(True)), "--once", "--log-level",
         "warning", *common]
    )  # fmt: skip
    if error:
        result["from_archive"] = {"error": f"archive run failed: {error}"}
    else:
        result["archive_run_s"] = archived
        result["from_archive"] = replay(archive=True)
    return result
