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
import threading
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
    """Polls every worker's ``/health`` every ``interval_s`` in a thread.

    A pause is the time between two answered polls (200) of the same worker process; a
    worker being restarted on purpose is left out (:meth:`suspend` / :meth:`resume`).
    ``url_of`` picks the endpoint: the query API's ``/health`` (in the worker) by default,
    or the health process's (:attr:`RuntimeProcess.health_url`).
    """

    def __init__(
        self,
        workers: Sequence[RuntimeProcess],
        *,
        interval_s: float = 0.05,
        url_of: Callable[[RuntimeProcess], str] = lambda w: f"{w.url}/health",
    ) -> None:
        self._interval = interval_s
        self._url_of = url_of
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_ok: dict[str, float | None] = {w.worker_id: None for w in workers}
        self._suspended: set[str] = set()
        self.longest: dict[str, float] = {w.worker_id: 0.0 for w in workers}
        self.longest_at: dict[str, str] = {w.worker_id: "" for w in workers}
        #: Wall-clock end of the longest pause, to find it in the worker's log.
        self.longest_ended: dict[str, str] = {w.worker_id: "" for w in workers}
        #: The longest pause per phase and worker: load, queries and restarts differ.
        self.by_phase: dict[str, dict[str, float]] = {}
        #: Every pause per phase (one a poll: 20 a second per worker, a few thousand per run).
        self.gaps: dict[str, list[float]] = {}
        self._phase = "start"
        #: (wall-clock start, phase) of every phase, to place the stall probes' lines.
        self.phases: list[tuple[float, str]] = [(time.time(), "start")]
        #: The highest 1-minute load average seen per phase: a pause on a machine with more
        #: runnable threads than cores may be the scheduler's, not the worker's.
        self.load_by_phase: dict[str, float] = {}
        self.polls = 0
        self.not_ready = 0
        self.degraded = 0
        # One thread per worker: a slow answer of one never shows as a pause of the other.
        self._threads = [
            threading.Thread(target=self._run, args=(w,), name=f"health-{w.worker_id}", daemon=True)
            for w in workers
        ]

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase = name
        self.phases.append((time.time(), name))

    def start(self) -> HealthWatch:
        for thread in self._threads:
            thread.start()
        return self

    def suspend(self, worker_id: str) -> None:
        with self._lock:
            self._suspended.add(worker_id)
            self._last_ok[worker_id] = None

    def resume(self, worker_id: str) -> None:
        with self._lock:
            self._suspended.discard(worker_id)

    def _run(self, w: RuntimeProcess) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if w.worker_id in self._suspended:
                    continue
            status, body = get_json(self._url_of(w), timeout_s=10)
            now = time.monotonic()
            if status != 200:
                continue
            load = os.getloadavg()[0]
            with self._lock:
                self.load_by_phase[self.phase] = max(self.load_by_phase.get(self.phase, 0.0), load)
                self.polls += 1
                self.not_ready += not body.get("ready")
                self.degraded += bool(body.get("degraded"))
                if w.worker_id in self._suspended:
                    continue
                last = self._last_ok[w.worker_id]
                self._last_ok[w.worker_id] = now
                if last is not None:
                    phase = self.by_phase.setdefault(self.phase, {})
                    phase[w.worker_id] = max(phase.get(w.worker_id, 0.0), now - last)
                    self.gaps.setdefault(self.phase, []).append(now - last)
                if last is not None and now - last > self.longest[w.worker_id]:
                    self.longest[w.worker_id] = now - last
                    self.longest_at[w.worker_id] = self.phase
                    self.longest_ended[w.worker_id] = time.strftime("%H:%M:%S", time.gmtime())

    def p99_by_phase(self) -> dict[str, float]:
        """The 99th percentile pause per phase, both workers together (ms): the longest one
        may be a single unlucky wait for a core."""
        out = {}
        for phase, gaps in self.gaps.items():
            ordered = sorted(gaps)
            out[phase] = round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1)
        return out

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


class HealthWatches:
    """Both ``/health`` endpoints of every worker watched side by side in the same run: the
    query API's in the worker (``api``) and the health process's (``process``)."""

    def __init__(self, workers: Sequence[RuntimeProcess], *, interval_s: float = 0.05) -> None:
        self.api = HealthWatch(workers, interval_s=interval_s)
        self.process = HealthWatch(workers, interval_s=interval_s, url_of=lambda w: w.health_url)

    @property
    def phases(self) -> list[tuple[float, str]]:
        return self.api.phases

    @property
    def phase(self) -> str:
        return self.api.phase

    @phase.setter
    def phase(self, name: str) -> None:
        self.api.phase = name
        self.process.phase = name

    def start(self) -> HealthWatches:
        self.api.start()
        self.process.start()
        return self

    def suspend(self, worker_id: str) -> None:
        self.api.suspend(worker_id)
        self.process.suspend(worker_id)

    def resume(self, worker_id: str) -> None:
        self.api.resume(worker_id)
        self.process.resume(worker_id)

    def close(self) -> None:
        self.api.close()
        self.process.close()
