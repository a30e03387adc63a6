"""A real worker's ``/metrics``: Prometheus text that the client library's parser reads, with
figures that match what the worker was given; and consumer lag that rises under a burst the
worker cannot take yet and falls back to zero once it can."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from runstate.runs.dead_letters import SourceRecord
from runstate.runtime.app import build_worker
from runstate.runtime.metrics import WORKER_METRICS
from runstate.runtime.outputs import TaskContext
from runstate.streams.broker import free_port
from runstate.streams.topics import TopicNames
from tests.factories import RunBuilder
from tests.polling import assert_eventually, http_json
from tests.runtime.support import (
    BAD_RECORDS,
    Running,
    agent_runs,
    create_topics,
    interleave,
    produce_events,
    produce_raw,
    runtime_config,
)

pytestmark = pytest.mark.integration

PARTITIONS = 2


def scrape(url: str) -> tuple[str, dict[str, Metric]]:
    """``GET /metrics``: its content type and the families the Prometheus parser finds
    (AssertionError while the worker does not answer, so a poll goes on)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
            content_type = resp.headers["Content-Type"]
            text = resp.read().decode()
    except OSError as exc:
        raise AssertionError(f"/metrics did not answer: {exc}") from exc
    return content_type, {m.name: m for m in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], name: str, **labels: str) -> float:
    """The one sample called ``name`` (a family's name, or it with a suffix) with ``labels``."""
    found = [
        s.value
        for family in families.values()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def per_partition(families: dict[str, Metric], name: str) -> dict[int, float]:
    return {int(s.labels["partition"]): s.value for s in families[name].samples}


def _approval_runs(now: datetime) -> tuple[list[Any], int, int]:
    """Runs waiting for approval: some due tomorrow, some due an hour ago."""
    events: list[Any] = []
    for i in range(3):
        b = RunBuilder(f"wait-{i}", clock=now)
        b.start()
        b.step("collect")
        b.request_approval("collect", due_in=timedelta(days=1))
        events += b.events
    for i in range(2):
        b = RunBuilder(f"late-{i}", clock=now - timedelta(days=2))
        b.start()
        b.step("collect")
        b.request_approval("collect", due_in=timedelta(hours=1))
        events += b.events
    return events, 5, 2


def test_metrics_parse_and_count_what_the_worker_did(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = TopicNames(unique_name("rtm"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    runs = agent_runs(12, prefix="m", seed=5)
    events = list(interleave(runs, seed=5))
    waiting, n_waiting, n_overdue = _approval_runs(datetime.now(UTC))
    produce_events(kafka_bootstrap, names, events + waiting)
    produce_raw(kafka_bootstrap, names.events, BAD_RECORDS)
    total = len(events) + len(waiting)
    config = runtime_config(
        kafka_bootstrap,
        names,
        PARTITIONS,
        web_port=free_port(),
        # no expiry may decide the overdue approvals while the test counts them
        deadline_interval_s=3600.0,
    )
    running = Running(build_worker(config))
    try:

        def all_handled() -> dict[str, Metric]:
            assert running.error is None, running.error
            _, families = scrape(config.url)
            handled = sum(s.value for s in families["runstate_events"].samples)
            assert handled == total + len(BAD_RECORDS), handled
            assert sum(per_partition(families, "runstate_consumer_lag").values()) == 0
            # the approval gauges read committed state: the last checkpoint is in
            assert value(families, "runstate_approvals_waiting") == n_waiting
            return families

        families = assert_eventually(all_handled, timeout_s=90, what="every record handled")
        content_type, families = scrape(config.url)
        assert content_type.startswith("text/plain; version=0.0.4")
        exported = set(families)
        declared = {_family(n, kind) for n, kind in WORKER_METRICS.items()}
        assert exported == declared, (exported - declared, declared - exported)
        assert value(families, "runstate_worker_info", worker_id="w1") == 1
        assert value(families, "runstate_events_total", outcome="applied") == total
        assert value(families, "runstate_state_changes_total") == total
        reasons = Counter(
            s.labels["reason"]
            for s in families["runstate_dead_letters"].samples
            for _ in range(int(s.value))
            if s.name == "runstate_dead_letters_total"
        )
        assert sum(reasons.values()) == len(BAD_RECORDS)
        assert set(reasons) == {"undecodable", "null_value", "missing_key"}, reasons
        assert value(families, "runstate_approvals_waiting") == n_waiting
        assert value(families, "runstate_approvals_overdue") == n_overdue
        assert value(families, "runstate_partitions", state="active") == PARTITIONS
        assert value(families, "runstate_checkpoints_total", result="committed") >= 1
        assert value(families, "runstate_checkpoint_duration_seconds_count") >= 1
        assert value(families, "runstate_checkpoint_duration_seconds_bucket", le="+Inf") >= 1
        keys = per_partition(families, "runstate_store_keys")
        # RocksDB's estimate counts deletes against puts: only the total is sure to show
        assert set(keys) == set(range(PARTITIONS)) and sum(keys.values()) > 0
        assert set(per_partition(families, "runstate_store_bytes")) == set(range(PARTITIONS))
        assert set(per_partition(families, "runstate_committed_offset")) == set(range(PARTITIONS))
        # the JSON stays where the tests and benchmarks read it
        status, body = http_json(f"{config.url}/metrics.json")
        assert status == 200 and body["worker_id"] == "w1", body
        assert body["records"] == total + len(BAD_RECORDS)
        assert http_json(f"{config.url}/metrics?format=json")[1]["worker_id"] == "w1"
    finally:
        running.stop()

    # Another worker with an empty data folder restores every partition from the changelog.
    fresh = runtime_config(
        kafka_bootstrap,
        names,
        PARTITIONS,
        web_port=free_port(),
        worker_id="w2",
        data_dir=tmp_path / "fresh",
        deadline_interval_s=3600.0,
    )
    running = Running(build_worker(fresh))
    try:

        def restored() -> bool:
            assert running.error is None, running.error
            _, families = scrape(fresh.url)
            assert value(families, "runstate_restores_total") == PARTITIONS
            assert value(families, "runstate_partitions", state="restoring") == 0
            assert value(families, "runstate_approvals_waiting") == n_waiting
            return True

        assert_eventually(restored, timeout_s=90, what="every partition restored")
        _, families = scrape(fresh.url)
        assert value(families, "runstate_restore_records_total") > 0
        assert not families["runstate_restore_remaining_offsets"].samples  # none under way
    finally:
        running.stop()


def _family(name: str, kind: str) -> str:
    """The name the text parser gives a family (an info metric is read back as a gauge)."""
    return f"{name}_info" if kind == "info" else name


class _Throttle:
    """Slows the worker's task while on: each batch waits before it is processed, as a worker
    busy with slow records does, so the producer outruns it. The loop goes on iterating
    (and noting its lag) between batches."""

    def __init__(
        self,
        process: Callable[[Sequence[SourceRecord], TaskContext], list[str]],
        *,
        pause_s: float,
    ) -> None:
        self._process = process
        self._pause_s = pause_s
        self.on = False

    def __call__(self, records: Sequence[SourceRecord], ctx: TaskContext) -> list[str]:
        if self.on:
            time.sleep(self._pause_s)
        return self._process(records, ctx)


def test_consumer_lag_rises_under_a_burst_and_returns_to_zero(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rtl"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    # small batches: while throttled the worker takes at most 5 records per 0.5 s
    config = runtime_config(kafka_bootstrap, names, PARTITIONS, web_port=free_port(), batch_size=5)
    built = build_worker(config)
    task = built.worker._task
    throttle = _Throttle(task.process, pause_s=0.5)
    task.process = throttle  # type: ignore[method-assign]
    running = Running(built)
    try:

        def ready() -> bool:
            assert running.error is None, running.error
            status, health = http_json(f"{config.url}/health", timeout_s=5)
            assert status == 200 and health["ready"], health
            assert len(health["active_partitions"]) == PARTITIONS, health
            return True

        assert_eventually(ready, timeout_s=90, what="the worker owns every partition")
        before = per_partition(scrape(config.url)[1], "runstate_consumer_lag")
        assert sum(before.values()) == 0, before

        throttle.on = True
        burst = list(interleave(agent_runs(60, prefix="b", seed=9), seed=9))
        produce_events(kafka_bootstrap, names, burst)

        def lag_grew() -> float:
            assert running.error is None, running.error
            lag = sum(per_partition(scrape(config.url)[1], "runstate_consumer_lag").values())
            assert lag >= len(burst) // 2, lag
            return lag

        peak = assert_eventually(lag_grew, timeout_s=60, what="lag reflects the burst")
        assert peak <= len(burst)

        throttle.on = False

        def caught_up() -> bool:
            assert running.error is None, running.error
            families = scrape(config.url)[1]
            lag = per_partition(families, "runstate_consumer_lag")
            assert set(lag) == set(range(PARTITIONS)) and sum(lag.values()) == 0, lag
            assert value(families, "runstate_events_total", outcome="applied") == len(burst)
            return True

        assert_eventually(caught_up, timeout_s=120, what="lag back to zero")
    finally:
        throttle.on = False
        running.stop()


def test_lag_returns_to_zero_after_the_workers_own_transactional_events(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """The worker writes ApprovalExpired to the events topic in its transactions, whose commit
    markers take offsets too: the lag must not stay at one past the last record."""
    names = TopicNames(unique_name("rtx"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    events, _, n_overdue = _approval_runs(datetime.now(UTC))
    produce_events(kafka_bootstrap, names, events)
    config = runtime_config(
        kafka_bootstrap, names, PARTITIONS, web_port=free_port(), deadline_interval_s=0.5
    )
    running = Running(build_worker(config))
    try:

        def expired_and_caught_up() -> bool:
            assert running.error is None, running.error
            families = scrape(config.url)[1]
            # each overdue approval's expiry was read back from the events topic and applied
            assert (
                value(families, "runstate_events_total", outcome="applied")
                == len(events) + n_overdue
            )
            assert value(families, "runstate_approvals_overdue") == 0
            lag = per_partition(families, "runstate_consumer_lag")
            assert set(lag) == set(range(PARTITIONS)) and sum(lag.values()) == 0, lag
            return True

        assert_eventually(expired_and_caught_up, timeout_s=90, what="expiries applied, lag 0")
    finally:
        running.stop()
