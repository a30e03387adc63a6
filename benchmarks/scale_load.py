"""What ``benchmarks/scale.py`` acts with: many runs produced fast, runtime worker processes,
and a watch on their ``/health`` endpoints.

Runs are produced from templates: each shape of run is encoded once (through the SDK's
encoder, so the schemas are published and the headers are the SDK's) with a placeholder run
id of fixed length; every run is the template's bytes with its own id put in. Avro strings
carry their length, so an id of the same length keeps the bytes valid.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from runstate.schemas.events import (
    AgentEvent,
    ApprovalRequested,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from runstate.streams.broker import free_port
from runstate.streams.producer import EventProducer

__all__ = [
    "HealthWatch",
    "HealthWatches",
    "RuntimeProcess",
    "get_json",
    "produce_in_child",
    "produce_runs",
    "run_id",
    "shape_of",
]

#: ``sitecustomize`` of the stall probe each worker process loads (see its docstring).
PROBE_DIR = Path(__file__).resolve().parent / "stall_probe"
_PLACEHOLDER = "run-XXXXXXXXXXXX"
_Record = tuple[bytes, list[tuple[str, str | bytes | None]]]


def run_id(i: int) -> str:
    """The id of run ``i``: the placeholder's length, so template bytes stay valid."""
    return f"run-{i:012d}"


def shape_of(i: int) -> str:
    """About 1 % of runs wait for approval; half of the rest completed, half still open."""
    if i % 100 == 50:
        return "waiting"
    return "completed" if i % 2 else "open"


def _shape_events(shape: str, now: datetime) -> list[AgentEvent]:
    ids = iter(range(10))
    base = {"run_id": _PLACEHOLDER, "occurred_at": now, "producer": "scale-bench/1.0"}

    def e(cls: type[AgentEvent], **kw: Any) -> AgentEvent:
        return cls(event_id=f"{_PLACEHOLDER}-e{next(ids)}", **base, **kw)

    events = [
        e(
            RunStarted,
            agent="scale",
            input='{"n": 1}',
            prompt_version="v1",
            owner="o",
            source="api",
        ),
        e(StepStarted, step="work", step_index=0, attempt=1),
        e(StepCompleted, step="work", attempt=1, output_ref="inline:ok"),
    ]
    if shape == "waiting":
        # Far in the future: no approval expires while the benchmark runs.
        due = now + timedelta(days=365)
        events.append(
            e(
                ApprovalRequested,
                step="approve",
                approver="a@example.com",
                due_at=due,
                subject_hash="h",
                subject="Please approve",
            )
        )
    elif shape == "completed":
        events.append(e(RunCompleted, output_ref="inline:done"))
    return events


def _templates(sdk: EventProducer) -> dict[str, list[_Record]]:
    now = datetime.now(UTC)
    return {
        shape: [sdk.encode(ev) for ev in _shape_events(shape, now)]
        for shape in ("waiting", "completed", "open")
    }


