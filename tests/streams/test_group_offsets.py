"""`GroupOffsets` reads a group's committed offsets from the broker without joining it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
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
