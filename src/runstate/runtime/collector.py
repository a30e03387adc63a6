"""Cyclic garbage collection at a point the poll loop chooses, never in a query's thread.

CPython collects whenever allocations pass a threshold, in whichever thread allocates: a
reader thread decoding a page of runs, the query API's event loop answering ``/health``, or
the poll loop half-way through a batch. A collection holds the GIL from start to end (a
young one walks up to 20,000 objects; under load the stall probe of ``benchmarks.scale`` saw
them last 20-120 ms of wall time when the collecting thread lost its core meanwhile), and a
full one walks every tracked object (50,000-60,000 at a worker's start-up, 50-400 ms).

So a worker process, once started (:func:`quiet_collector`), moves its start-up objects out
of the collector's sight and turns automatic collection off; the poll loop calls
:meth:`LoopCollector.collect_due` once per iteration, after its checkpoint, when the
interval's garbage (records, overlays) is already freed by reference counting. It collects
the generation CPython would have collected by then (the same thresholds), so nothing piles
up, but always on the loop's thread and between batches: no query and no ``/health`` answer
runs a collection, and a collection never sits between a batch and its commit.
"""

from __future__ import annotations

import gc

__all__ = ["GC_OLDER_THRESHOLDS", "GC_YOUNG_THRESHOLD", "LoopCollector", "quiet_collector"]

#: Allocations between young collections: CPython's 700 collects every few hundred records.
GC_YOUNG_THRESHOLD = 20_000
#: Young collections between middle ones, middle ones between full ones (CPython: 10, 10).
GC_OLDER_THRESHOLDS = (20, 50)


def quiet_collector() -> None:
    """Hand this process's cyclic collections to the loop's :class:`LoopCollector`.

    Everything alive after start-up (modules, schemas, the clients) leaves the collector's
    sight (``gc.freeze``): it would be walked by every full collection for nothing. Then
    automatic collection is turned off; only :meth:`LoopCollector.collect_due` collects.
    Call it once the worker is built, in the worker's own process only.
    """
    gc.collect()
    gc.freeze()
    gc.disable()


class LoopCollector:
    """Runs the collections that are due, when the poll loop says so.

    Inert while automatic collection is on (tests running a worker inside their own
    process): CPython collects by itself there.

    Args:
        young: allocations (net of frees) of tracked objects before a young collection.
        older: young collections before a middle one, middle ones before a full one.
    """

    def __init__(
        self, *, young: int = GC_YOUNG_THRESHOLD, older: tuple[int, int] = GC_OLDER_THRESHOLDS
    ) -> None:
        self._young = young
        self._middle, self._full = older
        #: Objects in the oldest generation after the last full collection (at first: the
        #: start-up objects, as CPython counts them), and those moved there since.
        self._long_lived: int | None = None
        self._pending = 0
        #: Collections run, per generation (0 young, 1 middle, 2 full).
        self.collections = [0, 0, 0]

    def due(self) -> int | None:
        """The oldest generation due for a collection, or None: CPython's own rule,
        including that a full collection waits until the objects moved into the oldest
        generation since the last one are a quarter of those it held then (without it,
        full collections would come more often than they did under automatic collection)."""
        young, middle, full = gc.get_count()
        if young <= self._young:
            return None
        long_lived = self._long_lived if self._long_lived is not None else _oldest()
        if full > self._full and self._pending >= long_lived // 4:
            return 2
        if middle > self._middle:
            return 1
        return 0

    def collect_due(self) -> int | None:
        """Collect the generation that is due, if any; returns it."""
        if gc.isenabled():
            return None
        if self._long_lived is None:
            self._long_lived = _oldest()
        generation = self.due()
        if generation is None:
            return None
        if generation == 1:
            before = len(gc.get_objects(2))
            gc.collect(1)
            self._pending += max(0, len(gc.get_objects(2)) - before)
        else:
            gc.collect(generation)
        if generation == 2:
            self._long_lived, self._pending = len(gc.get_objects(2)), 0
        self.collections[generation] += 1
        return generation


def _oldest() -> int:
    """Objects in the oldest generation, the frozen ones included (right after
    :func:`quiet_collector`, CPython's own count is the frozen start-up objects)."""
    return len(gc.get_objects(2)) + gc.get_freeze_count()
