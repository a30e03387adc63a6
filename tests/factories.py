"""Factories for realistic agent event sequences, shared by every test package.

:class:`RunBuilder` emits the events one agent run produces, with UUIDv7-like ids and a
clock that only moves forward; :func:`make_run` strings a whole run together. Both are
deterministic for a given ``seed`` so a failing test shows the same events again.
:func:`plausible_runs` is the hypothesis strategy over such runs.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from hypothesis import strategies as st

from runstate.schemas.events import (
    AgentEvent,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ApproverKind,
    ExternalActionIntended,
    ExternalActionRecorded,
    ExternalActionResolved,
    FailureReason,
    ModelCalled,
    RetryScheduled,
    RunCancelled,
    RunClaimed,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetryRequested,
    StepStarted,
)

__all__ = [
    "T0",
    "ApprovalEnd",
    "RunBuilder",
    "RunEnd",
    "make_run",
    "plausible_runs",
    "uuid7_like",
]

#: Where every factory clock starts unless told otherwise.
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

E = TypeVar("E", bound=AgentEvent)
ApprovalEnd = Literal["granted", "rejected", "expired"]
RunEnd = Literal["completed", "failed", "cancelled", "open"]


def uuid7_like(at: datetime, rng: random.Random) -> str:
    """A UUIDv7 for ``at`` with random bits from ``rng`` (reproducible, unlike uuid7())."""
    ms = int(at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    value |= rng.getrandbits(62)
    return str(uuid.UUID(int=value))


@dataclass
class RunBuilder:
    """Emits one run's events in order; every helper appends to :attr:`events`.

    Example::

        b = RunBuilder("run-1")
        b.start()
        b.step("fetch", fail_times=1)
        b.approval("fetch", outcome="granted")
        b.complete()
    """

    run_id: str = "run-1"
    seed: int = 0
    clock: datetime = T0
    tick: timedelta = timedelta(seconds=1)
    producer: str = "sdk-test"
    events: list[AgentEvent] = field(default_factory=list)
    step_index: int = -1
    #: Stamped on every event after RunStarted (set by :meth:`claim`); None: a legacy writer.
    epoch: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.run_id}/{self.seed}")

    def emit(self, cls: type[E], *, at: datetime | None = None, **fields: Any) -> E:
        """Append one event of ``cls``; the envelope is filled in, ``fields`` are the rest."""
        self.clock = at if at is not None else self.clock + self.tick
        if self.epoch is not None and cls is not RunStarted:
            fields.setdefault("epoch", self.epoch)
        event = cls(
            event_id=uuid7_like(self.clock, self._rng),
            run_id=self.run_id,
            occurred_at=self.clock,
            producer=self.producer,
            **fields,
        )
        self.events.append(event)
        return event

    def start(self, **fields: Any) -> RunStarted:
        """``RunStarted`` with plausible defaults (JSON input, owner, source)."""
        values: dict[str, Any] = {
            "agent": "purchase-approver",
            "input": '{"amount": 1200, "currency": "KZT"}',
            "prompt_version": "p-7",
            "owner": "team-procurement",
            "source": "crm",
        }
        values.update(fields)
        return self.emit(RunStarted, **values)

    def claim(
        self, holder: str = "agent-a", *, epoch: int | None = None, lease_ms: int = 30_000
    ) -> RunClaimed:
        """``RunClaimed`` of ``epoch`` (default: the next one); later events carry it."""
        self.epoch = epoch if epoch is not None else (self.epoch or 0) + 1
        return self.emit(RunClaimed, claimed_by=holder, lease_ms=lease_ms)

    def step(
        self,
        name: str,
        *,
        fail_times: int = 0,
        reason: FailureReason = FailureReason.TIMEOUT,
        model_calls: int = 0,
        action: str | None = None,
        complete: bool = True,
    ) -> None:
        """A step at the next index: failures each followed by a retry, then (maybe) success.

        Args:
            name: step name.
            fail_times: attempts that fail before the one that completes.
            reason: why those attempts fail.
            model_calls: ModelCalled events in the final attempt.
            action: an external system to call (intended + recorded) in the final attempt.
            complete: False leaves the last attempt running.
        """
        self.step_index += 1
        for attempt in range(1, fail_times + 2):
            self.emit(StepStarted, step=name, step_index=self.step_index, attempt=attempt)
            if attempt <= fail_times:
                self.emit(StepFailed, step=name, attempt=attempt, reason=reason, message="boom")
                self.emit(
                    RetryScheduled,
                    step=name,
                    attempt=attempt + 1,
                    not_before=self.clock + timedelta(seconds=2**attempt),
                )
        attempt = fail_times + 1
        for _ in range(model_calls):
            self.model_call(name)
        if action is not None:
            key = f"{self.run_id}/{name}/{action}"
            self.emit(ExternalActionIntended, step=name, idempotency_key=key, system=action)
            self.emit(
                ExternalActionRecorded,
                step=name,
                idempotency_key=key,
                system=action,
                external_id=f"{action}-{self._rng.randrange(10**6)}",
            )
        if complete:
            self.emit(StepCompleted, step=name, attempt=attempt, output_ref=f"s3://out/{name}")

    def fail_step(
        self, name: str, *, attempt: int = 1, reason: FailureReason = FailureReason.OTHER
    ) -> StepFailed:
        """``StepFailed`` for a step that is running."""
        return self.emit(StepFailed, step=name, attempt=attempt, reason=reason, message="failed")

    def model_call(self, step: str | None = None) -> ModelCalled:
        """``ModelCalled`` with a fresh request id."""
        return self.emit(
            ModelCalled,
            model_request_id=f"req-{self._rng.getrandbits(48):012x}",
            model="gpt-4o-mini",
            step=step,
            tags={"route": "default"},
        )

    def request_approval(
        self, step: str, *, subject_hash: str = "sha256:abc", due_in: timedelta | None = None
    ) -> ApprovalRequested:
        """``ApprovalRequested`` due ``due_in`` (default one hour) after now."""
        due = self.clock + self.tick + (due_in or timedelta(hours=1))
        return self.emit(
            ApprovalRequested,
            step=step,
            approver="managers",
            approver_kind=ApproverKind.GROUP,
            due_at=due,
            subject_hash=subject_hash,
            subject="Buy 3 laptops",
        )

    def approval(
        self, step: str, *, outcome: ApprovalEnd = "granted", subject_hash: str = "sha256:abc"
    ) -> ApprovalRequested:
        """A requested approval and its decision (an expiry arrives at the due time)."""
        requested = self.request_approval(step, subject_hash=subject_hash)
        if outcome == "granted":
            self.emit(ApprovalGranted, by="alice", subject_hash=subject_hash, comment="ok")
        elif outcome == "rejected":
            self.emit(ApprovalRejected, by="bob", subject_hash=subject_hash, comment="too much")
        else:
            self.emit(
                ApprovalExpired,
                at=requested.due_at,
                subject_hash=subject_hash,
                due_at=requested.due_at,
            )
        return requested

    def complete(self) -> RunCompleted:
        """``RunCompleted``."""
        return self.emit(RunCompleted, output_ref="s3://out/final")

    def fail(self, *, needs_attention: bool = False) -> RunFailed:
        """``RunFailed`` (as the SDK emits when retries are exhausted)."""
        return self.emit(
            RunFailed,
            reason=FailureReason.TIMEOUT,
            message="retries exhausted",
            needs_attention=needs_attention,
        )

    def cancel(self) -> RunCancelled:
        """``RunCancelled`` by an operator."""
        return self.emit(RunCancelled, by="operator", reason="customer withdrew")


def make_run(
    run_id: str = "run-1",
    *,
    steps: Sequence[str] = ("collect", "check", "submit"),
    with_approval: bool = False,
    approval_outcome: ApprovalEnd = "granted",
    failures: int = 0,
    model_calls: int = 1,
    with_action: bool = False,
    end: RunEnd = "completed",
    start: datetime = T0,
    seed: int = 0,
) -> list[AgentEvent]:
    """A realistic, valid event sequence of one run.

    Args:
        run_id: the run.
        steps: step names, run in order.
        with_approval: ask for approval after the first step.
        approval_outcome: how that approval ends.
        failures: failed attempts (each retried) of the first step.
        model_calls: model calls per step.
        with_action: the last step calls an external system ("email").
        end: how the run ends; ``open`` leaves it in progress.
        start: the clock's start.
        seed: randomness of ids.
    """
    b = RunBuilder(run_id, seed=seed, clock=start)
    b.start()
    for i, name in enumerate(steps):
        b.step(
            name,
            fail_times=failures if i == 0 else 0,
            model_calls=model_calls,
            action="email" if with_action and i == len(steps) - 1 else None,
        )
        if with_approval and i == 0:
            b.approval(name, outcome=approval_outcome)
    if end == "completed":
        b.complete()
    elif end == "failed":
        b.fail()
    elif end == "cancelled":
        b.cancel()
    return b.events


_STEP_NAMES = ("collect", "check", "score", "submit")
_HASHES = ("sha256:abc", "sha256:def")


@st.composite
def _junk(draw: st.DrawFn, b: RunBuilder) -> AgentEvent:
    """An event of the run that is plausible in form but maybe wrong in place."""
    step = draw(st.sampled_from(_STEP_NAMES))
    attempt = draw(st.integers(1, 3))
    kind = draw(st.integers(0, 11))
    subject = draw(st.sampled_from(_HASHES))
    key = f"{b.run_id}/{step}/{draw(st.sampled_from(['email', 'crm']))}"
    if kind == 0:
        return b.emit(StepStarted, step=step, step_index=draw(st.integers(0, 4)), attempt=attempt)
    if kind == 1:
        return b.emit(StepCompleted, step=step, attempt=attempt)
    if kind == 2:
        return b.fail_step(step, attempt=attempt)
    if kind == 3:
        return b.emit(RetryScheduled, step=step, attempt=attempt + 1, not_before=b.clock)
    if kind == 4:
        return b.request_approval(step, subject_hash=subject)
    if kind == 5:
        return b.emit(ApprovalGranted, by="mallory", subject_hash=subject)
    if kind == 6:
        due = b.clock - timedelta(hours=draw(st.integers(-1, 1)))
        return b.emit(ApprovalExpired, subject_hash=subject, due_at=due)
    if kind == 7:
        return b.emit(ExternalActionIntended, step=step, idempotency_key=key, system="email")
    if kind == 8:
        return b.emit(
            ExternalActionRecorded, step=step, idempotency_key=key, system="email", external_id="x"
        )
    if kind == 9:
        return b.emit(StepRetryRequested, by="ops", step=step)
    if kind == 10:
        found = draw(st.booleans())
        return b.emit(
            ExternalActionResolved,
            by="ops",
            idempotency_key=key,
            found=found,
            external_id="y" if found else None,
        )
    ending: list[Callable[[], AgentEvent]] = [b.complete, b.fail, b.cancel, b.start]
    return draw(st.sampled_from(ending))()


@st.composite
def plausible_runs(
    draw: st.DrawFn, *, run_id: str = "run-p", junk: bool = True
) -> list[AgentEvent]:
    """Event sequences of one run: a realistic script with junk events mixed in.

    The script draws steps (with failures, retries, model calls, external actions),
    approvals with every outcome and every ending; the junk is wrong or misplaced events
    of the same run (unknown steps, stale subjects, early expiries, late endings).
    """
    b = RunBuilder(run_id, seed=draw(st.integers(0, 2**16)))
    if not junk or draw(st.integers(0, 7)) > 0:
        b.start()
    for i in range(draw(st.integers(0, 4))):
        name = _STEP_NAMES[i]
        b.step(
            name,
            fail_times=draw(st.integers(0, 2)),
            reason=draw(st.sampled_from(list(FailureReason))),
            model_calls=draw(st.integers(0, 2)),
            action=draw(st.sampled_from([None, "email", "crm"])),
            complete=draw(st.integers(0, 5)) > 0,
        )
        if draw(st.integers(0, 2)) == 0:
            b.approval(
                name,
                outcome=draw(st.sampled_from(["granted", "rejected", "expired"])),
                subject_hash=draw(st.sampled_from(_HASHES)),
            )
        if junk:
            for _ in range(draw(st.integers(0, 2))):
                draw(_junk(b))
    end = draw(st.sampled_from(["completed", "failed", "cancelled", "open"]))
    if end == "completed":
        b.complete()
    elif end == "failed":
        b.fail(needs_attention=draw(st.booleans()))
    elif end == "cancelled":
        b.cancel()
    if junk and draw(st.booleans()):
        draw(_junk(b))
    return b.events
