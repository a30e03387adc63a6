"""Scenario 6: changelog trouble, on the runtime's changelog (``<prefix>.runs-changelog``,
written inside its transactions: a run is a head record, its entries and index keys).
(a) A worker restores partitions whose changelog is empty; (b) changelog records above a
worker's stored offset, all superseded by newer ones, are deleted (``delete_records``, as
retention or an operator would) before it recovers: its restore resumes at the new low
watermark; and a fresh worker rebuilds everything from what is left. No hang, a full
rebuild, and the state equals the oracle."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from runstate.schemas.events import AgentEvent, ModelCalled
from runstate.streams.partitioning import partition_for
from runstate.streams.reader import end_offsets, read_topic
from tests.factories import RunBuilder
from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import Deployment, Load, agent_runs, interleave
from tests.faults.oracle import Oracle, converge
from tests.faults.report import ScenarioResult


def _runs_only_in(
    d: Deployment, partitions: set[int], count: int, seed: int
) -> list[list[AgentEvent]]:
    runs = [r for r in agent_runs(count * 3, prefix="s6", seed=seed)
            if partition_for(r[0].run_id.encode(), d.partitions) in partitions]  # fmt: skip
    return runs[:count]


def _touch_all(d: Deployment, run_ids: list[str]) -> list[str]:
    """One more event for every run (ModelCalled is applied even after the end), so every
    key's newest changelog record is in the tail and everything older is superseded."""
    events = []
    for i, run_id in enumerate(run_ids):
        b = RunBuilder(run_id, seed=10_000 + i)
        events.append(b.emit(ModelCalled, model_request_id=f"touch-{i}", model="m", step=None))
    with d.producer() as p:
        for e in events:
            p.send(e)
    return [e.event_id for e in events]


def _set_cleanup(admin: AdminClient, topic: str, policy: str) -> None:
    entry = ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(30)


def _delete_superseded(d: Deployment) -> dict[int, tuple[int, int]]:
    """Delete, per changelog partition, every record older than the oldest newest-per-key
    record; returns ``{partition: (old low, new low)}``."""
    topic = d.names.runs_changelog
    admin = AdminClient({"bootstrap.servers": d.bootstrap})
    # DeleteRecords is refused on compact-only topics; allow it for the moment of the cut
    _set_cleanup(admin, topic, "compact,delete")
    newest: dict[int, dict[bytes, int]] = defaultdict(dict)
    for r in read_topic(d.bootstrap, topic, timeout_s=30):
        if r.key is not None:
            newest[r.partition][r.key] = r.offset
    before = end_offsets(d.bootstrap, topic)
    cut = {p: min(offsets.values()) for p, offsets in newest.items()}
    futures = admin.delete_records([TopicPartition(topic, p, o) for p, o in cut.items()])
    for fut in futures.values():
        fut.result(30)
    _set_cleanup(admin, topic, "compact")
    return {p: (before[p][0], o) for p, o in cut.items()}


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_changelog_empty_partition_and_deleted_records(
    kafka_bootstrap: str,
    deployment_factory: DeploymentFactory,
    scenario: ScenarioResult,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "6", "changelog trouble (empty partition, delete_records)"
    scenario.injections = (
        "restore with 2 of 4 changelog partitions empty; delete_records on every changelog"
        " partition above a stopped worker's stored offset, then restart it and a fresh worker"
    )
    scenario.figures["recovery"] = "worker start until ready (restore from the changelog done)"
    d = deployment_factory(kafka_bootstrap, partitions=4)
    oracle = Oracle(d.bootstrap, d.names)
    runs = _runs_only_in(d, {0, 1}, 150, seed=seed)
    events = list(interleave(runs, active=40, seed=seed))
    w1 = d.worker("w1").start()
    w1.wait_ready()
    load = Load(d, events, rate_per_s=2000).start()
    load.wait()
    verdict, _ = converge(oracle, timeout_s=120, acked=load.acked)
    assert verdict.clean, verdict.summary()
    w1.kill9()
    recoveries = scenario.recovery_s
    figures = scenario.figures

    # (a) a worker with no local state; partitions 2 and 3 have an empty changelog
    w2 = d.worker("w2").start()
    began = time.monotonic()
    w2.wait_ready(timeout_s=120)
    recoveries.append(time.monotonic() - began)
    figures["(a) empty data dir, 2 empty changelog partitions: ready after"] = (
        f"{recoveries[-1]:.1f} s"
    )
    check = oracle.check(acked=load.acked, query=w2)
    scenario.verdict(check)
    assert check.clean, check.summary()

    # (b) records below w1's stored offset deleted before w1 recovers
    # w2 writes past w1's stored offset: new runs, then one more event for every run
    newer = _runs_only_in(d, {0, 1}, 210, seed=seed)[150:]
    more = Load(d, list(interleave(newer, active=20, seed=seed + 1)), rate_per_s=2000).start()
    more.wait()
    run_ids = sorted(oracle.expected().states)
    touched = _touch_all(d, run_ids)
    verdict, _ = converge(oracle, timeout_s=120, acked=[*load.acked, *more.acked, *touched])
    assert verdict.clean, verdict.summary()
    w2.kill9()
    cut = _delete_superseded(d)
    figures["(b) changelog low watermark moved (partition: old -> new)"] = {
        p: f"{a} -> {b}" for p, (a, b) in sorted(cut.items())
    }
    began = time.monotonic()
    w1.start()
    w1.wait_ready(timeout_s=120)
    recoveries.append(time.monotonic() - began)
    figures["(b) worker with stale local state: ready after"] = f"{recoveries[-1]:.1f} s"
    check = oracle.check(acked=touched, query=w1)
    scenario.verdict(check)
    assert check.clean, check.summary()

    w3 = d.worker("w3").start()
    w1.stop()
    began = time.monotonic()
    w3.wait_ready(timeout_s=120)
    recoveries.append(time.monotonic() - began)
    figures["(b) fresh worker, full rebuild from the trimmed changelog: ready after"] = (
        f"{recoveries[-1]:.1f} s"
    )
    check, _ = converge(oracle, timeout_s=60, query=w3)
    scenario.verdict(check)
    assert check.clean, check.summary()
