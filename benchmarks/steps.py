"""``python -m benchmarks.steps``: what a durable step costs the agent SDK (issue 15), beside
anchors measured the same way on the same machine in the same run.

Ours, against a real broker and a real processor worker (the runtime, exactly-once): a fresh
step (``DurableRun.step`` whose body returns at once), a replayed step (one completed
before, skipped), an attach (a fresh ``DurableRun.attach`` of a run that exists: the end of
the partition, a read, the claim, a read). The anchors:

* one acknowledged produce (``EventProducer.emit``), the floor of any durable step here;
* Redis: a GET then a SET of a run's state (about 1 KiB), the "hot state" of an agent;
* PostgreSQL: one transaction of one UPDATE (the run's row) and one INSERT (its history);
* Restate (``@restatedev/restate-server`` with the Python SDK): one ``ctx.run`` step, timed
  inside the handler, when its server and SDK are installed.

Each figure is the time of one operation, taken ``--samples`` times after a warm-up; p50,
p95, p99 in milliseconds. Writes ``benchmarks/results/<stamp>-steps.json`` and the "Durable
steps" section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks import steps_anchors as anchors
from benchmarks import steps_report as report
from runstate.agents import DurableRun, HttpRunStateReader
from runstate.streams.broker import KAFKA_VERSION
from runstate.streams.producer import EventProducer

RESULTS = h.ROOT / "benchmarks" / "results"


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank) of ``ms``, with the count and the mean."""
    s = sorted(ms)

    def rank(q: float) -> float:
        return round(s[min(len(s) - 1, max(0, round(q * len(s)) - 1))], 3)

    return {
        "n": len(s),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "mean": round(statistics.fmean(s), 3),
    }


def timed(op: Callable[[], object], samples: int, *, warmup: int = 20) -> dict[str, float]:
    """Run ``op`` ``warmup`` times untimed, then ``samples`` times; its latency figures."""
    for _ in range(warmup):
        op()
    ms: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        op()
        ms.append((time.perf_counter() - t0) * 1000)
    return percentiles(ms)


def _worker(bootstrap: str, prefix: str, base: Path) -> h.WorkerProcess:
    # The runtime's default commit interval (the harness sets 1 s for its throughput rounds):
    # a read at a position waits for the checkpoint that makes it visible.
    worker = h.WorkerProcess(
        h.RUNTIME_EOS,
        bootstrap,
        prefix,
        base / "worker",
        extra_env={"RUNSTATE_RUNTIME_COMMIT_INTERVAL_S": "0.1"},
    )
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        worker.check_alive()
        m = worker.metrics()
        if m is not None and _ready(worker):
            return worker
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not become ready; log: {worker.log_file}")


def _ready(worker: h.WorkerProcess) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/health", timeout=2) as r:
            body = json.loads(r.read())
    except OSError:
        return False
    return bool(body.get("ready")) and len(body.get("active_partitions", [])) == h.PARTITIONS


class CountingReader:
    """The SDK's HTTP reader, counting the reads it makes (to say what each figure paid)."""

    def __init__(self, inner: HttpRunStateReader) -> None:
        self.inner = inner
        self.reads = 0

    def read(self, run_id: str, *, after: Any = None) -> Any:
        self.reads += 1
        return self.inner.read(run_id, after=after)

    def latest_position(self, run_id: str) -> Any:
        return self.inner.latest_position(run_id)


def sdk_figures(bootstrap: str, base: Path, samples: int) -> dict[str, Any]:
    """Fresh step, replayed step and attach against a real broker and worker."""
    prefix = h.new_prefix("steps", 1)
    names = h.create_topics(bootstrap, prefix)
    worker = _worker(bootstrap, prefix, base)
    try:
        producer = EventProducer(
            bootstrap_servers=bootstrap, topic_prefix=prefix, producer_name="bench-steps"
        )
        http = HttpRunStateReader(
            f"http://127.0.0.1:{worker.web_port}",
            bootstrap_servers=bootstrap,
            events_topic=names.events,
        )
        reader = CountingReader(http)
        out: dict[str, Any] = {}
        run_id = f"steps-{uuid.uuid4().hex[:8]}"
        run = DurableRun.start(
            producer, reader, run_id=run_id, agent="bench", input="{}",
            prompt_version="bench@1", owner="bench", source="bench",
        )  # fmt: skip
        counter = iter(range(10**9))

        def fresh() -> None:
            run.step(f"s{next(counter)}", lambda ctx: "ok")

        reads = reader.reads
        out["fresh_step"] = timed(fresh, samples)
        out["fresh_step"]["reads_per_step"] = round((reader.reads - reads) / (samples + 20), 3)
        out["emit"] = timed(
            lambda: producer.emit(
                producer.new_event(_model_called(), run_id, model_request_id="r", model="m")
            ),
            samples,
        )
        # A run with one completed step, attached afresh: its step is replayed.
        done_id = f"replay-{uuid.uuid4().hex[:8]}"
        first = DurableRun.start(
            producer, reader, run_id=done_id, agent="bench", input="{}",
            prompt_version="bench@1", owner="bench", source="bench",
        )  # fmt: skip
        first.step("done", lambda ctx: "ok")
        again = DurableRun.attach(producer, reader, done_id)
        out["replayed_step"] = timed(lambda: again.step("done", lambda ctx: "never"), samples)
        attaches = max(20, samples // 5)
        out["attach"] = timed(
            lambda: DurableRun.attach(producer, reader, done_id), attaches, warmup=3
        )
        producer.close()
        return out
    finally:
        worker.stop()


def _model_called() -> Any:
    from runstate.schemas.events import ModelCalled

    return ModelCalled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=500, help="timed operations per figure")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/")
    parser.add_argument("--note", default="", help="a line for the report (e.g. machine load)")
    parser.add_argument("--skip", default="", help="comma-separated anchors to leave out")
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = f"{h.ROOT / 'src'}{os.pathsep}{h.ROOT}"
    skip = set(filter(None, args.skip.split(",")))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.steps" + (f" --samples {args.samples}"),
        "samples": args.samples,
        "note": args.note,
        "loadavg_start": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "kafka": KAFKA_VERSION,
    }
    base = h.workdir()
    try:
        print(f"[steps] broker (Kafka {KAFKA_VERSION}) in {base}", flush=True)
        with h.bench_broker(base) as bootstrap:
            results["runstate"] = sdk_figures(bootstrap, base, args.samples)
        results["anchors"] = {}
        for name, measure in anchors.ANCHORS.items():
            if name in skip:
                continue
            print(f"[steps] anchor: {name}", flush=True)
            try:
                results["anchors"][name] = measure(base, args.samples, timed)
            except anchors.Unavailable as exc:
                results["anchors"][name] = {"unavailable": str(exc)}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results["loadavg_end"] = list(os.getloadavg())
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}-steps.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"[steps] results: {path.relative_to(h.ROOT)}", flush=True)
    if not args.no_docs:
        report.write_section(results, path)
    print(report.console(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
