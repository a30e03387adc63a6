"""The worker's own commit marks, and the consumer commits they cap (no Kafka needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faust.types import TP

from runstate.processors.commit_marks import CommitMarks
from runstate.processors.consumer_offsets import ConsumerOffsets


def _marks(**start: int) -> CommitMarks:
    marks = CommitMarks()
    for p, offset in start.items():
        marks.start(int(p[1:]), offset)
    return marks


def test_contiguous_records_move_the_mark_only_once_advanced() -> None:
    marks = _marks(p0=10, p1=0)
    plan = marks.plan([(0, 10), (1, 0), (0, 11), (1, 1)])
    assert plan.accepted == [True] * 4 and not plan.holes
    assert marks.get(0) == 10  # nothing moves before the batch is processed
    assert marks.advance(plan.moves) == {0, 1}
    assert marks.snapshot() == {0: 12, 1: 2}


def test_a_redelivery_is_accepted_and_does_not_move_the_mark() -> None:
    marks = _marks(p0=10)
    plan = marks.plan([(0, 7), (0, 8), (0, 9), (0, 10)])
    assert plan.accepted == [True] * 4
    marks.advance(plan.moves)
    assert marks.get(0) == 11


def test_a_hole_holds_back_the_rest_of_its_partition_only() -> None:
    marks = _marks(p0=10, p1=3)
    plan = marks.plan([(0, 10), (0, 12), (1, 3), (0, 11), (1, 4)])
    assert plan.accepted == [True, False, True, False, True]
    assert plan.holes == {0: (11, 12)}
    marks.advance(plan.moves)
    assert marks.snapshot() == {0: 11, 1: 5}


def test_a_partition_revoked_while_its_batch_ran_keeps_no_mark() -> None:
    marks = _marks(p0=10)
    plan = marks.plan([(0, 10)])
    marks.forget([0])
    assert marks.advance(plan.moves) == set()
    assert marks.get(0) is None and marks.unknown([0, 1]) == {0, 1}
    marks.start(0, 5)
    marks.start(0, 9)  # a second start does not move a known mark
    assert marks.get(0) == 5


def test_commits_are_capped_at_the_marks() -> None:
    marks = _marks(p0=10, p1=4)
    assert marks.cap({0: 15, 1: 3, 2: 7}) == {0: 10, 1: 3}


class RecordingConsumer:
    def __init__(self) -> None:
        self.committed: list[dict[TP, int]] = []

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        self.committed.append(dict(offsets))
        return True


def test_the_consumer_never_commits_an_events_partition_past_its_mark() -> None:
    consumer = RecordingConsumer()
    offsets = ConsumerOffsets(consumer=consumer, topic="t.events", marks=_marks(p0=10), lookup=Any)
    offsets.install()
    commit: Any = consumer._commit
    asked = {TP("t.events", 0): 131, TP("t.events", 1): 40, TP("app-runs-changelog", 0): 9}
    assert asyncio.run(commit(asked)) is True
    # partition 0 held to its mark, partition 1 (no batch yet) not committed, tables untouched
    assert consumer.committed == [{TP("t.events", 0): 10, TP("app-runs-changelog", 0): 9}]
    assert offsets.capped_commits == 1
    assert asyncio.run(commit({TP("t.events", 1): 40})) is False  # nothing may be committed
    assert len(consumer.committed) == 1
