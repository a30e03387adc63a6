"""Replay over a real local archive and an in-memory Kafka log, checked against the reducer.

The history is real: events of the factories, encoded with the shipped schemas, in segments
built by the archive's own writer (``build_segment``) in the ``store`` backend;
Kafka's part comes through the :class:`~runstate.retention.kafka_log.KafkaLog` port (the
integration tests in ``test_replay.py`` read a real broker through it). What is proven here
is replay's own logic: where the archive ends and Kafka takes over, the checks of that
boundary and of offset order, one run's replay, ``--at``, records set aside at intake, the
counts and the progress reported. These tests are the mutation oracle of
``retention/replay.py`` (docs/testing.md).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest

from runstate.errors import ReplayError
from runstate.retention import ArchivedRecord, BlobArchive, LocalArchive, build_segment
from runstate.retention.holds import archive_chain
from runstate.retention.kafka_log import SizeSample
from runstate.retention.manifest import SegmentManifest
from runstate.retention.replay import (
    HistoryRecord,
    HistorySource,
    PartitionSpan,
    iter_history,
    plan_partition,
    replay_all,
    replay_until,
)
from runstate.runs.reducer import Applied, Duplicate, Outcome, fold
from runstate.runs.state import RunState
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import InMemoryWriterSchemaSource, SingleObjectCodec
from runstate.schemas.convert import encode_event, event_to_record
from runstate.schemas.events import AgentEvent, StepStarted
from runstate.streams.partitioning import partition_for
from tests.factories import T0, make_run

from .support import CREATED, T0_MS

TOPIC = "rs.events"
CODEC = SingleObjectCodec(default_catalog())


@dataclass
class LogKafka:
    """A :class:`KafkaLog` over in-memory records per partition (the part Kafka still holds).

    ``low`` is each partition's earliest offset (records below it were trimmed); ``reads``
    notes every ``read_records`` call.
    """

    records: dict[int, list[ArchivedRecord]]
    low: dict[int, int] = field(default_factory=dict)
    reads: list[tuple[int, int, int]] = field(default_factory=list)

    def topics(self) -> set[str]:
        return {TOPIC}

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        assert topic == TOPIC
        return {
            p: (self.low.get(p, 0), max((r.offset for r in recs), default=-1) + 1)
            for p, recs in self.records.items()
        }

    def read_records(
        self, topic: str, partition: int, *, start: int, end: int
    ) -> Iterator[ArchivedRecord]:
        assert topic == TOPIC
        self.reads.append((partition, start, end))
        low = self.low.get(partition, 0)
        for r in self.records[partition]:
            if max(start, low) <= r.offset < end:
                yield r

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        raise NotImplementedError

    def delete_records(self, topic: str, before: Any) -> dict[int, int]:
        raise NotImplementedError

    def sample_sizes(self, topic: str, partition: int, *, start: int, limit: int) -> SizeSample:
        raise NotImplementedError


@dataclass
class Progress:
    """A :class:`ProgressSink` that notes what it is told."""

    totals: list[int] = field(default_factory=list)
    advances: list[int] = field(default_factory=list)

    def total(self, records: int) -> None:
        self.totals.append(records)

    def advance(self, records: int) -> None:
        self.advances.append(records)


def interleaved(*runs: Sequence[AgentEvent]) -> list[AgentEvent]:
    """The runs' events in log order: one of each in turn."""
    out: list[AgentEvent] = []
    for i in range(max(len(r) for r in runs)):
        out.extend(r[i] for r in runs if i < len(r))
    return out


def as_records(events: Sequence[AgentEvent], first: int = 0) -> list[ArchivedRecord]:
    return [
        ArchivedRecord(first + i, T0_MS + i, e.run_id.encode(), encode_event(e))
        for i, e in enumerate(events)
    ]


def archive(store: BlobArchive, records: Sequence[ArchivedRecord], partition: int = 0) -> None:
    store.put_segment(build_segment(TOPIC, partition, records, created_at=CREATED))


def expected(events: Sequence[AgentEvent], first: int = 0) -> dict[str, RunState]:
    by_run: dict[str, list[tuple[int, AgentEvent]]] = {}
    for i, e in enumerate(events):
        by_run.setdefault(e.run_id, []).append((first + i, e))
    return {run: fold(pairs) for run, pairs in by_run.items()}


