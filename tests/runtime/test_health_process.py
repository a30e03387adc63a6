"""``/health`` from a process of its own (``runtime.health_process``): the status board it
reads, what it answers, and that it lives and dies with its worker.

The board and the answers are checked without Kafka; the worker tests use the real broker:
a worker in a thread whose loop is held in a checkpoint listener (the stall), and a worker
process killed with kill -9 (its health process must go with it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runstate.runtime.app import build_worker
from runstate.runtime.health_board import BoardReader, StatusBoard, health_body
from runstate.runtime.health_process import answer
from runstate.runtime.health_supervisor import HealthSupervisor
from runstate.streams.broker import free_port
from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually, http_json
from tests.runtime.support import (
    Running,
    WorkerProcess,
    agent_runs,
    create_topics,
    interleave,
    produce_events,
    runtime_config,
)

PARTITIONS = 3


def _status(**kw: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "worker_id": "w1",
        "ready": True,
        "broker_error": None,
        "starting": False,
        "assigning": False,
        "active_partitions": [0, 1],
        "restoring_partitions": [],
        "standby_partitions": [],
        "last_checkpoint_at": None,
    }
    status.update(kw)
    return status


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (whoever reaps orphans here may not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# -- the board and the answer, without Kafka -------------------------------------------------
def test_the_board_gives_back_the_latest_status_and_heartbeat() -> None:
    board = StatusBoard(started=100.0)
    reader = BoardReader(board.fd)
    try:
        assert reader.read() is None
        board.publish(_status(ready=False), at=101.0)
        board.publish(_status(active_partitions=[2]), at=102.0)
        board.beat(101.5)
        view = reader.read()
        assert view is not None
        assert (view.started, view.heartbeat, view.published) == (100.0, 101.5, 102.0)
        assert view.status == _status(active_partitions=[2])
    finally:
        reader.close()
        board.close()


def test_a_reader_never_takes_a_status_half_written() -> None:
    """A writer publishing without pause (both slots rewritten again and again) and a reader
    reading: every reading is one status whole, never a mix of two."""
    board = StatusBoard()
    board.publish({"n": 0, "pad": ""})
    reader = BoardReader(board.fd)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            board.publish({"n": n, "pad": str(n % 10) * (n % 5000)})

    writer = threading.Thread(target=write)
    writer.start()
    try:
        seen = set()
        for _ in range(3000):
            view = reader.read()
            assert view is not None
            n = view.status["n"]
            assert view.status["pad"] == str(n % 10) * (n % 5000)
            seen.add(n)
        assert len(seen) > 1
    finally:
        stop.set()
        writer.join()
        reader.close()
        board.close()


@pytest.mark.parametrize(
    ("heartbeat", "published", "status", "ready", "code", "stalled", "degraded"),
    [
        (99.0, 99.9, _status(), False, 200, False, False),
        (99.0, 99.9, _status(ready=False), False, 200, False, False),
        (99.0, 99.9, _status(ready=False), True, 503, False, False),
        # the loop has not polled for 10 s and says nothing: stuck
        (90.0, 99.9, _status(), False, 503, True, True),
        # ... while it waits for the broker, or takes on an assignment: degraded, alive
        (90.0, 99.9, _status(broker_error="broker down"), False, 200, False, True),
        (90.0, 99.9, _status(assigning=True), False, 200, False, True),
        (90.0, 99.9, _status(starting=True), False, 200, False, True),
        # the worker's process published nothing for 10 s: it stands still
        (99.9, 90.0, _status(), False, 503, True, True),
        (90.0, 90.0, _status(broker_error="broker down"), False, 503, True, True),
        # degraded by the broker, loop polling: 200
        (99.9, 99.9, _status(broker_error="broker down"), False, 200, False, True),
    ],
)
def test_the_health_process_answers_from_the_ages_of_heartbeat_and_status(
    heartbeat: float,
    published: float,
    status: dict[str, Any],
    ready: bool,
    code: int,
    stalled: bool,
    degraded: bool,
) -> None:
    board = StatusBoard(started=50.0)
    reader = BoardReader(board.fd)
    try:
        board.publish(status, at=published)
        board.beat(heartbeat)
        got, body = answer(reader, stall_s=5.0, wants_ready=ready, now=100.0)
        assert (got, body["stalled"], body["degraded"]) == (code, stalled, degraded), body
        assert body["since_last_poll_s"] == round(100.0 - heartbeat, 3)
        assert body["uptime_s"] == 50.0
    finally:
        reader.close()
        board.close()


def test_the_in_process_health_has_the_same_fields() -> None:
    fields = health_body(_status(), loop_age_s=0.1, status_age_s=0.0, uptime_s=1.0, stall_s=5.0)
    board = StatusBoard(started=0.0)
    reader = BoardReader(board.fd)
    try:
        board.publish(_status(), at=1.0)
        board.beat(1.0)
        assert answer(reader, stall_s=5.0, wants_ready=False, now=1.0)[1].keys() == fields.keys()
    finally:
        reader.close()
        board.close()


def test_a_killed_health_process_is_started_again_and_a_stopped_supervisor_ends_it() -> None:
    board = StatusBoard()
    port = free_port()
    supervisor = HealthSupervisor(board, _status, host="127.0.0.1", port=port, stall_s=5.0)
    board.beat(time.monotonic())
    stop_beats = threading.Event()

    def beats() -> None:  # the loop's heartbeat, as a polling loop would write it
        while not stop_beats.wait(0.05):
            board.beat(time.monotonic())

    beater = threading.Thread(target=beats)
    beater.start()
    supervisor.start()
    try:
        url = supervisor.url
        assert_eventually(lambda: http_json(url, 5)[0] == 200, timeout_s=60, what="answering")
        assert http_json(url, 5)[1]["active_partitions"] == [0, 1]
        first = supervisor.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert_eventually(
            lambda: supervisor.starts == 2 and supervisor.pid not in (None, first),
            timeout_s=60,
            what="a new health process",
        )
        assert_eventually(lambda: http_json(url, 5)[0] == 200, timeout_s=60, what="answering")
        second = supervisor.pid
    finally:
        supervisor.stop()
        stop_beats.set()
        beater.join()
    assert second is not None and _gone(second)
    assert http_json(url, 5)[0] == 0


# -- with a worker and the real broker -------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_health_port_says_ready_then_stalled_while_the_loop_is_held(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rth"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    produce_events(kafka_bootstrap, names, list(interleave(agent_runs(20, prefix="h"), seed=5)))
    config = runtime_config(
        kafka_bootstrap,
        names,
        PARTITIONS,
        web_port=free_port(),
        health_port=free_port(),
        health_stall_s=1.0,
    )
    health_url = f"http://127.0.0.1:{config.health_port}/health"
    api_url = f"{config.url}/health"
    runtime = build_worker(config)
    supervisor = runtime.health
    assert supervisor is not None
    hold, held = threading.Event(), threading.Event()
    released = threading.Event()

    def listener() -> None:  # on the loop's thread after a checkpoint: the loop stops here
        if hold.is_set() and not released.is_set():
            held.set()
            released.wait(120)

    runtime.worker.on_commit(listener)
    running = Running(runtime)
    try:

        def ready() -> dict[str, Any]:
            code, body = http_json(health_url, 10)
            assert code == 200 and body["ready"] and not body["degraded"], (code, body)
            assert body["active_partitions"] == list(range(PARTITIONS)), body
            assert body["restoring_partitions"] == [] and body["last_checkpoint_at"], body
            return body

        body = assert_eventually(ready, timeout_s=120, what="ready after the restores")
        assert body["worker_id"] == "w1" and not body["stalled"]
        in_process = http_json(api_url, 10)[1]
        assert in_process.keys() == body.keys()
        assert http_json(f"{health_url}?ready=true", 10)[0] == 200

        hold.set()
        assert_eventually(held.is_set, timeout_s=60, what="the loop held in the listener")

        def stalled() -> bool:
            code, body = http_json(health_url, 10)
            assert code == 503 and body["stalled"] and body["degraded"], (code, body)
            assert body["since_last_poll_s"] > 1.0 and body["status_age_s"] < 1.0, body
            return True

        assert_eventually(stalled, timeout_s=60, what="the health port says stalled")
        code, body = http_json(api_url, 10)  # the query API's: degraded, 200 as before
        assert code == 200 and body["degraded"] and body["stalled"], (code, body)

        released.set()
        assert_eventually(
            lambda: http_json(health_url, 10)[0] == 200, timeout_s=60, what="healthy again"
        )
        first = supervisor.pid
        assert first is not None and supervisor.starts == 1
        os.kill(first, signal.SIGKILL)
        assert_eventually(
            lambda: supervisor.starts == 2 and http_json(health_url, 10)[0] == 200,
            timeout_s=60,
            what="the worker started a new health process",
        )
        second = supervisor.pid
        assert second not in (None, first)
    finally:
        released.set()
        running.stop()
    assert second is not None and _gone(second)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_stopped_worker_is_reported_stalled_and_a_killed_one_takes_its_health_process(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """SIGSTOP: the worker's own /health cannot answer, the health process (a session of
    its own) says 503 stalled, and 200 again after SIGCONT. kill -9: it is gone too."""
    names = TopicNames(unique_name("rtk"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    config = runtime_config(
        kafka_bootstrap,
        names,
        PARTITIONS,
        web_port=free_port(),
        health_port=free_port(),
        health_stall_s=1.0,
    )
    health_url = f"http://127.0.0.1:{config.health_port}/health"
    worker = WorkerProcess(config, tmp_path / "worker.log").start()
    try:
        assert_eventually(
            lambda: http_json(f"{health_url}?ready=true", 10)[0] == 200,
            timeout_s=120,
            what=f"ready\n{worker.log_tail()}",
        )
        started = re.findall(r"health process (\d+) serves", worker.log_path.read_text())
        assert len(started) == 1, worker.log_tail()
        pid = int(started[0])
        assert not _gone(pid)

        worker.signal(signal.SIGSTOP)  # its process group: not the health process

        def stalled() -> bool:
            code, body = http_json(health_url, 10)
            assert code == 503 and body["stalled"] and body["status_age_s"] > 1.0, body
            return True

        try:
            assert_eventually(stalled, timeout_s=60, what="the health port says stalled")
        finally:
            worker.signal(signal.SIGCONT)
        assert_eventually(
            lambda: http_json(health_url, 10)[0] == 200, timeout_s=60, what="answering again"
        )
        worker.kill9()
        assert_eventually(
            lambda: _gone(pid), timeout_s=30, what="the health process gone with its worker"
        )
        assert http_json(health_url, 5)[0] == 0
    finally:
        worker.stop()


def test_the_health_json_is_what_the_docs_show() -> None:
    """docs/runtime.md shows a health answer; its fields are the ones given."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "runtime.md").read_text()
    shown = re.search(r"<!-- health-example -->\s*```json\n(.*?)```", doc, re.DOTALL)
    assert shown is not None, "docs/runtime.md lost its /health example"
    fields = health_body(_status(), loop_age_s=0.0, status_age_s=0.0, uptime_s=0.0, stall_s=5.0)
    assert json.loads(shown.group(1)).keys() == fields.keys()
