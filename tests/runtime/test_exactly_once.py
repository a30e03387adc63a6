"""The runtime on a real broker: every change exactly once, final states equal to the fold."""

from __future__ import annotations

import threading
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
    runtime_config,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.mark.parametrize("exactly_once", [True, False], ids=["transactions", "at-least-once"])
def test_many_runs_each_change_once_and_states_equal_the_fold(
    kafka_bootstrap: str, unique_name: Callable[[str], str], exactly_once: bool
) -> None:
    names = TopicNames(unique_name("rt"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    runs = agent_runs(60, prefix="run", seed=1)
    events = list(interleave(runs, seed=1))
    produce_events(kafka_bootstrap, names, events[: len(events) // 2])
    produce_raw(kafka_bootstrap, names.events, BAD_RECORDS)
    config = runtime_config(kafka_bootstrap, names, PARTITIONS, exactly_once=exactly_once)
    worker = build_worker(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by the test below
            failure.append(exc)

    thread = threading.Thread(target=run, name="runtime-worker", daemon=True)
    thread.start()
    try:
        produce_events(kafka_bootstrap, names, events[len(events) // 2 :])
        verdict = assert_eventually(
            lambda: (
                (v := check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS)))
                and not failure
                and v.complete
                and not v.problems
                and v
            ),
            timeout_s=90,
            interval_s=1.0,
            what="every change once, final states equal to the fold",
        )
        assert verdict.expected.events == len(events)
    finally:
        worker.stop()
        thread.join(60)
    assert not failure, failure
    assert not thread.is_alive()
    final = check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS))
    assert final.problems == []
    assert set(final.change_counts.values()) == {1}
