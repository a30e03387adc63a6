"""A runtime worker end to end: RocksDB stores, the query API over HTTP, a restart that keeps
its data and restores only the tail."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.retention.local import LocalArchive
from runstate.retention.replay import HistorySource, replay_all
from runstate.runs.reducer import fold
from runstate.runs.run_index import rebuild_indexes
from runstate.runs.state import RunStatus
from runstate.runtime.app import build_worker
from runstate.runtime.recovery import AssignedRestore
from runstate.runtime.rocksdb_store import RocksDBStore
from runstate.schemas.codec import default_codec
from runstate.streams.broker import free_port
from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually
from tests.runtime.support import (
    Running,
    agent_runs,
    create_topics,
    interleave,
    produce_events,
    read,
    runtime_config,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def _all_runs(url: str, query: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    after = ""
    while True:
        status, body = _get(f"{url}/runs?{query}&limit=7{after}")
        assert status == 200, body
        assert body["complete"], body
        runs += body["runs"]
        if body["next"] is None:
            return runs
        after = f"&after={body['next']}"


def test_queries_answer_from_the_indexes_and_a_restart_restores_only_the_tail(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rtq"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    runs = agent_runs(40, prefix="q", seed=3)
    events = list(interleave(runs, seed=3))
    produce_events(kafka_bootstrap, names, events)
    expected = {s.run_id: s for r in runs if (s := fold(r)) is not None}
    port = free_port()
    config = runtime_config(kafka_bootstrap, names, PARTITIONS, web_port=port)
    url = config.url
    running = Running(build_worker(config))
    try:

        def caught_up() -> bool:
            status, body = _get(f"{url}/metrics.json")
            assert status == 200 and running.error is None, (body, running.error)
            # committed, not only processed: the query side reads committed state
            listed = {r["run_id"]: r["version"] for r in _all_runs(url, "")}
            assert listed == {k: s.version for k, s in expected.items()}
            return True

        assert_eventually(caught_up, timeout_s=90, what="every event committed")
        waiting = {k for k, s in expected.items() if s.status is RunStatus.WAITING_APPROVAL}
        listed = _all_runs(url, "status=waiting_approval")
        assert sorted(r["run_id"] for r in listed) == sorted(waiting)
        for run_id, state in list(expected.items())[:10]:
            status, body = _get(f"{url}/runs/{run_id}")
            assert status == 200, body
            assert body["version"] == state.version and body["status"] == state.status.value
        status, health = _get(f"{url}/health")
        assert health["ready"] and not health["degraded"]
        assert sorted(health["active_partitions"]) == list(range(PARTITIONS))
    finally:
        running.stop()

    # Restarted with its data kept: nothing (or only a tail) to restore, same answers.
    again = build_worker(config)
    restore = again.worker._restore
    assert isinstance(restore, AssignedRestore)
    running = Running(again)
    try:
        assert_eventually(
            lambda: (
                _get(f"{url}/health")[1].get("ready") is True
                and len(_get(f"{url}/health")[1]["active_partitions"]) == PARTITIONS
            ),
            timeout_s=60,
            what="the restarted worker ready",
        )
        assert sum(r.records for r in restore.reports) == 0, restore.reports
        listed = _all_runs(url, "status=waiting_approval")
        assert sorted(r["run_id"] for r in listed) == sorted(waiting)
    finally:
        running.stop()

    # Data folder deleted: everything comes back from the changelog, indexes exactly.
    shutil.rmtree(config.data_dir)
    fresh = build_worker(config)
    restore = fresh.worker._restore
    assert isinstance(restore, AssignedRestore)
    running = Running(fresh)
    try:
        assert_eventually(
            lambda: (
                {r["run_id"]: r["version"] for r in _all_runs(url, "")}
                == {k: s.version for k, s in expected.items()}
            ),
            timeout_s=60,
            what="restored",
        )
        assert sum(r.records for r in restore.reports) > 0
        listed = _all_runs(url, "status=waiting_approval")
        assert sorted(r["run_id"] for r in listed) == sorted(waiting)
    finally:
        running.stop()
    stores = RocksDBStore(config.data_dir)
    try:
        for p in range(PARTITIONS):
            assert rebuild_indexes(stores.open(p)) == [], f"partition {p}"
    finally:
        stores.close()


def test_finished_runs_leave_the_hot_store_and_still_replay_from_the_archive(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = TopicNames(unique_name("rtev"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    runs = agent_runs(12, prefix="ev", seed=5)
    events = list(interleave(runs, seed=5))
    produce_events(kafka_bootstrap, names, events)
    expected = {s.run_id: s for r in runs if (s := fold(r)) is not None}
    finished = {k for k, s in expected.items() if s.is_terminal}
    assert finished and len(finished) < len(expected)
    port = free_port()
    config = runtime_config(
        kafka_bootstrap,
        names,
        PARTITIONS,
        web_port=port,
        finished_hot_s=2.0,
        eviction_interval_s=0.5,
    )
    running = Running(build_worker(config))
    try:

        def gone() -> bool:
            assert running.error is None, running.error
            for run_id in expected:
                status, _body = _get(f"{config.url}/runs/{run_id}?timeout=1")
                assert status == (404 if run_id in finished else 200), (run_id, status)
            return True

        assert_eventually(gone, timeout_s=90, interval_s=1.0, what="finished runs gone")
    finally:
        running.stop()
    latest: dict[bytes, bytes | None] = {}
    for r in read(kafka_bootstrap, names.latest_state):
        if r.key is not None:
            latest[r.key] = r.value
    assert {k.decode() for k, v in latest.items() if v is None} == finished
    # The events stay: archived, they rebuild every finished run.
    store = LocalArchive(tmp_path / "archive")
    archiver = ArchiverConfig(kafka_bootstrap, names.events, f"{names.prefix}-arch")
    Archiver(archiver, store).run(once=True)
    source = HistorySource(
        store, ConfluentKafkaLog(kafka_bootstrap), kafka_bootstrap, names.events, default_codec()
    )
    for run_id in finished:
        replayed = replay_all(source, run_id=run_id).states.get(run_id)
        assert replayed is not None
        assert replace(replayed, last_offset=None) == expected[run_id]
