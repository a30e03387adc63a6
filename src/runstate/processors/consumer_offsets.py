"""faust's consumer held to the worker's commit marks: capped commits, seeks back to a mark,
and where a mark starts (see :mod:`runstate.processors.commit_marks`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from runstate.processors.commit_marks import CommitMarks
from runstate.streams.group_offsets import GroupOffsets

__all__ = ["ConsumerOffsets"]

log = logging.getLogger(__name__)


@dataclass
class ConsumerOffsets:
    """The events topic's offsets as the worker lets faust's consumer handle them."""

    consumer: Any
    topic: str
    marks: CommitMarks
    lookup: GroupOffsets
    #: Commits whose offset for some events partition was lowered or held back.
    capped_commits: int = 0

    def install(self) -> None:
        """Wrap the consumer's commit so no events partition is committed past its mark."""
        commit = self.consumer._commit

        async def capped(offsets: Mapping[TP, int]) -> bool:
            allowed = self.cap(offsets)
            if not allowed:
                return False
            return bool(await commit(allowed))

        self.consumer._commit = capped

    def cap(self, offsets: Mapping[TP, int]) -> dict[TP, int]:
        """Other topics pass; events partitions at most at their mark, none without one."""
        ours = {tp.partition: o for tp, o in offsets.items() if tp.topic == self.topic}
        allowed = {tp: o for tp, o in offsets.items() if tp.topic != self.topic}
        capped = self.marks.cap(ours)
        allowed.update({TP(self.topic, p): o for p, o in capped.items()})
        held = {p: (o, capped.get(p)) for p, o in ours.items() if capped.get(p) != o}
        if held:
            self.capped_commits += 1
            log.info(
                "commit held to the processed marks (partition: asked, allowed): %s",
                held,
            )
        return allowed

    async def start_offsets(self, partitions: Collection[int]) -> Mapping[int, int]:
        """The group's committed offset (or the log start) of each partition."""
        return await asyncio.to_thread(self.lookup.start_offsets, partitions)

    async def rewind(self, partition: int, offset: int) -> None:
        """Seek an events partition back so its records from ``offset`` are fetched again."""
        await self.consumer.seek(TP(self.topic, partition), offset)
