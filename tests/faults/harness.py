"""What the fault scenarios act on: worker processes, brokers, and a stream of agent runs.

Workers are ``runstate processor run`` child processes (the exactly-once
runtime on confluent-kafka) in their own session (so kill -9, SIGSTOP and SIGCONT hit the
whole process), started through :mod:`tests.faults.crashpoints` so a scenario can arm one of
the runtime's crash points while the worker runs. Every setting the harness gives a worker
is a runtime setting: ``--worker-id`` (also its ``group.instance.id`` and
``transactional.id``), ``--data-dir`` (its RocksDB stores), ``--web-port`` (query API),
``--deadline-interval``, and ``RUNSTATE_RUNTIME_*`` variables for the rest.

Load is realistic runs (``tests.factories``) interleaved the way many agents write at once,
and every acknowledged event is remembered: the oracle checks that each one is in the log.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from runstate.schemas.events import AgentEvent
from runstate.streams.broker import KAFKA_VERSION, BrokerConfig, LocalBroker, free_port
from runstate.streams.producer import Delivery, EventProducer
from runstate.streams.reader import RawRecord, end_offsets, read_topic
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from tests.factories import make_run
from tests.polling import assert_eventually, http_json

ROOT = Path(__file__).resolve().parents[2]
#: Workers import this checkout's code (tests included), whatever is installed in the venv.
PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
JARS = ROOT / ".runstate" / "jars" / f"kafka-{KAFKA_VERSION}"
T = TypeVar("T")


def fresh_broker(data_dir: Path) -> LocalBroker:
    """A broker of its own (for scenarios that stop or kill it), started."""
    broker = LocalBroker(
        BrokerConfig(
            data_dir=data_dir, jars_dir=JARS, port=free_port(), controller_port=free_port()
        )
    )
    broker.start()
    return broker


@dataclass
class WorkerProcess:
    """One processor worker child process; restartable with the same data folder."""

    worker_id: str
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    file_size_limit: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def dead(self) -> bool:
        return not self.alive

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def control_file(self) -> Path:
        return self.log_path.with_suffix(".crash")

    def arm(self, point: str, n: int) -> None:
        """Make the running worker SIGKILL itself at the ``n``-th crossing of ``point``."""
        self.control_file.write_text(f"{point}:{n}")

    def disarm(self) -> None:
        self.control_file.unlink(missing_ok=True)

    def start(self) -> WorkerProcess:
        """Start (or restart) the worker, disarmed."""
        assert not self.alive, f"{self.worker_id} already runs"
        self.disarm()
        env = dict(self.env, RUNSTATE_FAULT_CONTROL=str(self.control_file))
        limit = self.file_size_limit

        def limits() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
                # past the limit write() must fail with EFBIG, not kill the process
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

        args = [
            sys.executable, "-m", "tests.faults.crashpoints", "processor", "run",
            "--worker-id", self.worker_id, "--data-dir", str(self.data_dir),
            "--web-port", str(self.port), "--deadline-interval", "1",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start #{self.starts + 1} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=limits,
            )  # fmt: skip
        self.started_at = time.monotonic()
        self.starts += 1
        return self

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            os.killpg(self.pid, sig)

    def kill9(self) -> None:
        if self.alive:
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(15)

    def stop(self, timeout_s: float = 20.0) -> None:
        if not self.alive:
            return
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            assert self.proc is not None
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()

    def health(self) -> dict[str, Any] | None:
        status, body = http_json(self.url + "/health", timeout_s=5)
        return body if status == 200 else None

    def metrics(self) -> dict[str, Any] | None:
        status, body = http_json(self.url + "/metrics.json", timeout_s=3)
        return body if status == 200 else None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.worker_id} exited:\n{self.tail()}")
            h = self.health()
            assert h is not None and h.get("ready"), h
            return True

        assert_eventually(ready, timeout_s=timeout_s, what=f"{self.worker_id} ready")

    def get(self, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return http_json(self.url + path + (f"?{query}" if query else ""), timeout_s=15)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except FileNotFoundError:
            return 0


@dataclass
class Deployment:
    """One scenario's topics (its own prefix) on some broker, and its workers."""

    bootstrap: str
    prefix: str
    partitions: int
    root: Path
    session_timeout_s: float = 6.0
    #: More ``RUNSTATE_RUNTIME_*`` settings of every worker (e.g. ``STANDBY_REPLICAS``).
    runtime: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.prefix)

    def ensure_topics(self) -> None:
        ensure_topics(
            admin_client(self.bootstrap), topic_specs(self.names, partitions=self.partitions)
        )

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RUNSTATE_") and k != "PYTEST_CURRENT_TEST"
        }
        env.update(
            RUNSTATE_BOOTSTRAP_SERVERS=self.bootstrap,
            RUNSTATE_TOPIC_PREFIX=self.prefix,
            RUNSTATE_PARTITIONS=str(self.partitions),
            RUNSTATE_MAX_EVENT_BYTES=str(64 * 1024),
            RUNSTATE_RUNTIME_SESSION_TIMEOUT_MS=str(int(self.session_timeout_s * 1000)),
            RUNSTATE_RUNTIME_EXPIRY_RESEND_S="30",
            # a zombie's open transaction holds the new owner's offsets until it ends
            RUNSTATE_RUNTIME_TRANSACTION_TIMEOUT_MS="10000",
            PYTHONPATH=PYTHONPATH,
        )
        env.update({f"RUNSTATE_RUNTIME_{k.upper()}": v for k, v in self.runtime.items()})
        return env

    def worker(self, worker_id: str, *, data_dir: Path | None = None) -> WorkerProcess:
        w = WorkerProcess(
            worker_id=worker_id,
            data_dir=data_dir or self.root / worker_id,
            log_path=self.root / f"{worker_id}.log",
            env=self.env(),
        )
        self.workers.append(w)
        return w

    def producer(self, name: str = "faults-sdk", **kafka: Any) -> EventProducer:
        return EventProducer(
            bootstrap_servers=self.bootstrap,
            topic_prefix=self.prefix,
            producer_name=name,
            kafka_config=kafka or None,
        )

    def close(self) -> None:
        for w in self.workers:
            w.kill9()

    def output_marks_eventually(self, timeout_s: float = 60.0) -> dict[int, int]:
        """:meth:`output_marks`, retried while the broker cannot answer yet."""

        def marks() -> dict[int, int]:
            try:
                return self.output_marks()
            except Exception as exc:
                raise AssertionError(str(exc)) from exc

        return assert_eventually(marks, timeout_s=timeout_s, what="output offsets")

    def read_dead_letters(self) -> list[RawRecord]:
        return list(read_topic(self.bootstrap, self.names.dead_letters, timeout_s=30))

    def output_marks(self) -> dict[int, int]:
        """High watermark per partition of the latest-state topic (grows as work is done)."""
        return {
            p: hi for p, (_lo, hi) in end_offsets(self.bootstrap, self.names.latest_state).items()
        }

    def wait_progress(
        self,
        since: dict[int, int],
        *,
        timeout_s: float = 120.0,
        unless: Callable[[], bool] | None = None,
    ) -> float | None:
        """Seconds until every partition wrote output past ``since`` (all are processing);
        None if ``unless()`` became true first (e.g. the load ended: no new input to show)."""
        began = time.monotonic()

        def progressed() -> bool:
            if unless is not None and unless():
                return True
            try:
                now = self.output_marks()
            except Exception as exc:  # the broker may still be starting
                raise AssertionError(f"cannot read the output offsets: {exc}") from exc
            behind = {p: since.get(p, 0) for p, hi in now.items() if hi <= since.get(p, 0)}
            assert not behind, f"partitions without new output: {sorted(behind)}"
            return True

        assert_eventually(progressed, timeout_s=timeout_s, interval_s=0.2, what="progress")
        if unless is not None and unless():
            return None
        return time.monotonic() - began


