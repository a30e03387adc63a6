"""Standby placement (the ring) and the hand-over rules, without a broker."""

from __future__ import annotations

from collections.abc import Mapping

from runstate.runtime.memory_store import MemoryStore
from runstate.runtime.owners import GroupMembers
from runstate.runtime.recovery import RestoreReport
from runstate.runtime.standby import (
    Standbys,
    standby_changes,
    standby_partitions,
)
from runstate.runtime.store import PartitionStore

RING = ("w-a", "w-b", "w-c")


def members(workers: Mapping[int, str], ids: tuple[str, ...] = RING) -> GroupMembers:
    return GroupMembers({}, (), 0.0, dict(workers), ids)


def test_the_next_members_in_the_ring_keep_a_partitions_standbys() -> None:
    owners = {0: "w-a", 1: "w-b", 2: "w-c", 3: "w-a"}
    assert standby_partitions(owners, RING, "w-b", 1) == {0, 3}
    assert standby_partitions(owners, RING, "w-c", 1) == {1}
    assert standby_partitions(owners, RING, "w-a", 1) == {2}  # the ring wraps
    assert standby_partitions(owners, RING, "w-c", 2) == {0, 1, 3}


def test_every_partition_gets_its_copies_and_never_on_its_owner() -> None:
    ring = tuple(f"w-{i}" for i in range(5))
    owners = {p: ring[(p * 7) % 5] for p in range(12)}
    for replicas in range(0, 7):
        kept = {w: standby_partitions(owners, ring[::-1], w, replicas) for w in ring}
        for partition, owner in owners.items():
            holders = {w for w, ps in kept.items() if partition in ps}
            assert owner not in holders
            assert len(holders) == min(replicas, len(ring) - 1)


def test_no_standbys_alone_unlisted_or_with_none_asked() -> None:
    owners = {0: "w-a", 1: "w-a"}
    assert standby_partitions(owners, ("w-a",), "w-a", 3) == set()
    assert standby_partitions(owners, RING, "w-x", 1) == set()  # not (yet) in the group
    assert standby_partitions(owners, RING, "w-b", 0) == set()
    assert standby_partitions({0: "w-gone"}, RING, "w-b", 1) == set()


def test_an_owned_partition_is_never_a_standby() -> None:
    # the owner map is a second old: it still shows w-a owning 0, which w-b owns now
    changes = standby_changes({0}, members({0: "w-a", 1: "w-c"}), me="w-b", replicas=1, owned={0})
    assert (changes.open, changes.close) == (frozenset(), frozenset({0}))


def test_a_partition_without_an_owner_keeps_its_standby_until_the_group_settles() -> None:
    changes = standby_changes({0, 3}, members({3: "w-c"}), me="w-b", replicas=1, owned=set())
    assert (changes.open, changes.close) == (frozenset(), frozenset({3}))
    changes = standby_changes(set(), members({}), me="w-b", replicas=1, owned=set())
    assert (changes.open, changes.close) == (frozenset(), frozenset())


class Tail:
    """Applies one record per partition per call, up to ``ends``; records what it was asked."""

    def __init__(self, ends: dict[int, int]) -> None:
        self.ends = ends
        self.followed: set[int] = set()
        self.closed = False

    def catch_up(
        self, stores: Mapping[int, PartitionStore], *, max_records: int | None = None
    ) -> dict[int, RestoreReport]:
        reports = {}
        for p, store in stores.items():
            self.followed.add(p)
            at = store.changelog_offset()
            nxt = 0 if at is None else at + 1
            records = 0
            if nxt < self.ends[p]:
                store.apply([(b"k%d" % nxt, b"v")], changelog_offset=nxt)
                records = 1
            last = store.changelog_offset()
            caught_up = last is not None and last + 1 >= self.ends[p]
            reports[p] = RestoreReport(p, records, None, last, self.ends[p], 0.0, caught_up)
        return reports

    def release(self, partitions: list[int]) -> None:
        self.followed -= set(partitions)

    def close(self) -> None:
        self.closed = True


def test_standbys_open_tail_and_hand_over_the_same_store() -> None:
    store = MemoryStore()
    tail = Tail({0: 3, 1: 2, 2: 5})
    group = members({0: "w-a", 1: "w-b", 2: "w-c", 3: "w-b"})
    standbys = Standbys(store, tail, lambda: group, worker_id="w-b", replicas=1, interval_s=3600)
    assert standbys.due()
    standbys.tick(owned={1, 3})
    assert standbys.partitions == {0}
    assert standbys.last_read == {0: 0}
    assert standbys.due()  # behind: the next iteration reads on, not after interval_s
    standbys.tick(owned={1, 3})
    standbys.tick(owned={1, 3})
    assert standbys.last_read == {0: 2}
    assert not standbys.due()  # caught up: rest for interval_s

    taken = standbys.promote(0)
    assert taken is store.open(0)  # the loop restores the very store the standby filled
    assert standbys.handed_over == {0: 2}
    assert standbys.partitions == frozenset() and tail.followed == set()
    assert standbys.promote(1) is None  # was no standby here: the loop opens it itself

    # the group settles with w-b owning 0 and w-c gone: w-a's partition 2 moves to w-a...
    group = members({0: "w-b", 1: "w-b", 2: "w-a"}, ("w-a", "w-b"))
    standbys.tick(owned={0, 1, 3})
    assert standbys.partitions == {2}
    # ...then to w-b itself: the standby of 2 is closed, never written again
    group = members({0: "w-b", 2: "w-b"}, ("w-a", "w-b"))
    standbys.tick(owned={0, 1, 2, 3})
    assert standbys.partitions == frozenset() and tail.followed == set()
    standbys.close()
    assert tail.closed


def test_a_failing_tick_is_logged_and_retried_later() -> None:
    class Down(Tail):
        def catch_up(
            self, stores: Mapping[int, PartitionStore], *, max_records: int | None = None
        ) -> dict[int, RestoreReport]:
            from runstate.errors import RestoreError

            raise RestoreError("broker gone")

    standbys = Standbys(
        MemoryStore(),
        Down({0: 1}),
        lambda: members({0: "w-a"}),
        worker_id="w-b",
        replicas=1,
        interval_s=0.0,
        retry_s=3600,
    )
    standbys.tick(owned=set())
    assert standbys.partitions == {0}
    assert not standbys.due()
