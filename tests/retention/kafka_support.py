"""Helpers for the archiver, retention and replay tests that use the real broker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from runstate.retention import ArchiveStore
from runstate.runs.reducer import fold
from runstate.runs.state import RunState
from runstate.schemas.events import AgentEvent
from runstate.streams.producer import Delivery, EventProducer
from runstate.streams.reader import read_topic
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from tests.factories import T0, make_run

PARTITIONS = 3


def create_topics(bootstrap: str, prefix: str, *, partitions: int = PARTITIONS) -> TopicNames:
    """Every topic of a fresh deployment named ``prefix``."""
    names = TopicNames(prefix)
    ensure_topics(admin_client(bootstrap), topic_specs(names, partitions=partitions))
    return names


def write_policy(
    path: Path,
    names: TopicNames,
    *,
    target: str,
    endpoint: str | None = None,
    hot: str = "1ms",
    archive_retention: str = "forever",
    personal_data: str = "",
    legal_holds: Sequence[str] = (),
) -> Path:
    """A policy file archiving the events topic to ``target``."""
    holds = "".join(f"\n  - {h}" for h in legal_holds)
    text = f"""version: 1
legal_holds:{holds or " []"}
topics:
  {names.events}:
    hot: {hot}
    archive:
      target: {target}
{f"      endpoint: {endpoint}" if endpoint else ""}
    archive_retention: {archive_retention}
{personal_data}
  {names.state_changes}:
    hot: 3d
"""
    path.write_text(text)
    return path


def generate_runs(
    count: int, *, seed: int = 0, spacing: timedelta = timedelta(seconds=2)
) -> dict[str, list[AgentEvent]]:
    """``count`` varied runs (approvals, failures, actions, every ending), overlapping in time."""
    ends = ("completed", "failed", "cancelled", "open")
    outcomes = ("granted", "rejected", "expired")
    runs: dict[str, list[AgentEvent]] = {}
    for i in range(count):
        run_id = f"run-{seed}-{i:05d}"
        runs[run_id] = make_run(
            run_id,
            steps=("collect", "check", "submit")[: 1 + i % 3],
            with_approval=i % 4 == 1,
            approval_outcome=outcomes[i % 3],  # type: ignore[arg-type]
            failures=i % 5 == 2,
            model_calls=i % 3,
            with_action=i % 2 == 0,
            end=ends[i % 4],  # type: ignore[arg-type]
            start=T0 + i * spacing,
            seed=seed,
        )
    return runs


def in_time_order(runs: dict[str, list[AgentEvent]]) -> list[AgentEvent]:
    """All events ordered by time (runs interleave, each run keeps its own order)."""
    return sorted(
        (e for events in runs.values() for e in events), key=lambda e: (e.occurred_at, e.run_id)
    )


def produce(bootstrap: str, prefix: str, events: Iterable[AgentEvent]) -> list[Delivery]:
    """Send events in order and wait for every delivery."""
    with EventProducer(bootstrap_servers=bootstrap, topic_prefix=prefix) as producer:
        futures = [producer.send(e) for e in events]
        producer.flush()
    return [f.result() for f in futures]


def oracle(
    deliveries: Sequence[Delivery],
    events: Sequence[AgentEvent],
    *,
    until: datetime | None = None,
) -> dict[str, RunState]:
    """The test's own answer: fold each run's (offset, event) pairs in log order."""
    per_run: dict[str, list[tuple[int, AgentEvent]]] = {}
    for delivery, event in zip(deliveries, events, strict=True):
        per_run.setdefault(event.run_id, []).append((delivery.offset, event))
    states = {}
    for run_id, pairs in per_run.items():
        pairs.sort(key=lambda pair: pair[0])
        state = fold(pairs, until=until)
        if state is not None:
            states[run_id] = state
    return states


def topic_offsets(bootstrap: str, topic: str) -> set[tuple[int, int]]:
    """Every (partition, offset) currently in the topic."""
    return {(r.partition, r.offset) for r in read_topic(bootstrap, topic)}


def archived_offsets(store: ArchiveStore, topic: str) -> Counter[tuple[int, int]]:
    """How often each (partition, offset) occurs in the archive's segments."""
    seen: Counter[tuple[int, int]] = Counter()
    for partition in store.partitions(topic):
        for manifest in store.list_manifests(topic, partition):
            if manifest.is_live:
                seen.update((partition, r.offset) for r in store.read_segment(manifest))
    return seen
