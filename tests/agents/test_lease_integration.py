"""The run lease against the real broker and the runtime processor (a child process), with
agents as child processes too: the second claim fences the first, and a process killed with
its lease held is replaced once the lease runs out.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from runstate.agents import HttpRunStateReader
from runstate.agents.process import EXIT_COMPLETED, EXIT_FENCED
from runstate.runs.dead_letters import HEADER_DETAIL, HEADER_ERROR_CLASS, HEADER_REASON
from runstate.runs.state import RunState, RunStateChanged, RunStatus, StepPhase
from runstate.runs.state_codec import decode_change
from runstate.schemas.convert import decode_event
from runstate.schemas.events import AgentEvent, RunClaimed, StepCompleted
from runstate.testing.effects import EffectsService
from tests.polling import assert_eventually
from tests.workers import Deployment, serving

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("lease_agent.py")


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    with serving(kafka_bootstrap, "lease", 3, tmp_path_factory.mktemp("lease")) as d:
        yield d


@pytest.fixture
def effects() -> Iterator[EffectsService]:
    # No-key mode: the service performs every call, so only the SDK can prevent a duplicate.
    with EffectsService(honour_keys=False) as svc:
        yield svc


def command(d: Deployment, effects: EffectsService, *args: str) -> list[str]:
    return [
        sys.executable, str(SCRIPT), *args,
        "--effects-url", effects.url, "--query-url", d.workers[0].url,
    ]  # fmt: skip


def env(d: Deployment) -> dict[str, str]:
    return {**d.workers[0].env, "RUNSTATE_QUERY_URL": d.workers[0].url}


def run_agent(
    d: Deployment, effects: EffectsService, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    done = subprocess.run(
        command(d, effects, *args),
        env=env(d),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    return done, (json.loads(lines[-1]) if lines else {})


def reader(d: Deployment) -> HttpRunStateReader:
    return HttpRunStateReader(
        d.workers[0].url, bootstrap_servers=d.bootstrap, events_topic=d.names.events
    )


def state_of(d: Deployment, run_id: str) -> RunState:
    r = reader(d)
    state = r.read(run_id, after=r.latest_position(run_id))
    assert state is not None
    return state


def events_of(d: Deployment, run_id: str) -> list[AgentEvent]:
    return [e for _, e in d.events_by_run().get(run_id, [])]


def history(d: Deployment, run_id: str) -> list[RunStateChanged]:
    changes = [decode_change(r.value) for r in d.read(d.names.state_changes) if r.value]
    return sorted((c for c in changes if c.run_id == run_id), key=lambda c: c.version)


def test_the_second_claim_fences_the_first(deployment: Deployment, effects: EffectsService) -> None:
    d = deployment
    run_id = f"fence-{uuid.uuid4().hex[:10]}"
    first = subprocess.Popen(
        command(d, effects, "start", run_id, "--holder", "proc-a", "--hold"),
        env=env(d),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def first_is_inside_step_one() -> bool:
            s = state_of(d, run_id)
            assert (s.current_step, s.step_phase, s.epoch) == ("one", StepPhase.RUNNING, 1), s
            return True

        assert_eventually(first_is_inside_step_one, timeout_s=60, what="proc-a inside step one")
        # The task is delivered again while proc-a is only slow.
        second, report = run_agent(d, effects, "attach", run_id, "--holder", "proc-b")
        assert second.returncode == EXIT_COMPLETED, second.stdout + second.stderr
        assert report["epoch"] == 2
        out, err = first.communicate(timeout=90)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == EXIT_FENCED, out + err
    fenced = json.loads(out.strip().splitlines()[-1])
    assert fenced["status"] == "fenced"
    assert "claimed by proc-b (epoch 2)" in str(fenced["detail"])

    s = state_of(d, run_id)
    assert (s.status, s.epoch, s.holder) == (RunStatus.COMPLETED, 2, "proc-b")
    assert [c.step for c in s.completed_steps] == ["one", "two"]
    # The counting service saw the e-mail once.
    assert effects.counts()["email"][f"{run_id}:email"].requests == 1

    def late_completion_is_dead_lettered() -> bool:
        letters = [
            r
            for r in d.read(d.names.dead_letters)
            if r.key is not None and r.key == run_id.encode()
        ]
        assert letters, "no dead letter yet"
        [letter] = letters
        assert letter.header(HEADER_REASON) == b"rejected"
        assert letter.header(HEADER_ERROR_CLASS) == b"fenced"
        detail = (letter.header(HEADER_DETAIL) or b"").decode()
        assert detail.startswith("fenced: run claimed by proc-b (epoch 2)"), detail
        assert letter.value is not None
        late = decode_event(letter.value)
        assert isinstance(late, StepCompleted) and (late.step, late.epoch) == ("one", 1)
        return True

    assert_eventually(late_completion_is_dead_lettered, timeout_s=30, what="fenced dead letter")

    claims = [(c.epoch, c.holder) for c in history(d, run_id) if c.event_type == "RunClaimed"]
    assert claims == [(1, "proc-a"), (2, "proc-b")]


def test_a_process_killed_holding_the_lease_is_replaced_after_the_lease_time(
    deployment: Deployment, effects: EffectsService
) -> None:
    d = deployment
    run_id = f"lease-{uuid.uuid4().hex[:10]}"
    lease = "5"
    killed, _ = run_agent(
        d, effects, "start", run_id, "--holder", "proc-a", "--lease-s", lease, "--die"
    )
    assert killed.returncode == -9, killed.stderr
    held = state_of(d, run_id)
    assert (held.holder, held.epoch, held.step_phase) == ("proc-a", 1, StepPhase.RUNNING)
    assert held.lease_until is not None

    done, report = run_agent(
        d, effects, "attach", run_id, "--holder", "proc-b", "--lease-s", lease, "--wait-for-lease"
    )
    assert done.returncode == EXIT_COMPLETED, done.stdout + done.stderr
    s = state_of(d, run_id)
    assert (s.status, s.epoch, s.holder) == (RunStatus.COMPLETED, 2, "proc-b")
    assert effects.counts()["email"][f"{run_id}:email"].requests == 1
    # proc-b claimed only once proc-a's lease had run out (waiting for it if it had to).
    [claim] = [e for e in events_of(d, run_id) if isinstance(e, RunClaimed) and e.epoch == 2]
    assert claim.occurred_at >= held.lease_until
    last_of_a = max(e.occurred_at for e in events_of(d, run_id) if e.epoch == 1)
    assert held.lease_until == last_of_a + timedelta(seconds=5)
    assert report["waited"] in (0, 1)
