"""Operators against the real broker and processor workers with authentication on.

Who may approve (CLI, API, and a decision produced straight onto the topic), the admin
override, a request without a token; the article's story (scoring fails until its retries
are spent, ``retry-step`` runs only scoring again); an action of unknown outcome settled with
``resolve-action --found`` (the counting service proves no second call); and
``runs list --needs-attention`` across two workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runstate.agents import DurableRun, HttpRunStateReader
from runstate.agents.process import EXIT_COMPLETED, EXIT_FAILED, EXIT_RECONCILE
from runstate.errors import RunSuspended
from runstate.runs.state import ActionState, ApprovalOutcome, RunState, RunStatus
from runstate.schemas.events import (
    AgentEvent,
    ApprovalGranted,
    ApproverKind,
    FailureReason,
    RunFailed,
    RunStarted,
    StepStarted,
)
from runstate.streams.producer import EventProducer
from runstate.testing.effects import EffectsClient, EffectsService
from tests.polling import assert_eventually
from tests.workers import RUNSTATE, Deployment, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IDENTITIES = ROOT / "examples" / "identities.toml"
SCRIPT = ROOT / "tests" / "agents" / "agent_script.py"
#: The example file's tokens are "demo-<name>".
BOB, EVE, JOE, ANN, AGENT = (
    f"demo-{n}" for n in ("manager.bob", "intern.eve", "ops.joe", "admin.ann", "credit-agent")
)
AUTH = {"RUNSTATE_AUTH_FILE": str(IDENTITIES)}


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    with serving(kafka_bootstrap, "ops", 4, tmp_path_factory.mktemp("ops"), env=AUTH) as d:
        yield d


@pytest.fixture(scope="module")
def producer(deployment: Deployment) -> Iterator[EventProducer]:
    p = deployment.producer("sdk-test")
    yield p
    p.close()


@pytest.fixture
def effects() -> Iterator[EffectsService]:
    with EffectsService(honour_keys=False) as svc:
        yield svc


def _env(d: Deployment, token: str) -> dict[str, str]:
    return {
        **d.workers[0].env,
        **AUTH,
        "RUNSTATE_TOKEN": token,
        "RUNSTATE_QUERY_URL": d.workers[0].url,
    }


def cli(d: Deployment, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUNSTATE), *args],
        env=_env(d, token),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def agent(
    d: Deployment, action: str, run_id: str, effects: EffectsService, *extra: str, kill_at: str = ""
) -> subprocess.CompletedProcess[str]:
    env = _env(d, AGENT)
    if kill_at:
        env["RUNSTATE_TEST_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, str(SCRIPT), action, run_id, "--effects-url", effects.url,
         "--query-url", d.workers[0].url, *extra],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def reader(d: Deployment, token: str = AGENT) -> HttpRunStateReader:
    return HttpRunStateReader(
        d.workers[0].url, bootstrap_servers=d.bootstrap, events_topic=d.names.events, token=token
    )


def state_of(d: Deployment, run_id: str) -> RunState:
    r = reader(d)
    state = r.read(run_id, after=r.latest_position(run_id))
    assert state is not None
    return state


def events_of(d: Deployment, run_id: str) -> list[AgentEvent]:
    return [e for _, e in d.events_by_run().get(run_id, [])]


def post(d: Deployment, token: str | None, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        d.workers[0].url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def new_run_id(hint: str) -> str:
    return f"{hint}-{uuid.uuid4().hex[:10]}"


def _waiting(d: Deployment, producer: EventProducer, run_id: str, approver: str) -> str:
    run = DurableRun.start(
        producer, reader(d), run_id=run_id, agent="credit", input="{}",
        prompt_version="t@1", owner="tests", source="pytest",
    )  # fmt: skip
    kind = ApproverKind.GROUP if approver == "credit-managers" else ApproverKind.USER
    with pytest.raises(RunSuspended):
        run.await_approval(
            "limit", approver=approver, approver_kind=kind, subject={"limit": 5000},
            due=timedelta(hours=1),
        )  # fmt: skip
    approval = run.state().approval
    assert approval is not None and approval.enforce_decider
    return approval.subject_hash


# -- who may approve -----------------------------------------------------------------------


def test_an_approval_by_someone_not_asked_is_refused_everywhere(
    deployment: Deployment, producer: EventProducer
) -> None:
    run_id = new_run_id("who")
    subject = _waiting(deployment, producer, run_id, "manager.bob")
    before = len(events_of(deployment, run_id))

    refused = cli(deployment, EVE, "approve", run_id)
    assert refused.returncode == 1, refused.stderr
    assert "'intern.eve' may not decide" in refused.stderr and "manager.bob" in refused.stderr
    assert "Traceback" not in refused.stderr
    posing = cli(deployment, EVE, "approve", run_id, "--by", "manager.bob")
    assert posing.returncode == 1 and "your token is 'intern.eve'" in posing.stderr
    status, body = post(deployment, EVE, f"/runs/{run_id}/approve", {"comment": "sure"})
    assert (status, body["error"]) == (403, "not_authorized"), body
    assert len(events_of(deployment, run_id)) == before  # nothing was sent

    # A producer that writes straight onto the topic: the processor refuses and dead-letters.
    rogue = producer.new_event(
        ApprovalGranted, run_id, by="intern.eve", subject_hash=subject, by_groups=("sales",)
    )
    delivery = producer.emit(rogue)
    state = reader(deployment).read(run_id, after=delivery)
    assert state is not None and state.status is RunStatus.WAITING_APPROVAL
    assert not state.saw_event(rogue.event_id)

    def dead_lettered() -> bool:
        for r in deployment.read(deployment.names.dead_letters):
            if r.key == run_id.encode() and r.header("rs-error-class") == b"not_authorized":
                detail = (r.header("rs-detail") or b"").decode()
                return "intern.eve" in detail and "manager.bob" in detail
        return False

    assert_eventually(dead_lettered, timeout_s=30, what="the rogue approval dead-lettered")

    ok = cli(deployment, BOB, "approve", run_id, "--subject-hash", subject)
    assert ok.returncode == 0, ok.stderr
    approval = state_of(deployment, run_id).approval
    assert approval is not None
    assert (approval.outcome, approval.decided_by) == (ApprovalOutcome.GRANTED, "manager.bob")


def test_a_group_member_decides_and_an_admin_overrides_with_a_recorded_reason(
    deployment: Deployment, producer: EventProducer
) -> None:
    grouped = new_run_id("group")
    _waiting(deployment, producer, grouped, "credit-managers")
    assert cli(deployment, JOE, "approve", grouped).returncode == 1  # an operator, not a member
    status, body = post(deployment, BOB, f"/runs/{grouped}/reject", {"reason": "too high"})
    assert (status, body["status"], body["by"]) == (200, "in_progress", "manager.bob"), body

    run_id = new_run_id("override")
    _waiting(deployment, producer, run_id, "manager.bob")
    status, body = post(deployment, ANN, f"/runs/{run_id}/approve", {})
    assert status == 403 and "override reason" in body["message"], body
    status, body = post(
        deployment, ANN, f"/runs/{run_id}/approve", {"override_reason": "bob is on leave"}
    )
    assert status == 200, body
    approval = state_of(deployment, run_id).approval
    assert approval is not None
    assert (approval.decided_by, approval.override_reason) == ("admin.ann", "bob is on leave")
    granted = [e for e in events_of(deployment, run_id) if isinstance(e, ApprovalGranted)]
    assert [(e.by, e.by_roles, e.override_reason) for e in granted] == [
        ("admin.ann", ("admin",), "bob is on leave")
    ]


def test_requests_without_a_token_are_refused(deployment: Deployment) -> None:
    status, body = post(deployment, None, "/runs/any/cancel", {"reason": "x", "by": "x"})
    assert (status, body["error"]) == (401, "unauthenticated")
    code, _ = deployment.workers[0].get("/runs")
    assert code == 401
    listed = cli(deployment, "not-a-token", "runs", "list")
    assert listed.returncode == 1 and "401" in listed.stderr
    assert deployment.workers[0].get("/health")[0] == 200


def test_operator_commands_over_http_say_who_may_and_why_not(
    deployment: Deployment, producer: EventProducer
) -> None:
    run_id = new_run_id("http")
    _waiting(deployment, producer, run_id, "manager.bob")
    status, body = post(deployment, EVE, f"/runs/{run_id}/cancel", {"reason": "x"})
    assert (status, body["error"]) == (403, "not_authorized") and "operator" in body["message"]
    status, body = post(deployment, JOE, f"/runs/{run_id}/retry-step", {})
    assert (status, body["error"]) == (409, "run_not_failed"), body
    assert "only a failed run" in body["message"]
    status, body = post(deployment, JOE, "/runs/no-such-run/cancel", {"reason": "x"})
    assert status == 404
    status, body = post(deployment, JOE, f"/runs/{run_id}/cancel", {"reason": "withdrawn"})
    assert (status, body["status"], body["by"]) == (200, "cancelled", "ops.joe"), body
    state = state_of(deployment, run_id)
    assert (state.cancelled_by, state.cancel_reason) == ("ops.joe", "withdrawn")


# -- the article's story: retry only the failed step ---------------------------------------


def test_retry_step_runs_only_the_failed_step_again(
    deployment: Deployment, effects: EffectsService
) -> None:
    run_id = new_run_id("story")
    effects.fail_next("scoring", 2, mode="timeout", delay_s=1.0)
    first = agent(deployment, "start", run_id, effects, "--mode", "pipeline")
    assert first.returncode == EXIT_FAILED, first.stdout + first.stderr
    failed = state_of(deployment, run_id)
    assert (failed.status, failed.current_step) == (RunStatus.FAILED, "score")
    still = agent(deployment, "resume", run_id, effects, "--mode", "pipeline")
    assert still.returncode == EXIT_FAILED  # a failed run stays failed until a person acts

    by_auditor = cli(deployment, EVE, "retry-step", run_id)
    assert by_auditor.returncode == 1 and "operator" in by_auditor.stderr
    wrong = cli(deployment, JOE, "retry-step", run_id, "collect")
    assert wrong.returncode == 1 and "stopped at step 'score'" in wrong.stderr
    retried = cli(deployment, JOE, "retry-step", run_id, "--reason", "scoring fixed")
    assert retried.returncode == 0, retried.stderr
    assert "in_progress at step score" in retried.stdout

    done = agent(deployment, "resume", run_id, effects, "--mode", "pipeline")
    assert done.returncode == EXIT_COMPLETED, done.stdout + done.stderr
    counts = effects.counts()
    assert [c.requests for c in counts["collect"].values()] == [1]  # run once, kept
    assert sorted(counts["scoring"]) == [f"{run_id}:attempt-{n}" for n in (1, 2, 3)]
    assert [c.requests for c in counts["decide"].values()] == [1]
    final = state_of(deployment, run_id)
    assert final.status is RunStatus.COMPLETED
    assert [s.step for s in final.completed_steps] == ["collect", "score", "decide"]
    again = cli(deployment, JOE, "retry-step", run_id)
    assert again.returncode == 1 and "only a failed run" in again.stderr


# -- an action of unknown outcome ----------------------------------------------------------


def test_resolve_action_found_lets_the_run_go_on_without_a_second_call(
    deployment: Deployment, effects: EffectsService
) -> None:
    run_id = new_run_id("unknown")
    key = f"{run_id}:email"
    assert agent(deployment, "start", run_id, effects, kill_at="after_call").returncode == -9
    stuck = agent(deployment, "resume", run_id, effects, "--no-reconcile")
    assert stuck.returncode == EXIT_RECONCILE, stuck.stdout + stuck.stderr

    listed = cli(deployment, JOE, "runs", "list", "--unknown-actions", "--json")
    assert listed.returncode == 0, listed.stderr
    assert run_id in [r["run_id"] for r in json.loads(listed.stdout)["runs"]]
    table = cli(deployment, JOE, "runs", "list", "--unknown-actions")
    assert key[:20] in table.stdout

    retry_first = cli(deployment, JOE, "retry-step", run_id)
    assert retry_first.returncode == 1 and "resolve-action" in retry_first.stderr
    both = cli(deployment, JOE, "resolve-action", run_id, key, "--found", "x", "--not-found")
    assert both.returncode == 2
    external_id = EffectsClient(effects.url).lookup("email", key)
    assert external_id is not None
    resolved = cli(deployment, JOE, "resolve-action", run_id, key, "--found", external_id)
    assert resolved.returncode == 0, resolved.stderr
    assert state_of(deployment, run_id).status is RunStatus.IN_PROGRESS

    done = agent(deployment, "resume", run_id, effects, "--no-reconcile")
    assert done.returncode == EXIT_COMPLETED, done.stdout + done.stderr
    assert effects.counts()["email"][key].requests == 1  # never called a second time
    action = state_of(deployment, run_id).external_action(key)
    assert action is not None
    assert (action.state, action.external_id) == (ActionState.RECORDED, external_id)


# -- who needs a person, across two workers ------------------------------------------------


def _run(producer: EventProducer, run_id: str, *, fail: bool, attention: bool = False) -> None:
    producer.emit(producer.new_event(
        RunStarted, run_id, agent="a", input="{}", prompt_version="p", owner="tests",
        source="pytest",
    ))  # fmt: skip
    producer.emit(producer.new_event(StepStarted, run_id, step="s", step_index=0, attempt=1))
    if fail:
        producer.emit(producer.new_event(
            RunFailed, run_id, step="s", reason=FailureReason.TIMEOUT, message="spent",
            needs_attention=attention,
        ))  # fmt: skip


def test_needs_attention_lists_exactly_the_runs_that_need_a_person_across_two_workers(
    deployment: Deployment, producer: EventProducer
) -> None:
    tag = uuid.uuid4().hex[:6]
    failing = {f"{tag}-fail-{i}" for i in range(6)}
    fine = {f"{tag}-ok-{i}" for i in range(6)}
    for i, run_id in enumerate(sorted(failing)):
        _run(producer, run_id, fail=True, attention=i % 2 == 0)
    for run_id in fine:
        _run(producer, run_id, fail=False)
    second = deployment.worker("w2", env=AUTH).start()
    second.wait_ready(timeout_s=90)

    def listed() -> set[str] | None:
        result = cli(deployment, JOE, "runs", "list", "--needs-attention", "--json")
        if result.returncode != 0:
            return None
        body = json.loads(result.stdout)
        if not body["complete"] or len(body["workers"]) != 2:
            return None
        return {r["run_id"] for r in body["runs"] if r["run_id"].startswith(tag)}

    assert_eventually(lambda: listed() == failing, timeout_s=90, what="both workers list")
    table = cli(deployment, JOE, "runs", "list", "--needs-attention")
    assert "failed: timeout - spent; retry-step" in " ".join(table.stdout.split())
    closed = sorted(failing)[0]
    assert cli(deployment, JOE, "cancel", closed, "--reason", "duplicate").returncode == 0
    assert_eventually(lambda: listed() == failing - {closed}, timeout_s=30, what="closed")


# -- dead letters --------------------------------------------------------------------------


def test_a_dead_letter_is_requeued_once_after_its_cause_is_fixed(
    deployment: Deployment, producer: EventProducer
) -> None:
    run_id = new_run_id("dlq")
    early = producer.new_event(StepStarted, run_id, step="s", step_index=0, attempt=1)
    producer.emit(early)  # before its RunStarted: set aside as run_not_started

    def letter() -> dict[str, Any] | None:
        listed = cli(deployment, EVE, "dead-letters", "list", "--run", run_id, "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        return rows[0] if rows else None

    assert_eventually(lambda: letter() is not None, timeout_s=30, what="dead-lettered")
    row = letter()
    assert row is not None
    assert (row["reason"], row["class"], row["requeued"]) == (
        "rejected",
        "run_not_started",
        False,
    )
    shown = cli(deployment, EVE, "dead-letters", "show", row["ref"])
    assert shown.returncode == 0 and json.loads(shown.stdout)["event_type"] == "StepStarted"

    # The fix: the run exists now.
    producer.emit(producer.new_event(
        RunStarted, run_id, agent="a", input="{}", prompt_version="p", owner="tests",
        source="pytest",
    ))  # fmt: skip
    denied = cli(deployment, EVE, "dead-letters", "requeue", row["ref"])
    assert denied.returncode == 1 and "operator" in denied.stderr
    ok = cli(deployment, JOE, "dead-letters", "requeue", row["ref"])
    assert ok.returncode == 0, ok.stderr
    again = cli(deployment, JOE, "dead-letters", "requeue", row["ref"])
    assert again.returncode == 1 and "already requeued" in again.stderr
    assert (letter() or {}).get("requeued") is True
    copies = [r for r in deployment.read(deployment.names.events) if r.header("rs-requeue-of")]
    assert [c.header("rs-requeue-of") for c in copies] == [row["ref"].encode()]
    assert_eventually(
        lambda: state_of(deployment, run_id).current_step == "s",
        timeout_s=90,
        what="the requeued step applied",
    )