def source(store: BlobArchive, kafka: LogKafka, **kw: Any) -> HistorySource:
    return HistorySource(store, kafka, "unused:9092", TOPIC, CODEC, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> BlobArchive:
    """A local archive: replay is no backend, ``test_archive_stores.py`` proves both alike."""
    return LocalArchive(tmp_path / "archive")


@pytest.fixture
def events() -> list[AgentEvent]:
    """Two runs, 20-odd events, interleaved."""
    return interleaved(
        make_run("run-a", with_approval=True), make_run("run-b", failures=1, with_action=True)
    )


# -- archive, then Kafka -------------------------------------------------------------------


def test_history_is_the_archive_then_kafka_from_where_the_archive_ends(
    store: BlobArchive, events: list[AgentEvent]
) -> None:
    records = as_records(events)
    archive(store, records[:5])
    archive(store, records[5:10])
    kafka = LogKafka({0: records}, low={0: 7})  # Kafka still holds 7..9 too
    seen: list[tuple[int, str, str, type[Outcome]]] = []
    progress = Progress()

    result = replay_all(
        source(store, kafka),
        progress=progress,
        observe=lambda r, e, o: seen.append((r.offset, r.origin, e.event_id, type(o))),
    )

    assert result.states == expected(events)
    assert (result.stats.archive_records, result.stats.kafka_records) == (10, len(events) - 10)
    assert (result.stats.applied, result.stats.duplicates, result.stats.rejected) == (
        len(events),
        0,
        0,
    )
    assert result.stats.set_aside == {} and result.problems == []
    assert result.stats.finished is not None and result.partitions == 1
    assert kafka.reads == [(0, 10, len(events))]
    span = result.spans[0]
    assert (span.archive_end, span.kafka_low, span.kafka_end) == (10, 7, len(events))
    assert seen == [
        (i, "archive" if i < 10 else "kafka", e.event_id, Applied) for i, e in enumerate(events)
    ]
    assert progress.totals == [len(events)]
    assert progress.advances == [5, 5, len(events) - 10]


def test_a_partition_wholly_archived_is_not_read_from_kafka(
    store: BlobArchive, events: list[AgentEvent]
) -> None:
    records = as_records(events)
    archive(store, records)
    kafka = LogKafka({0: records}, low={0: len(records)})

    result = replay_all(source(store, kafka))

    assert kafka.reads == []
    assert result.states == expected(events)
    assert result.stats.kafka_records == 0


def test_kafka_must_continue_exactly_where_the_archive_ends(
    store: BlobArchive, events: list[AgentEvent]
) -> None:
    records = as_records(events)
    archive(store, records[:10])
    kafka = LogKafka({0: records})
    span = plan_partition(store.list_manifests(TOPIC, 0), 0, kafka_low=10, kafka_end=20)
    kafka.low[0] = 12  # trimmed between planning and reading

    with pytest.raises(
        ReplayError,
        match=r"rs.events/0: the archive ends at offset 9 but the first record Kafka returned"
        r" is 12; offsets 10\.\.11 are missing",
    ):
        list(iter_history(source(store, kafka), span))


def test_kafka_progress_is_told_every_1000_records_and_the_rest_at_the_end(
    store: BlobArchive,
) -> None:
    noise = [ArchivedRecord(o, T0_MS, b"k", b"x") for o in range(2001)]
    kafka = LogKafka({0: noise})
    span = plan_partition([], 0, kafka_low=0, kafka_end=2001)
    progress = Progress()

    read = list(iter_history(source(store, kafka), span, progress=progress))

    assert progress.advances == [1000, 1000, 1]
    assert [r.offset for r in read] == list(range(2001))
    assert read[5] == HistoryRecord(0, 5, T0_MS, b"k", b"x", "kafka")


def test_archive_records_come_with_where_and_when_they_were_written(
    store: BlobArchive, events: list[AgentEvent]
) -> None:
    records = as_records(events[:4])
    archive(store, records)
    span = plan_partition(store.list_manifests(TOPIC, 0), 0, kafka_low=4, kafka_end=4)

    read = list(iter_history(source(store, LogKafka({0: []})), span))

    assert read == [
        HistoryRecord(0, r.offset, r.timestamp_ms, r.key, r.value, "archive") for r in records
    ]


# -- one run -------------------------------------------------------------------------------


def test_one_run_reads_only_segments_listing_it_and_only_its_records(
    store: BlobArchive,
) -> None:
    a, b = make_run("run-a"), make_run("run-b")
    only_a = as_records(a[:4])
    mixed = as_records(interleaved(a[4:], b), first=4)
    archive(store, only_a)
    archive(store, mixed[:10])
    kafka = LogKafka({0: only_a + mixed})
    span = plan_partition(store.list_manifests(TOPIC, 0), 0, kafka_low=14, kafka_end=4 + len(mixed))
    progress = Progress()

    read = list(iter_history(source(store, kafka), span, run_id="run-b", progress=progress))

    assert {r.key for r in read} == {b"run-b"}
    assert [r.offset for r in read] == [r.offset for r in mixed if r.key == b"run-b"]
    assert {r.origin for r in read if r.offset < 14} == {"archive"}
    assert progress.advances == [4, 10, len(mixed) - 10]  # the skipped segment counts too


def test_replaying_one_run_reads_its_partition_only(store: BlobArchive) -> None:
    runs = {p: [f"run-{i}" for i in range(40) if partition_for(f"run-{i}".encode(), 2) == p][:2]
            for p in (0, 1)}  # fmt: skip
    per_partition = {p: interleaved(*(make_run(r) for r in ids)) for p, ids in runs.items()}
    kafka = LogKafka({p: as_records(evs) for p, evs in per_partition.items()})
    wanted = runs[1][1]

    one = replay_all(source(store, kafka), run_id=wanted)

    assert list(one.spans) == [1] and one.partitions == 2
    assert one.states == {wanted: expected(per_partition[1])[wanted]}

    both = replay_all(source(store, kafka))
    assert list(both.spans) == [0, 1]
    assert both.states == {**expected(per_partition[0]), **expected(per_partition[1])}
    only = replay_all(source(store, kafka), partitions=[1])
    assert list(only.spans) == [1] and only.states == expected(per_partition[1])


def test_partitions_are_replayed_in_order_whatever_order_kafka_lists_them(
    store: BlobArchive,
) -> None:
    kafka = LogKafka({2: [], 0: [], 1: []})
    assert list(replay_all(source(store, kafka)).spans) == [0, 1, 2]


# -- --at ----------------------------------------------------------------------------------


def test_at_a_time_each_run_stops_at_its_first_event_after_it(
    store: BlobArchive,
) -> None:
    a = make_run("run-a", steps=("one", "two", "three"))
    cut = 5
    at = a[cut - 1].occurred_at
    # A late event stamped before ``at`` (producer clock skew) after one stamped past it:
    # log order wins, it is not applied either.
    skewed = a[cut + 1].model_copy(update={"occurred_at": at - timedelta(seconds=1)})
    events = [*a[:cut + 1], skewed, *a[cut + 2:]]  # fmt: skip
    other = make_run("run-b", start=T0 - timedelta(hours=1))  # all of it before ``at``
    records = as_records(events + other)
    archive(store, records[:3])
    kafka = LogKafka({0: records})
    progress = Progress()

    result = replay_until(at, source(store, kafka), run_id="run-a", progress=progress)

    assert result.states == expected(events[:cut])
    assert result.stats.applied == cut
    assert progress.totals == [len(events) + len(other)]
    everyone = replay_all(source(store, kafka), at=at).states
    assert everyone == {**result.states, "run-b": expected(events + other)["run-b"]}


def test_values_of_a_producer_newer_than_this_code_decode_through_the_sources_codec(
    store: BlobArchive,
) -> None:
    started, *rest = make_run("run-a", steps=("one",))
    schema = dict(default_catalog().latest("RunStarted").definition)
    newer = {
        **schema,
        "fields": [*schema["fields"], {"name": "region", "type": "string", "default": ""}],
    }
    writers = InMemoryWriterSchemaSource()
    fingerprint = writers.add(json.dumps(newer))
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(newer), {**event_to_record(started)[1], "region": "eu"}
    )
    first = ArchivedRecord(0, T0_MS, b"run-a", b"\xc3\x01" + fingerprint + body.getvalue())
    kafka = LogKafka({0: [first, *as_records(rest, first=1)]})
    codec = SingleObjectCodec(default_catalog(), writer_source=writers)

    result = replay_all(HistorySource(store, kafka, "unused:9092", TOPIC, codec))  # type: ignore[arg-type]

    assert result.stats.set_aside == {}
    assert result.states == expected([started, *rest])


