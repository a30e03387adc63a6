"""The run-state task without Kafka: a memory store, and a context that records outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from runstate.runs.dead_letters import HEADER_REASON, DeadLetterReason, SourceRecord
from runstate.runs.layout import load_run
from runstate.runs.reducer import fold
from runstate.runs.state import RunState
from runstate.runs.state_codec import StateCodec
from runstate.runs.summary import SummaryCodec, decode_summary, summarize
from runstate.runtime import run_task
from runstate.runtime.memory_store import MemoryStore
from runstate.runtime.run_task import LayoutTable, RunTask
from runstate.runtime.store import PartitionTransaction
from runstate.schemas.convert import decode_event, encode_event
from runstate.schemas.events import AgentEvent, StepStarted
from runstate.streams.topics import TopicNames
from tests.factories import RunBuilder, make_run

NAMES = TopicNames("t")
CODEC = StateCodec()


def _decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
    return decode_event(data, topic=topic, partition=partition, offset=offset)


@dataclass
class Output:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: dict[str, bytes]


@dataclass
class Context:
    """A checkpoint stand-in: overlays over a memory store, outputs in a list."""

    store: MemoryStore = field(default_factory=MemoryStore)
    overlays: dict[int, PartitionTransaction] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)

    def transaction(self, partition: int) -> PartitionTransaction:
        if partition not in self.overlays:
            self.overlays[partition] = PartitionTransaction(self.store.open(partition))
        return self.overlays[partition]

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        hs = {k: v.encode() if isinstance(v, str) else v or b"" for k, v in headers or []}
        self.outputs.append(Output(topic, key, value, partition, hs))

    def processed(self, partition: int, offset: int) -> None:
        self.positions[partition] = offset + 1

    def commit(self) -> None:
        for p, txn in self.overlays.items():
            self.store.open(p).apply(txn.writes(), changelog_offset=0)
        self.overlays.clear()
        self.outputs.clear()

    def abort(self) -> None:
        self.overlays.clear()
        self.outputs.clear()

    def on(self, topic: str) -> list[Output]:
        return [o for o in self.outputs if o.topic == topic]


def _task(cache_size: int = 100) -> RunTask:
    return RunTask(
        table=LayoutTable(),
        codec=CODEC,
        summaries=SummaryCodec(),
        decode=_decode,
        names=NAMES,
        worker_id="w1",
        max_event_bytes=64 * 1024,
        cache_size=cache_size,
    )


def _records(events: list[AgentEvent], *, partition: int = 0, first: int = 0) -> list[SourceRecord]:
    return [
        SourceRecord(NAMES.events, partition, first + i, e.run_id.encode(), encode_event(e))
        for i, e in enumerate(events)
    ]


def _stored(ctx: Context, run_id: str, partition: int = 0) -> RunState:
    state = load_run(ctx.transaction(partition), run_id)
    assert state is not None
    return state


def test_applied_events_make_one_change_each_and_one_summary_per_run() -> None:
    a, b = make_run("run-a", seed=1), make_run("run-b", seed=2)
    mixed = [e for pair in zip(a, b, strict=False) for e in pair]
    ctx = Context()
    outcomes = _task().process(_records(mixed), ctx)
    assert outcomes == ["applied"] * len(mixed)
    changes = [CODEC.decode_change(o.value or b"") for o in ctx.on(NAMES.state_changes)]
    assert [(c.run_id, c.version) for c in changes if c.run_id == "run-a"] == [
        ("run-a", v) for v in range(1, len(a) + 1)
    ]
    latest = ctx.on(NAMES.latest_state)
    assert sorted(o.key for o in latest) == [b"run-a", b"run-b"]
    folded_a = fold([(i * 2, e) for i, e in enumerate(a)])
    folded_b = fold([(i * 2 + 1, e) for i, e in enumerate(b)])
    assert folded_a is not None and folded_b is not None
    assert {o.key: decode_summary(o.value or b"") for o in latest} == {
        b"run-a": summarize(folded_a),
        b"run-b": summarize(folded_b),
    }
    assert _stored(ctx, "run-a") == fold([(i * 2, e) for i, e in enumerate(a)])
    assert ctx.positions == {0: len(mixed)}


def test_a_long_runs_latest_state_record_stays_small_and_is_the_folds_summary() -> None:
    """5,000 model calls: a whole-state record would be 181 KB and growing 36 bytes a call
    (past the broker's default 1 MB ``message.max.bytes`` at about 29,000 calls, sooner with
    longer ids or tags); the summary stays bounded."""
    b = RunBuilder("run-long")
    b.start()
    b.emit(StepStarted, step="draft", step_index=0, attempt=1)
    for _ in range(5000):
        b.model_call("draft")
    ctx, task = Context(), _task()
    records = _records(b.events)
    sizes = []
    for first in range(0, len(records), 500):
        assert set(task.process(records[first : first + 500], ctx)) == {"applied"}
        [latest] = ctx.on(NAMES.latest_state)
        assert latest.value is not None
        sizes.append(len(latest.value))
        ctx.commit()
    assert max(sizes) < 1024, sizes
    assert max(sizes) - min(sizes) <= 4, sizes  # only varints grow
    folded = fold([(i, e) for i, e in enumerate(b.events)])
    assert folded is not None and len(folded.model_calls) == 5000
    assert decode_summary(latest.value) == summarize(folded)
    assert _stored(ctx, "run-long") == folded


def test_redelivered_records_are_duplicates_and_make_nothing() -> None:
    events = make_run("run-d", seed=3)
    ctx, task = Context(), _task()
    task.process(_records(events), ctx)
    ctx.commit()
    again = task.process(_records(events), ctx)
    assert again == ["duplicate"] * len(events)
    assert ctx.outputs == []
    assert not ctx.transaction(0)  # nothing written


def test_rejected_and_undecodable_records_are_dead_lettered_once() -> None:
    b = RunBuilder("run-r", seed=4)
    b.start()
    orphan = make_run("run-orphan", seed=5)[1]  # a StepStarted before any RunStarted
    records = [
        *_records(b.events),
        SourceRecord(NAMES.events, 0, 1, b"run-orphan", encode_event(orphan)),
        SourceRecord(NAMES.events, 0, 2, b"run-x", b"\x00garbage"),
        SourceRecord(NAMES.events, 0, 3, None, encode_event(orphan)),
    ]
    ctx = Context()
    assert _task().process(records, ctx) == ["applied"] + ["dead_letter"] * 3
    dead = ctx.on(NAMES.dead_letters)
    assert [d.headers[HEADER_REASON].decode() for d in dead] == [
        DeadLetterReason.REJECTED,
        DeadLetterReason.UNDECODABLE,
        DeadLetterReason.MISSING_KEY,
    ]
    assert dead[1].value == b"\x00garbage" and dead[1].key == b"run-x"
    assert ctx.positions == {0: 4}


def test_a_reducer_failure_is_a_dead_letter_not_a_stopped_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(state: RunState | None, event: AgentEvent, *, offset: int | None = None) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(run_task, "apply", broken)
    ctx = Context()
    outcomes = _task().process(_records(make_run("run-bug", seed=6)[:2]), ctx)
    assert outcomes == ["dead_letter", "dead_letter"]
    [first, _] = ctx.on(NAMES.dead_letters)
    assert first.headers[HEADER_REASON] == DeadLetterReason.PROCESSING_ERROR.value.encode()
    assert first.headers["rs-error-class"] == b"ZeroDivisionError"


def test_the_state_cache_is_forgotten_on_abort() -> None:
    b = RunBuilder("run-c", seed=7)
    b.start()
    ctx, task = Context(), _task()
    task.process(_records(b.events), ctx)
    ctx.commit()  # version 1 committed
    step = b.emit(StepStarted, step="collect", step_index=0, attempt=1)
    task.process(_records([step], first=1), ctx)  # version 2, in the cache, then aborted
    ctx.abort()
    task.forget()
    assert task.process(_records([step], first=1), ctx) == ["applied"]  # not a duplicate
    [change] = ctx.on(NAMES.state_changes)
    assert CODEC.decode_change(change.value or b"").version == 2


def test_without_forgetting_an_aborted_state_would_be_served() -> None:
    """Why the abort hook exists: the cache holds uncommitted states."""
    b = RunBuilder("run-s", seed=8)
    b.start()
    ctx, task = Context(), _task()
    task.process(_records(b.events), ctx)
    ctx.commit()
    step = b.emit(StepStarted, step="collect", step_index=0, attempt=1)
    task.process(_records([step], first=1), ctx)
    ctx.abort()
    assert task.process(_records([step], first=1), ctx) == ["duplicate"]


def test_a_leaving_partition_takes_its_cached_states_with_it() -> None:
    b = RunBuilder("run-p", seed=9)
    b.start()
    ctx, task = Context(), _task()
    task.process(_records(b.events, partition=3), ctx)
    ctx.commit()
    ctx.store.drop(3)  # another worker owns it now; this copy is gone
    task.forget([3])
    step = b.emit(StepStarted, step="collect", step_index=0, attempt=1)
    # with the cached state this would apply on top of version 1; without it the run is unknown
    assert task.process(_records([step], partition=3, first=1), ctx) == ["dead_letter"]
