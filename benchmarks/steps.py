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
  inside the handler, when its server and SDK are installed;
* DBOS Transact (PyPI ``dbos``) on PostgreSQL: one ``@DBOS.step``, timed inside the workflow.

``--baseline-ref`` runs earlier commits beside it: each one's SDK against its own worker, in
rounds in turn with our fresh steps and our attaches.

Each figure is the time of one operation, taken ``--samples`` times after a warm-up; p50,
p95, p99 in milliseconds. Writes ``benchmarks/results/<stamp>-steps.json`` and the "Durable
steps" section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
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
from runstate.schemas.events import ModelCalled, RunStarted
from runstate.streams.broker import KAFKA_VERSION
from runstate.streams.partitioning import partition_for
from runstate.streams.producer import EventProducer

RESULTS = h.ROOT / "benchmarks" / "results"
#: The commits measured beside this checkout by default: the last before the local fold
#: (issue 15: every fresh step read the processor), and the last before attach claimed from
#: the committed state and the worker committed early for a waiting read.
BEFORE_REF = "930f276,2cddbb1"


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


def _worker(bootstrap: str, prefix: str, base: Path, *, src: Path | None = None) -> h.WorkerProcess:
    # The runtime's default commit interval (the harness sets 1 s for its throughput rounds):
    # a read at a position waits for the checkpoint that makes it visible.
    env = {"RUNSTATE_RUNTIME_COMMIT_INTERVAL_S": "0.1"}
    if src is not None:  # another commit's runtime
        env["PYTHONPATH"] = f"{src}{os.pathsep}{h.ROOT}"
    worker = h.WorkerProcess(
        h.RUNTIME_EOS,
        bootstrap,
        prefix,
        base / ("worker" if src is None else f"worker-{src.parent.name}"),
        extra_env=env,
    )
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        worker.check_alive()
        # /health only: an earlier commit's worker served its counters elsewhere.
        if _ready(worker):
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


#: Fresh steps are taken in runs of this many steps (an agent loop of model calls), so the
#: figure is not that of one run grown to thousands of steps.
STEPS_PER_RUN = 50
#: Fresh steps and single produces alternate in this many rounds, so a change of the shared
#: machine's load weighs on both alike.
ROUNDS = 5


def _samples(op: Callable[[], object], n: int) -> list[float]:
    ms: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        op()
        ms.append((time.perf_counter() - t0) * 1000)
    return ms


class _FreshSteps:
    """Fresh steps whose body returns at once, a new run every :data:`STEPS_PER_RUN`."""

    def __init__(
        self,
        producer: EventProducer,
        reader: CountingReader,
        *,
        partition: int | None = None,
        confirm_starts: bool = True,
    ) -> None:
        self.producer, self.reader = producer, reader
        self.run: DurableRun | None = None
        self.done = 0
        self.partition = partition
        self.confirm_starts = confirm_starts

    def prepare(self) -> None:
        """Start the next run if the current one is full (outside the timed part)."""
        if self.run is None or self.done % STEPS_PER_RUN == 0:
            self.run = DurableRun.start(
                self.producer, self.reader, run_id=run_id_in("steps", self.partition),
                agent="bench", input="{}", prompt_version="bench@1", owner="bench",
                source="bench", confirm_starts=self.confirm_starts,
            )  # fmt: skip

    def step(self) -> None:
        assert self.run is not None
        self.run.step(f"s{self.done}", lambda ctx: "ok")
        self.done += 1


class _Collections:
    """Counts Python's garbage collections (and the longest) while in its ``with``: to say
    whether the slowest steps waited for one."""

    def __init__(self) -> None:
        self.count, self.longest_ms, self._t0 = 0, 0.0, 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.count += 1
            self.longest_ms = max(self.longest_ms, (time.perf_counter() - self._t0) * 1000)

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def run_id_in(hint: str, partition: int | None) -> str:
    """A fresh run id, in ``partition`` of the events topic if given."""
    while True:
        run_id = f"{hint}-{uuid.uuid4().hex[:10]}"
        if partition is None or partition_for(run_id.encode(), h.PARTITIONS) == partition:
            return run_id


