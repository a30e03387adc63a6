"""Fresh steps with whichever ``runstate`` is first on ``PYTHONPATH``: run by
``benchmarks.steps`` with an earlier commit's ``src`` (``--baseline-ref``) against the same
broker and worker, so the SDK before a change is measured beside it in the same run.

Prints one JSON line: the latencies (ms) of fresh steps and, with ``--attaches``, of attaches
(of a run with one completed step). Uses only the SDK's public API of that time.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from runstate.agents import DurableRun, HttpRunStateReader
from runstate.streams.producer import EventProducer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--query-url", required=True)
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--steps-per-run", type=int, default=50)
    parser.add_argument("--attaches", type=int, default=0, help="also time this many attaches")
    args = parser.parse_args()
    producer = EventProducer(
        bootstrap_servers=args.bootstrap, topic_prefix=args.prefix, producer_name="bench-before"
    )
    reader = HttpRunStateReader(
        args.query_url, bootstrap_servers=args.bootstrap, events_topic=args.events_topic
    )
    ms: list[float] = []
    run: DurableRun | None = None
    for i in range(args.samples + 10 if args.samples else 0):
        if run is None or i % args.steps_per_run == 0:
            run = DurableRun.start(
                producer, reader, run_id=f"before-{uuid.uuid4().hex[:10]}", agent="bench",
                input="{}", prompt_version="bench@1", owner="bench", source="bench",
            )  # fmt: skip
        t0 = time.perf_counter()
        run.step(f"s{i}", lambda ctx: "ok")
        if i >= 10:  # the first ten are a warm-up
            ms.append((time.perf_counter() - t0) * 1000)
    attach_ms: list[float] = []
    if args.attaches:
        # As benchmarks.steps times ours: a run with one completed step.
        done = DurableRun.start(
            producer, reader, run_id=f"before-{uuid.uuid4().hex[:10]}", agent="bench",
            input="{}", prompt_version="bench@1", owner="bench", source="bench",
        )  # fmt: skip
        done.step("done", lambda ctx: "ok")
        for i in range(args.attaches + 3):  # the first three are a warm-up
            t0 = time.perf_counter()
            DurableRun.attach(producer, reader, done.run_id)
            if i >= 3:
                attach_ms.append((time.perf_counter() - t0) * 1000)
    producer.close()
    print(json.dumps({"fresh_step": ms, "attach": attach_ms}))


if __name__ == "__main__":
    main()
