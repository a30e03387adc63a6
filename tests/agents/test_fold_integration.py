"""The writer's local fold against the real broker and a real processor worker: fresh steps
read nothing from the query API, the fold ends equal to what the processor holds, and a
fenced process finds out at its next outside read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runstate.agents import (
    DurableRun,
    HttpRunStateReader,
    RetryPolicy,
    StepContext,
)
from runstate.errors import RunFenced, StepAttemptFailed
from runstate.runs.dead_letters import HEADER_ERROR_CLASS
from runstate.runs.state import RunState
from runstate.schemas.convert import decode_event
from runstate.streams.producer import EventProducer
from runstate.testing.effects import EffectsClient, EffectsService
from tests.polling import assert_eventually
from tests.workers import Deployment, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    with serving(kafka_bootstrap, "fold", 3, tmp_path_factory.mktemp("fold")) as d:
        yield d


@pytest.fixture(scope="module")
def producer(deployment: Deployment) -> Iterator[EventProducer]:
    p = deployment.producer("fold-test")
    yield p
    p.close()


class CountingReader:
    """The SDK's HTTP reader, counting the query API calls it makes."""

    def __init__(self, d: Deployment) -> None:
        self.inner = HttpRunStateReader(
            d.workers[0].url, bootstrap_servers=d.bootstrap, events_topic=d.names.events
        )
        self.reads = 0

    def read(self, run_id: str, *, after: Any = None) -> RunState | None:
        self.reads += 1
        return self.inner.read(run_id, after=after)

    def latest_position(self, run_id: str) -> Any:
        return self.inner.latest_position(run_id)


def start(producer: EventProducer, reader: CountingReader, run_id: str, **kw: Any) -> DurableRun:
    return DurableRun.start(
        producer, reader, run_id=run_id, agent="fold-agent", input="{}",
        prompt_version="f@1", owner="tests", source="pytest", **kw,
    )  # fmt: skip


def processor_state(d: Deployment, run_id: str) -> RunState:
    r = HttpRunStateReader(
        d.workers[0].url, bootstrap_servers=d.bootstrap, events_topic=d.names.events
    )
    s = r.read(run_id, after=r.latest_position(run_id))
    assert s is not None
    return s


def test_fresh_steps_do_not_call_the_query_api(
    deployment: Deployment, producer: EventProducer
) -> None:
    reader = CountingReader(deployment)
    run = start(producer, reader, f"fold-{uuid.uuid4().hex[:10]}")
    at_start = reader.reads
    assert at_start == 2  # the start's read, and the claim's
    for i in range(15):
        assert run.step(f"s{i}", lambda ctx, i=i: f"out-{i}") == f"out-{i}"
    assert run.step("s4", lambda ctx: "never") == "out-4"  # replayed
    assert reader.reads == at_start
    run.complete("done")
    assert reader.reads == at_start + 1  # the end is checked once


@pytest.mark.parametrize("confirm", [True, False], ids=["confirmed", "unconfirmed"])
def test_the_fold_equals_the_processors_state_after_steps_and_retries(
    deployment: Deployment, producer: EventProducer, confirm: bool
) -> None:
    d = deployment
    run_id = f"fold-{uuid.uuid4().hex[:10]}"
    with EffectsService(honour_keys=False) as effects:
        client = EffectsClient(effects.url)
        reader = CountingReader(d)
        run = start(producer, reader, run_id, confirm_starts=confirm)

        def flaky(ctx: StepContext) -> str:
            if ctx.attempt < 3:
                raise StepAttemptFailed("timeout", f"attempt {ctx.attempt} timed out")
            return "ok"

        def email(ctx: StepContext) -> str:
            key = f"{run_id}:email"
            return ctx.call_once(
                key, lambda: client.perform("email", key=key).external_id, system="email"
            ).external_id

        run.step("plan", lambda ctx: "p")
        run.step("flaky", flaky, retry=RetryPolicy(max_attempts=3, base_s=0.05, factor=1.0))
        run.step("email", email)
        run.step("summarise", lambda ctx: "s")
        folded = run.folded
        assert folded is not None
        assert processor_state(d, run_id) == folded
        assert effects.counts()["email"][f"{run_id}:email"].requests == 1
    assert [c.step for c in folded.completed_steps] == ["plan", "flaky", "email", "summarise"]
    assert [c.attempt for c in folded.completed_steps] == [1, 3, 1, 1]


