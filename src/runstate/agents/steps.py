"""Durable steps: an agent written as plain code that resumes where its run stopped.

An agent calls ``run.step("check_form", body)``, ``run.await_approval(...)``,
``ctx.call_once(key, call, ...)`` in order. Before doing anything, each call looks at the run's
state (its own events folded locally, the processor's state where others write) and decides
from the recorded facts, never from what the process remembers doing:

* a completed step is not run again: its recorded ``output_ref`` is returned;
* a step whose retry is scheduled waits for ``retry_not_before`` (or suspends the run if the
  wait is long) - also after a crash, because the time is in the state;
* an attempt that was running when the process died is recorded as failed (``other``,
  "interrupted") and retried under the step's policy;
* an external action with a recorded outcome is not called again (the side-effect ledger);
  one that was intended but never recorded has an unknown outcome and is reconciled first.

So restarting an agent is always "run the same code again": finished work is skipped, and
the run continues at the first step that is not done.

Because the lease makes this process the run's only writer, the recorded facts of its own
steps need no read: it keeps the run's state itself, applying each event it wrote with the
processor's own reducer (:mod:`runstate.agents.fold`). It reads the processor's state where
facts come from outside - attaching and starting, waiting on an approval, ``call_once``
before an external call, completing or failing the run - and every such read checks that
the processor applied what the fold did. A step whose body has no side effect costs its two
acknowledged produces: StepStarted is acknowledged before the body runs. With
``confirm_starts=False`` it is sent as the body starts and acknowledged together with
StepCompleted (one round trip); see :class:`DurableRun` for what that gives up.

One agent process drives a run at a time, and the run lease makes sure of it
(:mod:`runstate.agents.lease`): :meth:`DurableRun.start` and :meth:`DurableRun.attach` claim
the run (``RunClaimed``, the next epoch) and every event this process writes carries that
epoch; a later claim by another process fences this one, whose late events are dead-lettered
and whose next read of the run raises :class:`~runstate.errors.RunFenced`. Step bodies should
be deterministic given their recorded inputs; anything external goes through
:meth:`StepContext.call_once`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from runstate.agents.approvals import ApprovalDecision, canonical_json, decision_of, subject_hash
from runstate.agents.client import Position, RunStateReader
from runstate.agents.fold import LocalFold
from runstate.agents.lease import DEFAULT_LEASE, check_claim, check_free, default_holder, lease_ms
from runstate.agents.ports import Clock, EventSink, QueueingSink, SystemClock
from runstate.agents.retry import RetryPolicy
from runstate.errors import (
    ApprovalError,
    Error,
    QueryError,
    ReconcileRequired,
    RunSuspended,
    StepAttemptFailed,
    StepError,
)
from runstate.runs.state import (
    ActionState,
    ApprovalOutcome,
    CompletedStep,
    RunState,
    RunStatus,
    StepPhase,
)
from runstate.schemas.events import (
    AgentEvent,
    ApprovalRequested,
    ApproverKind,
    ExternalActionIntended,
    ExternalActionRecorded,
    FailureReason,
    ModelCalled,
    RetryScheduled,
    RunClaimed,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from runstate.schemas.sealed import is_sealed, subject_of
from runstate.streams.producer import Delivery

__all__ = [
    "ActionOutcome",
    "ActionResult",
    "DurableRun",
    "StepContext",
]


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What an external system answered: its id for the effect, and where the result is."""

    external_id: str
    output_ref: str | None = None


@dataclass(frozen=True, slots=True)
class ActionResult:
    """An external action's recorded outcome, and how this call came by it."""

    idempotency_key: str
    external_id: str
    output_ref: str | None
    #: True when the outcome was recorded before and the system was not called now.
    replayed: bool = False
    #: True when a crash left the outcome unknown and ``reconcile`` found it.
    reconciled: bool = False


#: Performs the action; returns the system's id (or an :class:`ActionOutcome`).
ActionCall = Callable[[], "ActionOutcome | str"]
#: Asks the system whether the action with this key happened; None when it did not.
Reconcile = Callable[[str], "ActionOutcome | str | None"]
#: A step's work; returns the step's ``output_ref`` (small data or a reference to it).
StepBody = Callable[["StepContext"], "str | None"]


