"""How far each events partition is processed without a hole: the only offsets a worker
lets its consumer commit.

faust acknowledges records it never handed to the agent: its stream iterator skips (and
acks) records that arrive while flow control is suspended or that were fetched in an older
consumer generation, and its fetcher counts holes in fetched offsets as done (they would be
compaction or transaction markers). Its committer then commits past them, and after the next
restart or rebalance those records are never processed: lost runs. So the worker keeps its
own mark per partition, the next offset it has not processed:

* it starts at the group's committed offset on the broker the first time a batch of the
  partition arrives after an assignment (every commit was capped by a mark, so the broker's
  offset is always a point up to which the group processed everything);
* a batch whose first record of a partition is past the mark has a hole: those records are
  not processed, and the worker seeks the partition back to the mark;
* a record below the mark is a redelivery: processed again (the reducer is idempotent),
  the mark does not move;
* every commit is capped at the mark; a partition without a mark is not committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["BatchPlan", "CommitMarks"]


@dataclass
class BatchPlan:
    """What one batch may process: ``accepted[i]`` per record, holes per partition."""

    accepted: list[bool] = field(default_factory=list)
    #: partition -> (mark, first offset past it): records from there on were not accepted.
    holes: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: partition -> (mark before, mark after) if the whole batch is processed.
    moves: dict[int, tuple[int, int]] = field(default_factory=dict)


class CommitMarks:
    """Per events partition, the next offset not yet processed (see the module docstring)."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def get(self, partition: int) -> int | None:
        """The partition's mark, or None while it has none (no batch since the assignment)."""
        return self._next.get(partition)

    def unknown(self, partitions: Iterable[int]) -> set[int]:
        return {p for p in partitions if p not in self._next}

    def start(self, partition: int, offset: int) -> None:
        """Begin a partition at the group's committed offset (or the log start)."""
        self._next.setdefault(partition, offset)

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop marks of partitions revoked (or all, on an assignment)."""
        if partitions is None:
            self._next.clear()
        else:
            for p in partitions:
                self._next.pop(p, None)

    def plan(self, offsets: Iterable[tuple[int, int]]) -> BatchPlan:
        """Decide, for ``(partition, offset)`` pairs in batch order, which may be processed.

        Every partition must have a mark (:meth:`start`). Once a partition shows a hole,
        none of its later records in the batch is accepted.
        """
        plan = BatchPlan()
        want: dict[int, int] = {}
        for partition, offset in offsets:
            if partition in plan.holes:
                plan.accepted.append(False)
                continue
            mark = want.get(partition, self._next[partition])
            if offset > mark:
                plan.holes[partition] = (mark, offset)
                plan.accepted.append(False)
                continue
            plan.accepted.append(True)
            if offset == mark:
                want[partition] = mark + 1
        for partition, after in want.items():
            plan.moves[partition] = (self._next[partition], after)
        return plan

    def advance(self, moves: Mapping[int, tuple[int, int]]) -> set[int]:
        """Apply a processed batch's moves; returns the partitions whose mark moved.

        A partition forgotten (revoked) or restarted while the batch ran keeps what it has now.
        """
        moved: set[int] = set()
        for partition, (before, after) in moves.items():
            if self._next.get(partition) == before:
                self._next[partition] = after
                moved.add(partition)
        return moved

    def cap(self, offsets: Mapping[int, int]) -> dict[int, int]:
        """The offsets that may be committed: each at most its mark; none without a mark."""
        return {p: min(o, self._next[p]) for p, o in offsets.items() if p in self._next}

    def snapshot(self) -> dict[int, int]:
        return dict(self._next)