#: Exit code of a runtime worker that was fenced (or whose consumer failed fatally): by
#: design a supervisor starts it again.
EXIT_FENCED = 75


class Supervisor:
    """Restarts workers that exit with an error (any code but 0 and signals) after a short
    back-off, as a process supervisor (systemd ``Restart=on-failure`` with ``RestartSec``,
    a pod's restart policy) would; :attr:`restarts` counts them by worker and exit code, and
    :attr:`reasons` keeps each exit code's last line of output."""

    def __init__(
        self, workers: Sequence[WorkerProcess], *, backoff_s: float = 2.0, interval_s: float = 0.5
    ) -> None:
        self.workers = list(workers)
        self.restarts: Counter[str] = Counter()
        self.reasons: dict[int, str] = {}
        self._backoff_s = backoff_s
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="supervisor")

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def summary(self) -> dict[str, object]:
        return {"restarts": dict(sorted(self.restarts.items())), "exit codes": self.reasons}

    def _run(self) -> None:
        due: dict[str, float] = {}
        while not self._stop.wait(self._interval_s):
            for w in self.workers:
                code = None if w.proc is None else w.proc.poll()
                if code is None or code <= 0:
                    continue
                at = due.setdefault(w.worker_id, time.monotonic() + self._backoff_s)
                if time.monotonic() < at:
                    continue
                del due[w.worker_id]
                self.restarts[f"{w.worker_id} after exit {code}"] += 1
                self.reasons[code] = (
                    "fenced or failed for good (restart it)"
                    if code == EXIT_FENCED
                    else w.tail(1).strip()[:160]
                )
                w.start()


