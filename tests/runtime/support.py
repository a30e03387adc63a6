"""What the runtime's integration tests act on: topics, load, worker processes, the oracle.

The oracle trusts nothing the worker says: it folds the events topic with the pure reducer
and compares with what a ``read_committed`` reader finds in the outputs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Producer

from runstate.runs.dead_letters import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION
from runstate.runs.layout import load_run
from runstate.runs.run_index import rebuild_indexes
from runstate.runs.state_codec import decode_change
from runstate.runs.summary import decode_summary, summarize
from runstate.runtime.app import RuntimeWorker
from runstate.runtime.config import RuntimeConfig
from runstate.schemas.events import AgentEvent
from runstate.streams.producer import EventProducer
from runstate.streams.reader import RawRecord, read_topic
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from tests.factories import make_run
from tests.faults.oracle import Expected, fold_log, restore_changelog
from tests.polling import assert_eventually

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def run_in_thread(worker: RuntimeWorker) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``worker.run()`` on a daemon thread; the list collects what it raised (for the
    test to report after ``worker.stop()`` and a join)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by the test
            failure.append(exc)

    thread = threading.Thread(target=run, name="runtime-worker", daemon=True)
    thread.start()
    return thread, failure


def create_topics(bootstrap: str, names: TopicNames, partitions: int) -> None:
    ensure_topics(admin_client(bootstrap), topic_specs(names, partitions=partitions))


def runtime_config(
    bootstrap: str, names: TopicNames, partitions: int, **kw: object
) -> RuntimeConfig:
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": names.prefix,
        "partitions": partitions,
        "worker_id": "w1",
        "session_timeout_ms": 6000,
        "transaction_timeout_ms": 10_000,
        "broker_timeout_s": 60.0,
        # Each config its own folder: workers of different tests never share a store.
        "data_dir": Path(tempfile.mkdtemp(prefix="runstate-runtime-")),
        "web_port": 0,
    }
    values.update(kw)
    return RuntimeConfig(**values)  # type: ignore[arg-type]


def agent_runs(count: int, *, prefix: str, seed: int = 0) -> list[list[AgentEvent]]:
    """``count`` realistic runs of varied shapes (approvals, retries, actions, open ends)."""
    t0 = datetime.now(UTC)
    return [
        make_run(
            f"{prefix}-{i:04d}",
            seed=seed * 100_000 + i,
            with_approval=i % 4 == 0,
            failures=i % 3,
            with_action=i % 5 == 0,
            end="open" if i % 7 == 0 else ("failed" if i % 11 == 0 else "completed"),
            start=t0 + timedelta(milliseconds=i),
        )
        for i in range(count)
    ]


def interleave(runs: Sequence[list[AgentEvent]], *, seed: int) -> Iterator[AgentEvent]:
    """Events of many runs mixed as concurrent agents write them; each run stays in order."""
    rng = random.Random(seed)
    pending = [list(reversed(r)) for r in runs if r]
    while pending:
        run = rng.choice(pending)
        yield run.pop()
        if not run:
            pending.remove(run)


def produce_events(bootstrap: str, names: TopicNames, events: Sequence[AgentEvent]) -> None:
    with EventProducer(bootstrap_servers=bootstrap, topic_prefix=names.prefix) as producer:
        for event in events:
            producer.send(event)
        producer.flush(120)


class Load:
    """A thread producing events in order at about ``rate_per_s`` (so kills land mid-work)."""

    def __init__(
        self, bootstrap: str, names: TopicNames, events: Sequence[AgentEvent], *, rate_per_s: float
    ) -> None:
        self._bootstrap, self._names = bootstrap, names
        self._events, self._rate = list(events), rate_per_s
        self._stop = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        chunk = max(1, int(self._rate / 10))
        began = time.monotonic()
        try:
            with EventProducer(
                bootstrap_servers=self._bootstrap, topic_prefix=self._names.prefix
            ) as producer:
                for i in range(0, len(self._events), chunk):
                    if self._stop.is_set():
                        return
                    for event in self._events[i : i + chunk]:
                        producer.send(event)
                    producer.flush(60)
                    self.sent = min(len(self._events), i + chunk)
                    self._stop.wait(max(0.0, began + self.sent / self._rate - time.monotonic()))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert self.error is None, self.error
        assert self.done, "the load did not finish"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


#: Bad records: (key, value), each must reach the dead-letter topic exactly once.
BAD_RECORDS: list[tuple[bytes | None, bytes | None]] = [
    (b"bad-garbage", b"\x00\x01 not avro"),
    (b"bad-null", None),
    (None, b"\x00\x01 no key either"),
]


def produce_raw(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(60) == 0


def read(bootstrap: str, topic: str) -> list[RawRecord]:
    return list(read_topic(bootstrap, topic, timeout_s=30))


@dataclass
class Verdict:
    """What a ``read_committed`` reader finds, against the fold of the events topic."""

    expected: Expected
    change_counts: Counter[tuple[str, int]]
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return set(self.change_counts) >= set(self.expected.changes)


def settled_outputs(bootstrap: str, names: TopicNames, *, timeout_s: float = 30.0) -> Verdict:
    """:func:`check_outputs`, polled until clean: a read_committed reader sees a transaction
    only once its markers are written, a moment after ``commit_transaction`` returned."""

    def clean() -> Verdict:
        v = check_outputs(bootstrap, names)
        assert v.complete and not v.problems, v.problems
        return v

    return assert_eventually(clean, timeout_s=timeout_s, what="outputs visible and clean")


def check_outputs(
    bootstrap: str, names: TopicNames, *, bad_records: int = 0, copies_allowed: bool = False
) -> Verdict:
    """Every (run_id, version) once, byte-equal to the fold's change; each run's last
    latest-state record the fold's summary and its changelog the fold's state; each bad
    record dead-lettered once.

    ``copies_allowed`` (at-least-once): a change or dead letter may appear more than once,
    but every copy must still be byte-equal to the fold's."""
    expected = fold_log(read(bootstrap, names.events))
    changes: Counter[tuple[str, int]] = Counter()
    v = Verdict(expected, changes)
    for r in read(bootstrap, names.state_changes):
        assert r.value is not None
        change = decode_change(r.value)
        key = (change.run_id, change.version)
        changes[key] += 1
        want = expected.changes.get(key)
        if want is None:
            v.problems.append(f"unexpected change {key}")
        elif want != r.value:
            v.problems.append(f"change {key} differs from the fold's")
    doubled = [k for k, n in changes.items() if n > 1]
    if doubled and not copies_allowed:
        v.problems.append(f"{len(doubled)} changes appear twice or more, e.g. {doubled[:5]}")
    missing = set(expected.changes) - set(changes)
    if missing:
        v.problems.append(f"{len(missing)} changes missing, e.g. {sorted(missing)[:5]}")
    last: dict[bytes, bytes | None] = {}
    for r in read(bootstrap, names.latest_state):
        if r.key is not None:
            last[r.key] = r.value
    for run_id, state in expected.states.items():
        raw = last.get(run_id.encode())
        if raw is None or decode_summary(raw) != summarize(state):
            v.problems.append(f"{names.latest_state}: {run_id} is not the fold's summary")
            break
    # The changelog holds each run's layout (head, entries, index keys): what a restore
    # rebuilds from it must be the fold's state, with exact indexes.
    stores = restore_changelog(read(bootstrap, names.runs_changelog))
    for run_id, state in expected.states.items():
        restored = [s for store in stores.values() if (s := load_run(store, run_id)) is not None]
        if restored != [state]:
            v.problems.append(f"{names.runs_changelog}: {run_id} is not the fold's final state")
            break
    for store in stores.values():
        if rebuild_indexes(store):
            v.problems.append(f"{names.runs_changelog}: indexes of partition differ from heads")
            break
    sources: Counter[tuple[bytes | None, bytes | None]] = Counter()
    for r in read(bootstrap, names.dead_letters):
        sources[(r.header(HEADER_SOURCE_PARTITION), r.header(HEADER_SOURCE_OFFSET))] += 1
    twice = [k for k, n in sources.items() if n > 1]
    if twice and not copies_allowed:
        v.problems.append(f"dead letters repeated: {twice[:5]}")
    if len(sources) < bad_records:
        v.problems.append(f"{len(sources)} of {bad_records} bad records dead-lettered")
    return v


