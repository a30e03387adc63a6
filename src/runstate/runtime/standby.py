"""Standby replicas: warm copies of partitions this worker does not own.

With ``standby_replicas = k`` each partition's store is also kept, by tailing its changelog
partition, on the k workers that follow its owner in the ring of the group's worker ids
(sorted; from the group's member metadata, see :mod:`runstate.runtime.owners`). When a
standby's worker is then given the partition, the assignment restores only the changelog
written since the standby's last read, not the whole partition.

Design: everything runs on the poll loop's thread, with bounded work per call.

* :meth:`Standbys.tick` is called by the loop between batches when :meth:`Standbys.due`
  (every ``interval_s``, or at once while a standby is still behind). It re-reads the owner
  map (cached, see :class:`~runstate.runtime.owners.GroupOwners`), opens and closes standby
  stores to match the ring, and tails them all with one
  :meth:`~runstate.runtime.recovery.ChangelogRestorer.catch_up` that stops after
  ``max_records`` records. A large partition becomes warm over several iterations, and the
  loop never waits for a whole restore, so it keeps its heartbeat and its checkpoints.
* No thread, no lock: the loop's partitions and the standbys' are disjoint sets changed by
  one thread. A partition the loop owns is never opened as a standby
  (:func:`standby_changes` leaves out ``owned``), and the assign callback takes a standby's
  store over with :meth:`Standbys.promote` before restoring it: the standby's consumer lets
  the partition go and the same store object (RocksDB opens a directory only once per
  process) becomes the active store, whose restore reads only the tail.
* A partition that leaves standby duty is closed and its files stay on disk, as a revoked
  partition's do: a later standby or assignment resumes from them.
* The standbys have a changelog consumer of their own (read_committed, like every restore),
  so the loop's assignment restore never waits behind them, and a broker that does not answer
  costs one tick about ``stall_timeout_s`` of the standby restorer per standby partition
  (5 s in the runtime), then the standbys rest for ``retry_s``. Re-reading the owner map
  describes the group at most once a second, shared with the query API; an unreachable
  coordinator makes that one call wait up to its 5 s timeout.

Standby stores are never served by the query API: it reads only the checkpoint's (owned)
stores. What a standby fails at (disk, broker, a store in use) is logged and retried; it
never stops the worker, which at worst restores more at a takeover.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import KafkaException

from runstate.errors import RestoreError, StoreDamaged, StoreError
from runstate.runtime.owners import GroupMembers
from runstate.runtime.recovery import RestoreReport
from runstate.runtime.store import PartitionStore, Store

__all__ = ["ChangelogTail", "StandbyChanges", "Standbys", "standby_changes", "standby_partitions"]

log = logging.getLogger(__name__)

#: Changelog records a standby tick reads at most (all standby partitions together).
DEFAULT_TICK_RECORDS = 5_000


class ChangelogTail(Protocol):
    """What standbys need of a :class:`~runstate.runtime.recovery.ChangelogRestorer`."""

    def catch_up(
        self, stores: Mapping[int, PartitionStore], *, max_records: int | None = None
    ) -> dict[int, RestoreReport]: ...

    def release(self, partitions: list[int]) -> None: ...

    def close(self) -> None: ...


def standby_partitions(
    workers: Mapping[int, str], worker_ids: Sequence[str], me: str, replicas: int
) -> set[int]:
    """The partitions ``me`` keeps a standby of.

    In the ring of ``worker_ids`` (sorted, duplicates ignored), a partition's standbys are the
    ``replicas`` members after its owner; never the owner itself, so at most
    ``len(ring) - 1`` of them.

    Args:
        workers: partition -> the worker id owning it.
        worker_ids: the group's members.
        me: this worker's id.
        replicas: standby copies wanted per partition.
    """
    ring = sorted(set(worker_ids))
    if replicas <= 0 or me not in ring:
        return set()
    size = len(ring)
    position = {worker: i for i, worker in enumerate(ring)}
    copies = min(replicas, size - 1)
    mine: set[int] = set()
    for partition, owner in workers.items():
        at = position.get(owner)
        if at is None or owner == me:
            continue
        if me in {ring[(at + step) % size] for step in range(1, copies + 1)}:
            mine.add(partition)
    return mine


@dataclass(frozen=True)
class StandbyChanges:
    """What a tick does to the standby set: stores to open, stores to close."""

    open: frozenset[int]
    close: frozenset[int]


def standby_changes(
    current: Set[int], members: GroupMembers, *, me: str, replicas: int, owned: Set[int]
) -> StandbyChanges:
    """The hand-over rules, from one reading of the group.

    * the ring (:func:`standby_partitions`) says which partitions this worker keeps;
    * a partition this worker owns is never a standby (the loop's store, written only by it);
    * a partition no member owns in this reading (a rebalance under way) keeps its standby
      if it has one: the next reading decides.
    """
    wanted = standby_partitions(members.workers, members.worker_ids, me, replicas)
    unsettled = {p for p in current if p not in members.workers}
    target = (wanted | unsettled) - set(owned)
    return StandbyChanges(
        open=frozenset(target - set(current)), close=frozenset(set(current) - target)
    )


class Standbys:
    """The standby stores of one worker, tailed from the poll loop's thread.

    Not thread-safe: the loop calls :meth:`tick`, :meth:`promote` (from its assign
    callback) and :meth:`close`, all on its own thread.
    """

    def __init__(
        self,
        store: Store,
        restorer: ChangelogTail,
        members: Callable[[], GroupMembers],
        *,
        worker_id: str,
        replicas: int,
        interval_s: float = 0.5,
        max_records: int = DEFAULT_TICK_RECORDS,
        retry_s: float = 10.0,
    ) -> None:
        """
        Args:
            store: the worker's store (the loop's own; partitions are opened once).
            restorer: a restorer with a consumer of its own (not the assignment's).
            members: the group's current members (cached; see ``GroupOwners.members``).
            worker_id: this worker's id, its place in the ring.
            replicas: standby copies per partition.
            interval_s: time between ticks while every standby is caught up.
            max_records: records one tick reads at most.
            retry_s: rest after a tick that failed.
        """
        self._store = store
        self._restorer = restorer
        self._members = members
        self._worker_id = worker_id
        self._replicas = replicas
        self._interval_s = interval_s
        self._max_records = max_records
        self._retry_s = retry_s
        self._stores: dict[int, PartitionStore] = {}
        # what other threads (health) read: replaced whole, never changed in place
        self._partitions: frozenset[int] = frozenset()
        self._next_at = float("-inf")
        self._behind = False
        #: partition -> the store's changelog offset after its latest catch-up.
        self.last_read: dict[int, int | None] = {}
        #: partition -> the store's changelog offset when the loop took it over.
        self.handed_over: dict[int, int | None] = {}
        #: changelog records applied to standby stores so far.
        self.records = 0
        #: ticks so far, and the loop's time they took (what standbys cost the loop).
        self.ticks = 0
        self.busy_s = 0.0

    @property
    def partitions(self) -> frozenset[int]:
        """The standby partitions; safe to read from any thread."""
        return self._partitions

    def due(self) -> bool:
        return self._behind or time.monotonic() >= self._next_at

    def tick(self, owned: Set[int]) -> None:
        """Match the standby set to the ring, then read at most ``max_records`` of the
        standbys' changelog. Never raises for a broker or store failure: logs it, and the
        standbys rest for ``retry_s``."""
        started = time.monotonic()
        self._next_at = started + self._interval_s
        self.ticks += 1
        try:
            self._reconcile(owned)
            if self._stores:
                reports = self._restorer.catch_up(self._stores, max_records=self._max_records)
                self._behind = False
                for partition, report in reports.items():
                    self.last_read[partition] = report.last_offset
                    self.records += report.records
                    self._behind = self._behind or not report.caught_up
        except (RestoreError, StoreError, KafkaException) as exc:
            log.warning("standbys %s: %s; trying again later", sorted(self._stores), exc)
            self._behind = False
            self._next_at = time.monotonic() + self._retry_s
        finally:
            self.busy_s += time.monotonic() - started

    def promote(self, partition: int) -> PartitionStore | None:
        """The partition was assigned to this worker: its standby store (None if it had
        none), let go by the standby consumer and no longer touched here."""
        store = self._stores.pop(partition, None)
        if store is None:
            return None
        self._partitions = frozenset(self._stores)
        try:
            self._restorer.release([partition])
        except KafkaException as exc:  # its records would only be read again and skipped
            log.warning("standby consumer could not let partition %s go: %s", partition, exc)
        offset = store.changelog_offset()
        self.handed_over[partition] = offset
        self.last_read.pop(partition, None)
        log.info("partition %s: standby taken over at changelog offset %s", partition, offset)
        return store

    def close(self) -> None:
        """Close the standby consumer and stores (their files stay)."""
        stores, self._stores = list(self._stores.items()), {}
        self._partitions = frozenset()
        self._restorer.close()
        for partition, store in stores:
            self._close(partition, store)

    def _reconcile(self, owned: Set[int]) -> None:
        changes = standby_changes(
            set(self._stores),
            self._members(),
            me=self._worker_id,
            replicas=self._replicas,
            owned=owned,
        )
        if changes.close:
            self._restorer.release(sorted(changes.close))
            for partition in sorted(changes.close):
                self._close(partition, self._stores.pop(partition))
                self.last_read.pop(partition, None)
        for partition in sorted(changes.open):
            store = self._open(partition)
            if store is not None:
                self._stores[partition] = store
        self._partitions = frozenset(self._stores)
        if changes.open or changes.close:
            log.info(
                "standbys now %s (opened %s, closed %s)",
                sorted(self._stores),
                sorted(changes.open),
                sorted(changes.close),
            )

    def _open(self, partition: int) -> PartitionStore | None:
        try:
            try:
                return self._store.open(partition)
            except StoreDamaged as exc:
                log.warning("standby %s: local store damaged (%s); starting anew", partition, exc)
                self._store.drop(partition)
                return self._store.open(partition)
        except StoreError as exc:
            log.warning("standby %s not kept: %s", partition, exc)
            return None

    def _close(self, partition: int, store: PartitionStore) -> None:
        try:
            store.close()
        except StoreError as exc:
            log.warning("closing standby %s: %s", partition, exc)