# -- what intake sets aside, and what the reducer refuses ----------------------------------


def test_records_the_processor_dead_letters_are_set_aside_and_named(
    store: BlobArchive, events: list[AgentEvent]
) -> None:
    n = 6
    bad = [
        ArchivedRecord(n, T0_MS, b"run-a", None),
        ArchivedRecord(n + 1, T0_MS, b"run-a", b"not avro"),
        ArchivedRecord(n + 2, T0_MS, b"run-x", encode_event(events[0])),
    ]
    # Set aside in the middle of the log: what follows them is still replayed.
    log = [*as_records(events[:n]), *bad, *as_records(events[n:], first=n + 3)]
    kafka = LogKafka({0: log})
    archive(store, log[:4])

    result = replay_all(source(store, kafka))

    assert result.states == {
        run: fold(
            [
                (r.offset, e)
                for r, e in zip(log[:n] + log[n + 3 :], events, strict=True)
                if e.run_id == run
            ]
        )
        for run in ("run-a", "run-b")
    }
    assert result.stats.set_aside == {"null_value": 1, "undecodable": 1, "key_mismatch": 1}
    assert [p.split(": ")[:2] for p in result.problems] == [
        [f"{TOPIC}[0]@{n}", "null_value"],
        [f"{TOPIC}[0]@{n + 1}", "undecodable"],
        [f"{TOPIC}[0]@{n + 2}", "key_mismatch"],
    ]
    # The live processor's own detail, naming the record where it was read.
    assert result.problems[0].startswith(
        f"{TOPIC}[0]@{n}: null_value: record {TOPIC}[0]@{n} has no value"
    )