@dataclass
class WorkerProcess:
    """``python -m runstate.runtime`` as a child in its own session (kill -9, SIGSTOP)."""

    config: RuntimeConfig
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, *, crash_at: str = "") -> WorkerProcess:
        assert not self.alive
        c = self.config
        env = {
            **os.environ,
            "PYTHONPATH": str(SRC),
            "RUNSTATE_BOOTSTRAP_SERVERS": c.bootstrap_servers,
            "RUNSTATE_TOPIC_PREFIX": c.topic_prefix,
            "RUNSTATE_PARTITIONS": str(c.partitions),
            "RUNSTATE_RUNTIME_WORKER_ID": c.worker_id,
            "RUNSTATE_RUNTIME_SESSION_TIMEOUT_MS": str(c.session_timeout_ms),
            "RUNSTATE_RUNTIME_TRANSACTION_TIMEOUT_MS": str(c.transaction_timeout_ms),
            "RUNSTATE_RUNTIME_BATCH_SIZE": str(c.batch_size),
            "RUNSTATE_RUNTIME_BROKER_TIMEOUT_S": str(c.broker_timeout_s),
            "RUNSTATE_RUNTIME_CRASH_AT": crash_at,
            "RUNSTATE_RUNTIME_EXACTLY_ONCE": str(c.exactly_once).lower(),
            "RUNSTATE_RUNTIME_DATA_DIR": str(c.data_dir),
            "RUNSTATE_RUNTIME_STORE": c.store,
            "RUNSTATE_RUNTIME_WEB_PORT": str(c.web_port),
            "RUNSTATE_RUNTIME_HEALTH_PORT": str(c.health_listen_port),
            "RUNSTATE_RUNTIME_HEALTH_STALL_S": str(c.health_stall_s),
            "RUNSTATE_RUNTIME_STANDBY_REPLICAS": str(c.standby_replicas),
            "RUNSTATE_RUNTIME_STATIC_MEMBERSHIP": str(c.static_membership).lower(),
        }
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start #{self.starts + 1} crash_at={crash_at!r} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runstate.runtime"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(15)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (after SIGCONT) and wait; kill -9 if it does not finish in time."""
        if self.alive:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            assert self.proc is not None
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.returncode

    def log_of_this_start(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text.rpartition(f"=== start #{self.starts} ")[2]

    def has_partitions(self) -> bool:
        """Whether this start of the worker was given (and restored) a partition yet."""
        return "assigned:" in self.log_of_this_start()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def wait_s(seconds: float) -> None:
    """A deliberate pause that is part of a scenario (a random kill moment), not a wait for
    an outcome."""
    time.sleep(seconds)


class Running:
    """A worker on a thread; ``stop`` makes its final checkpoint and re-raises its error."""

    def __init__(self, worker: RuntimeWorker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # re-raised by stop()
            self.error = exc

    def stop(self) -> None:
        self.worker.stop()
        self._thread.join(60)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error
