"""`GroupOffsets` reads a group's committed offsets from the broker without joining it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from runstate.streams.group_offsets import GroupOffsets

pytestmark = pytest.mark.integration


def test_committed_offsets_or_the_log_start(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("t"), unique_name("g")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(5):
        producer.produce(topic, value=b"x", partition=i % 2)
    producer.flush(10)
    member = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    member.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    member.close()

    lookup = GroupOffsets(kafka_bootstrap, group, topic)
    try:
        # partition 0: what the group committed; partition 1: never committed, so its start
        assert lookup.start_offsets([0, 1]) == {0: 2, 1: 0}
        assert lookup.start_offsets([]) == {}
    finally:
        lookup.close()


class _LoadingCoordinator:
    """A consumer whose group coordinator is still loading for the first ``loading`` calls."""

    def __init__(self, loading: int, *, retriable: bool = True) -> None:
        self.loading, self.retriable, self.calls = loading, retriable, 0

    def committed(self, wanted: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.calls <= self.loading:
            raise KafkaException(
                KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=self.retriable)
            )
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in wanted]


def test_a_loading_coordinator_is_waited_for_and_a_refusal_is_an_error() -> None:
    lookup = GroupOffsets("127.0.0.1:1", "g", "t", timeout_s=5.0)
    loading = _LoadingCoordinator(loading=2)
    lookup._consumer = loading  # type: ignore[assignment]
    assert lookup.start_offsets([0, 1]) == {0: 7, 1: 7}
    assert loading.calls == 3
    lookup._consumer = _LoadingCoordinator(loading=1, retriable=False)  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="committed offsets of t for group g"):
        lookup.start_offsets([0])