def test_a_fenced_process_learns_it_at_its_next_outside_read(
    deployment: Deployment, producer: EventProducer
) -> None:
    d = deployment
    run_id = f"fold-{uuid.uuid4().hex[:10]}"
    first = start(producer, CountingReader(d), run_id, holder="proc-a")
    first.step("one", lambda ctx: "1")
    second = DurableRun.attach(producer, CountingReader(d), run_id, holder="proc-b")
    assert second.epoch == 2
    sent: list[str] = []

    def act(ctx: StepContext) -> str:
        return ctx.call_once("k", lambda: sent.append("x") or "e", system="s").external_id

    # proc-a's next steps are decided from its fold; by the read before its call at the
    # latest (earlier if its look at the run already shows the claim) it stops.
    with pytest.raises(RunFenced, match=r"claimed by proc-b \(epoch 2\)"):
        first.step("two", lambda ctx: "2")
        first.step("three", act)
    assert sent == []
    assert second.step("two", lambda ctx: "b2") == "b2"

    def fenced_letters() -> bool:
        letters = [r for r in d.read(d.names.dead_letters) if r.key == run_id.encode()]
        assert letters, "no dead letter yet"
        for letter in letters:
            assert letter.header(HEADER_ERROR_CLASS) == b"fenced"
            assert letter.value is not None
            assert decode_event(letter.value).epoch == 1
        return True

    assert_eventually(fenced_letters, timeout_s=30, what="proc-a's late events dead-lettered")
    s = processor_state(d, run_id)
    assert (s.epoch, s.holder) == (2, "proc-b")
    assert [(c.step, c.output_ref) for c in s.completed_steps] == [("one", "1"), ("two", "b2")]


def test_an_unconfirmed_step_of_a_fenced_process_raises_after_its_body(
    deployment: Deployment, producer: EventProducer
) -> None:
    # confirm_starts=False: the body runs before the start's offset shows the claim; the step
    # then raises, and both of its events are dead-lettered as fenced. The next step's
    # external call is never made.
    d = deployment
    run_id = f"fold-{uuid.uuid4().hex[:10]}"
    first = start(producer, CountingReader(d), run_id, holder="proc-a", confirm_starts=False)
    first.step("one", lambda ctx: "1")
    DurableRun.attach(producer, CountingReader(d), run_id, holder="proc-b")
    ran: list[str] = []
    with pytest.raises(RunFenced, match=r"claimed by proc-b \(epoch 2\)"):
        first.step("two", lambda ctx: ran.append("two") or "2")
    assert ran == ["two"]

    def fenced_letters() -> bool:
        letters = [r for r in d.read(d.names.dead_letters) if r.key == run_id.encode()]
        got = []
        for letter in letters:
            assert letter.header(HEADER_ERROR_CLASS) == b"fenced"
            assert letter.value is not None
            event = decode_event(letter.value)
            got.append((event.event_type, event.epoch))
        assert got == [("StepStarted", 1), ("StepCompleted", 1)], got
        return True

    assert_eventually(fenced_letters, timeout_s=30, what="proc-a's step dead-lettered")
    s = processor_state(d, run_id)
    assert (s.epoch, s.holder, [c.step for c in s.completed_steps]) == (2, "proc-b", ["one"])


def test_attach_continues_from_every_event_written_before_its_claim(
    deployment: Deployment, producer: EventProducer
) -> None:
    # proc-a's steps are acknowledged but (most likely) not yet committed by the worker when
    # proc-b attaches: proc-b claims from what is committed, and its one read that waits
    # (at its claim) must hold every step before it.
    d = deployment
    run_id = f"fold-{uuid.uuid4().hex[:10]}"
    first = start(producer, CountingReader(d), run_id, holder="proc-a")
    for i in range(3):
        first.step(f"s{i}", lambda ctx, i=i: f"a{i}")
    reader = CountingReader(d)
    second = DurableRun.attach(producer, reader, run_id, holder="proc-b")
    assert reader.reads == 2  # the committed state, then the state at its claim
    assert second.epoch == 2
    assert second.folded is not None
    assert [c.step for c in second.folded.completed_steps] == ["s0", "s1", "s2"]
    assert second.step("s1", lambda ctx: "never") == "a1"
    with pytest.raises(RunFenced, match="proc-b"):
        first.step("s3", lambda ctx: "late")
        first.complete("late")
