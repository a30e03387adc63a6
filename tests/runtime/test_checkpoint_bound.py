"""A backlog is committed in checkpoints of at most ``checkpoint_max_records`` records, on a
real broker: each checkpoint's store write (which holds the GIL) stays bounded, and nothing
is lost or applied twice across the many small transactions."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from runstate.runtime.app import build_worker
from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually
from tests.runtime.support import (
    BAD_RECORDS,
    agent_runs,
    check_outputs,
    create_topics,
    interleave,
    produce_events,
    produce_raw,
    run_in_thread,
    runtime_config,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
BOUND = 25


def test_a_backlog_commits_in_checkpoints_of_at_most_the_bound(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rtb"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(30, prefix="bound", seed=3), seed=3))
    # The whole backlog is there before the worker starts: without the bound, its first
    # checkpoint (the interval is long) would hold every record fetched meanwhile.
    produce_events(kafka_bootstrap, names, events)
    produce_raw(kafka_bootstrap, names.events, BAD_RECORDS)
    total = len(events) + len(BAD_RECORDS)
    assert total > 4 * BOUND
    config = runtime_config(
        kafka_bootstrap,
        names,
        PARTITIONS,
        checkpoint_max_records=BOUND,
        batch_size=10,  # not a divisor of the bound: a take is cut to what the bound leaves
        commit_interval_s=5.0,  # below the test broker's transaction timeout (10 s)
    )
    worker = build_worker(config)
    thread, failure = run_in_thread(worker)
    try:
        assert_eventually(
            lambda: failure or worker.worker.records >= total,
            timeout_s=90,
            what="every record of the backlog handled",
        )
    finally:
        worker.stop()  # the last, partial checkpoint commits on the way out
        thread.join(60)
    assert not failure, failure
    assert not thread.is_alive()
    metrics = worker.worker.metrics()
    assert metrics["aborts"] == 0
    assert metrics["records"] == total
    assert 0 < metrics["largest_checkpoint_records"] <= BOUND
    assert metrics["commits"] >= math.ceil(total / BOUND)
    verdict = check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS))
    assert verdict.complete, verdict.problems
    assert verdict.problems == []
    assert set(verdict.change_counts.values()) == {1}
    assert verdict.expected.events == len(events)