@dataclass
class Produced:
    runs: int
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def produce_runs(bootstrap: str, prefix: str, runs: int) -> Produced:
    """Runs ``0..runs-1`` onto the events topic, keyed by run id (murmur2), confirmed.

    Raises:
        RuntimeError: some records were not delivered.
    """
    with EventProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as sdk:
        templates = _templates(sdk)
        sdk.flush(60)  # the schemas are on their topic before the first record
        topic = sdk.names.events
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )
    failed = 0

    def delivered(err: object, msg: object) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    placeholder = _PLACEHOLDER.encode()
    events = 0
    started = time.perf_counter()
    for i in range(runs):
        rid = run_id(i).encode()
        for value, headers in templates[shape_of(i)]:
            data = value.replace(placeholder, rid)
            while True:
                try:
                    producer.produce(topic, data, rid, headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            events += 1
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(300)
    seconds = time.perf_counter() - started
    if left or failed:
        raise RuntimeError(f"{left + failed} produced records were not delivered")
    return Produced(runs=runs, events=events, seconds=seconds)


def produce_in_child(bootstrap: str, prefix: str, runs: int) -> Produced:
    """:func:`produce_runs` in a process of its own: the producing loop holds the GIL, and
    the health watch in this process would otherwise report its pauses as the workers'."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        produced: Produced = pool.apply(produce_runs, (bootstrap, prefix, runs))
    return produced


def get_json(url: str, timeout_s: float = 30.0) -> tuple[int, dict[str, Any]]:
    """``(status, body)``; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


@dataclass
class RuntimeProcess:
    """``python -m runstate.runtime`` as a child process with its own data dir and log."""

    worker_id: str
    bootstrap: str
    prefix: str
    partitions: int
    data_dir: Path
    log_path: Path
    web_port: int
    #: the health process's port (``runtime.health_process``); 0: the worker's default
    health_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    exits: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def health_url(self) -> str:
        """``/health`` of the worker's health process (a process of its own)."""
        return f"http://127.0.0.1:{self.health_port or self.web_port + 1}/health"

    def start(self) -> None:
        src = Path(__file__).resolve().parents[1] / "src"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(src), str(PROBE_DIR)]),
            "RUNSTATE_STALL_PROBE": str(self.probe_path),
            "RUNSTATE_BOOTSTRAP_SERVERS": self.bootstrap,
            "RUNSTATE_TOPIC_PREFIX": self.prefix,
            "RUNSTATE_PARTITIONS": str(self.partitions),
            "RUNSTATE_RUNTIME_WORKER_ID": self.worker_id,
            "RUNSTATE_RUNTIME_DATA_DIR": str(self.data_dir),
            "RUNSTATE_RUNTIME_WEB_PORT": str(self.web_port),
            "RUNSTATE_RUNTIME_WEB_HOST": "127.0.0.1",
            **({"RUNSTATE_RUNTIME_HEALTH_PORT": str(self.health_port)} if self.health_port else {}),
        }
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start of {self.worker_id} ===\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runstate.runtime"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def probe_path(self) -> Path:
        """The stall probe's lines (``benchmarks/stall_probe``), every start of this worker."""
        return self.log_path.with_suffix(".probe.jsonl")

    def probe_lines(self) -> list[dict[str, Any]]:
        if not self.probe_path.exists():
            return []
        return [json.loads(line) for line in self.probe_path.read_text().splitlines() if line]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM, wait; the exit code is kept in ``exits`` (kill -9 after the timeout)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.exits.append(self.proc.returncode)
        self.proc = None

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def disk_bytes(self, partitions: Sequence[int] | None = None) -> int:
        """Bytes on disk of the partition stores (all, or only ``partitions``)."""
        if partitions is not None:
            return sum(self._tree_bytes(self.data_dir / f"partition-{p}") for p in partitions)
        return self._tree_bytes(self.data_dir)

    @staticmethod
    def _tree_bytes(top: Path) -> int:
        total = 0
        for root, _, files in os.walk(top):
            for name in files:
                with contextlib.suppress(FileNotFoundError):  # RocksDB removed it meanwhile
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
        return total

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class HealthWatch:
    """Polls every worker's ``/health`` every ``interval_s``, each from a poller process of
    its own in a session of its own (:mod:`benchmarks.health_poller`), as an orchestrator's
    probe would: a pause of this benchmark's process (its broker and loader share its
    session, its threads a GIL) is not counted as the worker's.

    A pause is the time between two answered polls (200) of the same worker; a worker being
    restarted on purpose is left out (:meth:`suspend` / :meth:`resume`: a pause overlapping
    that time is not counted). ``url_of`` picks the endpoint: the query API's ``/health`` (in
    the worker) by default, or the health process's (:attr:`RuntimeProcess.health_url`). The
    figures are there after :meth:`close`.
    """

    def __init__(
        self,
        workers: Sequence[RuntimeProcess],
        *,
        interval_s: float = 0.05,
        url_of: Callable[[RuntimeProcess], str] = lambda w: f"{w.url}/health",
        name: str = "api",
    ) -> None:
        self._interval = interval_s
        self._workers = list(workers)
        self._url_of = url_of
        self._name = name
        self._pollers: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        #: per worker, (start, end) wall-clock times it was left out; end None: still
        self._suspended: dict[str, list[tuple[float, float | None]]] = {}
        self.longest: dict[str, float] = {w.worker_id: 0.0 for w in workers}
        self.longest_at: dict[str, str] = {w.worker_id: "" for w in workers}
        #: Wall-clock end of the longest pause, to find it in the worker's log.
        self.longest_ended: dict[str, str] = {w.worker_id: "" for w in workers}
        #: The longest pause per phase and worker: load, queries and restarts differ.
        self.by_phase: dict[str, dict[str, float]] = {}
        #: Every pause per phase (one a poll: 20 a second per worker, a few thousand per run).
        self.gaps: dict[str, list[float]] = {}
        #: per phase, every answered poll's round trip (s), and how late its poller woke (s)
        self.answers: dict[str, list[float]] = {}
        self.poller_late: dict[str, list[float]] = {}
        self._phase = "start"
        #: (wall-clock start, phase) of every phase, to place the stall probes' lines.
        self.phases: list[tuple[float, str]] = [(time.time(), "start")]
        #: The highest 1-minute load average seen per phase: a pause on a machine with more
        #: runnable threads than cores may be the scheduler's, not the worker's.
        self.load_by_phase: dict[str, float] = {}
        self.polls = 0
        self.not_ready = 0
        self.degraded = 0

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase = name
        self.phases.append((time.time(), name))

    def start(self) -> HealthWatch:
        root = Path(__file__).resolve().parents[1]
        for w in self._workers:
            out = w.log_path.with_suffix(f".health-{self._name}.jsonl")
            out.unlink(missing_ok=True)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.health_poller",
                    self._url_of(w),
                    str(out),
                    "--interval",
                    str(self._interval),
                ],
                cwd=root,
                env={**os.environ, "PYTHONPATH": str(root)},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._pollers.append((w.worker_id, out, proc))
        return self

    def suspend(self, worker_id: str) -> None:
        self._suspended.setdefault(worker_id, []).append((time.time(), None))

    def resume(self, worker_id: str) -> None:
        spans = self._suspended.get(worker_id, [])
        if spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], time.time())

    def _left_out(self, worker_id: str, begin: float, end: float) -> bool:
        return any(
            begin < (stop if stop is not None else float("inf")) and end > start
            for start, stop in self._suspended.get(worker_id, [])
        )

    def _phase_at(self, at: float) -> str:
        return next((name for t, name in reversed(self.phases) if t <= at), "start")

    def close(self) -> None:
        """Stop the pollers and work out the figures from their lines."""
        for _, _, proc in self._pollers:
            proc.send_signal(signal.SIGTERM)
        for worker_id, out, proc in self._pollers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
            self._tally(worker_id, lines)
        self._pollers = []

    def _tally(self, worker_id: str, lines: list[dict[str, Any]]) -> None:
        last: dict[str, Any] | None = None
        for line in lines:
            if line["status"] != 200:
                continue
            phase = self._phase_at(line["at"])
            self.polls += 1
            self.not_ready += not line["ready"]
            self.degraded += bool(line["degraded"])
            self.load_by_phase[phase] = max(self.load_by_phase.get(phase, 0.0), line["load"])
            self.answers.setdefault(phase, []).append(line["answer_s"])
            self.poller_late.setdefault(phase, []).append(line["late_s"])
            previous, last = last, line
            if previous is None:
                continue
            began = previous["at"]
            if self._left_out(worker_id, began, line["at"]):
                continue  # restarted on purpose
            gap = line["mono"] - previous["mono"]
            into = self.by_phase.setdefault(phase, {})
            into[worker_id] = max(into.get(worker_id, 0.0), gap)
            self.gaps.setdefault(phase, []).append(gap)
            if gap > self.longest[worker_id]:
                self.longest[worker_id] = gap
                self.longest_at[worker_id] = phase
                self.longest_ended[worker_id] = time.strftime("%H:%M:%S", time.gmtime(line["at"]))

    def p99_by_phase(self) -> dict[str, float]:
        """The 99th percentile pause per phase, both workers together (ms): the longest one
        may be a single unlucky wait for a core."""
        out = {}
        for phase, gaps in self.gaps.items():
            ordered = sorted(gaps)
            out[phase] = round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1)
        return out


