"""A run's journal end to end (real broker, RocksDB stores, the query API over HTTP): every
applied event in order with who acted, pages that return each entry once, the same journal
after a restore from the changelog, and no journal left once the run is evicted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from runstate.cli import app
from runstate.errors import QueryError
from runstate.runs.journal import journal_prefix
from runstate.runs.keyspace import prefix_end
from runstate.runs.query_client import QueryClient
from runstate.runtime.app import build_worker
from runstate.runtime.rocksdb_store import RocksDBStore
from runstate.streams.broker import free_port
from runstate.streams.partitioning import partition_for
from runstate.streams.topics import TopicNames
from tests.factories import RunBuilder
from tests.polling import assert_eventually
from tests.runtime.support import (
    Running,
    agent_runs,
    create_topics,
    interleave,
    produce_events,
    runtime_config,
)
from tests.runtime.test_worker_queries import _get

pytestmark = pytest.mark.integration

PARTITIONS = 3


def _claimed_run(run_id: str, *, end: bool) -> list[Any]:
    b = RunBuilder(run_id, seed=7, clock=datetime.now(UTC) - timedelta(minutes=5))
    b.start()
    b.claim("agent-a")
    b.step("collect", fail_times=1, model_calls=1)
    b.approval("collect")
    b.step("submit", action="email")
    if end:
        b.complete()
    return b.events


def _journal(url: str, run_id: str, *, limit: int) -> list[dict[str, Any]]:
    """Every entry, page by page; the cursor moves forward and never repeats an entry."""
    out: list[dict[str, Any]] = []
    after = ""
    for _ in range(1000):
        status, body = _get(f"{url}/runs/{run_id}/events?limit={limit}{after}")
        assert status == 200, body
        assert len(body["events"]) <= limit
        out += body["events"]
        if body["next"] is None:
            return out
        assert int(body["next"]) == out[-1]["offset"]
        after = f"&after={body['next']}"
    raise AssertionError("the journal's pages never ended")


def test_the_journal_follows_every_applied_event_survives_a_restore_and_leaves_with_the_run(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rtj"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    watched = _claimed_run("journal-open", end=False)
    finished = _claimed_run("journal-done", end=True)
    others = agent_runs(9, prefix="jo", seed=11)
    produce_events(kafka_bootstrap, names, list(interleave([watched, finished, *others], seed=1)))
    config = runtime_config(kafka_bootstrap, names, PARTITIONS, web_port=free_port())
    url = config.url

    def complete(run_id: str, events: list[Any]) -> Callable[[], bool]:
        def check() -> bool:
            status, body = _get(f"{url}/runs/{run_id}/events?limit=1000")
            assert status == 200 and body["count"] == len(events), body
            return True

        return check

    running = Running(build_worker(config))
    try:
        assert_eventually(complete("journal-open", watched), timeout_s=90, what="journal")
        assert_eventually(complete("journal-done", finished), timeout_s=30, what="journal")
        entries = _journal(url, "journal-open", limit=3)
        assert [e["event_type"] for e in entries] == [e.event_type for e in watched]
        assert [e["event_id"] for e in entries] == [e.event_id for e in watched]
        offsets = [e["offset"] for e in entries]
        assert offsets == sorted(set(offsets))
        assert {e["outcome"] for e in entries} == {"applied"}
        who = {e["event_type"]: e for e in entries}
        assert who["RunClaimed"]["actor"] == "agent-a"
        assert who["ApprovalRequested"]["actor"] == "managers"  # the approver asked
        assert who["ApprovalGranted"]["actor"] == "alice"
        assert who["RetryScheduled"]["step"] == "collect" and who["RetryScheduled"]["attempt"] == 2
        assert all(e["schema_version"] for e in entries)
        with QueryClient(url) as client:
            page = client.run_events("journal-open", limit=2)
            assert [e["event_id"] for e in page["events"]] == [e.event_id for e in watched[:2]]
            with pytest.raises(QueryError, match="replay --run no-such-run"):
                client.run_events("no-such-run")
        status, body = _get(f"{url}/runs/journal-open/events?limit=0")
        assert status == 400, body
        cli = CliRunner()
        shown = cli.invoke(app, ["runs", "events", "journal-open", "--url", url, "--limit", "4",
                                 "--all", "--json"])  # fmt: skip
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["events"] == entries
        shown = cli.invoke(app, ["runs", "events", "journal-open", "--url", url, "--limit", "4"])
        assert shown.exit_code == 0, shown.output
        assert "RunClaimed" in shown.output and "agent-a" in shown.output
        assert f"--after {entries[3]['offset']}" in shown.output
    finally:
        running.stop()

    # Data folder deleted: the journal comes back from the changelog with the state.
    shutil.rmtree(config.data_dir)
    running = Running(build_worker(config))
    try:
        assert_eventually(complete("journal-open", watched), timeout_s=90, what="restored")
        assert _journal(url, "journal-open", limit=1000) == entries
    finally:
        running.stop()

    # Finished runs evicted: their journal goes with them, the open run's stays.
    evicting = config.model_copy(update={"finished_hot_s": 1.0, "eviction_interval_s": 0.5})
    running = Running(build_worker(evicting))
    try:

        def evicted() -> bool:
            status, body = _get(f"{url}/runs/journal-done/events?timeout=1")
            assert status == 404, (status, body)
            assert "runstate replay --run journal-done" in body["message"]
            return True

        assert_eventually(evicted, timeout_s=90, interval_s=1.0, what="finished run evicted")
        assert _journal(url, "journal-open", limit=1000) == entries
    finally:
        running.stop()
    stores = RocksDBStore(config.data_dir)
    try:
        store = stores.open(partition_for(b"journal-done", PARTITIONS))
        prefix = journal_prefix("journal-done")
        assert list(store.items(prefix, prefix_end(prefix))) == []
    finally:
        stores.close()
