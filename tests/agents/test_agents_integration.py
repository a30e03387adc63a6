"""The agent SDK against the real broker and a real processor worker (a child process).

The article's first three checks, plus the crash cases that make them hard: an agent killed
between the provider call and the recording of its outcome, a retry whose not-before time
must survive a restart (of the agent, and of the reactor that resumes it), and approvals
that are stale or decided twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runstate.agents import (
    DurableRun,
    HttpRunStateReader,
    Reactor,
    RetryDue,
    RetryPolicy,
    StepContext,
)
from runstate.errors import RunSuspended
from runstate.runs.state import ActionState, RunState, RunStateChanged, RunStatus
from runstate.schemas.events import AgentEvent, ApprovalGranted, RetryScheduled, StepStarted
from runstate.streams.producer import EventProducer
from runstate.testing.credit_limit import EXIT_COMPLETED, EXIT_RECONCILE, EXIT_WAITING, MANAGER
from runstate.testing.effects import EffectsClient, EffectsService
from tests.polling import assert_eventually
from tests.workers import RUNSTATE, Deployment, serving

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("agent_script.py")
CREDIT_AGENT = "runstate.testing.credit_limit"


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    with serving(kafka_bootstrap, "agents", 3, tmp_path_factory.mktemp("agents")) as d:
        yield d


@pytest.fixture(scope="module")
def producer(deployment: Deployment) -> Iterator[EventProducer]:
    p = deployment.producer("sdk-test")
    yield p
    p.close()


@pytest.fixture
def effects() -> Iterator[EffectsService]:
    # No-key mode: the service performs every call, so only the SDK can prevent a duplicate.
    with EffectsService(honour_keys=False) as svc:
        yield svc


def reader(d: Deployment) -> HttpRunStateReader:
    return HttpRunStateReader(
        d.workers[0].url, bootstrap_servers=d.bootstrap, events_topic=d.names.events
    )


def new_run_id(hint: str) -> str:
    return f"{hint}-{uuid.uuid4().hex[:10]}"


def spawn(
    d: Deployment, *args: str, kill_at: str = "", module: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**d.workers[0].env, "RUNSTATE_QUERY_URL": d.workers[0].url}
    if kill_at:
        env["RUNSTATE_TEST_KILL_AT"] = kill_at
    head = [sys.executable, "-m", module] if module else [sys.executable, str(SCRIPT)]
    return subprocess.run(
        [*head, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def agent(
    d: Deployment, action: str, run_id: str, effects: EffectsService, *extra: str, kill_at: str = ""
) -> subprocess.CompletedProcess[str]:
    return spawn(
        d, action, run_id, "--effects-url", effects.url, "--query-url", d.workers[0].url, *extra,
        kill_at=kill_at,
    )  # fmt: skip


def cli(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**d.workers[0].env, "RUNSTATE_QUERY_URL": d.workers[0].url}
    return subprocess.run(
        [str(RUNSTATE), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def events_of(d: Deployment, run_id: str) -> list[AgentEvent]:
    return [e for _, e in d.events_by_run().get(run_id, [])]


def started(events: list[AgentEvent], step: str) -> list[StepStarted]:
    return [e for e in events if isinstance(e, StepStarted) and e.step == step]


def state_of(d: Deployment, run_id: str) -> RunState:
    state = reader(d).read(run_id, after=reader(d).latest_position(run_id))
    assert state is not None
    return state


# -- the article's checks ------------------------------------------------------------------


def test_an_agent_killed_mid_task_resumes_at_the_right_step(
    deployment: Deployment, effects: EffectsService
) -> None:
    run_id = new_run_id("mid-task")
    killed = agent(deployment, "start", run_id, effects, kill_at="mid_step")
    assert killed.returncode == -9, killed.stderr
    assert state_of(deployment, run_id).current_step == "send_email"

    resumed = agent(deployment, "resume", run_id, effects)
    assert resumed.returncode == EXIT_COMPLETED, resumed.stdout + resumed.stderr
    events = events_of(deployment, run_id)
    assert len(started(events, "prepare")) == 1  # not started over
    assert [e.attempt for e in started(events, "send_email")] == [1, 2]
    counts = effects.counts()
    assert counts["notification"][f"{run_id}:prepare"].effects == 1
    assert counts["email"][f"{run_id}:email"].effects == 1
    assert state_of(deployment, run_id).status is RunStatus.COMPLETED


@pytest.mark.parametrize("kill_at", ["mid_step", "after_call"])
def test_an_unconfirmed_agent_killed_in_a_body_sends_each_effect_once(
    deployment: Deployment, effects: EffectsService, kill_at: str
) -> None:
    """confirm_starts=False, killed at the start of a body (its StepStarted most likely never
    left the process) or right after the provider answered: the resumed run finishes with
    every external effect made once. Whether the killed attempt is in the history depends on
    whether its start left in time; both are allowed, and shown."""
    run_id = new_run_id(f"unconfirmed-{kill_at}")
    killed = agent(deployment, "start", run_id, effects, "--unconfirmed", kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr
    resumed = agent(deployment, "resume", run_id, effects, "--unconfirmed")
    assert resumed.returncode == EXIT_COMPLETED, resumed.stdout + resumed.stderr
    events = events_of(deployment, run_id)
    assert len(started(events, "prepare")) == 1  # not started over
    attempts = [e.attempt for e in started(events, "send_email")]
    if kill_at == "after_call":
        # call_once waited for the StepStarted before the intent: the attempt is recorded.
        assert attempts == [1, 2], attempts
    else:
        assert attempts in ([1], [1, 2]), attempts
        print(f"send_email attempts recorded after the kill: {attempts}")
    counts = effects.counts()
    assert counts["notification"][f"{run_id}:prepare"].effects == 1
    assert counts["email"][f"{run_id}:email"].effects == 1
    assert state_of(deployment, run_id).status is RunStatus.COMPLETED


def test_a_run_waiting_for_approval_is_visible_with_who_must_decide(
    deployment: Deployment, effects: EffectsService
) -> None:
    """The SDK, the CLI and the HTTP API all show the waiting run and its approver. How long
    that took is printed, not asserted: on a loaded machine a duration says nothing about
    correctness, so the poll's generous deadline only bounds the wait."""
    run_id = new_run_id("visible")
    started_agent = spawn(
        deployment, "start", run_id, "--effects-url", effects.url,
        "--query-url", deployment.workers[0].url, module=CREDIT_AGENT,
    )  # fmt: skip
    assert started_agent.returncode == EXIT_WAITING, started_agent.stdout + started_agent.stderr
    asked = time.monotonic()

    def sdk() -> RunState:
        state = reader(deployment).read(run_id)  # no position: what anyone sees
        assert state is not None and state.status is RunStatus.WAITING_APPROVAL
        return state

    state = assert_eventually(sdk, timeout_s=60, what="SDK sees waiting_approval")
    assert state.approval is not None and state.approval.approver == MANAGER

    shown = cli(deployment, "runs", "show", run_id)
    body = json.loads(shown.stdout)
    assert (body["status"], body["approval"]["approver"]) == ("waiting_approval", MANAGER)
    listed = cli(
        deployment, "runs", "list", "--status", "waiting_approval", "--approver", MANAGER, "--json"
    )
    assert run_id in {r["run_id"] for r in json.loads(listed.stdout)["runs"]}
    status, raw = deployment.workers[0].get(f"/runs/{run_id}")
    assert (status, raw["approval"]["approver"]) == (200, MANAGER)
    print(f"waiting run seen by the SDK, the CLI and HTTP {time.monotonic() - asked:.1f} s after")


