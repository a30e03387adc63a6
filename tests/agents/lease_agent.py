"""A two-step agent run as a child process by the lease tests, so two real processes can
contend for one run and one can really die holding its lease.

* ``--hold`` - inside step ``one``, wait until another process has claimed the run (its
  state shows a newer epoch), then return: the step's completion is written late, under the
  old epoch, as a slow worker's would be.
* ``--die`` - SIGKILL itself inside step ``one``, lease held.
* ``--wait-for-lease`` - attach with ``takeover=False``; while another holder's lease runs,
  wait until it runs out, then claim.

Step ``two`` sends one e-mail through the counting service (``call_once``). Prints one JSON
line (status, detail, holder, epoch, waited) and exits as ``drive_once`` says (75: fenced).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta

from runstate.agents import DurableRun, HttpRunStateReader, StepContext
from runstate.agents.process import drive_once
from runstate.errors import RunLeased
from runstate.settings import load_settings
from runstate.streams.producer import EventProducer
from runstate.testing.effects import EffectsClient


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["start", "attach"])
    parser.add_argument("run_id")
    parser.add_argument("--effects-url", required=True)
    parser.add_argument("--query-url", required=True)
    parser.add_argument("--holder", required=True)
    parser.add_argument("--lease-s", type=float, default=30.0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--die", action="store_true")
    parser.add_argument("--wait-for-lease", action="store_true")
    args = parser.parse_args()
    s = load_settings()
    effects = EffectsClient(args.effects_url)
    report: dict[str, object] = {"holder": args.holder, "waited": 0}
    waits: list[str] = []
    with EventProducer(s, producer_name=args.holder) as producer:
        reader = HttpRunStateReader(
            args.query_url,
            bootstrap_servers=s.bootstrap_servers,
            events_topic=producer.names.events,
        )
        options = {"holder": args.holder, "lease": timedelta(seconds=args.lease_s)}

        def open_run() -> DurableRun:
            if args.action == "start":
                return DurableRun.start(
                    producer, reader, run_id=args.run_id, agent="lease-agent", input="{}",
                    prompt_version="t@1", owner="tests", source="pytest", **options,
                )  # fmt: skip
            while True:
                try:
                    return DurableRun.attach(
                        producer, reader, args.run_id, takeover=not args.wait_for_lease, **options
                    )
                except RunLeased as exc:
                    assert exc.until is not None
                    waits.append(exc.until.isoformat())
                    report["waited"] = len(waits)
                    time.sleep(max(0.0, (exc.until - datetime.now(UTC)).total_seconds()) + 0.05)

        def drive() -> str:
            run = open_run()
            report["epoch"] = run.epoch

            def one(ctx: StepContext) -> str:
                if args.die:
                    os.kill(os.getpid(), signal.SIGKILL)
                deadline = time.monotonic() + 60
                while args.hold and time.monotonic() < deadline:
                    state = reader.read(args.run_id)
                    if state is not None and (state.epoch or 0) > (run.epoch or 0):
                        break
                    time.sleep(0.05)
                return "one"

            def two(ctx: StepContext) -> str:
                key = f"{args.run_id}:email"
                return ctx.call_once(
                    key, lambda: effects.perform("email", key=key).external_id, system="email"
                ).external_id

            run.step("one", one)
            sent = run.step("two", two)
            run.complete(output_ref=sent)
            return sent or ""

        outcome = drive_once(drive)
    print(json.dumps({"status": outcome.status, "detail": outcome.detail, **report}), flush=True)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
