"""The baseline: the same job on Quix Streams (``python -m benchmarks.baseline_quix``).

Same input (the events topic our SDK wrote), same Avro decoding (our codec), same reducer
(:func:`runstate.runs.reducer.apply`), state as the state codec's bytes in Quix's
RocksDB store with its changelog topic, and the same outputs: ``RunStateChanged`` (our codec)
to the state-changes topic and the run's summary (:mod:`runstate.runs.summary`, as the
runtime produces it) to the run-state topic. No dead-letter topic:
the workload has no bad records, so that path costs neither system anything.
``--guarantee exactly-once`` is Quix's Kafka-transaction mode (``processing_guarantee``), the
counterpart of the runtime's exactly-once; ``at-least-once`` that of its at-least-once.

Runs in its own venv (see :data:`benchmarks.harness.QUIX_PYTHON`); imports only runstate's
pure layers, never the harness.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.state.rocksdb import RocksDBOptions

from runstate.runs.reducer import Applied, apply
from runstate.runs.state_codec import StateCodec
from runstate.runs.summary import SummaryCodec
from runstate.schemas.codec import default_codec
from runstate.schemas.convert import decode_event
from runstate.streams.topics import TopicNames

_STATE_KEY = "run"


def _dumps(value: Any) -> bytes:
    # Quix serialises state keys with the same function: keep its JSON for those.
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def _loads(value: bytes) -> Any:
    return value


def build(args: argparse.Namespace) -> Application:
    names = TopicNames(args.prefix)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"{args.prefix}-quix",
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        commit_interval=args.commit_interval,
        processing_guarantee=args.guarantee,
        # state values are the state codec's bytes, stored as they are (no JSON)
        rocksdb_options=RocksDBOptions(dumps=_dumps, loads=_loads),
        consumer_extra_config={
            "session.timeout.ms": int(args.session_timeout * 1000),
            "heartbeat.interval.ms": 1000,
        },
        producer_extra_config={"enable.idempotence": True, "acks": "all", "linger.ms": 5},
        loglevel="WARNING",
    )
    events = app.topic(names.events, key_deserializer="bytes", value_deserializer="bytes")
    changes = app.topic(names.state_changes, key_serializer="bytes", value_serializer="bytes")
    latest = app.topic(names.latest_state, key_serializer="bytes", value_serializer="bytes")
    codec = default_codec()
    states = StateCodec(codec)
    summaries = SummaryCodec(codec)

    def process(value: bytes, state: State) -> tuple[bytes, bytes] | None:
        ctx = message_context()
        event = decode_event(
            value, codec=codec, topic=ctx.topic, partition=ctx.partition, offset=ctx.offset
        )
        raw = state.get(_STATE_KEY)
        current = None if raw is None else states.decode_state(raw)
        outcome = apply(current, event, offset=ctx.offset)
        if not isinstance(outcome, Applied):
            return None
        encoded = states.encode_state(outcome.state)
        state.set(_STATE_KEY, encoded)
        return states.encode_change(outcome.change), summaries.encode_state_summary(outcome.state)

    out = app.dataframe(events).apply(process, stateful=True).filter(lambda v: v is not None)
    out.apply(lambda v: v[0]).to_topic(changes)
    out.apply(lambda v: v[1]).to_topic(latest)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument(
        "--guarantee", choices=("at-least-once", "exactly-once"), default="at-least-once"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    build(args).run()


if __name__ == "__main__":
    main()