class _Neighbour:
    """Another run writing to the same partition at a steady rate (``ModelCalled`` records,
    not waited for), as runs sharing a partition do in production."""

    def __init__(self, bootstrap: str, prefix: str, partition: int, per_s: float) -> None:
        self.producer = EventProducer(
            bootstrap_servers=bootstrap, topic_prefix=prefix, producer_name="bench-neighbour"
        )
        self.run_id = run_id_in("neighbour", partition)
        self.period = 1.0 / per_s
        self.stop = threading.Event()
        self.producer.emit(
            self.producer.new_event(
                RunStarted,
                self.run_id,
                agent="bench",
                input="{}",
                prompt_version="bench@1",
                owner="bench",
                source="bench",
            )
        )
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(self.period):
            self.producer.send(
                self.producer.new_event(ModelCalled, self.run_id, model_request_id="n", model="m")
            )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.producer.close()


class _Before:
    """Commit ``ref`` (its ``src`` from git): its runtime worker on fresh topics of the same
    broker, and its SDK run in a child process (``benchmarks.steps_baseline``) a round at a
    time, in turn with ours, so a change of the shared machine's load weighs on both."""

    def __init__(self, ref: str, bootstrap: str, base: Path) -> None:
        self.ref, self.bootstrap = ref, bootstrap
        self.worker: h.WorkerProcess | None = None
        self.unavailable: str | None = None
        self.fresh_ms: list[float] = []
        self.attach_ms: list[float] = []
        #: why a round failed and was run again (930f276's worker could answer a read before
        #: it had applied the write, fixed in 2cddbb1: its SDK then saw its claim missing)
        self.retried: list[str] = []
        self.src = base / f"before-{ref}"
        self.src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(h.ROOT), "archive", ref, "src"], capture_output=True, check=False
        )
        if archive.returncode != 0:
            self.unavailable = f"git archive {ref}: {archive.stderr.decode()[-200:]}"
            return
        subprocess.run(["tar", "-x", "-C", str(self.src)], input=archive.stdout, check=True)
        self.prefix = h.new_prefix(f"steps-{ref}", 1)
        self.names = h.create_topics(bootstrap, self.prefix)
        try:
            self.worker = _worker(bootstrap, self.prefix, base, src=self.src / "src")
        except RuntimeError as exc:
            self.unavailable = f"the worker of {ref}: {exc}"

    def round(self, steps: int, attaches: int) -> None:
        """``steps`` fresh steps and ``attaches`` attaches (after their warm-ups)."""
        if self.worker is None or self.unavailable:
            return
        for _ in range(2):  # once again after a failure (see ``retried``)
            done = self._run(steps, attaches)
            if done.returncode == 0:
                break
            self.retried.append((done.stderr.strip().splitlines() or ["no output"])[-1][-300:])
        if done.returncode != 0:
            self.unavailable = f"the SDK of {self.ref} failed: {done.stderr[-300:]}"
            return
        ms = json.loads(done.stdout.strip().splitlines()[-1])
        self.fresh_ms += ms["fresh_step"]
        self.attach_ms += ms["attach"]

    def _run(self, steps: int, attaches: int) -> subprocess.CompletedProcess[str]:
        assert self.worker is not None
        return subprocess.run(
            [sys.executable, "-m", "benchmarks.steps_baseline", "--bootstrap", self.bootstrap,
             "--prefix", self.prefix, "--query-url", f"http://127.0.0.1:{self.worker.web_port}",
             "--events-topic", self.names.events, "--samples", str(steps),
             "--steps-per-run", str(STEPS_PER_RUN), "--attaches", str(attaches)],
            env={**os.environ, "PYTHONPATH": f"{self.src / 'src'}{os.pathsep}{h.ROOT}"},
            capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip

    def figures(self) -> dict[str, Any]:
        if self.unavailable or not self.attach_ms or not self.fresh_ms:
            return {"ref": self.ref, "unavailable": self.unavailable or "not measured"}
        return {
            "ref": self.ref,
            "fresh_step": percentiles(self.fresh_ms),
            "attach": percentiles(self.attach_ms),
            "rounds_retried": self.retried,
        }

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


def sdk_figures(
    bootstrap: str, base: Path, samples: int, *, before: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Fresh step, one produce, replayed step and attach against a real broker and worker."""
    prefix = h.new_prefix("steps", 1)
    names = h.create_topics(bootstrap, prefix)
    worker = _worker(bootstrap, prefix, base)
    befores: list[_Before] = []
    try:
        befores = [_Before(ref, bootstrap, base) for ref in before]
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
        fresh = _FreshSteps(producer, reader)
        # confirm_starts=False: StepStarted acknowledged with StepCompleted (one round trip)
        unconfirmed = _FreshSteps(producer, reader, confirm_starts=False)
        emit_run = f"emit-{uuid.uuid4().hex[:8]}"

        def emit() -> None:
            producer.emit(
                producer.new_event(ModelCalled, emit_run, model_request_id="r", model="m")
            )

        for _ in range(20):  # warm-up
            for steps in (fresh, unconfirmed):
                steps.prepare()
                steps.step()
            emit()
        per_round = max(1, samples // ROUNDS)
        fresh_ms: list[float] = []
        emit_ms: list[float] = []
        unconfirmed_ms: list[float] = []
        cpu_s, reads = 0.0, 0
        collections = _Collections()
        in_step: list[int] = []  # collections that ran during each fresh step
        with collections:
            for _ in range(ROUNDS):
                for b in befores:  # fresh steps of the earlier commits, in turn with ours
                    b.round(max(50, samples // 5) // ROUNDS, 0)
                emit_ms += _samples(emit, per_round)
                for _ in range(per_round):
                    unconfirmed.prepare()
                    unconfirmed_ms += _samples(unconfirmed.step, 1)
                for _ in range(per_round):
                    fresh.prepare()
                    reads_before, cpu0 = reader.reads, time.process_time()
                    gcs = collections.count
                    fresh_ms += _samples(fresh.step, 1)
                    in_step.append(collections.count - gcs)
                    cpu_s += time.process_time() - cpu0
                    reads += reader.reads - reads_before
        slowest = sorted(range(len(fresh_ms)), key=fresh_ms.__getitem__)[
            -max(1, len(fresh_ms) // 100) :
        ]
        out["fresh_step"] = {
            **percentiles(fresh_ms),
            "gc_in_slowest_1pct": sum(1 for i in slowest if in_step[i]),
            "gc_max_ms": round(collections.longest_ms, 3),
            "reads_per_step": round(reads / len(fresh_ms), 3),
            "cpu_ms_per_step": round(cpu_s * 1000 / len(fresh_ms), 3),
            "steps_per_run": STEPS_PER_RUN,
        }
        out["emit"] = percentiles(emit_ms)
        out["fresh_step_unconfirmed"] = percentiles(unconfirmed_ms)
        # The same steps while another run writes to their partition 100 times a second:
        # the offsets of our own events have gaps, so the SDK looks at the run (one query
        # that does not wait) before each step body.
        neighbour = _Neighbour(bootstrap, prefix, 0, per_s=100.0)
        try:
            shared = _FreshSteps(producer, reader, partition=0)
            shared_ms: list[float] = []
            reads = 0
            for _ in range(max(50, samples // 5)):
                shared.prepare()
                reads_before = reader.reads
                shared_ms += _samples(shared.step, 1)
                reads += reader.reads - reads_before
        finally:
            neighbour.close()
        out["fresh_step_shared"] = {
            **percentiles(shared_ms[10:]),
            "reads_per_step": round(reads / len(shared_ms), 3),
            "neighbour_events_per_s": 100,
        }
        # A run with one completed step, attached afresh: its step is replayed.
        done_id = f"replay-{uuid.uuid4().hex[:8]}"
        first = DurableRun.start(
            producer, reader, run_id=done_id, agent="bench", input="{}",
            prompt_version="bench@1", owner="bench", source="bench",
        )  # fmt: skip
        first.step("done", lambda ctx: "ok")
        again = DurableRun.attach(producer, reader, done_id)
        out["replayed_step"] = timed(lambda: again.step("done", lambda ctx: "never"), samples)
        # Attaches, and each earlier commit's fresh steps and attaches, in turn by rounds.
        attaches = max(20, samples // 5)
        attach_ms: list[float] = []
        for _ in range(3):  # warm-up
            DurableRun.attach(producer, reader, done_id)
        for _ in range(ROUNDS):
            attach_ms += _samples(
                lambda: DurableRun.attach(producer, reader, done_id), attaches // ROUNDS
            )
            for b in befores:
                b.round(0, attaches // ROUNDS)
        out["attach"] = percentiles(attach_ms)
        out["before"] = [b.figures() for b in befores]
        producer.close()
        return out
    finally:
        worker.stop()
        for b in befores:
            b.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=500, help="timed operations per figure")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/")
    parser.add_argument("--note", default="", help="a line for the report (e.g. machine load)")
    parser.add_argument("--skip", default="", help="comma-separated anchors to leave out")
    parser.add_argument(
        "--baseline-ref",
        default=BEFORE_REF,
        help="comma-separated commits whose SDK and worker are measured too (empty: none)",
    )
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
            results["runstate"] = sdk_figures(
                bootstrap,
                base,
                args.samples,
                before=tuple(filter(None, args.baseline_ref.split(","))),
            )
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
