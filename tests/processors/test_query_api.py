"""Queries across a group of workers: routing to the owner, fan-out lists, rebalances, restore."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from runstate.cli import app as cli
from runstate.runs.run_view import run_to_json
from runstate.runs.state import RunStatus
from runstate.schemas.events import AgentEvent, RetryScheduled, StepStarted
from runstate.streams.reader import end_offsets
from tests.factories import T0, RunBuilder, make_run
from tests.polling import assert_eventually
from tests.processors.processor_support import (
    Deployment,
    DeploymentFactory,
    Worker,
)

pytestmark = pytest.mark.integration

RUNS = 60


@pytest.fixture
def deployment(deployment_factory: DeploymentFactory) -> Deployment:
    return deployment_factory("query", 4)


def _two_workers(d: Deployment, *, standby_replicas: int = 0) -> tuple[Worker, Worker]:
    a = d.worker("wa", standby_replicas=standby_replicas).start()
    b = d.worker("wb", standby_replicas=standby_replicas).start()
    a.wait_ready()
    b.wait_ready()

    def split() -> bool:
        ha, hb = a.health(), b.health()
        assert ha and hb and ha["ready"] and hb["ready"], (ha, hb)
        owned = ha["active_partitions"] + hb["active_partitions"]
        assert sorted(owned) == [0, 1, 2, 3] and ha["active_partitions"], (ha, hb)
        return True

    assert_eventually(split, timeout_s=45, what="partitions split between two workers")
    return a, b


def _produce_runs(d: Deployment) -> dict[str, int]:
    """Runs in every status; returns the offset of each run's last event."""
    last: dict[str, int] = {}
    with d.producer() as p:
        for i in range(RUNS):
            run_id = f"run-{i:03d}"
            if i % 3 == 0:
                b = RunBuilder(run_id, seed=i, clock=datetime.now(UTC))
                b.start(owner=f"team-{i % 2}")
                b.step("collect")
                b.request_approval("collect", due_in=timedelta(days=1))
                events = b.events
            else:
                events = make_run(run_id, seed=i, end="completed" if i % 3 == 1 else "open")
            futures = [p.send(e) for e in events]
            p.flush()
            last[run_id] = futures[-1].result().offset
    return last


def _answers_match_oracle(d: Deployment, via: Worker) -> None:
    oracle = d.oracle()
    assert len(oracle) == RUNS
    for run_id, expected in oracle.items():
        assert expected is not None
        status, body = via.get(f"/runs/{run_id}", timeout=20)
        assert status == 200, (run_id, body)
        body.pop("served_by"), body.pop("partition")
        assert body == run_to_json(expected), run_id


def test_any_worker_answers_and_a_kill_moves_ownership(deployment: Deployment) -> None:
    d = deployment
    a, b = _two_workers(d, standby_replicas=1)
    _produce_runs(d)
    assert_eventually(
        lambda: _answers_match_oracle(d, a) or True, timeout_s=30, what="queries through worker a"
    )
    _answers_match_oracle(d, b)
    served = {a.get(f"/runs/run-{i:03d}")[1]["served_by"] for i in range(RUNS)}
    assert served == {"wa", "wb"}  # some answers were routed to the other owner

    b.kill9()
    t0 = time.monotonic()
    assert_eventually(
        lambda: (a.health() or {}).get("active_partitions") == [0, 1, 2, 3],
        timeout_s=40,
        what="survivor owns every partition",
    )
    print(
        f"\n[figure] kill -9 of one of two workers to full ownership: {time.monotonic() - t0:.1f}s"
    )
    _answers_match_oracle(d, a)

    a.kill9()
    shutil.rmtree(a.data_dir)
    changelog_records = sum(
        hi - lo for lo, hi in end_offsets(d.bootstrap, d.names.changelog).values()
    )
    c = d.worker("wc", data_dir=a.data_dir).start()
    took = c.wait_ready(partitions=4)
    _, m = c.get("/metrics")
    print(
        f"[figure] restore from changelog: {m['restore']['records']} records "
        f"(changelog holds {changelog_records}) in {took:.1f}s from process start; "
        f"restore rate {m['restore']['last_rate_records_per_s']} records/s"
    )
    _answers_match_oracle(d, c)


