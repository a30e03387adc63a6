"""The Kafka key store against the real broker: nothing reads the whole data-keys topic but a
mirror's first catch-up. A kept mirror reads only what was written since; a tombstone removes
a key from a mirror and from an agent's held keys; an agent process with a fresh store reads
no record of the topic, makes its own key versions, and opens a resumed run's completed step
through a worker's keyed lookup. (Erasing every version: tests/cli/test_erase.py.)"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runstate.agents import DurableRun, InMemoryRuns
from runstate.crypto import (
    KafkaKeyStore,
    LocalKeyManager,
    PersonalDataCipher,
    QueryApiKeyLookup,
    WrappedKey,
)
from runstate.identity import FileDirectory, Principal, Role, hash_token
from runstate.schemas.events import RunCompleted, RunStarted
from runstate.schemas.sealed import parse_sealed
from runstate.streams import clients
from runstate.streams.reader import read_topic
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from tests.runtime.test_query_api import _group

pytestmark = pytest.mark.integration

MASTER = LocalKeyManager(os.urandom(32))
AGENT_TOKEN = "t-agent-key-lookup-0123"
DIRECTORY = FileDirectory(
    [(Principal("agent-1", frozenset({Role.AGENT})), hash_token(AGENT_TOKEN))]
)


@pytest.fixture
def topic(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> str:
    names = TopicNames(unique_name("keys"))
    ensure_topics(admin_client(kafka_bootstrap), topic_specs(names, partitions=1))
    return names.data_keys


def _key(subject: str, version: str = "00000001") -> WrappedKey:
    return WrappedKey(
        subject=subject,
        version=version,
        wrapped=MASTER.wrap(os.urandom(32)),
        master_key_id=MASTER.key_id,
        created_ms=1,
    )


def _preload(bootstrap: str, topic: str, keys: list[WrappedKey]) -> None:
    """Keys written as other processes wrote them, one flush for all."""
    producer = clients.producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key in keys:
        producer.produce(topic, key=key.record_key, value=key.to_json())
    assert producer.flush(30) == 0


@pytest.fixture
def stores(kafka_bootstrap: str, topic: str) -> Iterator[Callable[..., KafkaKeyStore]]:
    made: list[KafkaKeyStore] = []

    def make(**kwargs: object) -> KafkaKeyStore:
        store = KafkaKeyStore(kafka_bootstrap, topic, **kwargs)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_a_kept_mirror_reads_only_what_was_written_since(
    kafka_bootstrap: str, topic: str, stores: Callable[..., KafkaKeyStore], tmp_path: Path
) -> None:
    first = [_key(f"run-{i}") for i in range(40)]
    _preload(kafka_bootstrap, topic, first)
    folder = tmp_path / "mirror"
    reader = stores(mirror=folder)
    assert reader.get("run-7", "00000001") == first[7]
    assert (reader.records_read, reader.rebuilds) == (40, 1)  # a new mirror reads them all
    reader.close()

    later = [_key(f"run-{i}") for i in range(40, 45)]
    _preload(kafka_bootstrap, topic, later)
    eraser = stores(mirror=tmp_path / "eraser")
    assert eraser.erase("run-3") == ("00000001",)
    kept = stores(mirror=folder)
    assert kept.get("run-44", "00000001") == later[-1]
    assert kept.get("run-3", "00000001") is None  # the tombstone deleted it
    assert kept.get("run-8", "00000001") == first[8]
    # Only the 5 new keys and the tombstone were read; nothing again from the start.
    assert (kept.records_read, kept.rebuilds) == (6, 0)
    kept.close()

    # A mirror not caught up within the tombstone window may have missed a tombstone that
    # compaction dropped since: it reads the topic again from the start.
    stale = stores(mirror=folder, tombstone_window_s=0.0)
    assert stale.get("run-44", "00000001") == later[-1]
    assert stale.rebuilds == 1
    assert stale.records_read == len(list(read_topic(kafka_bootstrap, topic)))
    assert stale.get("run-3", "00000001") is None


def test_a_tombstone_reaches_a_live_mirror_and_an_agents_held_key(
    stores: Callable[..., KafkaKeyStore], tmp_path: Path
) -> None:
    agent = PersonalDataCipher(MASTER, stores(refresh_s=0.0))
    text = agent.seal_value("ada", subject="cust-1", run_id="r1", field="input")
    version = parse_sealed(text).key_version
    mirror = stores(mirror=tmp_path / "worker", refresh_s=0.0)
    assert mirror.get("cust-1", version) is not None
    assert agent.store.current("cust-1") is not None
    stores(mirror=tmp_path / "eraser").erase("cust-1")
    assert mirror.get("cust-1", version) is None  # read on, the tombstone deleted it
    assert mirror.current("cust-1") is None
    # The agent's tail read the tombstone: the held key is gone, a new value gets a new key.
    assert agent.store.get("cust-1", version) is None
    again = agent.seal_value("ada", subject="cust-1", run_id="r2", field="input")
    assert parse_sealed(again).key_version != version


def test_an_agent_store_reads_nothing_and_opens_a_resumed_step_by_lookup(
    kafka_bootstrap: str, topic: str, stores: Callable[..., KafkaKeyStore], tmp_path: Path
) -> None:
    held = 300
    _preload(kafka_bootstrap, topic, [_key(f"old-run-{i}") for i in range(held)])
    worker = PersonalDataCipher(MASTER, stores(mirror=tmp_path / "worker"))
    with _group("127.0.0.1", directory=DIRECTORY, cipher=worker) as group:

        def agent_process() -> tuple[PersonalDataCipher, QueryApiKeyLookup]:
            lookup = QueryApiKeyLookup(group.url(0), token=AGENT_TOKEN)
            return PersonalDataCipher(MASTER, stores(lookup=lookup)), lookup

        first, first_lookup = agent_process()
        runs = InMemoryRuns(sealer=first)
        run = DurableRun.start(
            runs,
            runs,
            run_id="run-1",
            agent="a",
            input="ada@example.com",
            prompt_version="p",
            owner="desk",
            source="t",
        )
        assert run.step("lookup", lambda ctx: "found ada@example.com") == "found ada@example.com"

        # Another process resumes the run: the step's stored output was sealed with the
        # first process's key, which it finds through the worker's lookup.
        second, second_lookup = agent_process()
        runs.sealer = second
        resumed = DurableRun.attach(runs, runs, "run-1")
        assert resumed.step("lookup", lambda ctx: "not run again") == "found ada@example.com"
        resumed.complete(output_ref="done for ada@example.com")  # sealed with its own key
        assert second_lookup.lookups == 1 and first_lookup.lookups == 0
        started, completed = runs.events[0], runs.events[-1]
        assert isinstance(started, RunStarted) and isinstance(completed, RunCompleted)
        assert completed.output_ref is not None
        # a version of its own, made without reading the topic
        versions = (parse_sealed(started.input), parse_sealed(completed.output_ref))
        assert versions[0].key_version != versions[1].key_version
        # Neither agent process read the 300 keys already in the topic: only what was
        # written after it started (the other's new key, at most).
        for agent in (first, second):
            assert isinstance(agent.store, KafkaKeyStore)
            assert agent.store.records_read <= 2, agent.store.records_read
        assert isinstance(worker.store, KafkaKeyStore) and worker.store.records_read >= held
