"""The Kafka clients the runtime uses, behind the protocols the checkpoint needs.

Tests pass small recording stand-ins through the same protocols; production passes
``confluent_kafka.Producer`` and ``Consumer`` built with the settings below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, Message, TopicPartition

from runstate.runtime.config import RuntimeConfig
from runstate.runtime.owners import client_id

__all__ = [
    "DeliveryReport",
    "GroupConsumer",
    "Headers",
    "TransactionalProducer",
    "consumer_settings",
    "producer_settings",
]

Headers = list[tuple[str, str | bytes | None]]
DeliveryReport = Callable[[KafkaError | None, Message], None]


class TransactionalProducer(Protocol):
    """What the checkpoint uses of ``confluent_kafka.Producer``."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None = ...,
        key: bytes | None = ...,
        partition: int = ...,
        on_delivery: DeliveryReport | None = ...,
        headers: Headers | None = ...,
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...

    def init_transactions(self, timeout: float = ...) -> None: ...

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = ...
    ) -> None: ...

    def commit_transaction(self, timeout: float = ...) -> None: ...

    def abort_transaction(self, timeout: float = ...) -> None: ...

    def close(self) -> bool: ...


class GroupConsumer(Protocol):
    """What the checkpoint uses of ``confluent_kafka.Consumer``."""

    def consumer_group_metadata(self) -> Any: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...


def producer_settings(
    bootstrap_servers: str,
    *,
    transactional_id: str | None,
    transaction_timeout_ms: int = 60_000,
    client_id: str = "runstate-runtime",
) -> dict[str, Any]:
    """librdkafka settings of the worker's producer (transactional unless ``None``)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = transaction_timeout_ms
    return config


def consumer_settings(config: RuntimeConfig) -> dict[str, Any]:
    """librdkafka settings of the worker's group member."""
    settings: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        # Names the worker and its query URL: the group's member list is the owner map.
        "client.id": client_id(config.worker_id, config.url),
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": config.session_timeout_ms,
        "heartbeat.interval.ms": config.heartbeat_interval_ms,
    }
    if config.static_membership:
        # A restarted worker comes back as the same member within the session timeout and
        # gets its own partitions back, whose stores it kept: nothing to restore, no
        # rebalance. The price: a worker stopped for good hands its partitions over only
        # when its session times out.
        settings["group.instance.id"] = config.worker_id
    return settings