def test_only_the_first_100_problems_are_kept_and_every_one_counted(
    store: BlobArchive,
) -> None:
    kafka = LogKafka({0: [ArchivedRecord(o, T0_MS, b"run-a", None) for o in range(101)]})

    result = replay_all(source(store, kafka))

    assert result.stats.set_aside == {"null_value": 101}
    assert len(result.problems) == 100 and result.problems[-1].startswith(f"{TOPIC}[0]@99:")


def test_a_record_larger_than_the_processors_limit_is_set_aside(
    store: BlobArchive, events: list[AgentEvent]
) -> None:
    records = as_records(events[:3])
    limit = max(len(r.value or b"") for r in records) - 1
    kafka = LogKafka({0: records})

    result = replay_all(source(store, kafka, max_event_bytes=limit))

    assert sum(result.stats.set_aside.values()) >= 1
    assert set(result.stats.set_aside) == {"oversize"}
    assert replay_all(source(store, kafka)).stats.set_aside == {}


def test_duplicates_and_refused_events_are_counted_and_observed(
    store: BlobArchive,
) -> None:
    a = make_run("run-a", steps=("one",))
    stray = make_run("run-b")[1]  # a step of a run that never started
    assert isinstance(stray, StepStarted)
    events = [*a, a[1], a[2], stray]  # two duplicates; a step of a run never started
    kafka = LogKafka({0: as_records(events)})
    outcomes: list[str] = []

    result = replay_all(
        source(store, kafka), observe=lambda r, e, o: outcomes.append(type(o).__name__)
    )

    assert (result.stats.applied, result.stats.duplicates, result.stats.rejected) == (
        len(a),
        2,
        1,
    )
    assert outcomes[-3:] == [Duplicate.__name__, Duplicate.__name__, "Rejected"]
    assert set(result.states) == {"run-a"}


# -- the archive's own checks --------------------------------------------------------------


