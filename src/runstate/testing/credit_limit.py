"""The article's example agent: a credit-limit request with a manager's approval.

Steps, in the order the agent runs them every time it is (re)started:

1. ``check_form`` - check the required fields; an invalid phone makes the agent ask the
   applicant for a correction (a notification, sent once) and save the clean version as the
   step's output. The model call that checked the form is recorded (request id, model).
2. ``manager_approval`` - notify the manager (once) and wait for the decision on the clean
   form. The agent process exits here; whoever resumes it later starts at step 3.
3. ``scoring`` - ask the scoring service; a timeout is retried (only this step) after the
   policy's backoff.
4. ``notify_decision`` - tell the applicant (once), then complete the run.

Side effects go to an :class:`~runstate.testing.effects.EffectsService`. Run one step of it
from a shell with ``python -m runstate.testing.credit_limit {start,resume} RUN_ID
--effects-url URL``; the exit code says what happened (0 completed, 10 waiting, 1 failed,
4 a person must reconcile an action).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from runstate.agents.approvals import canonical_json
from runstate.agents.client import HttpRunStateReader
from runstate.agents.process import (
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_RECONCILE,
    EXIT_WAITING,
    drive_once,
)
from runstate.agents.retry import RetryPolicy
from runstate.agents.steps import DurableRun, StepContext
from runstate.crypto import cipher_from_settings
from runstate.testing.effects import EffectsClient

__all__ = [
    "AGENT",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_RECONCILE",
    "EXIT_WAITING",
    "PROMPT_VERSION",
    "SAMPLE_REQUEST",
    "CreditLimitAgent",
    "main",
    "notification_keys",
]

AGENT = "credit-limit"
PROMPT_VERSION = "credit-check@3"
MANAGER = "manager.aliya"

#: A request as it arrives: the phone is not a valid Kazakh mobile number.
SAMPLE_REQUEST: dict[str, Any] = {
    "company": "Acme LLP",
    "iin": "990101300123",
    "phone": "8 701 123 45",
    "email": "cfo@acme.example",
    "limit": 50000,
}

_PHONE = re.compile(r"^\+7\d{10}$")


def _normalise_phone(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    if len(digits) == 11 and digits[0] in "78":
        return "+7" + digits[1:]
    return text


def notification_keys(run_id: str) -> dict[str, str]:
    """The idempotency key of each notification the agent sends for ``run_id``, by purpose:
    ``correction`` (sent when the phone is invalid, as in :data:`SAMPLE_REQUEST`),
    ``manager`` and ``decision``. Each is sent at most once per run."""
    return {
        "correction": f"{run_id}:ask-correction:phone",
        "manager": f"{run_id}:notify-manager",
        "decision": f"{run_id}:notify-decision",
    }


def _applicant_reply(field_name: str) -> str:
    """The applicant's answer to a correction request (the demo's stand-in for a person)."""
    return {"phone": "+7 701 123 45 67"}[field_name]


@dataclass
class CreditLimitAgent:
    """The agent's logic; :meth:`drive` runs (or resumes) one run to its end or next wait."""

    effects: EffectsClient
    manager: str = MANAGER
    scoring_timeout_s: float = 1.0
    scoring_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=3, base_s=1.0, factor=2.0)
    )

    def drive(self, run: DurableRun) -> str:
        """Run every step not done yet; returns the decision.

        Raises:
            RunSuspended: the run waits for the manager; call again after the decision.
            StepError, ReconcileRequired: the run failed (it is marked so in its state).
        """
        request = json.loads(run.state().input)
        clean = json.loads(
            run.step("check_form", lambda ctx: self.check_form(ctx, request)) or "{}"
        )
        decision = run.await_approval(
            "manager_approval",
            approver=self.manager,
            subject={"form": clean, "limit": clean["limit"]},
            due=timedelta(hours=4),
            on_request=self.notify_manager,
        )
        if not decision.granted:
            outcome = f"declined by {decision.decided_by}: {decision.comment or 'no reason'}"
        else:
            score = run.step(
                "scoring", lambda ctx: self.score(ctx, clean), retry=self.scoring_retry
            )
            outcome = f"approved by {decision.decided_by}, {score}"
        run.step("notify_decision", lambda ctx: self.notify_applicant(ctx, clean, outcome))
        run.complete(output_ref=outcome)
        return outcome

    # -- steps -------------------------------------------------------------------------------
    def check_form(self, ctx: StepContext, request: dict[str, Any]) -> str:
        """Validate the form; ask the applicant to correct bad fields; return the clean form."""
        ctx.record_model_call(
            f"req-{ctx.run.run_id[-12:]}-form-{ctx.attempt}",
            "gpt-4o-mini",
            tags={"route": "gateway", "purpose": "form-check"},
        )
        clean = dict(request)
        if not re.fullmatch(r"\d{12}", str(clean.get("iin", ""))):
            raise ValueError("the IIN must be 12 digits")
        clean["phone"] = _normalise_phone(str(clean.get("phone", "")))
        if not _PHONE.match(clean["phone"]):
            key = notification_keys(ctx.run.run_id)["correction"]
            ctx.call_once(
                key,
                lambda: (
                    self.effects.perform(
                        "notification",
                        key=key,
                        payload={"to": clean["email"], "text": "please correct your phone number"},
                    ).external_id
                ),
                system="notifications",
                reconcile=lambda k: self.effects.lookup("notification", k),
            )
            clean["phone"] = _normalise_phone(_applicant_reply("phone"))
        return canonical_json(clean)

    def notify_manager(self, ctx: StepContext) -> None:
        """Tell the manager a request waits for them (once, whatever happens later)."""
        key = notification_keys(ctx.run.run_id)["manager"]
        ctx.call_once(
            key,
            lambda: (
                self.effects.perform(
                    "notification", key=key, payload={"to": self.manager, "text": "approval needed"}
                ).external_id
            ),
            system="notifications",
            reconcile=lambda k: self.effects.lookup("notification", k),
        )

    def score(self, ctx: StepContext, clean: dict[str, Any]) -> str:
        """Ask the scoring service (a read: safe to repeat, so no ledger entry)."""
        receipt = self.effects.perform(
            "scoring",
            key=f"{ctx.run.run_id}:scoring:attempt-{ctx.attempt}",
            payload=clean,
            timeout_s=self.scoring_timeout_s,
        )
        return f"score {receipt.external_id}"

    def notify_applicant(self, ctx: StepContext, clean: dict[str, Any], outcome: str) -> str:
        """Tell the applicant the decision (once)."""
        key = notification_keys(ctx.run.run_id)["decision"]
        result = ctx.call_once(
            key,
            lambda: (
                self.effects.perform(
                    "notification", key=key, payload={"to": clean["email"], "text": outcome}
                ).external_id
            ),
            system="notifications",
            reconcile=lambda k: self.effects.lookup("notification", k),
        )
        return result.external_id


