"""The worker process's garbage-collector settings (``runner.quiet_collector``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from runstate.runtime.runner import GC_OLDER_THRESHOLDS, GC_YOUNG_THRESHOLD, quiet_collector


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_restored")
def test_start_up_objects_leave_the_collectors_sight_and_collections_are_rarer() -> None:
    gc.unfreeze()
    quiet_collector()
    # what a full collection would walk on the loop's thread, the GIL held
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *GC_OLDER_THRESHOLDS)
