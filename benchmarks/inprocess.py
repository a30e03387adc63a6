"""Figures without Kafka: our codec paths against plain fastavro on the same records.

(The in-process ceiling of the faust processor's whole-state loop, and its profile, left
with that processor; the runtime's per-event cost is :mod:`benchmarks.run_length`.)
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from runstate.runs.reducer import Applied, apply
from runstate.runs.state_codec import StateCodec, state_to_record
from runstate.schemas.codec import default_codec, encode
from runstate.schemas.convert import decode_event, encode_event, event_to_record
from runstate.schemas.events import AgentEvent

__all__ = ["codec_rates"]

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
