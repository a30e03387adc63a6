"""A small agent run as a child process by the integration tests, so it can really die.

``RUNSTATE_TEST_KILL_AT`` makes it SIGKILL itself at one point:

* ``mid_step`` - inside ``send_email``, after StepStarted, before the provider call;
* ``after_call`` - right after the provider answered, before the outcome is recorded.

``--unconfirmed`` drives the run with ``confirm_starts=False``.

Exit codes as :mod:`runstate.testing.credit_limit`: 0 completed, 10 waiting, 4 a person must
reconcile, 1 failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from runstate.agents import DurableRun, HttpRunStateReader, RetryPolicy, StepContext
from runstate.agents.process import drive_once
from runstate.settings import load_settings
from runstate.streams.producer import EventProducer
from runstate.testing.effects import EffectsClient

KILL_AT = os.environ.get("RUNSTATE_TEST_KILL_AT", "")


def _die_if(point: str) -> None:
    if point == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def ledger_agent(run: DurableRun, effects: EffectsClient, *, reconcile: bool) -> str:
    rid = run.run_id

    def prepare(ctx: StepContext) -> str:
        key = f"{rid}:prepare"
        return ctx.call_once(
            key, lambda: effects.perform("notification", key=key).external_id, system="notify"
        ).external_id

    def send_email(ctx: StepContext) -> str:
        _die_if("mid_step")
        key = f"{rid}:email"

        def call() -> str:
            external_id = effects.perform("email", key=key).external_id
            _die_if("after_call")
            return external_id

        return ctx.call_once(
            key,
            call,
            system="email",
            reconcile=(lambda k: effects.lookup("email", k)) if reconcile else None,
        ).external_id

    run.step("prepare", prepare)
    sent = run.step("send_email", send_email)
    run.step("finish", lambda ctx: f"done:{sent}")
    run.complete(output_ref=sent)
    return sent or ""


def retry_agent(run: DurableRun, effects: EffectsClient) -> str:
    def score(ctx: StepContext) -> str:
        key = f"{run.run_id}:attempt-{ctx.attempt}"
        return effects.perform("scoring", key=key, timeout_s=0.5).external_id

    out = run.step("score", score, retry=RetryPolicy(max_attempts=3, base_s=3.0))
    run.complete(output_ref=out)
    return out or ""


def pipeline_agent(run: DurableRun, effects: EffectsClient) -> str:
    """The article's story: collect, then scoring (which may fail until its retries are
    spent), then the decision; each step's service counts its calls."""
    rid = run.run_id
    run.step("collect", lambda ctx: effects.perform("collect", key=f"{rid}:collect").external_id)

    def score(ctx: StepContext) -> str:
        key = f"{rid}:attempt-{ctx.attempt}"
        return effects.perform("scoring", key=key, timeout_s=0.5).external_id

    out = run.step("score", score, retry=RetryPolicy(max_attempts=2, base_s=0.0))
    run.step("decide", lambda ctx: effects.perform("decide", key=f"{rid}:decide").external_id)
    run.complete(output_ref=out)
    return out or ""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["start", "resume"])
    parser.add_argument("run_id")
    parser.add_argument("--effects-url", required=True)
    parser.add_argument("--query-url", required=True)
    parser.add_argument("--mode", choices=["ledger", "retry", "pipeline"], default="ledger")
    parser.add_argument("--no-reconcile", action="store_true")
    parser.add_argument("--unconfirmed", action="store_true", help="confirm_starts=False")
    args = parser.parse_args()
    s = load_settings()
    effects = EffectsClient(args.effects_url)
    with EventProducer(s, producer_name="test-agent") as producer:
        reader = HttpRunStateReader(
            args.query_url,
            bootstrap_servers=s.bootstrap_servers,
            events_topic=producer.names.events,
        )
        options = {"max_inline_wait_s": 0.0, "confirm_starts": not args.unconfirmed}

        def start_or_resume() -> str:
            if args.action == "start":
                run = DurableRun.start(
                    producer, reader, run_id=args.run_id, agent="test-agent", input="{}",
                    prompt_version="t@1", owner="tests", source="pytest", **options,
                )  # fmt: skip
            else:
                run = DurableRun.attach(producer, reader, args.run_id, **options)
            if args.mode == "ledger":
                return ledger_agent(run, effects, reconcile=not args.no_reconcile)
            if args.mode == "pipeline":
                return pipeline_agent(run, effects)
            return retry_agent(run, effects)

        outcome = drive_once(start_or_resume)
    print(json.dumps({"status": outcome.status, "detail": outcome.detail}), flush=True)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
