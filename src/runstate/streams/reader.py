"""Read a topic from a start offset up to its end as it was when reading began.

Replay, the archiver's catch-up, the demo and the tests' oracle all need the same thing: every
record of some partitions, in offset order, stopping at the high watermark seen at the start
(so a reader of a live topic finishes). No consumer group, no commits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from runstate.streams import clients

__all__ = ["RawRecord", "end_offsets", "read_topic", "topic_ends", "watermarks"]


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record as stored: the bytes, untouched, and where it lives."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _consumer(bootstrap_servers: str) -> Consumer:
    return clients.consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "runstate-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )


def end_offsets(
    bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0
) -> dict[int, tuple[int, int]]:
    """(low, high) watermarks of every partition of ``topic``.

    Raises:
        BrokerError: Kafka could not be reached within ``timeout_s``.
    """
    return topic_ends(bootstrap_servers, topic, timeout_s=timeout_s)[1]


def topic_ends(
    bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0
) -> tuple[str, dict[int, tuple[int, int]]]:
    """The cluster's id and the (low, high) watermarks of every partition of ``topic``: a
    reader that keeps offsets between processes tells a new cluster from the one it read.

    Raises:
        BrokerError: Kafka could not be reached within ``timeout_s``.
    """
    consumer = _consumer(bootstrap_servers)
    try:
        with clients.broker_errors(bootstrap_servers):
            cluster = consumer.list_topics(topic, timeout=timeout_s)
            meta = cluster.topics[topic]
            return str(cluster.cluster_id or ""), {
                p: watermarks(consumer, topic, p, timeout_s=timeout_s)
                for p in sorted(meta.partitions)
            }
    finally:
        consumer.close()


_RETRIABLE = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
}


def watermarks(
    consumer: Consumer, topic: str, partition: int, *, timeout_s: float = 10.0
) -> tuple[int, int]:
    """(low, high) of one partition, retrying while a new or moved partition has no leader."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            return int(low), int(high)
        except KafkaException as exc:
            if exc.args[0].code() not in _RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    start: Mapping[int, int] | None = None,
    partitions: list[int] | None = None,
    timeout_s: float = 10.0,
) -> Iterator[RawRecord]:
    """Every record from ``start`` (default: the low watermark) to the high watermark seen now.

    Records come in offset order within a partition; partitions are interleaved.

    Raises:
        BrokerError: Kafka could not be reached, or stopped answering while reading.
        TimeoutError: no record arrived within ``timeout_s`` although some were expected.
    """
    marks = end_offsets(bootstrap_servers, topic, timeout_s=timeout_s)
    wanted = partitions if partitions is not None else list(marks)
    begin = {p: max(marks[p][0], (start or {}).get(p, marks[p][0])) for p in wanted}
    todo = {p for p in wanted if begin[p] < marks[p][1]}
    if not todo:
        return
    consumer = _consumer(bootstrap_servers)
    try:
        consumer.assign([TopicPartition(topic, p, begin[p]) for p in todo])
        while todo:
            msg = consumer.poll(timeout_s)
            if msg is None:
                raise TimeoutError(
                    f"no records from {topic} partitions {sorted(todo)} within {timeout_s}s"
                )
            partition = msg.partition() or 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    # the end as of now, which is at or past the high watermark seen at
                    # the start (a control record or compaction can hide the last offsets)
                    todo.discard(partition)
                    continue
                if clients.is_transport_error(err):
                    raise clients.unreachable(bootstrap_servers, err.str())
                raise RuntimeError(f"reading {topic}: {err}")
            offset = msg.offset() or 0
            if partition not in todo:
                continue
            if offset >= marks[partition][1]:
                todo.discard(partition)
                continue
            _, ts = msg.timestamp()
            yield RawRecord(
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp_ms=ts,
                key=msg.key(),
                value=msg.value(),
                headers=_headers(msg.headers()),
            )
            if offset + 1 >= marks[partition][1]:
                todo.discard(partition)
    finally:
        consumer.close()


def _headers(raw: object) -> tuple[tuple[str, bytes | None], ...]:
    if not raw:
        return ()
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple(
        (str(k), v.encode() if isinstance(v, str) else v)
        for k, v in pairs  # type: ignore[attr-defined]
    )
