"""The pieces every figure needs: a broker, fresh topics, a preloaded workload, a worker
process (ours or the Quix Streams baseline) and a watch on an output topic.

Workers run as child processes in their own temp folders, so killing one (``kill -9``) is
exactly what an operator would see; the harness only reads the topics they write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from runstate.schemas.events import AgentEvent
from runstate.streams.broker import KAFKA_VERSION, BrokerConfig, LocalBroker, free_port
from runstate.streams.producer import EventProducer
from runstate.streams.reader import end_offsets
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs

__all__ = [
    "PAIRS",
    "QUIX_ALO",
    "QUIX_EOS",
    "QUIX_PYTHON",
    "ROOT",
    "RUNTIME_ALO",
    "RUNTIME_EOS",
    "SYSTEMS",
    "OutputWatch",
    "WorkerProcess",
    "bench_broker",
    "create_topics",
    "new_prefix",
    "preload",
    "topic_records",
]

ROOT = Path(__file__).resolve().parents[1]
#: The baseline's own interpreter: every quixstreams release pins confluent-kafka < 2.13,
#: pydantic < 2.14 and pydantic-settings < 2.16, older than what runstate's venv holds, so it
#: lives in a venv of its own (``benchmarks/run.py`` creates it on first use).
QUIX_VENV = ROOT / ".runstate" / "bench-quix"
QUIX_PYTHON = QUIX_VENV / "bin" / "python"
PARTITIONS = 6
#: The contenders, each a worker as a child process: the runtime and Quix Streams, each in
#: both guarantees. (The faust processor was one until it was retired; its last figures are
#: the "History" section of docs/benchmarks.md.)
RUNTIME_EOS, RUNTIME_ALO = "runtime-eos", "runtime-alo"
QUIX_EOS, QUIX_ALO = "quix-eos", "quix-alo"
SYSTEMS = (RUNTIME_EOS, RUNTIME_ALO, QUIX_EOS, QUIX_ALO)
#: (ours, baseline) compared round by round: the same guarantee on both sides.
PAIRS = ((RUNTIME_EOS, QUIX_EOS), (RUNTIME_ALO, QUIX_ALO))
#: Equal for every system: how long a killed member holds its partitions.
SESSION_TIMEOUT_S = 10.0
COMMIT_INTERVAL_S = 1.0


@contextlib.contextmanager
def bench_broker(workdir: Path) -> Iterator[str]:
    """A broker of our own on free ports in ``workdir``; yields its bootstrap address."""
    broker = LocalBroker(
        BrokerConfig(
            data_dir=workdir / "kafka",
            jars_dir=ROOT / ".runstate" / "jars" / f"kafka-{KAFKA_VERSION}",
            port=free_port(),
            controller_port=free_port(),
            heap_mb=1024,
        )
    )
    broker.start()
    try:
        yield broker.config.bootstrap
    finally:
        broker.stop()


def new_prefix(system: str, round_no: int) -> str:
    return f"bench-{system}-r{round_no}-{uuid.uuid4().hex[:6]}"


def create_topics(bootstrap: str, prefix: str, *, partitions: int = PARTITIONS) -> TopicNames:
    names = TopicNames(prefix)
    ensure_topics(admin_client(bootstrap), topic_specs(names, partitions=partitions))
    return names


def producer(bootstrap: str, prefix: str) -> EventProducer:
    return EventProducer(
        bootstrap_servers=bootstrap, topic_prefix=prefix, producer_name="runstate-bench"
    )


def preload(bootstrap: str, prefix: str, events: Sequence[AgentEvent]) -> float:
    """Send ``events`` through the SDK and wait until every one is confirmed.

    Returns:
        Events per second, delivery confirmed (the producer SDK figure).
    """
    with producer(bootstrap, prefix) as sdk:
        sdk.emit(events[0])  # publishes the schemas, connects: not part of the rate
        started = time.perf_counter()
        futures = [sdk.send(e) for e in events[1:]]
        sdk.flush()
        elapsed = time.perf_counter() - started
    failed = sum(1 for f in futures if f.exception() is not None)
    if failed:
        raise RuntimeError(f"{failed} preloaded events were not delivered")
    return (len(events) - 1) / elapsed


def topic_records(bootstrap: str, topics: Sequence[str]) -> int:
    """Records currently held by ``topics`` (high minus low watermark, summed)."""
    total = 0
    for topic in topics:
        total += sum(high - low for low, high in end_offsets(bootstrap, topic).values())
    return total


def list_topics(bootstrap: str, starting: str) -> list[str]:
    meta = admin_client(bootstrap).list_topics(timeout=10).topics
    return sorted(t for t in meta if t.startswith(starting))


@dataclass
class Received:
    at: float  # time.time() when the harness got it
    timestamp_ms: int  # the record's CreateTime (set by the worker's producer)
    value: bytes


class OutputWatch:
    """Reads every record of a topic from the start, in a thread, with arrival times."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Received] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
            }
        )
        parts = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self._thread = threading.Thread(target=self._run, name=f"watch-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # poll returns as soon as a record is there (consume would wait out its timeout),
            # then take what else is already fetched without waiting
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            batch = [first, *self._consumer.consume(500, 0)]
            now = time.time()
            got = []
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        print(f"watch {self.topic}: {err}", file=sys.stderr)
                    continue
                _, ts = msg.timestamp()
                got.append(Received(now, ts, msg.value() or b""))
            with self._cond:
                self.records.extend(got)
                self._cond.notify_all()

    @property
    def count(self) -> int:
        return len(self.records)

    def wait_for(self, n: int, timeout_s: float) -> bool:
        """Block until at least ``n`` records arrived; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.records) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


@dataclass
class WorkerProcess:
    """One processor worker as a child process; ``system`` is one of :data:`SYSTEMS`."""

    system: str
    bootstrap: str
    prefix: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    web_port: int = 0
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.system}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        if self.system in (RUNTIME_EOS, RUNTIME_ALO):
            return [sys.executable, "-m", "runstate.runtime"]  # configured by env()
        return [
            str(QUIX_PYTHON), "-m", "benchmarks.baseline_quix",
            "--bootstrap", self.bootstrap, "--prefix", self.prefix,
            "--state-dir", str(self.data_dir),
            "--session-timeout", str(SESSION_TIMEOUT_S),
            "--commit-interval", str(COMMIT_INTERVAL_S),
            "--guarantee", "exactly-once" if self.system == QUIX_EOS else "at-least-once",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        """The worker's environment: this checkout's code first, equal intervals for all."""
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        }
        if self.system in (RUNTIME_EOS, RUNTIME_ALO):
            env |= {
                "RUNSTATE_BOOTSTRAP_SERVERS": self.bootstrap,
                "RUNSTATE_TOPIC_PREFIX": self.prefix,
                "RUNSTATE_PARTITIONS": str(PARTITIONS),
                "RUNSTATE_RUNTIME_WORKER_ID": "bench-1",
                "RUNSTATE_RUNTIME_DATA_DIR": str(self.data_dir),
                "RUNSTATE_RUNTIME_WEB_PORT": str(self.web_port),
                "RUNSTATE_RUNTIME_EXACTLY_ONCE": str(self.system == RUNTIME_EOS).lower(),
                "RUNSTATE_RUNTIME_COMMIT_INTERVAL_S": str(COMMIT_INTERVAL_S),
                "RUNSTATE_RUNTIME_SESSION_TIMEOUT_MS": str(int(SESSION_TIMEOUT_S * 1000)),
            }
        return env | self.extra_env

    def start(self) -> float:
        """Start the worker; returns the ``time.time()`` it was started at."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port()
        env = self.env()
        log = self.log_file.open("ab")
        started = time.time()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        return started

    def kill9(self) -> float:
        """SIGKILL the worker (no clean shutdown); returns when it was sent."""
        assert self.proc is not None
        at = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return at

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM and wait (the worker leaves the group and flushes)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker process has used so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.log_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.system} worker exited; log tail:\n{tail}")

    def delete_state(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def metrics(self) -> dict[str, Any] | None:
        """Our worker's ``/metrics`` (None for the baseline or when unreachable)."""
        if self.system in (QUIX_EOS, QUIX_ALO):
            return None
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}/metrics.json", timeout=2
            ) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return None


def workdir(base: Path | None = None) -> Path:
    return Path(tempfile.mkdtemp(prefix="runstate-bench-", dir=base))