def _outcome(value: ActionOutcome | str) -> ActionOutcome:
    return value if isinstance(value, ActionOutcome) else ActionOutcome(str(value))


@dataclass
class StepContext:
    """What a running step body may use: its attempt, the ledger, the model-call record."""

    run: DurableRun
    step: str
    step_index: int
    attempt: int
    extra: dict[str, Any] = field(default_factory=dict)

    def call_once(
        self,
        idempotency_key: str,
        call: ActionCall,
        *,
        system: str,
        reconcile: Reconcile | None = None,
    ) -> ActionResult:
        """See :meth:`DurableRun.call_once`; bound to this step."""
        return self.run.call_once(idempotency_key, call, system=system, reconcile=reconcile)

    def record_model_call(
        self, request_id: str, model: str, *, tags: dict[str, str] | None = None
    ) -> Delivery:
        """Record a model request of this step (id and model, for audit and disputes)."""
        return self.run.record_model_call(request_id, model, step=self.step, tags=tags)


class DurableRun:
    """Drives one run through durable steps; see the module docstring for the rules.

    Build one with :meth:`start` (a new run) or :meth:`attach` (resume an existing run, in
    this or a fresh process).

    Args:
        max_inline_wait_s: a retry due within this many seconds is waited for in process;
            a later one raises :class:`RunSuspended` so the process can exit and be resumed.
        holder: who this process is in the run's lease (named in fenced dead letters and in
            :class:`~runstate.errors.RunFenced`); unique per process by default.
        lease: how long the claim lasts without an event of this process; a claimer with
            ``takeover=False`` waits it out, any other claimer fences this process at once.
        confirm_starts: True (the default): a step's StepStarted is acknowledged before its
            body runs, so a process killed at any moment of a body leaves a running attempt
            (counted as interrupted on resume), and a claim by another process seen in the
            offsets stops this one before the body. False: StepStarted is sent as the body
            starts and acknowledged with StepCompleted, one round trip per step instead of
            two (needs an :class:`~runstate.streams.producer.EventProducer` sink). A process
            killed before StepStarted left it (within the producer's ``linger.ms``, 5 ms by
            default) leaves no record of that attempt: it runs again as the same attempt. A
            fenced process learns it after the body (the step raises
            :class:`~runstate.errors.RunFenced`; its events are dead-lettered), not before;
            ``call_once`` still reads the run before every external call. Retries (attempt 2
            and later) always confirm first, so a body that kills its process is counted and
            ``max_attempts`` ends the loop.
    """

    def __init__(
        self,
        run_id: str,
        *,
        sink: EventSink,
        reader: RunStateReader,
        position: Position | None,
        clock: Clock | None = None,
        max_inline_wait_s: float = 60.0,
        default_retry: RetryPolicy | None = None,
        holder: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
        data_subject: str | None = None,
        confirm_starts: bool = True,
    ) -> None:
        self.run_id = run_id
        #: Acknowledge StepStarted before the body (see the class docstring).
        self.confirm_starts = confirm_starts
        #: The run's data subject: its personal fields are sealed under this subject's data
        #: key (when the sink seals), so erasing the subject erases them. None: the run id.
        self.data_subject = data_subject
        self.sink = sink
        self.reader = reader
        self.clock: Clock = clock or SystemClock()
        self.max_inline_wait_s = max_inline_wait_s
        self.default_retry = default_retry or RetryPolicy()
        self.holder = holder or default_holder()
        self.lease_ms = lease_ms(lease)
        #: The epoch this process claimed; None until it claims (or for an ended run).
        self.epoch: int | None = None
        self._position = position
        self._current: StepContext | None = None
        self._fold = LocalFold(run_id)
        self._queued: deque[tuple[AgentEvent, Future[Delivery]]] = deque()
        # Checked once: a runtime protocol check costs more than the rest of a step's Python.
        self._queueing = isinstance(sink, QueueingSink)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        sink: EventSink,
        reader: RunStateReader,
        *,
        run_id: str,
        agent: str,
        input: str,
        prompt_version: str,
        owner: str,
        source: str,
        tenant: str | None = None,
        data_subject: str | None = None,
        **options: Any,
    ) -> DurableRun:
        """Record ``RunStarted`` (the input exactly as received, and the prompt version), then
        claim the run.

        ``data_subject`` is the run's data subject (e.g. the customer the input is about): with a
        sealing sink every personal field of the run is encrypted under its data key, and
        ``runstate erase --subject`` erases them all. By default the run id is the subject.
        Use a pseudonymous id (a customer number), never a name or an address: it is
        written in clear.

        Starting a run that exists with the same input is harmless (the reducer sees a
        restatement) but claims it like :meth:`attach` does; use :meth:`attach` to continue one.

        Raises:
            RunFenced: another process claimed the run at the same moment and won.
        """
        run = cls(
            run_id, sink=sink, reader=reader, position=None, data_subject=data_subject, **options
        )
        run._emit(
            RunStarted,
            agent=agent,
            input=input,
            prompt_version=prompt_version,
            owner=owner,
            source=source,
            tenant=tenant,
        )
        run._claim_committed(run.reader.read(run_id), known=False)
        return run

    @classmethod
    def attach(
        cls,
        sink: EventSink,
        reader: RunStateReader,
        run_id: str,
        *,
        takeover: bool = True,
        **options: Any,
    ) -> DurableRun:
        """Continue ``run_id`` and claim it; the state it continues from holds every event
        written to the run before its claim.

        Claiming fences whichever process drove the run before (its next read raises
        :class:`~runstate.errors.RunFenced`): a task redelivered while its first worker is
        only slow ends with one driver, not two. A run that already ended is not claimed
        (there is nothing left to drive).

        Args:
            takeover: False to leave a holder whose lease has not run out alone
                (:class:`~runstate.errors.RunLeased`); for a supervisor that resumes stuck
                runs and must not fight a live process.

        Raises:
            QueryError: the run is unknown (not even its RunStarted is in the log).
            RunLeased: ``takeover`` is False and another holder's lease is still running.
            RunFenced: another process claimed the run at the same moment and won.
        """
        run = cls(run_id, sink=sink, reader=reader, position=None, **options)
        if not takeover:
            # Whether the holder's lease runs on is decided from every event before the claim.
            run._position = reader.latest_position(run_id)
            state = run.state()
            run._adopt_subject(state)
            run._claim(state, takeover=False)
            return run
        seen = reader.read(run_id)
        run._adopt_subject(seen)
        run._claim_committed(seen, known=True)
        run._adopt_subject(run.folded)
        return run

    def _adopt_subject(self, s: RunState | None) -> None:
        """Take the data subject the run started with, when none was given."""
        if self.data_subject is None and s is not None:
            self.data_subject = subject_of(s.input)

    def _claim_committed(self, seen: RunState | None, *, known: bool) -> None:
        """Claim the run from ``seen``, its state as committed now (read without waiting),
        with one read that waits: the one at the claim's own position, which holds every event
        before the claim. A claim ``seen`` did not show yet takes the epoch first and ours is
        refused; then the run is claimed again from that read (the old way: a read that
        waits, then the claim). Taking over only: a claimer that must not fence a live
        holder decides from the whole partition first.

        Args:
            known: the run must exist (attach): a run not committed yet is read at the end
                of its partition first, so an unknown run fails without writing a claim.
        """
        if seen is None and known:
            self._position = self.reader.latest_position(self.run_id)
            self._claim(self.state(), takeover=True)
            return
        if seen is not None and seen.is_terminal:
            # A run that ended is not claimed; it is read at the end of its partition.
            if self._position is None:
                self._position = self.reader.latest_position(self.run_id)
            self._claim(self.state(), takeover=True)
            return
        epoch = (0 if seen is None else seen.epoch or 0) + 1
        self._emit(RunClaimed, epoch=epoch, claimed_by=self.holder, lease_ms=self.lease_ms)
        s = self._read()
        if (s.epoch, s.holder) == (epoch, self.holder):
            self.epoch = epoch
            self._fold.rebase(s, check=False)
            return
        # What was committed was behind: a claim it lacked took the epoch (or the run ended).
        self._fold.rebase(s, check=False)
        self._claim(s, takeover=True)

    def _claim(self, s: RunState, *, takeover: bool) -> None:
        if s.is_terminal:
            return
        if not takeover:
            check_free(s, self.holder, self.clock.now())
        epoch = (s.epoch or 0) + 1
        self._emit(RunClaimed, epoch=epoch, claimed_by=self.holder, lease_ms=self.lease_ms)
        self.epoch = epoch
        self.state()

    # -- reading -----------------------------------------------------------------------------
    def state(self) -> RunState:
        """The run's state as the processor holds it, every event this process wrote applied.

        A read of the processor (it waits until our last event is applied); the SDK itself
        decides from :attr:`folded` where nothing outside can have changed the run.

        Raises:
            QueryError: the run is unknown, or the state could not be read in time.
            RunFenced: another process claimed the run after this one: stop driving it.
            StepError: an event this process wrote was not applied (the run changed from
                outside, e.g. an operator cancelled it).
        """
        state = self._read()
        if self.epoch is not None:
            check_claim(state, self.holder, self.epoch)
        self._fold.rebase(state)
        return state

    def _read(self) -> RunState:
        """The processor's state once our last event is applied (no claim check)."""
        self._settle()
        state = self.reader.read(self.run_id, after=self._position)
        if state is None:
            raise QueryError(
                f"run {self.run_id!r} is unknown to the processor; start it with"
                " DurableRun.start, or check the run id and the topic prefix"
            )
        return state

    @property
    def folded(self) -> RunState | None:
        """The run's state as this process's own events made it since its last read."""
        return self._fold.state

    def _local(self) -> RunState:
        """The state to decide from: the local fold, checked first when it may be behind."""
        self._settle()
        fold = self._fold
        if fold.state is None:
            return self.state()
        if fold.stale:
            self._look()
        assert fold.state is not None
        return fold.state

    def _look(self) -> None:
        """Something else was written to the run's partition since our previous event: look
        at the processor's state without waiting, and stop early if the run is not ours.

        Raises:
            RunFenced: the run was claimed by another process.
            StepError: the run ended from outside, or refused an event of ours.
        """
        fold = self._fold
        fold.stale = False
        s = self.reader.read(self.run_id)
        if s is None:
            return
        if fold.caught_up(s):
            if self.epoch is not None:
                check_claim(s, self.holder, self.epoch)
            fold.rebase(s)
            return
        if self.epoch is not None and s.epoch is not None and s.epoch > self.epoch:
            check_claim(s, self.holder, self.epoch)
        if s.is_terminal and fold.state is not None and not fold.state.is_terminal:
            raise StepError(
                f"run {self.run_id!r} is {s.status.value}, ended from outside while this"
                " process drove it; stop driving it (its later events are dead-lettered)"
            )

    # -- steps -------------------------------------------------------------------------------
    def step(
        self,
        name: str,
        body: StepBody,
        *,
        retry: RetryPolicy | None = None,
        input_ref: str | None = None,
    ) -> str | None:
        """Run ``body`` as step ``name`` unless it already completed; return its output.

        A body fails an attempt by raising :class:`StepAttemptFailed` (with the reason),
        ``TimeoutError`` (``timeout``) or any other exception (``other``). The policy then
        schedules the next attempt (``RetryScheduled`` with its not-before time) or fails the
        run (``RunFailed``).

        Raises:
            RunSuspended: the run waits (approval, or a retry further off than
                ``max_inline_wait_s``); exit and resume later.
            StepError: the step failed for good (the run is failed), or the run cannot run
                this step now (ended, or another step is running).
            ReconcileRequired: an action's outcome is unknown and cannot be reconciled.
        """
        policy = retry or self.default_retry
        while True:
            s = self._local()
            done = _completed(s, name)
            if done is not None:
                return self._open(done.output_ref)
            self._check_can_run(s, name)
            if s.current_step == name and s.step_phase is not None:
                attempt = self._next_attempt(s, name, policy)
                index = s.step_index if s.step_index is not None else 0
            else:
                attempt = 1
                index = 0 if s.step_index is None else s.step_index + 1
            result = self._attempt(name, index, attempt, body, policy, input_ref)
            if not isinstance(result, _Failed):
                return result

    def _check_can_run(self, s: RunState, name: str) -> None:
        if s.is_terminal:
            raise StepError(
                f"run {self.run_id!r} is {s.status.value}; step {name!r} cannot run"
                " (start a new run to do the work again)"
            )
        if s.status is RunStatus.WAITING_APPROVAL and s.approval is not None:
            raise RunSuspended(
                f"run {self.run_id!r} waits for {s.approval.approver} to decide"
                f" {s.approval.step!r}",
                run_id=self.run_id,
                until=s.approval.due_at,
            )
        if s.current_step not in (None, name) and s.step_phase is StepPhase.RUNNING:
            raise StepError(
                f"step {name!r} of run {self.run_id!r} cannot start while step"
                f" {s.current_step!r} is running; steps run one at a time, in the same order"
                " every time the agent runs"
            )

    def _next_attempt(self, s: RunState, name: str, policy: RetryPolicy) -> int:
        """The attempt to run now for a step that started before (crash or retry)."""
        phase = s.step_phase
        if phase is StepPhase.RUNNING:
            # Our own attempts always end in StepCompleted/StepFailed before we read again,
            # so a running attempt here belongs to a process that died.
            self._fail_attempt(
                name,
                s.step_attempt,
                FailureReason.OTHER,
                "interrupted: the agent process stopped during this attempt",
                policy,
                interrupted=True,
            )
            s = self._local()
            phase = s.step_phase
        if phase is StepPhase.FAILED:
            # The process died between StepFailed and RetryScheduled: decide again, from now.
            reason = s.last_error_reason or FailureReason.OTHER
            self._schedule_or_give_up(
                name, s.step_attempt, reason, s.last_error_message or "", policy, self.clock.now()
            )
            s = self._local()
        if s.step_phase is StepPhase.RETRY_SCHEDULED:
            self._wait_until(s.retry_not_before, name)
            return s.step_attempt + 1
        raise StepError(
            f"step {name!r} of run {self.run_id!r} is {s.step_phase}; expected a failed or"
            " scheduled attempt"
        )

    def _attempt(
        self,
        name: str,
        index: int,
        attempt: int,
        body: StepBody,
        policy: RetryPolicy,
        input_ref: str | None,
    ) -> str | _Failed | None:
        pipelined = not self.confirm_starts and self._queueing and attempt == 1
        if pipelined:
            # Sent now, acknowledged with StepCompleted (or the failure's events): one round
            # trip. Anything in the body that needs the run (call_once, a model-call record)
            # waits for it first.
            self._queue(
                StepStarted, step=name, step_index=index, attempt=attempt, input_ref=input_ref
            )
        else:
            # Acknowledged before the body runs: a process that dies in the body (however
            # hard) leaves a running attempt, which the next one records as interrupted.
            self._emit(
                StepStarted, step=name, step_index=index, attempt=attempt, input_ref=input_ref
            )
            if self._fold.stale:
                self._look()  # before the body: a fenced process must not run it
        ctx = StepContext(self, name, index, attempt)
        self._current = ctx
        failure: tuple[FailureReason, str, BaseException]
        try:
            output = body(ctx)
        except StepAttemptFailed as exc:
            failure = (_reason(exc.reason), exc.message, exc)
        except Error:
            # Suspension, reconciliation, unreadable state: not this attempt's failure. The
            # attempt stays "running" and is recorded as interrupted when the run resumes.
            raise
        except TimeoutError as exc:
            failure = (FailureReason.TIMEOUT, str(exc) or "timed out", exc)
        except Exception as exc:
            failure = (FailureReason.OTHER, f"{type(exc).__name__}: {exc}", exc)
        else:
            self._emit(StepCompleted, step=name, attempt=attempt, output_ref=output)
            if pipelined and self._fold.stale:
                self._look()  # the look a confirmed start makes before the body
            return output
        finally:
            self._current = None
        reason, message, error = failure
        self._fail_attempt(name, attempt, reason, message, policy, error=error)
        return _Failed()

    def _fail_attempt(
        self,
        name: str,
        attempt: int,
        reason: FailureReason,
        message: str,
        policy: RetryPolicy,
        *,
        interrupted: bool = False,
        error: BaseException | None = None,
    ) -> None:
        # Queued: the decision after it (RetryScheduled or RunFailed) is acknowledged for both;
        # a process that dies between the two is handled on resume either way.
        failed_at = self._queue(
            StepFailed, step=name, attempt=attempt, reason=reason, message=message[:1000]
        )
        self._schedule_or_give_up(
            name, attempt, reason, message, policy, failed_at, interrupted, error
        )

    def _schedule_or_give_up(
        self,
        name: str,
        attempt: int,
        reason: FailureReason,
        message: str,
        policy: RetryPolicy,
        failed_at: datetime,
        interrupted: bool = False,
        error: BaseException | None = None,
    ) -> None:
        if interrupted:
            # A crash says nothing about the service: retry at once, within max_attempts.
            policy = replace(policy, retry_on=policy.retry_on | {reason}, base_s=0.0)
        decision = policy.decide(failed_attempt=attempt, reason=reason, failed_at=failed_at)
        if decision.next_attempt is None or decision.not_before is None:
            self._emit(
                RunFailed, step=name, reason=reason, message=f"{decision.why}: {message}"[:1000]
            )
            raise StepError(
                f"step {name!r} of run {self.run_id!r} failed: {decision.why} ({message});"
                " the run is failed"
            ) from error
        self._emit(
            RetryScheduled, step=name, attempt=decision.next_attempt, not_before=decision.not_before
        )

    def _wait_until(self, not_before: datetime | None, name: str) -> None:
        if not_before is None:
            return
        left = (not_before - self.clock.now()).total_seconds()
        if left <= 0:
            return
        if left > self.max_inline_wait_s:
            raise RunSuspended(
                f"step {name!r} of run {self.run_id!r} retries at {not_before.isoformat()};"
                " resume the run then",
                run_id=self.run_id,
                until=not_before,
            )
        self.clock.sleep(left)

    # -- the side-effect ledger --------------------------------------------------------------
    def call_once(
        self,
        idempotency_key: str,
        call: ActionCall,
        *,
        system: str,
        reconcile: Reconcile | None = None,
    ) -> ActionResult:
        """Perform an external action at most once per ``idempotency_key``, from a step body.

        * recorded before -> return the recorded outcome; ``call`` is not run;
        * intended but never recorded (the process died after or during the call) -> the
          outcome is unknown: ``reconcile(key)`` asks the system; found -> recorded and
          returned; not found -> called now. With no ``reconcile``, the run is failed with
          ``needs_attention`` and :class:`ReconcileRequired` raised: a person must check.
          (A system that honours idempotency keys can reconcile by calling again with the
          same key: pass ``reconcile=lambda key: None``.)
        * unknown key -> ``ExternalActionIntended`` is written and confirmed applied *before*
          ``call`` runs, then ``ExternalActionRecorded`` with the system's id.

        Raises:
            StepError: called outside a step, or the key belongs to another step or system.
            ReconcileRequired: see above.
        """
        ctx = self._current
        if ctx is None:
            raise StepError(
                f"call_once({idempotency_key!r}) outside a step; call it from a step body so"
                " the action belongs to a step"
            )
        s = self._local()
        known = s.external_action(idempotency_key)
        if known is not None and (known.step, known.system) != (ctx.step, system):
            raise StepError(
                f"idempotency key {idempotency_key!r} already belongs to {known.system!r} in"
                f" step {known.step!r}; make keys unique per action"
            )
        if known is not None and known.state is ActionState.RECORDED:
            assert known.external_id is not None
            return ActionResult(
                idempotency_key, known.external_id, self._open(known.output_ref), True
            )
        if known is not None:
            if reconcile is None:
                message = (
                    f"outcome of {system} action {idempotency_key!r} (step {ctx.step!r}) is"
                    f" unknown: the agent stopped after asking {system} and before recording"
                    f" the answer; check {system} for this key, then record what happened"
                )
                self._emit(
                    RunFailed,
                    step=ctx.step,
                    reason=FailureReason.OTHER,
                    message=message,
                    needs_attention=True,
                )
                raise ReconcileRequired(message + " (no reconcile callback was given)")
            found = reconcile(idempotency_key)
            if found is not None:
                outcome = _outcome(found)
                self._record(ctx.step, idempotency_key, system, outcome)
                return ActionResult(
                    idempotency_key, outcome.external_id, outcome.output_ref, reconciled=True
                )
        else:
            self._emit(
                ExternalActionIntended,
                step=ctx.step,
                idempotency_key=idempotency_key,
                system=system,
            )
            # The read before the call: the processor has the intent (and every event of ours
            # before it), and the run is still this process's.
            confirmed = self.state().external_action(idempotency_key)
            if confirmed is None or (confirmed.step, confirmed.system) != (ctx.step, system):
                raise StepError(
                    f"the intent for {idempotency_key!r} was not applied (the processor refused"
                    " it; see the dead letters); the action was not performed"
                )
        outcome = _outcome(call())
        self._record(ctx.step, idempotency_key, system, outcome)
        return ActionResult(idempotency_key, outcome.external_id, outcome.output_ref)

    def _record(self, step: str, key: str, system: str, outcome: ActionOutcome) -> None:
        self._emit(
            ExternalActionRecorded,
            step=step,
            idempotency_key=key,
            system=system,
            external_id=outcome.external_id,
            output_ref=outcome.output_ref,
        )

    # -- approvals ---------------------------------------------------------------------------
    def await_approval(
        self,
        step: str,
        *,
        approver: str,
        subject: Any,
        due: datetime | timedelta,
        approver_kind: ApproverKind = ApproverKind.USER,
        on_request: StepBody | None = None,
        enforce_decider: bool = True,
    ) -> ApprovalDecision:
        """Ask ``approver`` to decide ``subject`` once; return the decision once it is made.

        The first call starts step ``step``, runs ``on_request`` (e.g. notify the approver
        through :meth:`StepContext.call_once`), records ``ApprovalRequested`` bound to
        ``subject_hash(subject)`` and raises :class:`RunSuspended`: the agent process may
        exit. Calls while the approval is pending raise :class:`RunSuspended` again, emitting
        nothing. The first call after the decision completes the step and returns the
        decision; later calls return it from the state.

        ``enforce_decider`` (the default) makes the processor accept a decision only from
        ``approver`` (a user), a member of it (a group), or an admin giving a reason.

        Raises:
            RunSuspended: the approval is pending.
            ApprovalError: the decision was made for another subject than ``subject`` (the
                data changed since it was shown: ask again with a new step).
            StepError: as :meth:`step`.
        """
        wanted = subject_hash(subject)
        s = self.state()
        decided = decision_of(s, step)
        if decided is not None:
            decided = replace(decided, comment=self._open(decided.comment))
        if _completed(s, step) is not None:
            if decided is None:
                raise StepError(f"step {step!r} completed, but its approval is not the latest")
            return self._checked(decided, wanted)
        self._check_can_run(s, step)
        if s.current_step == step and s.step_phase is StepPhase.RUNNING:
            attempt = s.step_attempt
            index = s.step_index if s.step_index is not None else 0
        else:
            attempt = 1
            index = 0 if s.step_index is None else s.step_index + 1
            self._emit(StepStarted, step=step, step_index=index, attempt=1)
        if decided is not None:
            decision = self._checked(decided, wanted)
            self._emit(StepCompleted, step=step, attempt=attempt, output_ref=decision.outcome)
            return decision
        if on_request is not None:
            ctx = StepContext(self, step, index, attempt)
            self._current = ctx
            try:
                on_request(ctx)
            finally:
                self._current = None
        due_at = due if isinstance(due, datetime) else self.clock.now() + due
        self._emit(
            ApprovalRequested,
            step=step,
            approver=approver,
            approver_kind=approver_kind,
            due_at=due_at,
            subject_hash=wanted,
            subject=_subject_text(subject),
            enforce_decider=enforce_decider,
        )
        raise RunSuspended(
            f"run {self.run_id!r} waits for {approver} to approve {step!r}",
            run_id=self.run_id,
            until=due_at,
        )

    @staticmethod
    def _checked(decision: ApprovalDecision, wanted: str) -> ApprovalDecision:
        if decision.subject_hash != wanted and decision.outcome is not ApprovalOutcome.EXPIRED:
            raise ApprovalError(
                f"the {decision.outcome.value} decision on {decision.step!r} was for subject"
                f" {decision.subject_hash}, but the agent would now act on {wanted}; the data"
                " changed since it was shown - request a new approval"
            )
        return decision

    # -- other records -----------------------------------------------------------------------
    def record_model_call(
        self,
        request_id: str,
        model: str,
        *,
        step: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> Delivery:
        """Record a model request id and the model that served it (audit, replays)."""
        return self._emit(
            ModelCalled, model_request_id=request_id, model=model, step=step, tags=tags or {}
        ).delivery

    def complete(self, output_ref: str | None = None) -> Delivery:
        """End the run successfully (idempotent: completing a completed run is a no-op).

        Reads the run once the end is applied, so a process whose events were refused (it was
        fenced, the run was cancelled) learns it here at the latest.

        Raises:
            RunFenced: another process claimed the run; its end is that process's to record.
            StepError: events of this process were not applied (see :meth:`state`).
        """
        delivery = self._emit(RunCompleted, output_ref=output_ref).delivery
        self.state()
        return delivery

    def fail(
        self,
        reason: FailureReason,
        message: str = "",
        *,
        step: str | None = None,
        needs_attention: bool = False,
    ) -> Delivery:
        """End the run as failed; ``needs_attention`` puts it on a person's list.

        Raises:
            RunFenced, StepError: as :meth:`complete`.
        """
        delivery = self._emit(
            RunFailed, step=step, reason=reason, message=message, needs_attention=needs_attention
        ).delivery
        self.state()
        return delivery

    # -- plumbing ----------------------------------------------------------------------------
    def _new(self, cls: type[AgentEvent], fields: dict[str, Any]) -> AgentEvent:
        fields.setdefault("occurred_at", self.clock.now())
        fields.setdefault("epoch", self.epoch)
        if self.data_subject is not None:
            fields["data_subject"] = self.data_subject
        return self.sink.new_event(cls, self.run_id, **fields)

    def _open(self, value: str | None) -> str | None:
        """A personal value read back from the state, opened if the sink sealed it.

        Raises:
            DataKeyMissing: the run's subject was erased; its values are gone.
            TamperedValue: the stored value was changed.
        """
        sealer = getattr(self.sink, "sealer", None)
        if value is None or sealer is None or not is_sealed(value):
            return value
        opened: str = sealer.open_value(value, run_id=self.run_id)
        return opened

    def _emit(self, cls: type[AgentEvent], **fields: Any) -> _Emitted:
        """Write an event and wait for its acknowledgement (and every queued one's)."""
        event = self._new(cls, fields)
        if self._queued and self._queueing:
            assert isinstance(self.sink, QueueingSink)
            self._queued.append((event, self.sink.send(event)))
            delivery = self._settle()
            assert delivery is not None
        else:
            self._settle()
            delivery = self.sink.emit(event)
            self._own(event, delivery)
        return _Emitted(delivery, event.occurred_at)

    def _queue(self, cls: type[AgentEvent], **fields: Any) -> datetime:
        """Write an event without waiting (the next :meth:`_emit` or read waits for it);
        returns its time."""
        if not self._queueing:
            return self._emit(cls, **fields).occurred_at
        assert isinstance(self.sink, QueueingSink)
        event = self._new(cls, fields)
        self._queued.append((event, self.sink.send(event)))
        return event.occurred_at

    def _settle(self) -> Delivery | None:
        """Wait for the queued events, fold them in order; the last one's delivery.

        Raises:
            DeliveryError: an event was not acknowledged (refused, or not in time).
        """
        last: Delivery | None = None
        if self._queued:
            assert isinstance(self.sink, QueueingSink)
            if not self._queued[-1][1].done():
                self.sink.flush()
            while self._queued:
                event, future = self._queued.popleft()
                last = future.result()
                self._own(event, last)
        return last

    def _own(self, event: AgentEvent, delivery: Delivery) -> None:
        self._position = delivery
        self._fold.own(event, delivery)


@dataclass(frozen=True, slots=True)
class _Emitted:
    delivery: Delivery
    occurred_at: datetime


class _Failed:
    """An attempt failed and the next one is scheduled."""


def _completed(s: RunState, name: str) -> CompletedStep | None:
    """Step ``name`` as recorded when it completed, or None if it has not."""
    for done in s.completed_steps:
        if done.step == name:
            return done
    return None


def _reason(value: str) -> FailureReason:
    try:
        return FailureReason(value)
    except ValueError:
        return FailureReason.OTHER


def _subject_text(subject: Any) -> str:
    return subject if isinstance(subject, str) else canonical_json(subject)