def test_list_finds_every_waiting_run_across_two_workers(deployment: Deployment) -> None:
    d = deployment
    a, b = _two_workers(d)
    _produce_runs(d)
    oracle = d.oracle()
    waiting = sorted(
        r for r, s in oracle.items() if s is not None and s.status is RunStatus.WAITING_APPROVAL
    )
    assert len(waiting) == RUNS // 3

    def listed() -> list[str]:
        result = CliRunner().invoke(
            cli, ["runs", "list", "--status", "waiting_approval", "--json", "--url", b.url]
        )
        assert result.exit_code == 0, result.output
        body = json.loads(result.output)
        assert body["complete"] and sorted(body["workers"]) == ["wa", "wb"], body
        found = sorted(r["run_id"] for r in body["runs"])
        assert found == waiting
        return found

    assert_eventually(listed, timeout_s=30, what="every waiting run listed")
    _stuck_filters_answer_across_workers(d, a, b, waiting)
    team0 = CliRunner().invoke(cli, ["runs", "list", "--owner", "team-0", "--json", "--url", a.url])
    assert {r["owner"] for r in json.loads(team0.output)["runs"]} == {"team-0"}
    table = CliRunner().invoke(
        cli, ["runs", "list", "--status", "waiting_approval", "--url", a.url]
    )
    assert table.exit_code == 0 and waiting[0] in table.output
    shown = CliRunner().invoke(cli, ["runs", "show", waiting[0], "--url", a.url])
    assert json.loads(shown.output)["status"] == "waiting_approval"
    missing = CliRunner().invoke(cli, ["runs", "show", "no-such-run", "--url", a.url])
    assert missing.exit_code == 1 and "404" in missing.output


def _waiting_for_retry(run_id: str, at: datetime) -> list[AgentEvent]:
    """A run whose first step failed and waits for its retry (phase ``retry_scheduled``)."""
    b = RunBuilder(run_id, clock=at)
    b.start()
    b.emit(StepStarted, step="score", step_index=0, attempt=1)
    b.fail_step("score")
    b.emit(RetryScheduled, step="score", attempt=2, not_before=b.clock + timedelta(minutes=5))
    return b.events


def _stuck_filters_answer_across_workers(
    d: Deployment, a: Worker, b: Worker, waiting: list[str]
) -> None:
    """``--step``, ``--phase`` and ``--idle-for`` through the fan-out of two real workers.

    The runs of ``_produce_runs`` that ``make_run`` built are dated 2025 (idle for days); the
    waiting ones were made now. Two more runs wait for a retry: one as old, one fresh.
    """
    with d.producer() as p:
        for e in [
            *_waiting_for_retry("retry-old", T0),
            *_waiting_for_retry("retry-new", datetime.now(UTC)),
        ]:
            p.send(e)
        p.flush()
    old_runs = sorted([*(f"run-{i:03d}" for i in range(RUNS) if i % 3 != 0), "retry-old"])

    def ids(*args: str, via: Worker = b) -> list[str]:
        result = CliRunner().invoke(cli, ["runs", "list", *args, "--json", "--url", via.url])
        assert result.exit_code == 0, result.output
        body = json.loads(result.output)
        assert body["complete"] and sorted(body["workers"]) == ["wa", "wb"], body
        return sorted(r["run_id"] for r in body["runs"])

    def retries_listed() -> bool:
        assert ids("--phase", "retry_scheduled") == ["retry-new", "retry-old"]
        return True

    assert_eventually(retries_listed, timeout_s=30, what="runs waiting for a retry listed")
    assert ids("--phase", "retry_scheduled", "--idle-for", "1d", via=a) == ["retry-old"]
    assert ids("--step", "score", "--phase", "retry_scheduled", "--idle-for", "2h") == ["retry-old"]
    assert ids("--step", "collect") == waiting
    assert ids("--status", "waiting_approval", "--idle-for", "1h") == []  # asked just now
    assert ids("--idle-for", "1d", via=a) == old_runs

    status, body = a.get("/runs", phase="stuck")
    assert status == 400 and "one of running, completed, failed, retry_scheduled" in body["message"]
    status, body = a.get("/runs", idle_for="3600")
    assert status == 400 and "'3600' is not a duration" in body["message"]