def main(argv: list[str] | None = None) -> int:
    """Start or resume one run in this process; see the module docstring for exit codes."""
    from runstate.settings import load_settings
    from runstate.streams.producer import EventProducer

    parser = argparse.ArgumentParser(description="the credit-limit example agent")
    parser.add_argument("action", choices=["start", "resume"])
    parser.add_argument("run_id")
    parser.add_argument("--effects-url", required=True)
    parser.add_argument("--query-url", default=None)
    parser.add_argument("--input", default=None, help="request JSON (start only)")
    args = parser.parse_args(argv)
    s = load_settings()
    agent = CreditLimitAgent(EffectsClient(args.effects_url))
    with EventProducer(
        s, producer_name="credit-limit-agent", sealer=cipher_from_settings(s)
    ) as producer:
        reader = HttpRunStateReader(
            args.query_url or s.query_url,
            bootstrap_servers=s.bootstrap_servers,
            events_topic=producer.names.events,
        )

        def start_or_resume() -> str:
            if args.action == "start":
                run = DurableRun.start(
                    producer,
                    reader,
                    run_id=args.run_id,
                    agent=AGENT,
                    input=args.input or json.dumps(SAMPLE_REQUEST),
                    prompt_version=PROMPT_VERSION,
                    owner="loans-desk",
                    source="demo",
                )
            else:
                run = DurableRun.attach(producer, reader, args.run_id)
            return agent.drive(run)

        outcome = drive_once(start_or_resume)
    print(
        json.dumps({"run_id": args.run_id, "status": outcome.status, "detail": outcome.detail}),
        flush=True,
    )
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
