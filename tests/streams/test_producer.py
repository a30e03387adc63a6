"""The producer SDK against the real broker: delivery, keys, validation, size, schemas."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from runstate.errors import OversizeRecord, UnknownSchema, ValidationError
from runstate.schemas.catalog import SchemaCatalog, default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.events import ModelCalled, RunStarted, StepStarted
from runstate.streams.partitioning import partition_for
from runstate.streams.producer import EventProducer
from runstate.streams.reader import end_offsets, read_topic
from runstate.streams.schema_topic import SchemaTopicSource
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs

pytestmark = pytest.mark.integration


@pytest.fixture
def producer(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> EventProducer:
    prefix = unique_name("p")
    ensure_topics(admin_client(kafka_bootstrap), topic_specs(TopicNames(prefix), partitions=4))
    return EventProducer(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)


def _started(producer: EventProducer, run_id: str) -> RunStarted:
    return producer.new_event(
        RunStarted,
        run_id,
        agent="credit-limit",
        input='{"amount": 5000}',
        prompt_version="p-3",
        owner="ops",
        source="test",
    )


def test_emit_confirms_partition_and_offset(producer: EventProducer) -> None:
    deliveries = [producer.emit(_started(producer, f"run-{i}")) for i in range(12)]
    for d in deliveries:
        assert d.partition == partition_for(d.run_id.encode(), 4)
        assert d.offset >= 0
    # a run's events share one partition, in order
    run = producer.run("ordered-run")
    a = run.emit(StepStarted, step="a", step_index=0, attempt=1)
    b = run.emit(StepStarted, step="b", step_index=1, attempt=1)
    assert a.partition == b.partition and b.offset > a.offset
    producer.close()
    records = list(read_topic(producer.bootstrap_servers, producer.names.events))
    assert len(records) == 14
    assert {r.key for r in records} >= {b"ordered-run"}


def test_invalid_event_raises_and_sends_nothing(producer: EventProducer) -> None:
    before = end_offsets(producer.bootstrap_servers, producer.names.events)
    with pytest.raises(ValidationError, match="step_index"):
        producer.new_event(StepStarted, "r1", step="a", step_index=-1, attempt=1)
    with pytest.raises(ValidationError, match="timezone-aware"):
        producer.new_event(
            ModelCalled, "r1", model_request_id="m", model="x", occurred_at=datetime(2026, 1, 1)
        )
    # bypassing pydantic does not bypass the schema
    forged = ModelCalled.model_construct(
        event_id="e",
        run_id="r1",
        occurred_at=datetime.now(UTC),
        producer="p",
        model_request_id=42,
        model="x",
        step=None,
        tags={},
    )
    with pytest.raises(ValidationError):
        producer.send(forged)
    producer.flush()
    assert end_offsets(producer.bootstrap_servers, producer.names.events) == before


def test_oversize_event_is_refused_before_send(producer: EventProducer) -> None:
    small = EventProducer(
        bootstrap_servers=producer.bootstrap_servers,
        topic_prefix=producer.names.prefix,
        max_event_bytes=1024,
    )
    event = small.new_event(
        RunStarted,
        "big",
        agent="a",
        input="x" * 5000,
        prompt_version="p",
        owner="o",
        source="s",
    )
    with pytest.raises(OversizeRecord, match="over the limit of 1024"):
        small.send(event)
    assert all(
        high == low
        for low, high in end_offsets(small.bootstrap_servers, small.names.events).values()
    )


def test_unknown_fingerprint_resolves_through_schemas_topic(producer: EventProducer) -> None:
    producer.emit(_started(producer, "evolving"))  # written with the newest RunStarted
    producer.close()
    record = next(iter(read_topic(producer.bootstrap_servers, producer.names.events)))
    assert record.value is not None
    # a reader whose code only ships RunStarted v1 has never seen the newest fingerprint
    v1_only = SchemaCatalog(
        [v for v in default_catalog() if not (v.short_name == "RunStarted" and v.version >= 2)]
    )
    with pytest.raises(UnknownSchema):
        SingleObjectCodec(v1_only).decode(record.value)
    source = SchemaTopicSource(producer.bootstrap_servers, producer.names.schemas)
    decoded = SingleObjectCodec(v1_only, writer_source=source).decode(record.value)
    assert decoded.reader_version == 1
    assert decoded.record["owner"] == "ops" and "tenant" not in decoded.record
    published = source.lookup(record.value[2:10])
    assert published is not None and json.loads(published)["name"] == "RunStarted"
