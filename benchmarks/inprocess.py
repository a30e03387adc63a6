"""Figures without Kafka: the codec against plain fastavro, the processor's per-event
ceiling (decode, reduce, RocksDB), and a pyinstrument profile of that loop.

The ceiling does per event what :class:`runstate.processors.worker.RunProcessor` does, in
the same order, minus Kafka: decode the event, read and decode the run's state, apply,
encode the new state and the change, write the state to RocksDB (rocksdict directly).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from rocksdict import Options, Rdict

from runstate.runs.reducer import Applied, apply
from runstate.runs.state_codec import StateCodec, state_to_record
from runstate.schemas.codec import SingleObjectCodec, default_codec, encode
from runstate.schemas.convert import decode_event, encode_event, event_to_record, record_to_event
from runstate.schemas.events import AgentEvent

__all__ = ["ceiling", "codec_rates", "profile_loop", "stage_times"]

_HEADER = 10  # C3 01 + 8-byte fingerprint


def _rate(fn: Callable[[], int]) -> float:
    started = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - started)


def _summary(samples: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def codec_rates(
    events: Sequence[AgentEvent], encoded: Sequence[bytes], *, rounds: int
) -> dict[str, Any]:
    """Records/s of our codec paths and of plain fastavro on the same records, alternating
    within each round; ratios are ours / fastavro per round (median, min-max)."""
    codec = default_codec()
    pairs = [event_to_record(e) for e in events]
    parsed = [(schema.parsed, record) for schema, record in pairs]
    bodies = [(codec.decode(b).record, b[_HEADER:]) for b in encoded]
    writer_parsed = [schema.parsed for schema, _ in pairs]
    states = _states(events)
    state_codec = StateCodec(codec)
    state_schema = codec.catalog.latest("runstate.state.RunState").parsed
    state_records = [state_to_record(s) for s in states]
    state_bytes = [state_codec.encode_state(s) for s in states]

    def fastavro_encode() -> int:
        for schema, record in parsed:
            buf = BytesIO()
            schemaless_writer(buf, schema, record)
            buf.getvalue()
        return len(parsed)

    def fastavro_decode() -> int:
        for schema, (_, body) in zip(writer_parsed, bodies, strict=True):
            schemaless_reader(BytesIO(body), schema, None)
        return len(bodies)

    def fastavro_encode_state() -> int:
        for record in state_records:
            buf = BytesIO()
            schemaless_writer(buf, state_schema, record)
        return len(state_records)

    def fastavro_decode_state() -> int:
        for data in state_bytes:
            schemaless_reader(BytesIO(data[_HEADER:]), state_schema, None)
        return len(state_bytes)

    variants: dict[str, Callable[[], int]] = {
        "fastavro_encode": fastavro_encode,
        "codec_encode": lambda: sum(1 for s, r in pairs if encode(r, s)),
        "encode_event": lambda: sum(1 for e in events if encode_event(e)),
        "fastavro_decode": fastavro_decode,
        "codec_decode": lambda: sum(1 for b in encoded if codec.decode(b)),
        "decode_event": lambda: sum(1 for b in encoded if decode_event(b, codec=codec)),
        "fastavro_encode_state": fastavro_encode_state,
        "encode_state": lambda: sum(1 for s in states if state_codec.encode_state(s)),
        "fastavro_decode_state": fastavro_decode_state,
        "decode_state": lambda: sum(1 for b in state_bytes if state_codec.decode_state(b)),
    }
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(_rate(fn))
    ratios = {
        "encode_event/fastavro": ("encode_event", "fastavro_encode"),
        "codec_encode/fastavro": ("codec_encode", "fastavro_encode"),
        "decode_event/fastavro": ("decode_event", "fastavro_decode"),
        "codec_decode/fastavro": ("codec_decode", "fastavro_decode"),
        "encode_state/fastavro": ("encode_state", "fastavro_encode_state"),
        "decode_state/fastavro": ("decode_state", "fastavro_decode_state"),
    }
    return {
        "records": len(events),
        "state_bytes_median": statistics.median(len(b) for b in state_bytes),
        "rates": {name: _summary(v) for name, v in samples.items()},
        "ratios": {
            name: _summary([a / b for a, b in zip(samples[x], samples[y], strict=True)])
            for name, (x, y) in ratios.items()
        },
    }


def _states(events: Sequence[AgentEvent]) -> list[Any]:
    """The state after each event (what the processor encodes per event)."""
    by_run: dict[str, Any] = {}
    out = []
    for offset, event in enumerate(events):
        outcome = apply(by_run.get(event.run_id), event, offset=offset)
        assert isinstance(outcome, Applied)
        by_run[event.run_id] = outcome.state
        out.append(outcome.state)
    return out


class _Loop:
    """The per-event work of the processor, on rocksdict in a temp folder."""

    def __init__(self, folder: Path) -> None:
        self.codec: SingleObjectCodec = default_codec()
        self.states = StateCodec(self.codec)
        options = Options()
        options.create_if_missing(True)
        self.db = Rdict(str(folder), options)

    def run(self, encoded: Sequence[bytes]) -> int:
        db, codec, states = self.db, self.codec, self.states
        for offset, data in enumerate(encoded):
            event = decode_event(data, codec=codec, topic="events", partition=0, offset=offset)
            key = event.run_id.encode()
            raw = db.get(key)
            state = None if raw is None else states.decode_state(raw)
            outcome = apply(state, event, offset=offset)
            assert isinstance(outcome, Applied)
            state_bytes = states.encode_state(outcome.state)
            states.encode_change(outcome.change)
            db[key] = state_bytes
        return len(encoded)

    def close(self) -> None:
        self.db.close()


def ceiling(encoded_rounds: Sequence[Sequence[bytes]]) -> dict[str, Any]:
    """Events/s of the in-process loop, one fresh RocksDB per round (each round's workload
    must have its own runs)."""
    samples = []
    for encoded in encoded_rounds:
        with tempfile.TemporaryDirectory(prefix="runstate-ceiling-") as folder:
            loop = _Loop(Path(folder))
            samples.append(_rate(lambda enc=encoded, lp=loop: lp.run(enc)))
            loop.close()
    return _summary(samples)


def profile_loop(encoded: Sequence[bytes], *, interval_s: float = 0.001) -> dict[str, Any]:
    """pyinstrument over the in-process loop; top functions by self time and by stage."""
    from pyinstrument import Profiler

    with tempfile.TemporaryDirectory(prefix="runstate-profile-") as folder:
        loop = _Loop(Path(folder))
        profiler = Profiler(interval=interval_s, use_timing_thread=True)
        profiler.start()
        started = time.perf_counter()
        n = loop.run(encoded)
        elapsed = time.perf_counter() - started
        profiler.stop()
        loop.close()
    root = profiler.last_session.root_frame()
    assert root is not None
    self_time: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)

    def walk(frame: Any, on_stack: frozenset[str]) -> None:
        name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        # pyinstrument's synthetic "[self]" children are this frame's own time
        children = [c for c in frame.children if not c.is_synthetic]
        self_time[name] += frame.time - sum(c.time for c in children)
        if name not in on_stack:
            inclusive[name] += frame.time
        for child in children:
            walk(child, on_stack | {name})

    walk(root, frozenset())
    total = root.time
    us = 1e6 / n
    top_self = sorted(self_time.items(), key=lambda kv: -kv[1])[:15]
    return {
        "events": n,
        "us_per_event_profiled": elapsed * 1e6 / n,
        "top_self": [
            {"function": k, "us_per_event": v * us, "share": v / total} for k, v in top_self
        ],
    }


def stage_times(encoded: Sequence[bytes]) -> dict[str, float]:
    """Microseconds per event of each step of the loop, timed directly (perf_counter around
    each step): unlike a profiler's hook, this does not inflate Python-heavy steps."""
    clock = time.perf_counter
    totals: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory(prefix="runstate-stages-") as folder:
        loop = _Loop(Path(folder))
        db, codec, states = loop.db, loop.codec, loop.states
        for offset, data in enumerate(encoded):
            t0 = clock()
            decoded = codec.decode(data, topic="events", partition=0, offset=offset)
            t1 = clock()
            event = record_to_event(decoded.name, decoded.record)
            t2 = clock()
            key = event.run_id.encode()
            raw = db.get(key)
            t3 = clock()
            state = None if raw is None else states.decode_state(raw)
            t4 = clock()
            outcome = apply(state, event, offset=offset)
            t5 = clock()
            assert isinstance(outcome, Applied)
            state_bytes = states.encode_state(outcome.state)
            t6 = clock()
            states.encode_change(outcome.change)
            t7 = clock()
            db[key] = state_bytes
            t8 = clock()
            for name, a, b in (
                ("event: Avro read (codec.decode)", t0, t1),
                ("event: pydantic model (record_to_event)", t1, t2),
                ("RocksDB get", t2, t3),
                ("decode_state", t3, t4),
                ("reducer apply", t4, t5),
                ("encode_state", t5, t6),
                ("encode_change", t6, t7),
                ("RocksDB put", t7, t8),
            ):
                totals[name] += b - a
        loop.close()
    return {name: total * 1e6 / len(encoded) for name, total in totals.items()}