class HealthWatches:
    """Every worker's two ``/health`` endpoints watched side by side in the same run: the
    query API's in the worker (``api``) and the health process's (``process``); and a
    control (``control``): a ``/health`` that reads nothing (:mod:`benchmarks.null_health`),
    in a session of its own, polled as often by as many pollers. Its pauses are the
    machine's floor under the other two."""

    def __init__(self, workers: Sequence[RuntimeProcess], *, interval_s: float = 0.05) -> None:
        self._control_port = free_port()
        control_url = f"http://127.0.0.1:{self._control_port}/health"
        self._control: subprocess.Popen[bytes] | None = None
        self.api = HealthWatch(workers, interval_s=interval_s)
        self.process = HealthWatch(
            workers, interval_s=interval_s, url_of=lambda w: w.health_url, name="process"
        )
        self.control = HealthWatch(
            workers, interval_s=interval_s, url_of=lambda w: control_url, name="control"
        )
        self._all = (self.api, self.process, self.control)

    @property
    def phases(self) -> list[tuple[float, str]]:
        return self.api.phases

    @property
    def phase(self) -> str:
        return self.api.phase

    @phase.setter
    def phase(self, name: str) -> None:
        for watch in self._all:
            watch.phase = name

    def start(self) -> HealthWatches:
        root = Path(__file__).resolve().parents[1]
        self._control = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.null_health", str(self._control_port)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        for watch in self._all:
            watch.start()
        return self

    def suspend(self, worker_id: str) -> None:
        for watch in self._all:
            watch.suspend(worker_id)

    def resume(self, worker_id: str) -> None:
        for watch in self._all:
            watch.resume(worker_id)

    def close(self) -> None:
        for watch in self._all:
            watch.close()
        if self._control is not None:
            self._control.terminate()
            self._control.wait(15)