class DisorderedStore:
    """The archive store, with one segment's records replaced (a damaged or wrong blob)."""

    def __init__(self, store: BlobArchive, records: list[ArchivedRecord]) -> None:
        self._store = store
        self._records = records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_segment(self, manifest: SegmentManifest) -> Iterator[ArchivedRecord]:
        return iter(self._records if manifest.first_offset == 5 else [])


@pytest.mark.parametrize(
    ("offsets", "bad"),
    [((5, 5), 5), ((5, 6, 4), 4), ((5, 10), 10), ((7, 6), 6)],
    ids=["repeated", "behind", "past-the-end", "backwards"],
)
def test_segment_records_out_of_order_or_range_stop_the_replay(
    store: BlobArchive, events: list[AgentEvent], offsets: tuple[int, ...], bad: int
) -> None:
    records = as_records(events)
    archive(store, records[:5])
    archive(store, records[5:10])
    store = DisorderedStore(store, [records[o] for o in offsets])
    span = plan_partition(store.list_manifests(TOPIC, 0), 0, kafka_low=10, kafka_end=10)

    with pytest.raises(
        ReplayError, match=rf"record offset {bad} out of order or outside 5\.\.9; run `runstate"
    ):
        list(iter_history(source(store, LogKafka({0: []})), span))  # type: ignore[arg-type]


def test_an_expired_segment_is_skipped_and_the_rest_replays(
    store: BlobArchive, events: list[AgentEvent]
) -> None:
    records = as_records(events)
    archive(store, records[:5])
    archive(store, records[5:10])
    store.delete_segment(store.list_manifests(TOPIC, 0)[0], at=CREATED)
    kafka = LogKafka({0: records}, low={0: 10})
    progress = Progress()

    result = replay_all(source(store, kafka), progress=progress)

    assert result.spans[0].expired == ((0, 4),) and result.spans[0].held == ()
    assert result.stats.archive_records == 5
    assert progress.totals == [len(events) - 5]
    # The runs' starts expired with the first segment: what follows is refused, never guessed.
    assert result.stats.applied + result.stats.rejected + result.stats.duplicates == len(events) - 5


def test_a_gap_between_archive_and_kafka_stops_the_replay_naming_it(
    store: BlobArchive, events: list[AgentEvent]
) -> None:
    records = as_records(events)
    archive(store, records[:5])
    kafka = LogKafka({0: records}, low={0: 8})

    with pytest.raises(
        ReplayError,
        match=r"offsets 5\.\.7 of rs.events/0 are neither archived nor in Kafka \(earliest offset"
        r" 8\); history cannot be rebuilt past them. Restore the missing segments, then replay"
        r" again",
    ):
        replay_all(source(store, kafka))
    assert kafka.reads == []


def test_overlapping_segments_are_named_with_the_overlap(events: list[AgentEvent]) -> None:
    first = build_segment(TOPIC, 0, as_records(events[:10]), created_at=CREATED).manifest
    inside = build_segment(TOPIC, 0, as_records(events[5:8], 5), created_at=CREATED).manifest
    across = build_segment(TOPIC, 0, as_records(events[5:12], 5), created_at=CREATED).manifest

    with pytest.raises(
        ReplayError,
        match=r"archive segments of rs.events/0 overlap at offsets 5\.\.7; run `runstate"
        r" archive verify` and remove the wrong segment",
    ):
        plan_partition([first, inside], 0, kafka_low=0, kafka_end=20, topic=TOPIC)
    with pytest.raises(ReplayError, match=r"overlap at offsets 5\.\.9;"):
        plan_partition([across, first], 0, kafka_low=0, kafka_end=20, topic=TOPIC)


def test_a_span_names_its_partition_and_reads_the_chain_in_offset_order(
    events: list[AgentEvent],
) -> None:
    records = as_records(events)
    one = build_segment(TOPIC, 3, records[:5], created_at=CREATED).manifest
    two = build_segment(TOPIC, 3, records[5:9], created_at=CREATED).manifest

    span = plan_partition(archive_chain([two, one], []), 3, kafka_low=2, kafka_end=12)

    assert span == PartitionSpan(3, (one, two), 9, 2, 12)