def test_the_same_step_twice_with_the_same_input_makes_one_side_effect(
    deployment: Deployment, producer: EventProducer, effects: EffectsService
) -> None:
    run_id = new_run_id("twice")
    client = EffectsClient(effects.url)

    def send(ctx: StepContext) -> str:
        key = f"{run_id}:welcome-email"
        return ctx.call_once(
            key, lambda: client.perform("email", key=key).external_id, system="email"
        ).external_id

    run = DurableRun.start(
        producer, reader(deployment), run_id=run_id, agent="t", input='{"to": "a@b.c"}',
        prompt_version="t@1", owner="tests", source="pytest",
    )  # fmt: skip
    first = run.step("send", send)
    again = DurableRun.attach(producer, reader(deployment), run_id).step("send", send)
    assert first == again
    assert effects.counts()["email"][f"{run_id}:welcome-email"].requests == 1


# -- crashes around side effects and retries -----------------------------------------------


def test_kill_between_provider_call_and_record_is_reconciled_not_called_again(
    deployment: Deployment, effects: EffectsService
) -> None:
    run_id = new_run_id("reconcile")
    killed = agent(deployment, "start", run_id, effects, kill_at="after_call")
    assert killed.returncode == -9, killed.stderr
    action = state_of(deployment, run_id).external_action(f"{run_id}:email")
    assert action is not None and action.state is ActionState.INTENDED
    assert effects.counts()["email"][f"{run_id}:email"].requests == 1

    resumed = agent(deployment, "resume", run_id, effects)
    assert resumed.returncode == EXIT_COMPLETED, resumed.stdout + resumed.stderr
    assert effects.counts()["email"][f"{run_id}:email"].requests == 1  # never a second call
    action = state_of(deployment, run_id).external_action(f"{run_id}:email")
    assert action is not None and action.state is ActionState.RECORDED
    assert action.external_id == EffectsClient(effects.url).lookup("email", f"{run_id}:email")


