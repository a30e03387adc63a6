"""A worker rides a broker outage out in-process: it waits (``/health`` degraded, with the
reason), and when the broker is back on the same port and data folder the same process goes
on, every event's effect committed exactly once.

The broker is the test's own (it is stopped and started again); the outage is about 10 s,
longer than the group session (6 s) and the transaction timeout (10 s) of the test's worker.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runstate.streams.broker import LocalBroker, free_port
from runstate.streams.topics import TopicNames
from tests.faults.harness import fresh_broker
from tests.polling import assert_eventually, http_json
from tests.runtime.support import (
    Load,
    WorkerProcess,
    agent_runs,
    create_topics,
    interleave,
    runtime_config,
    settled_outputs,
    wait_s,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
OUTAGE_S = 10.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    broker = fresh_broker(tmp_path / "kafka")
    try:
        yield broker
    finally:
        broker.stop()


def health(port: int) -> dict[str, Any]:
    status, body = http_json(f"http://127.0.0.1:{port}/health", timeout_s=5)
    assert status == 200, (status, body)
    assert not body["stalled"], body
    return body


@pytest.mark.timeout(600)
def test_a_worker_rides_out_a_broker_outage(
    own_broker: LocalBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    bootstrap = own_broker.config.bootstrap
    names = TopicNames(unique_name("rto"))
    create_topics(bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(250, prefix="run", seed=21), seed=21))
    port, health_port = free_port(), free_port()
    config = runtime_config(
        bootstrap, names, PARTITIONS, batch_size=50, web_port=port, health_port=health_port
    )
    worker = WorkerProcess(config, tmp_path / "worker.log").start()
    load = Load(bootstrap, names, events, rate_per_s=60)
    try:
        assert_eventually(
            lambda: health(port)["ready"] and len(health(port)["active_partitions"]) == 3,
            timeout_s=90,
            what=f"worker ready\n{worker.log_tail()}",
        )
        load.start()
        assert_eventually(lambda: load.sent > 200, timeout_s=60, what="load flowing")
        own_broker.stop()
        assert_eventually(
            lambda: health(port)["degraded"] and health(port)["broker_error"],
            timeout_s=30,
            what=f"/health degraded with the reason\n{worker.log_tail()}",
        )
        # the health process (what probes ask): 200, degraded with the reason, never stalled
        # (health() asserts both), also while the loop waits inside a checkpoint
        assert_eventually(
            lambda: health(health_port)["degraded"] and health(health_port)["broker_error"],
            timeout_s=30,
            what=f"the health port: 200, degraded with the reason\n{worker.log_tail()}",
        )
        for _ in range(int(OUTAGE_S)):  # the outage itself, the health port asked meanwhile
            wait_s(1.0)
            health(health_port)
        assert worker.alive, worker.log_tail()
        own_broker.start()
        load.join(300)
        try:
            settled_outputs(bootstrap, names, timeout_s=180)
        except AssertionError as exc:
            worker.signal(signal.SIGUSR1)  # its threads' stacks into its log
            wait_s(1.0)
            raise AssertionError(f"{exc}\n{worker.log_tail(120)}") from exc
        assert_eventually(
            lambda: not health(port)["degraded"] and health(port)["ready"],
            timeout_s=60,
            what=f"healthy again\n{worker.log_tail()}",
        )
        assert worker.alive and worker.starts == 1, worker.log_tail()
    finally:
        load.stop()
        code = worker.stop()
    assert code == 0, worker.log_tail()
