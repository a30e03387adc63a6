"""The launch checks' synthetic agent: four durable steps, one approval, fake personal data.

``runstate check`` runs it as a child process, so it can really be killed::

    python -m runstate.checks {start,resume} RUN_ID \
        --effects-url URL --query-url URL

Kafka settings come from ``RUNSTATE_*``. Exit codes as the credit-limit agent: 0 completed,
10 waiting (for the approval), 4 a person must reconcile an action, 1 failed.

Steps, the same every time the agent runs:

1. ``collect``: records a model call and sends one notification (``call_once``);
2. ``enrich``: one ``crm`` effect. ``RUNSTATE_CHECK_KILL_AT=mid_step`` SIGKILLs the process
   inside this step, after ``StepStarted`` and before the effect: the worst moment to die;
3. ``approval``: waits for the fake approver to decide a subject holding fake personal data;
4. ``notify``: one email, asked for twice in a row with the same idempotency key (the second
   must come from the ledger, not the email service);

then completes the run, unless it is complete already (a re-run of a finished run writes
nothing). Every field the personal-data check looks at carries a recognisable token,
``check-pii-<tag>-<field>`` (:func:`pii_plan`), derived from the run id so the checking
process and this one agree without passing data around.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from runstate.agents.approvals import canonical_json
from runstate.agents.client import HttpRunStateReader
from runstate.agents.ports import EventSink
from runstate.agents.process import (
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_RECONCILE,
    EXIT_WAITING,
    drive_once,
)
from runstate.agents.steps import ActionOutcome, DurableRun, StepContext
from runstate.crypto import cipher_from_settings
from runstate.testing.effects import EffectsClient

__all__ = [
    "AGENT",
    "APPROVAL_STEP",
    "EFFECT_KEYS",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_RECONCILE",
    "EXIT_WAITING",
    "KILL_ENV",
    "RUN_ID_PREFIX",
    "STEPS",
    "PiiField",
    "drive",
    "main",
    "new_check_run_id",
    "pii_plan",
]

AGENT: Final = "runstate-check"
PROMPT_VERSION: Final = "launch-check@1"
SOURCE: Final = "runstate-check"
#: Every synthetic run id starts with this, so its events are easy to spot (and to ignore).
RUN_ID_PREFIX: Final = "check-"
KILL_ENV: Final = "RUNSTATE_CHECK_KILL_AT"
APPROVAL_STEP: Final = "approval"
STEPS: Final = ("collect", "enrich", APPROVAL_STEP, "notify")
#: The side effects of a complete run: idempotency key suffix -> kind at the effects service.
EFFECT_KEYS: Final = {"collect": "notification", "enrich": "crm", "notify": "email"}


def new_check_run_id(now: datetime | None = None) -> str:
    """``check-<UTC time>-<8 hex>``: unique, sortable, obviously synthetic."""
    when = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{RUN_ID_PREFIX}{when}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class PiiField:
    """A field of the synthetic run that carries fake personal data.

    Attributes:
        event_type: The event that carries it.
        field: The field's name in that event.
        token: The recognisable text; found anywhere means "in clear".
        value: The field's whole value; None for fields that are not text (they can only
            be dropped, never masked).
    """

    event_type: str
    field: str
    token: str
    value: str | None

    @property
    def name(self) -> str:
        return f"{self.event_type}.{self.field}"


def pii_plan(run_id: str) -> dict[tuple[str, str], PiiField]:
    """The fake personal data of ``run_id``, by (event type, field).

    Only the fields the synthetic run can fill are here; a policy may tag others (e.g.
    ``RunCancelled.by``), which the check then reports as not exercised.
    """
    tag = run_id.rsplit("-", 1)[-1]

    def token(slug: str) -> str:
        return f"check-pii-{tag}-{slug}"

    plain = {
        ("RunStarted", "owner"): "owner",
        ("RunStarted", "tenant"): "tenant",
        ("StepStarted", "input_ref"): "step-in",
        ("StepCompleted", "output_ref"): "step-out",
        ("ApprovalRequested", "approver"): "approver",
        ("ApprovalGranted", "by"): "decided-by",
        ("ApprovalGranted", "comment"): "comment",
        ("ExternalActionRecorded", "output_ref"): "action-out",
        ("RunCompleted", "output_ref"): "run-out",
    }
    plan = {key: PiiField(*key, token(slug), token(slug)) for key, slug in plain.items()}
    applicant = token("input")
    plan["RunStarted", "input"] = PiiField(
        "RunStarted",
        "input",
        applicant,
        canonical_json({"applicant": applicant, "purpose": "runstate launch check"}),
    )
    about = token("subject")
    plan["ApprovalRequested", "subject"] = PiiField(
        "ApprovalRequested", "subject", about, canonical_json(_subject(about))
    )
    plan["ModelCalled", "tags"] = PiiField("ModelCalled", "tags", token("model-tag"), None)
    return plan


def _subject(applicant: str) -> dict[str, Any]:
    return {"applicant": applicant, "decision": "launch check"}


def _die_if(point: str) -> None:
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def effect_key(run_id: str, step: str) -> str:
    """The idempotency key of ``step``'s side effect (see :data:`EFFECT_KEYS`)."""
    return f"{run_id}:{step}"