def test_unknown_outcome_without_reconcile_puts_the_run_before_a_person(
    deployment: Deployment, effects: EffectsService
) -> None:
    run_id = new_run_id("attention")
    assert agent(deployment, "start", run_id, effects, kill_at="after_call").returncode == -9
    resumed = agent(deployment, "resume", run_id, effects, "--no-reconcile")
    assert resumed.returncode == EXIT_RECONCILE, resumed.stdout + resumed.stderr
    state = state_of(deployment, run_id)
    assert (state.status, state.needs_attention) == (RunStatus.FAILED, True)
    assert effects.counts()["email"][f"{run_id}:email"].requests == 1


def test_retry_backoff_is_respected_across_a_restart(
    deployment: Deployment, effects: EffectsService
) -> None:
    run_id = new_run_id("backoff")
    effects.fail_next("scoring", 1, mode="timeout", delay_s=2.0)
    first = agent(deployment, "start", run_id, effects, "--mode", "retry")
    assert first.returncode == EXIT_WAITING, first.stdout + first.stderr
    not_before = state_of(deployment, run_id).retry_not_before
    assert not_before is not None

    def completes() -> bool:
        result = agent(deployment, "resume", run_id, effects, "--mode", "retry")
        if datetime.now(UTC) < not_before - timedelta(milliseconds=50):
            assert result.returncode == EXIT_WAITING  # restarted early: it must not retry yet
        return result.returncode == EXIT_COMPLETED

    assert_eventually(completes, timeout_s=30, interval_s=0.5, what="retry after not-before")
    events = events_of(deployment, run_id)
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    attempts = started(events, "score")
    assert [a.attempt for a in attempts] == [1, 2]
    assert attempts[1].occurred_at >= scheduled[0].not_before
    counts = effects.counts()["scoring"]
    assert sorted(counts) == [f"{run_id}:attempt-1", f"{run_id}:attempt-2"]


# -- approvals -----------------------------------------------------------------------------


def _waiting_run(deployment: Deployment, producer: EventProducer, run_id: str) -> str:
    run = DurableRun.start(
        producer, reader(deployment), run_id=run_id, agent="t", input="{}",
        prompt_version="t@1", owner="tests", source="pytest",
    )  # fmt: skip
    with pytest.raises(RunSuspended):
        run.await_approval("approve", approver="boss", subject={"v": 1}, due=timedelta(hours=1))
    approval = run.state().approval
    assert approval is not None
    return approval.subject_hash


def test_a_stale_approval_is_refused_by_the_cli_and_by_the_processor(
    deployment: Deployment, producer: EventProducer
) -> None:
    run_id = new_run_id("stale")
    current = _waiting_run(deployment, producer, run_id)
    before = len(events_of(deployment, run_id))
    refused = cli(deployment, "approve", run_id, "--by", "boss", "--subject-hash", "sha256:old")
    assert refused.returncode == 1 and "subject changed" in refused.stderr
    assert len(events_of(deployment, run_id)) == before  # nothing emitted

    stale = producer.new_event(ApprovalGranted, run_id, by="boss", subject_hash="sha256:old")
    delivery = producer.emit(stale)
    state = reader(deployment).read(run_id, after=delivery)
    assert state is not None and state.status is RunStatus.WAITING_APPROVAL
    assert not state.saw_event(stale.event_id)

    ok = cli(deployment, "approve", run_id, "--by", "boss", "--subject-hash", current)
    assert ok.returncode == 0, ok.stderr