def interleave(runs: Sequence[list[AgentEvent]], *, active: int, seed: int) -> Iterator[AgentEvent]:
    """Events of many runs mixed as concurrent agents write them; each run stays in order."""
    rng = random.Random(seed)
    pending = [list(reversed(r)) for r in runs]
    window: list[list[AgentEvent]] = []
    nxt = 0
    while window or nxt < len(pending):
        while len(window) < active and nxt < len(pending):
            window.append(pending[nxt])
            nxt += 1
        run = rng.choice(window)
        yield run.pop()
        if not run:
            window.remove(run)


def agent_runs(
    count: int, *, prefix: str, seed: int = 0, start: datetime | None = None
) -> list[list[AgentEvent]]:
    """``count`` realistic runs; approvals are due an hour after ``start`` (default now)."""
    t0 = start or datetime.now(UTC)
    out = []
    for i in range(count):
        out.append(
            make_run(
                f"{prefix}-{i:04d}",
                seed=seed * 100_000 + i,
                with_approval=i % 4 == 0,
                failures=i % 3,
                with_action=i % 5 == 0,
                end="open" if i % 7 == 0 else ("failed" if i % 11 == 0 else "completed"),
                start=t0 + timedelta(milliseconds=i),
            )
        )
    return out


@dataclass
class Load:
    """A producer thread streaming interleaved runs; remembers what the broker acknowledged."""

    deployment: Deployment
    events: list[AgentEvent]
    rate_per_s: float = 200.0
    name: str = "faults-sdk"
    acked: dict[str, Delivery] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    stop_flag: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True, name="load")
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = self.deployment.producer(self.name)
        futures: list[tuple[AgentEvent, Future[Delivery]]] = []
        began = time.monotonic()
        try:
            for n, event in enumerate(self.events):
                if self.stop_flag.is_set():
                    break
                futures.append((event, producer.send(event)))
                ahead = n / self.rate_per_s - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            try:
                producer.flush(180)
            except Exception as exc:  # counted below through the futures
                self.failed.append(("flush", repr(exc)))
        finally:
            for event, fut in futures:
                if fut.done() and fut.exception() is None:
                    self.acked[event.event_id] = fut.result()
                elif fut.done():
                    self.failed.append((event.event_id, repr(fut.exception())))
                else:
                    self.failed.append((event.event_id, "unconfirmed"))
            self.done.set()

    def wait(self, timeout_s: float = 300.0) -> None:
        assert self.done.wait(timeout_s), "the load did not finish"
        assert self._thread is not None
        self._thread.join(5)