def drive(run: DurableRun, effects: EffectsClient) -> str:
    """Run every step not done yet; returns the run's output.

    Raises:
        RunSuspended: the run waits for its approval; run again after the decision.
        StepError, ReconcileRequired: the run failed.
    """
    rid = run.run_id
    pii = {key[0] + "." + key[1]: f for key, f in pii_plan(rid).items()}

    def once(ctx: StepContext, step: str, output_ref: str | None = None) -> str:
        kind, key = EFFECT_KEYS[step], effect_key(rid, step)
        return ctx.call_once(
            key,
            lambda: ActionOutcome(effects.perform(kind, key=key).external_id, output_ref),
            system=kind,
            reconcile=lambda k: effects.lookup(kind, k),
        ).external_id

    def collect(ctx: StepContext) -> str:
        ctx.record_model_call(
            f"{rid}-model-1", "check-model", tags={"applicant": pii["ModelCalled.tags"].token}
        )
        once(ctx, "collect")
        return pii["StepCompleted.output_ref"].token

    def enrich(ctx: StepContext) -> str:
        _die_if("mid_step")
        return once(ctx, "enrich")

    def notify(ctx: StepContext) -> str:
        first = once(ctx, "notify", pii["ExternalActionRecorded.output_ref"].token)
        second = once(ctx, "notify", pii["ExternalActionRecorded.output_ref"].token)
        return f"{first}/{second}"

    run.step("collect", collect, input_ref=pii["StepStarted.input_ref"].token)
    run.step("enrich", enrich)
    run.await_approval(
        APPROVAL_STEP,
        approver=pii["ApprovalRequested.approver"].token,
        subject=_subject(pii["ApprovalRequested.subject"].token),
        due=timedelta(hours=1),
    )
    sent = run.step("notify", notify)
    if not run.state().is_terminal:
        run.complete(output_ref=pii["RunCompleted.output_ref"].token)
    return sent or ""


def start(producer: EventSink, reader: HttpRunStateReader, run_id: str) -> DurableRun:
    """Record the synthetic run's ``RunStarted`` with its fake personal data."""
    pii = pii_plan(run_id)
    return DurableRun.start(
        producer,
        reader,
        run_id=run_id,
        agent=AGENT,
        input=str(pii["RunStarted", "input"].value),
        prompt_version=PROMPT_VERSION,
        owner=pii["RunStarted", "owner"].token,
        source=SOURCE,
        tenant=pii["RunStarted", "tenant"].token,
        max_inline_wait_s=0.0,
    )


def main(argv: list[str] | None = None) -> int:
    """Start or resume the synthetic run in this process; see the module docstring."""
    from runstate.settings import load_settings
    from runstate.streams.producer import EventProducer

    parser = argparse.ArgumentParser(description="the launch checks' synthetic agent")
    parser.add_argument("action", choices=["start", "resume"])
    parser.add_argument("run_id")
    parser.add_argument("--effects-url", required=True)
    parser.add_argument("--query-url", required=True)
    args = parser.parse_args(argv)
    s = load_settings()
    effects = EffectsClient(args.effects_url)
    with EventProducer(s, producer_name=AGENT, sealer=cipher_from_settings(s)) as producer:
        reader = HttpRunStateReader(
            args.query_url,
            bootstrap_servers=s.bootstrap_servers,
            events_topic=producer.names.events,
        )

        def start_or_resume() -> str:
            if args.action == "start":
                run = start(producer, reader, args.run_id)
            else:
                run = DurableRun.attach(producer, reader, args.run_id, max_inline_wait_s=0.0)
            return drive(run, effects)

        outcome = drive_once(start_or_resume)
    print(
        json.dumps({"run_id": args.run_id, "status": outcome.status, "detail": outcome.detail}),
        flush=True,
    )
    return outcome.code
