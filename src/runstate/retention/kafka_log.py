"""The few questions retention asks Kafka, behind a Protocol.

Planning, applying, replay's boundary check and the estimate need only watermarks, the time
index, ``DeleteRecords``, a sample of record sizes and (to keep held runs' records of a
topic that is not archived) the records about to be trimmed. Putting them behind
:class:`KafkaLog` keeps the retention logic testable with a small in-memory log and keeps
confluent-kafka's untyped surface in one module.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import KafkaException, TopicPartition

from runstate.errors import BrokerError
from runstate.retention.segment import ArchivedRecord
from runstate.streams import clients
from runstate.streams.reader import end_offsets, read_topic
from runstate.streams.topics import admin_client

__all__ = ["ConfluentKafkaLog", "KafkaLog", "SizeSample"]


@dataclass(frozen=True, slots=True)
class SizeSample:
    """Sizes of up to ``records`` records read from a partition (key + value + headers)."""

    records: int
    payload_bytes: int

    @property
    def mean(self) -> float:
        return self.payload_bytes / self.records if self.records else 0.0


class KafkaLog(Protocol):
    """What retention needs from Kafka."""

    def topics(self) -> set[str]:
        """Names of the topics that exist."""
        ...

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """``partition -> (earliest, end)`` offsets."""
        ...

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """First offset with a timestamp at or after ``timestamp_ms``, else the end offset."""
        ...

    def delete_records(self, topic: str, before: Mapping[int, int]) -> dict[int, int]:
        """Delete offsets below ``before[p]``; returns each partition's new earliest offset."""
        ...

    def sample_sizes(self, topic: str, partition: int, *, start: int, limit: int) -> SizeSample:
        """Payload sizes of up to ``limit`` records from ``start``."""
        ...

    def read_records(
        self, topic: str, partition: int, *, start: int, end: int
    ) -> Iterator[ArchivedRecord]:
        """The records at offsets ``start`` (inclusive) to ``end`` (exclusive), in order."""
        ...


class ConfluentKafkaLog:
    """:class:`KafkaLog` over a real cluster.

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        timeout_s: Per-request timeout.
    """

    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 30.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s

    def topics(self) -> set[str]:
        try:
            meta = admin_client(self.bootstrap_servers).list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            raise BrokerError(
                f"cannot reach Kafka at {self.bootstrap_servers}: {exc}; start the broker"
                " (`runstate broker start`) or pass --bootstrap"
            ) from exc
        return set(meta.topics)

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        return end_offsets(self.bootstrap_servers, topic, timeout_s=self.timeout_s)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        consumer = clients.consumer(
            {"bootstrap.servers": self.bootstrap_servers, "group.id": "runstate-retention"}
        )
        try:
            with clients.broker_errors(self.bootstrap_servers):
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, partition, timestamp_ms)], timeout=self.timeout_s
                )[0]
                if found.error is not None:
                    raise KafkaException(found.error)
                if found.offset >= 0:
                    return int(found.offset)
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout_s
                )
                return int(high)
        finally:
            consumer.close()

    def delete_records(self, topic: str, before: Mapping[int, int]) -> dict[int, int]:
        if not before:
            return {}
        admin = admin_client(self.bootstrap_servers)
        with clients.broker_errors(self.bootstrap_servers):
            futures = admin.delete_records(
                [TopicPartition(topic, p, o) for p, o in sorted(before.items())],
                request_timeout=self.timeout_s,
                operation_timeout=self.timeout_s,
            )
            return {tp.partition: int(f.result().low_watermark) for tp, f in futures.items()}

    def sample_sizes(self, topic: str, partition: int, *, start: int, limit: int) -> SizeSample:
        records = payload = 0
        reader = read_topic(
            self.bootstrap_servers,
            topic,
            start={partition: start},
            partitions=[partition],
            timeout_s=self.timeout_s,
        )
        for record in itertools.islice(reader, limit):
            records += 1
            payload += len(record.key or b"") + len(record.value or b"")
            payload += sum(len(k) + len(v or b"") for k, v in record.headers)
        if isinstance(reader, Generator):
            reader.close()  # closes the consumer now, not when garbage-collected
        return SizeSample(records, payload)

    def read_records(
        self, topic: str, partition: int, *, start: int, end: int
    ) -> Iterator[ArchivedRecord]:
        reader = read_topic(
            self.bootstrap_servers,
            topic,
            start={partition: start},
            partitions=[partition],
            timeout_s=self.timeout_s,
        )
        try:
            for raw in reader:
                if raw.offset >= end:
                    break
                yield ArchivedRecord(
                    raw.offset, raw.timestamp_ms, raw.key, raw.value, tuple(raw.headers)
                )
        finally:
            if isinstance(reader, Generator):
                reader.close()