def test_deciding_twice_is_refused(deployment: Deployment, producer: EventProducer) -> None:
    run_id = new_run_id("twice-decided")
    _waiting_run(deployment, producer, run_id)
    assert cli(deployment, "approve", run_id, "--by", "boss").returncode == 0
    again = cli(deployment, "approve", run_id, "--by", "boss")
    late = cli(deployment, "reject", run_id, "--by", "boss", "--reason", "changed my mind")
    assert again.returncode == 1 and "already granted" in again.stderr
    assert late.returncode == 1 and "already granted" in late.stderr
    decisions = [e for e in events_of(deployment, run_id) if isinstance(e, ApprovalGranted)]
    assert len(decisions) == 1


def test_deciding_a_run_that_does_not_wait_is_refused(
    deployment: Deployment, producer: EventProducer
) -> None:
    run_id = new_run_id("not-waiting")
    DurableRun.start(
        producer, reader(deployment), run_id=run_id, agent="t", input="{}",
        prompt_version="t@1", owner="tests", source="pytest",
    )  # fmt: skip
    refused = cli(deployment, "reject", run_id, "--by", "boss", "--reason", "no")
    assert refused.returncode == 1 and "never asked for an approval" in refused.stderr


# -- the reactor ---------------------------------------------------------------------------


def test_the_reactor_resumes_an_approved_run_from_the_recorded_step(
    deployment: Deployment, producer: EventProducer, effects: EffectsService
) -> None:
    run_id = new_run_id("reactor")
    client = EffectsClient(effects.url)
    bodies: list[str] = []

    def drive(run: DurableRun) -> None:
        run.step("check", lambda ctx: bodies.append("check") or "clean")
        run.await_approval("approve", approver="boss", subject={"v": 1}, due=timedelta(hours=1))
        run.step(
            "score", lambda ctx: bodies.append("score") or client.perform("scoring").external_id
        )
        run.complete()

    with pytest.raises(RunSuspended):
        drive(DurableRun.start(
            producer, reader(deployment), run_id=run_id, agent="t", input="{}",
            prompt_version="t@1", owner="tests", source="pytest",
        ))  # fmt: skip

    reactor = Reactor(
        bootstrap_servers=deployment.bootstrap,
        topic=deployment.names.state_changes,
        group_id=f"{deployment.prefix}-reactor-{uuid.uuid4().hex[:6]}",
    )
    seen: list[tuple[str, int]] = []

    @reactor.on(event="ApprovalGranted")
    def resume(change: RunStateChanged) -> None:
        if change.run_id == run_id:
            seen.append((change.run_id, change.version))
            drive(DurableRun.attach(producer, reader(deployment), change.run_id))

    assert cli(deployment, "approve", run_id, "--by", "boss").returncode == 0

    def completed() -> bool:
        state = reader(deployment).read(run_id)
        return state is not None and state.status is RunStatus.COMPLETED

    reactor.run(max_seconds=30, until=completed)
    assert len(seen) == 1
    assert bodies == ["check", "score"]  # check_form was not run again
    assert state_of(deployment, run_id).status is RunStatus.COMPLETED


class _ScoringAgent:
    """``check``, then ``score``, which times out on its first attempt; ``backoff_s`` later
    the retry succeeds. Suspends instead of waiting, so only a reactor brings it back."""

    def __init__(self, d: Deployment, producer: EventProducer, backoff_s: float) -> None:
        self.d = d
        self.producer = producer
        self.backoff_s = backoff_s
        self.bodies: list[str] = []

    def drive(self, run: DurableRun) -> None:
        def score(ctx: StepContext) -> str:
            self.bodies.append(f"score#{ctx.attempt}")
            if ctx.attempt == 1:
                raise TimeoutError("scoring did not answer")
            return "score:700"

        def check(ctx: StepContext) -> str:
            self.bodies.append("check")
            return "clean"

        run.step("check", check)
        run.step("score", score, retry=RetryPolicy(max_attempts=3, base_s=self.backoff_s))
        run.complete()

    def start(self, run_id: str) -> datetime:
        """Run until the retry is scheduled; its not-before time."""
        with pytest.raises(RunSuspended):
            self.drive(DurableRun.start(
                self.producer, reader(self.d), run_id=run_id, agent="t", input="{}",
                prompt_version="t@1", owner="tests", source="pytest", max_inline_wait_s=0.0,
            ))  # fmt: skip
        not_before = state_of(self.d, run_id).retry_not_before
        assert not_before is not None
        return not_before

    def resume(self, run_id: str) -> None:
        self.drive(DurableRun.attach(self.producer, reader(self.d), run_id, max_inline_wait_s=0.0))


