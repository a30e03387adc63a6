"""Cyclic garbage collection in a worker process happens at the loop's chosen point only
(``runtime.collector``): never in another thread, and what is due is collected there."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from runstate.runtime.collector import LoopCollector, quiet_collector


@pytest.fixture
def collections() -> Iterator[list[tuple[int, int]]]:
    """(generation, thread id) of every collection while the test runs; the process's
    collector settings are put back afterwards."""
    seen: list[tuple[int, int]] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append((info["generation"], threading.get_ident()))

    thresholds = gc.get_threshold()
    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _cycles(n: int) -> None:
    for _ in range(n):
        a: list[Any] = []
        a.append(a)


def test_a_worker_process_collects_nothing_by_itself(
    collections: list[tuple[int, int]],
) -> None:
    gc.unfreeze()
    quiet_collector()
    assert not gc.isenabled()
    # what a full collection would walk, the GIL held, if start-up objects stayed in sight
    assert gc.get_freeze_count() > 1000
    collections.clear()
    elsewhere = threading.Thread(target=_cycles, args=(50_000,))  # a query thread, say
    elsewhere.start()
    elsewhere.join()
    _cycles(50_000)
    assert collections == []
    assert gc.get_count()[0] > 50_000  # due, and left for the loop


def _survivors(n: int) -> list[list[Any]]:
    """``n`` objects that outlive every collection (a cache's states, say)."""
    return [[i] for i in range(n)]


def test_the_loop_collects_what_is_due_on_its_own_thread(
    collections: list[tuple[int, int]],
) -> None:
    gc.unfreeze()
    quiet_collector()
    collector = LoopCollector(young=1_000, older=(2, 2))
    collector.collect_due()  # whatever start-up left over
    collections.clear()
    done = []
    kept = []
    for _ in range(16):
        _cycles(2_000)
        # enough survivors that a full collection is due by CPython's quarter rule
        kept.append(_survivors(gc.get_freeze_count() // 8 + 1_000))
        done.append(collector.collect_due())
    # CPython's schedule: a middle collection once more than 2 young ones ran since the
    # last middle one, a full one (instead of a young one) once more than 2 middle ones did
    assert done == [0, 0, 0, 1] * 3 + [2, 0, 0, 0]
    assert collections == [(g, threading.get_ident()) for g in done]
    assert collector.collections == [done.count(0), done.count(1), done.count(2)]
    assert collector.collect_due() is None  # nothing allocated since: nothing due


def test_a_full_collection_waits_for_a_quarter_of_new_long_lived_objects(
    collections: list[tuple[int, int]],
) -> None:
    """As CPython does: without it a full collection, the one that walks every object,
    would come every few seconds whatever few objects were new since the last."""
    gc.unfreeze()
    quiet_collector()
    collector = LoopCollector(young=1_000, older=(2, 2))
    collector.collect_due()
    done = []
    for _ in range(16):
        _cycles(2_000)  # garbage only: nothing reaches the oldest generation
        done.append(collector.collect_due())
    assert 2 not in done and done.count(1) >= 4


def test_the_loop_collector_stays_out_of_the_way_where_collection_is_automatic(
    collections: list[tuple[int, int]],
) -> None:
    assert gc.isenabled()  # a test process running a worker in a thread
    collector = LoopCollector(young=10, older=(1, 1))
    _cycles(100)
    collections.clear()
    assert collector.collect_due() is None
    assert collections == []
