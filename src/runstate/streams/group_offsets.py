"""Where a consumer group stands on a topic, read from the broker without joining the group.

A processor asks this when a partition is assigned to it: the group's committed offset is
the point up to which the group processed everything, so it is where the worker's own
commit mark starts (see :mod:`runstate.processors.commit_marks`). A partition the group
never committed starts at the log start offset, as ``auto.offset.reset=earliest`` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from runstate.streams import clients
from runstate.streams.reader import watermarks

__all__ = ["GroupOffsets"]


class GroupOffsets:
    """Committed offsets of one group on one topic (blocking; call from a thread).

    The lookup consumer shares the group's id but never subscribes, so it is no member and
    cannot cause a rebalance; it only sends OffsetFetch requests.
    """

    def __init__(
        self, bootstrap_servers: str, group: str, topic: str, *, timeout_s: float = 10.0
    ) -> None:
        self.group = group
        self.topic = topic
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._consumer = clients.consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": group,
                "enable.auto.commit": False,
                "client.id": f"{group}-offset-lookup",
            }
        )

    def start_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """The group's committed offset of each partition, or its log start if none.

        Retriable broker errors (a coordinator still loading after a broker restart, a moved
        leader) are retried until ``timeout_s``.

        Raises:
            RuntimeError: the broker did not answer within ``timeout_s``, or refused.
        """
        wanted = [TopicPartition(self.topic, p) for p in sorted(set(partitions))]
        if not wanted:
            return {}
        deadline = time.monotonic() + self._timeout_s
        with self._lock:
            while True:
                try:
                    return self._lookup(wanted)
                except KafkaException as exc:
                    error = exc.args[0] if exc.args else None
                    retriable = isinstance(error, KafkaError) and error.retriable()
                    if not retriable or time.monotonic() >= deadline:
                        raise RuntimeError(
                            f"committed offsets of {self.topic} for group {self.group}: {exc}"
                        ) from exc
                    time.sleep(0.2)

    def _lookup(self, wanted: list[TopicPartition]) -> dict[int, int]:
        found = self._consumer.committed(wanted, timeout=self._timeout_s)
        result: dict[int, int] = {}
        for tp in found:
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset >= 0:
                result[tp.partition] = int(tp.offset)
            else:
                low, _ = watermarks(
                    self._consumer, self.topic, tp.partition, timeout_s=self._timeout_s
                )
                result[tp.partition] = low
        return result

    def close(self) -> None:
        with self._lock:
            self._consumer.close()