def _retry_reactor(d: Deployment, group_id: str) -> Reactor:
    return Reactor(
        bootstrap_servers=d.bootstrap,
        topic=d.names.state_changes,
        group_id=group_id,
        runs=reader(d),
    )


def _completed(d: Deployment, run_id: str) -> Callable[[], bool]:
    def check() -> bool:
        state = reader(d).read(run_id)
        return state is not None and state.status is RunStatus.COMPLETED

    return check


def _assert_resumed_once_at_the_failed_step(
    d: Deployment, run_id: str, agent: _ScoringAgent, calls: list[tuple[RetryDue, datetime]]
) -> None:
    [(due, called_at)] = calls
    assert called_at >= due.not_before  # never before not-before
    assert (due.step, due.attempt) == ("score", 2)
    assert agent.bodies == ["check", "score#1", "score#2"]  # not started over
    events = events_of(d, run_id)
    [scheduled] = [e for e in events if isinstance(e, RetryScheduled)]
    attempts = started(events, "score")
    assert [a.attempt for a in attempts] == [1, 2]
    assert attempts[1].occurred_at >= scheduled.not_before == due.not_before
    assert len(started(events, "check")) == 1
    assert state_of(d, run_id).status is RunStatus.COMPLETED


def test_the_reactor_resumes_a_run_when_its_retry_is_due(
    deployment: Deployment, producer: EventProducer
) -> None:
    run_id = new_run_id("retry-due")
    agent = _ScoringAgent(deployment, producer, backoff_s=2.0)
    reactor = _retry_reactor(deployment, f"{deployment.prefix}-retrier-{uuid.uuid4().hex[:6]}")
    calls: list[tuple[RetryDue, datetime]] = []

    @reactor.on_retry_due
    def retry(due: RetryDue) -> None:
        if due.run_id == run_id:
            calls.append((due, datetime.now(UTC)))
            agent.resume(due.run_id)

    agent.start(run_id)
    reactor.run(max_seconds=40, until=_completed(deployment, run_id))
    _assert_resumed_once_at_the_failed_step(deployment, run_id, agent, calls)


def test_a_reactor_restarted_while_the_run_waits_still_resumes_it_once(
    deployment: Deployment, producer: EventProducer
) -> None:
    run_id = new_run_id("retry-restart")
    group = f"{deployment.prefix}-retrier-{uuid.uuid4().hex[:6]}"
    agent = _ScoringAgent(deployment, producer, backoff_s=10.0)
    calls: list[tuple[RetryDue, datetime]] = []

    def retry(due: RetryDue) -> None:
        if due.run_id == run_id:
            calls.append((due, datetime.now(UTC)))
            agent.resume(due.run_id)

    agent.start(run_id)
    first = _retry_reactor(deployment, group)
    # The first reactor only notes a due call: on a slow machine it may reach the change after
    # the 10 s backoff; the run must then still be resumed, once, by the second reactor.
    first_calls: list[tuple[RetryDue, datetime]] = []
    first.on_retry_due(lambda due: first_calls.append((due, datetime.now(UTC))))
    committed: list[int] = []

    @first.on(event="RetryScheduled")
    def note(change: RunStateChanged) -> None:
        if change.run_id == run_id:
            committed.append(change.version)  # the loop commits it right after this returns

    waiting: list[RetryDue] = []

    def saw_it() -> bool:
        waiting.extend(due for due in first.pending_retries.values() if due.run_id == run_id)
        return bool(committed and waiting)

    first.run(max_seconds=30, until=saw_it)
    assert committed and waiting, "the first reactor saw the retry"
    assert all(at >= due.not_before for due, at in first_calls)  # never early

    # A new process: nothing in memory, and the RetryScheduled change is committed.
    second = _retry_reactor(deployment, group)
    second.on_retry_due(retry)
    redelivered: list[int] = []
    second.on(event="RetryScheduled")(
        lambda change: redelivered.append(change.version) if change.run_id == run_id else None
    )
    stats = second.run(max_seconds=40, until=_completed(deployment, run_id))
    assert redelivered == [] and stats.retries_loaded >= 1  # found through the query API
    _assert_resumed_once_at_the_failed_step(deployment, run_id, agent, calls)
