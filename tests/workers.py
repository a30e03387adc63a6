"""``runstate processor run`` workers as child processes (kill -9 works on them), and polling.

What the tests of the SDK, the CLI, checks and replay act on: the command a user runs, with
this checkout's code (``PYTHONPATH``), each test with its own topics.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from runstate.runs.reducer import fold
from runstate.runs.state import RunState
from runstate.runs.state_codec import decode_change
from runstate.runs.summary import RunSummary, decode_summary
from runstate.schemas.convert import decode_event
from runstate.schemas.events import AgentEvent
from runstate.streams.broker import free_port
from runstate.streams.producer import EventProducer
from runstate.streams.reader import RawRecord, read_topic
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from tests.polling import assert_eventually, http_json

T = TypeVar("T")
RUNSTATE = Path(sys.executable).with_name("runstate")
SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass
class Worker:
    """One ``runstate processor run`` child process (the runtime)."""

    worker_id: str
    port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [str(RUNSTATE), "processor", "run", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    def health(self) -> dict[str, Any] | None:
        status, body = http_json(self.url + "/health", timeout_s=2)
        return body if status == 200 else None

    def wait_ready(self, *, timeout_s: float = 45.0, partitions: int | None = None) -> float:
        """Wait until it serves /health as ready (owning ``partitions`` if given)."""

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            h = self.health()
            assert h is not None and h["ready"], h
            if partitions is not None:
                assert len(h["active_partitions"]) == partitions, h
            return True

        assert_eventually(ready, timeout_s=timeout_s, what=f"{self.worker_id} ready")
        return time.monotonic() - self.started_at

    def get(
        self, path: str, *, token: str | None = None, **params: Any
    ) -> tuple[int, dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return http_json(self.url + path + (f"?{query}" if query else ""), token=token)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class Deployment:
    """One test's topics (unique prefix) and the workers processing them."""

    bootstrap: str
    prefix: str
    partitions: int
    root: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.prefix)

    def ensure_topics(self) -> None:
        ensure_topics(
            admin_client(self.bootstrap), topic_specs(self.names, partitions=self.partitions)
        )

    def producer(self, name: str = "sdk-test", **kwargs: Any) -> EventProducer:
        return EventProducer(
            bootstrap_servers=self.bootstrap, topic_prefix=self.prefix, producer_name=name, **kwargs
        )

    def worker(
        self,
        worker_id: str,
        *,
        standby_replicas: int = 0,
        deadline_interval_s: float = 1.0,
        data_dir: Path | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Worker:
        data = data_dir or self.root / worker_id
        env = {
            **os.environ,
            **(env or {}),
            "RUNSTATE_BOOTSTRAP_SERVERS": self.bootstrap,
            "RUNSTATE_TOPIC_PREFIX": self.prefix,
            "RUNSTATE_PARTITIONS": str(self.partitions),
            "RUNSTATE_MAX_EVENT_BYTES": str(64 * 1024),
            "RUNSTATE_RUNTIME_EXPIRY_RESEND_S": "30",
            "RUNSTATE_RUNTIME_SESSION_TIMEOUT_MS": "6000",
            # this checkout's code, also where the venv has another one installed
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        }
        w = Worker(
            worker_id=worker_id,
            port=port or free_port(),
            data_dir=data,
            log_path=self.root / f"{worker_id}.log",
            env=env,
            args=[
                "--worker-id",
                worker_id,
                "--data-dir",
                str(data),
                "--standby-replicas",
                str(standby_replicas),
                "--deadline-interval",
                str(deadline_interval_s),
                "--log-level",
                os.environ.get("RUNSTATE_TEST_WORKER_LOG_LEVEL", "info"),
            ],
        )
        w.args += ["--web-port", str(w.port)]
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.kill9()

    # -- reading the topics back ----------------------------------------------------------
    def read(self, topic: str) -> list[RawRecord]:
        return list(read_topic(self.bootstrap, topic))

    def events_by_run(self) -> dict[str, list[tuple[int, AgentEvent]]]:
        """Every decodable event, per run, in log order, with its offset (the oracle input)."""
        runs: dict[str, list[tuple[int, AgentEvent]]] = {}
        for r in self.read(self.names.events):
            if r.value is None:
                continue
            try:
                e = decode_event(r.value)
            except Exception:
                continue
            if r.key is not None and r.key.decode() == e.run_id:
                runs.setdefault(e.run_id, []).append((r.offset, e))
        return runs

    def oracle(self) -> dict[str, RunState | None]:
        """The reducer folded over each run's events as stored in the events topic."""
        return {run_id: fold(pairs) for run_id, pairs in self.events_by_run().items()}

    def changes(self) -> Iterator[tuple[str, int, bytes]]:
        for r in self.read(self.names.state_changes):
            assert r.value is not None
            c = decode_change(r.value)
            yield c.run_id, c.version, r.value

    def latest_summaries(self) -> dict[str, RunSummary]:
        """The newest summary per run in the latest-state topic (what compaction keeps)."""
        out: dict[str, RunSummary] = {}
        for r in self.read(self.names.latest_state):
            if r.value is not None:
                s = decode_summary(r.value)
                have = out.get(s.run_id)
                if have is None or s.version >= have.version:
                    out[s.run_id] = s
        return out


def wait_processed_all(
    d: Deployment, w: Worker, *, timeout_s: float = 45.0, token: str | None = None
) -> None:
    """Wait until ``w`` (alone in the group) has processed every record now in the events topic."""
    # Past the last *record*, not the end offset: the worker's own ApprovalExpired events are
    # written in its transactions, whose commit markers also take an offset of the topic
    # (the end offset can stay one past what any consumer commits).
    ends: dict[int, int] = {}
    for r in d.read(d.names.events):
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)

    def caught_up() -> bool:
        status, m = w.get("/metrics.json", token=token)
        assert status == 200, m
        # committed offsets: the next record to process
        done = {int(k): v for k, v in m["committed_offsets"].items()}
        lagging = {p: (done.get(p), hi) for p, hi in ends.items() if (done.get(p) or 0) < hi}
        assert not lagging, f"partition: (committed, past the last record): {lagging}"
        return True

    assert_eventually(caught_up, timeout_s=timeout_s, what="all events processed")


def assert_stays(check: Callable[[], object], *, for_s: float, interval_s: float = 0.25) -> None:
    """``check`` keeps passing for ``for_s`` seconds (something must NOT happen)."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        check()
        time.sleep(interval_s)
    check()


#: ``make(hint, partitions)``, the ``deployment_factory`` fixture.
DeploymentFactory = Callable[[str, int], Deployment]


@contextmanager
def serving(
    bootstrap: str, name: str, partitions: int, root: Path, *, env: dict[str, str] | None = None
) -> Iterator[Deployment]:
    """Topics under a unique ``name-`` prefix and one worker (``w1``) ready on every
    partition (given 90 s: slow on a busy host); its workers killed at the end."""
    d = Deployment(bootstrap, f"{name}-{uuid.uuid4().hex[:8]}", partitions, root)
    d.ensure_topics()
    try:
        d.worker("w1", env=env).start().wait_ready(partitions=partitions, timeout_s=90)
        yield d
    finally:
        d.close()
