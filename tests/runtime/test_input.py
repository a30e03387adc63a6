"""Input a worker must survive, through ``runstate processor run``: an event sent twice by two
producers is applied once, and every kind of bad record is dead-lettered once, with its
original key, value and headers, while the partition goes on."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from runstate.runs.dead_letters import DeadLetterReason
from runstate.schemas.convert import encode_event
from runstate.schemas.events import StepCompleted, StepStarted
from tests.factories import RunBuilder
from tests.polling import assert_eventually
from tests.workers import Deployment

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Deployment]:
    d = Deployment(kafka_bootstrap, unique_name("input"), 2, tmp_path)
    d.ensure_topics()
    yield d
    d.close()


def test_same_event_from_two_producers_is_applied_once(deployment: Deployment) -> None:
    d = deployment
    w = d.worker("w1").start()
    w.wait_ready()
    b = RunBuilder("run-dup")
    b.start()
    b.emit(StepStarted, step="collect", step_index=0, attempt=1)
    with d.producer("sdk-a") as first, d.producer("sdk-b") as second:
        for e in b.events:
            first.emit(e)
        again = second.emit(b.events[-1])  # same event_id, another producer session

    def version_two() -> bool:
        status, body = w.get(
            "/runs/run-dup", min_partition=again.partition, min_offset=again.offset, timeout=10
        )
        assert status == 200, body
        assert body["version"] == 2, body
        return True

    assert_eventually(version_two, timeout_s=30, what="run at version 2")
    changes = [(r, v) for r, v, _ in d.changes() if r == "run-dup"]
    assert sorted(changes) == [("run-dup", 1), ("run-dup", 2)]


def test_bad_input_is_dead_lettered_once_and_processing_continues(
    deployment: Deployment,
) -> None:
    d = deployment
    w = d.worker("w1").start()
    w.wait_ready()
    good = RunBuilder("run-good")
    started = good.start()
    other = RunBuilder("run-other").start()
    orphan = RunBuilder("run-orphan").emit(StepCompleted, step="x", attempt=1)
    raw = Producer({"bootstrap.servers": d.bootstrap})
    topic = d.names.events
    bad: dict[DeadLetterReason, tuple[bytes | None, bytes | None]] = {
        DeadLetterReason.UNDECODABLE: (b"run-junk", b"not avro at all"),
        DeadLetterReason.UNKNOWN_SCHEMA: (b"run-junk", b"\xc3\x01" + os.urandom(8) + b"\x02"),
        DeadLetterReason.NULL_VALUE: (b"run-junk", None),
        DeadLetterReason.MISSING_KEY: (None, encode_event(other)),
        DeadLetterReason.KEY_MISMATCH: (b"run-someone-else", encode_event(other)),
        DeadLetterReason.REJECTED: (b"run-orphan", encode_event(orphan)),
        DeadLetterReason.OVERSIZE: (b"run-junk", b"\xc3\x01" + os.urandom(70 * 1024)),
    }
    for reason, (key, value) in bad.items():
        raw.produce(topic, key=key, value=value, headers=[("test-reason", reason.value.encode())])
    raw.flush(10)
    with d.producer() as p:
        p.emit(started)
        last = p.emit(good.emit(StepStarted, step="collect", step_index=0, attempt=1))

    status, body = w.get(
        "/runs/run-good", min_partition=last.partition, min_offset=last.offset, timeout=30
    )
    assert status == 200, body
    assert (body["version"], body["status"]) == (2, "in_progress")

    def all_dead_lettered() -> list[object]:
        letters = d.read(d.names.dead_letters)
        assert len(letters) >= len(bad), [r.headers for r in letters]
        return letters

    letters = assert_eventually(all_dead_lettered, timeout_s=30, what="dead letters")
    assert len(letters) == len(bad), [r.headers for r in letters]  # each once
    for r in letters:
        h = dict(r.headers)
        reason = DeadLetterReason(h["rs-reason"].decode())
        key, value = bad[reason]
        assert (r.key, r.value) == (key, value), reason
        assert h["test-reason"] == reason.value.encode()  # original headers kept
        assert h["rs-source-topic"] == topic.encode()
        assert int(h["rs-source-offset"]) >= 0 and int(h["rs-source-partition"]) >= 0
        assert h["rs-worker"] == b"w1"
        assert h["rs-error-class"]
