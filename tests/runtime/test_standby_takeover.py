"""A standby takes over from a worker killed with -9 (or stopped) and restores only the tail.

The mechanics are in :mod:`tests.runtime.standby_takeover`. w-2's restore of each partition
it takes over must read exactly the changelog records committed after its standby's last
read (counted from the changelog itself, no timing), fewer than the whole partition that a
worker without a standby reads, and the outputs must stay exactly-once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.streams.topics import TopicNames
from tests.runtime.standby_takeover import standby_takeover

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("ending", "standby_interval_s"),
    [
        # killed: w-2 waits out the session timeout, its standby reads all w-1 committed
        (signal.SIGKILL, 0.2),
        # stopped: w-1 hands over at once, while w-2's standby rests between its ticks
        (signal.SIGTERM, 5.0),
    ],
    ids=["kill-9", "stop"],
)
def test_a_standby_takeover_restores_only_what_was_committed_since_its_last_read(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    ending: signal.Signals,
    standby_interval_s: float,
) -> None:
    names = TopicNames(unique_name("rts"))
    t = standby_takeover(
        kafka_bootstrap, names, tmp_path, ending=ending, standby_interval_s=standby_interval_s
    )
    print(
        f"w-2's standbys: {t.standby_records} records in {t.standby_ticks} ticks, "
        f"{t.standby_busy_s:.2f}s of the loop's time"
    )
    assert t.verdict.complete and t.verdict.problems == [], t.verdict.problems
    assert t.partitions
    for p in t.partitions:
        print(
            f"partition {p.partition}: takeover restored {p.restored} changelog records "
            f"(committed after the standby's last read: {p.committed_since_standby}; "
            f"the whole partition, without a standby: {p.whole_partition})"
        )
        assert p.restored == p.committed_since_standby
        since = p.standby_last_read
        assert p.first_restored is None or since is None or p.first_restored > since
        assert since is not None and p.restored < p.whole_partition
