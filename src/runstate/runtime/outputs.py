"""What the runtime's producers of work write through: the checkpoint, seen as protocols.

The run task, the approval expiries and the finished-run eviction all write inside the
interval's Kafka transaction; these protocols are the part of
:class:`~runstate.runtime.checkpoint.Checkpoint` each of them needs, so tests can pass a
small real stand-in instead.
"""

from __future__ import annotations

from typing import Protocol

from runstate.runs.keyspace import KeyValueReader
from runstate.runtime.store import PartitionTransaction

__all__ = ["Outputs", "StoreOutputs", "TaskContext"]


class Outputs(Protocol):
    """Records produced inside the interval's transaction."""

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None: ...


class StoreOutputs(Outputs, Protocol):
    """Outputs plus a partition's committed store and its transaction (store writes)."""

    def committed_store(self, partition: int) -> KeyValueReader | None: ...

    def transaction(self, partition: int) -> PartitionTransaction: ...


class TaskContext(Outputs, Protocol):
    """What the run task writes through, and where it reports each record handled."""

    def transaction(self, partition: int) -> PartitionTransaction: ...

    def processed(self, partition: int, offset: int) -> None: ...
