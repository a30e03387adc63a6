"""Checks 1 to 3: drive the synthetic agent through a kill, an approval and a re-run.

The agent runs as a child process (``python -m runstate.checks``) against the
deployment's broker and query API, with its side effects going to a counting
:class:`~runstate.testing.effects.EffectsService` in no-key mode: the service performs every
request it gets, so only runstate's own ledger can prevent a duplicate.

1. **Restart mid-task**: the agent is SIGKILLed inside step ``enrich`` and started again. It
   must continue at ``enrich`` (attempt 2) without running ``collect`` again, and the
   processor's state must equal the state rebuilt from the log by the reducer (the archive
   and Kafka when the policy archives the events topic, as a restore would read them).
2. **Pause at approval**: the run must show as ``waiting_approval`` with its approver through
   ``GET /runs/{id}``, ``GET /runs?status=waiting_approval`` and the state-changes topic
   within the limit (10 s); then it is approved and the agent completes it.
3. **Same step twice**: ``notify`` asks for its email twice in a row with the same key, and
   the whole agent is run once more on the completed run; every key must show exactly one
   request at the service, and the re-run must write no event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from runstate.agents.approvals import approve
from runstate.checks.deployment import CheckedDeployment
from runstate.checks.results import CheckResult, NotRun, Verdict
from runstate.checks.synthetic import (
    EFFECT_KEYS,
    EXIT_COMPLETED,
    EXIT_WAITING,
    KILL_ENV,
    effect_key,
    pii_plan,
)
from runstate.errors import Error, QueryError
from runstate.identity import Principal, Role
from runstate.retention.audit import compare_states
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.retention.replay import HistorySource, replay_all
from runstate.runs.query_client import QueryClient
from runstate.runs.reducer import fold
from runstate.runs.run_view import RunFilter
from runstate.runs.state import RunState, RunStatus, StepPhase
from runstate.runs.state_codec import StateCodec
from runstate.schemas.events import AgentEvent, RunCancelled, StepStarted
from runstate.settings import load_settings
from runstate.streams.producer import EventProducer
from runstate.testing.effects import EffectCount, EffectsService

__all__ = ["Scenario", "judge_side_effects", "step_attempts"]

_AGENT_MODULE = "runstate.checks"


def step_attempts(events: list[tuple[int, AgentEvent]]) -> dict[str, list[int]]:
    """Attempts started per step, in log order."""
    attempts: dict[str, list[int]] = defaultdict(list)
    for _offset, event in events:
        if isinstance(event, StepStarted):
            attempts[event.step].append(event.attempt)
    return dict(attempts)


def judge_side_effects(
    counts: Mapping[str, Mapping[str, EffectCount]], expected: Mapping[str, str]
) -> tuple[Verdict, list[str]]:
    """PASS when each expected ``key -> kind`` reached the service exactly once.

    Returns:
        The verdict and one line per key (``kind key: n requests, m effects``).
    """
    lines, verdict = [], Verdict.PASS
    for key, kind in expected.items():
        c = counts.get(kind, {}).get(key)
        if c is None:
            lines.append(f"{kind} {key}: never requested (the step did not run)")
            verdict = Verdict.FAIL
            continue
        lines.append(f"{kind} {key}: {c.requests} request(s), {c.effects} effect(s)")
        if c.requests != 1 or c.effects != 1:
            verdict = Verdict.FAIL
    return verdict, lines


class Scenario:
    """One synthetic run driven through checks 1 to 3 (in that order)."""

    def __init__(
        self,
        deployment: CheckedDeployment,
        run_id: str,
        effects: EffectsService,
        producer: EventProducer,
    ) -> None:
        self.d = deployment
        self.run_id = run_id
        self.effects = effects
        self.producer = producer
        self.waiting = False
        self.completed = False
        self.pii = pii_plan(run_id)

    # -- the agent process -----------------------------------------------------------------
    def agent(self, action: str, *, kill_at: str = "") -> subprocess.CompletedProcess[str]:
        """Run the synthetic agent once (start or resume) and wait for it to exit."""
        env = {
            **os.environ,
            "RUNSTATE_BOOTSTRAP_SERVERS": self.d.bootstrap,
            "RUNSTATE_TOPIC_PREFIX": self.d.names.prefix,
            "RUNSTATE_QUERY_URL": self.d.config.query_url,
        }
        env.pop(KILL_ENV, None)
        if kill_at:
            env[KILL_ENV] = kill_at
        command = [sys.executable, "-m", _AGENT_MODULE, action, self.run_id]
        command += ["--effects-url", self.effects.url, "--query-url", self.d.config.query_url]
        try:
            return subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.d.config.agent_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:  # subprocess.run killed it already
            raise Error(
                f"the synthetic agent ({action}) did not exit within"
                f" {self.d.config.agent_timeout_s:.0f}s; is the processor keeping up?"
            ) from exc

    @staticmethod
    def _said(result: subprocess.CompletedProcess[str]) -> str:
        lines = (result.stdout.strip().splitlines() or [""])[-1:]
        try:
            return str(json.loads(lines[0]).get("detail", ""))
        except ValueError:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return " | ".join(tail) or f"exit {result.returncode}"

    # -- 1 ---------------------------------------------------------------------------------
    def restart_mid_task(self) -> CheckResult:
        name = "restart mid-task"
        killed = self.agent("start", kill_at="mid_step")
        if killed.returncode != -signal.SIGKILL:
            return CheckResult(
                1,
                name,
                Verdict.FAIL,
                f"the agent was to die in step enrich but exited {killed.returncode}:"
                f" {self._said(killed)}",
            )
        dead = self.d.state(self.run_id)
        problems: list[str] = []
        at_kill = f"{dead.current_step} attempt {dead.step_attempt} ({dead.step_phase})"
        if (dead.current_step, dead.step_phase) != ("enrich", StepPhase.RUNNING):
            problems.append(f"after the kill the state shows {at_kill}, not enrich running")
        resumed = self.agent("resume")
        if resumed.returncode != EXIT_WAITING:
            return CheckResult(
                1,
                name,
                Verdict.FAIL,
                f"killed in {at_kill}; the restarted agent exited {resumed.returncode}"
                f" instead of reaching the approval: {self._said(resumed)}",
            )
        self.waiting = True
        events = self.d.run_events(self.run_id)
        attempts = step_attempts(events)
        if attempts.get("collect") != [1]:
            problems.append(f"collect attempts {attempts.get('collect')}: the run started over")
        if attempts.get("enrich") != [1, 2]:
            problems.append(f"enrich attempts {attempts.get('enrich')}, expected [1, 2]")
        counts = self.effects.counts()
        verdict, effect_lines = judge_side_effects(
            counts, {effect_key(self.run_id, s): EFFECT_KEYS[s] for s in ("collect", "enrich")}
        )
        if verdict is Verdict.FAIL:
            problems.extend(effect_lines)
        live = self.d.state(self.run_id)
        replayed, origin = self._replayed(events)
        mismatches = compare_states(
            {} if replayed is None else {self.run_id: replayed},
            {self.run_id: live},
            rules=self.d.topic_policy(self.d.names.events),
        )
        problems.extend(str(m) for m in mismatches[:5])
        collect_runs = len(attempts.get("collect", []))
        evidence = (
            f"killed (SIGKILL) in {at_kill}; restarted: collect ran {collect_runs}x,"
            f" enrich attempts {attempts.get('enrich')}; processor state v{live.version}"
            f" {'==' if not mismatches else '!='} {origin} ({len(events)} events)"
        )
        details = {
            "killed_at": at_kill,
            "step_attempts": attempts,
            "effects": effect_lines,
            "replayed_from": origin,
            "state_version": live.version,
            "mismatches": [str(m) for m in mismatches],
        }
        if problems:
            return CheckResult(1, name, Verdict.FAIL, "; ".join(problems), details)
        return CheckResult(1, name, Verdict.PASS, evidence, details)

    def _replayed(self, events: list[tuple[int, AgentEvent]]) -> tuple[RunState | None, str]:
        """The run rebuilt from the log the way a restore would read it."""
        topic = self.d.names.events
        store = self.d.archive(topic)
        if store is None:
            return fold(events), "the reducer over the events in Kafka"
        source = HistorySource(
            store,
            ConfluentKafkaLog(self.d.bootstrap),
            self.d.bootstrap,
            topic,
            self.d.codec,
            max_event_bytes=load_settings().max_event_bytes,
        )
        result = replay_all(source, run_id=self.run_id)
        return result.states.get(self.run_id), "a replay of archive + Kafka"

    # -- 2 ---------------------------------------------------------------------------------
    def pause_at_approval(self) -> CheckResult:
        name = "pause at approval"
        if not self.waiting:
            raise NotRun("the synthetic run never reached its approval (see check 1)")
        limit = self.d.config.visibility_limit_s
        approver = self.pii["ApprovalRequested", "approver"].token
        seen = self._watch_waiting(approver, limit)
        details: dict[str, Any] = {"approver": approver, "limit_s": limit, "seen_after_s": seen}
        late = {where: s for where, s in seen.items() if s is None or s > limit}
        shown = ", ".join(
            f"{where} {'never' if s is None else f'{s:.1f}s'}" for where, s in seen.items()
        )
        # Decided by someone other than the approver (their own canary token): an admin
        # overriding, with the reason recorded, as only the approver or an admin may decide.
        by = Principal(self.pii["ApprovalGranted", "by"].token, roles=frozenset({Role.ADMIN}))
        try:
            receipt = approve(
                self.producer,
                self.d.reader(),
                self.run_id,
                by=by,
                comment=self.pii["ApprovalGranted", "comment"].token,
                override_reason="runstate launch check: the synthetic run's own approval",
            )
        except Error as exc:
            return CheckResult(
                2, name, Verdict.FAIL, f"visible: {shown}; approving failed: {exc}", details
            )
        resumed = self.agent("resume")
        if resumed.returncode != EXIT_COMPLETED:
            return CheckResult(
                2,
                name,
                Verdict.FAIL,
                f"visible: {shown}; approved, but the agent exited {resumed.returncode}:"
                f" {self._said(resumed)}",
                details,
            )
        self.completed = True
        details["approved_event"] = f"{receipt.delivery.partition}@{receipt.delivery.offset}"
        evidence = (
            f"waiting_approval for {approver} seen (after the request) in {shown}"
            f" (limit {limit:.0f}s); approved, then the agent completed the run"
        )
        if late:
            return CheckResult(2, name, Verdict.FAIL, "not in time: " + evidence, details)
        return CheckResult(2, name, Verdict.PASS, evidence, details)

    def _watch_waiting(self, approver: str, limit: float) -> dict[str, float | None]:
        """Seconds from the request until each view showed the run waiting for ``approver``."""
        secret = load_settings().token
        token = None if secret is None else secret.get_secret_value()
        seen: dict[str, float | None] = {
            "GET /runs/{id}": None,
            "GET /runs?status=waiting_approval": None,
            "state-changes topic": None,
        }
        deadline = time.monotonic() + limit
        with QueryClient(self.d.config.query_url, timeout_s=5.0, token=token) as client:
            while True:
                self._poll_views(client, approver, seen)
                if all(s is not None for s in seen.values()) or time.monotonic() > deadline:
                    return seen
                time.sleep(0.1)

    def _poll_views(
        self,
        client: QueryClient,
        approver: str,
        seen: dict[str, float | None],
    ) -> None:
        """One look at each view not yet seen; times count from the approval's request."""
        requested = None
        try:
            body = client.run(self.run_id)
            approval = body.get("approval") or {}
            if approval.get("requested_at"):
                requested = datetime.fromisoformat(approval["requested_at"])
            waiting = body.get("status") == RunStatus.WAITING_APPROVAL.value
            if waiting and approval.get("approver") == approver and requested is not None:
                seen["GET /runs/{id}"] = seen["GET /runs/{id}"] or _since(requested)
            if requested is not None and seen["GET /runs?status=waiting_approval"] is None:
                listed = client.all_runs(RunFilter(status=RunStatus.WAITING_APPROVAL))["runs"]
                mine = [r for r in listed if r.get("run_id") == self.run_id]
                if mine and (mine[0].get("approval") or {}).get("approver") == approver:
                    seen["GET /runs?status=waiting_approval"] = _since(requested)
            if requested is not None and seen["state-changes topic"] is None:
                codec = StateCodec()
                for r in self.d.run_records(self.d.names.state_changes, self.run_id):
                    if r.value is None:
                        continue
                    change = codec.decode_change(r.value)
                    if (
                        change.to_status is RunStatus.WAITING_APPROVAL
                        and change.approver == approver
                    ):
                        seen["state-changes topic"] = _since(requested)
        except QueryError:
            pass  # a worker busy or rebalancing: the next poll tells, the deadline decides

    # -- 3 ---------------------------------------------------------------------------------
    def same_step_twice(self) -> CheckResult:
        name = "same step twice"
        if not self.completed:
            raise NotRun("the synthetic run did not complete (see check 2)")
        before = len(self.d.run_events(self.run_id))
        again = self.agent("resume")
        written = self.d.run_events(self.run_id)[before:]
        expected = {effect_key(self.run_id, s): kind for s, kind in EFFECT_KEYS.items()}
        verdict, lines = judge_side_effects(self.effects.counts(), expected)
        details = {"effects": lines, "events_written_by_rerun": [e.event_type for _, e in written]}
        problems = [] if verdict is Verdict.PASS else lines
        if again.returncode != EXIT_COMPLETED:
            problems.append(f"the re-run exited {again.returncode}: {self._said(again)}")
        if written:
            kinds = ", ".join(e.event_type for _, e in written)
            problems.append(f"the re-run of the completed run wrote events: {kinds}")
        if problems:
            return CheckResult(3, name, Verdict.FAIL, "; ".join(problems), details)
        notify = next(line for line in lines if ":notify" in line)
        return CheckResult(
            3,
            name,
            Verdict.PASS,
            f"notify asked twice in a row with one key, then the whole agent re-run on the"
            f" completed run: {notify}; collect and enrich 1 each; the re-run wrote no event",
            details,
        )

    # -- tidying up ------------------------------------------------------------------------
    def close_if_open(self) -> str | None:
        """Cancel the run if a failed check left it open (so no one waits for it).

        Returns:
            The status the run was left in, or None if it could not be read.
        """
        try:
            state = self.d.state(self.run_id)
            if not state.is_terminal:
                event = self.producer.new_event(
                    RunCancelled, self.run_id, by="runstate-check", reason="launch check aborted"
                )
                self.producer.emit(event)
                return RunStatus.CANCELLED.value
            return state.status.value
        except Error:
            return None


def _since(requested: datetime) -> float:
    """Seconds from ``requested`` until now (the moment a view was seen, so an upper bound)."""
    return max(0.0, (datetime.now(UTC) - requested).total_seconds())
