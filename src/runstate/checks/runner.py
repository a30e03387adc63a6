"""Run the five launch checks against a deployment, in order, with one synthetic run."""

from __future__ import annotations

from collections.abc import Callable

from runstate.checks.deployment import CheckedDeployment, LaunchCheckConfig
from runstate.checks.personal_data import (
    collect_places,
    judge_personal_data,
    scan_places,
)
from runstate.checks.results import CheckResult, LaunchReport, NotRun, Verdict
from runstate.checks.scenario import Scenario
from runstate.checks.synthetic import AGENT, new_check_run_id, pii_plan
from runstate.checks.volume import estimate_volume
from runstate.errors import BrokerError
from runstate.runs.query_client import QueryClient
from runstate.streams.clients import require_reachable
from runstate.streams.producer import EventProducer
from runstate.testing.effects import EffectsService

__all__ = ["CHECK_NAMES", "run_launch_checks"]

CHECK_NAMES = {
    1: "restart mid-task",
    2: "pause at approval",
    3: "same step twice",
    4: "where personal data sits",
    5: "volume estimate",
}

Progress = Callable[[str], None]


def _guarded(number: int, check: Callable[[], CheckResult]) -> CheckResult:
    """The check's result; a failure to run it is a FAIL that says why."""
    try:
        return check()
    except NotRun as exc:
        return CheckResult(number, CHECK_NAMES[number], Verdict.FAIL, f"not run: {exc}")
    except Exception as exc:
        # Broad on purpose: one check that cannot run (KafkaException, an unreachable
        # worker, a damaged segment) must not hide the other checks' results.
        return CheckResult(
            number,
            CHECK_NAMES[number],
            Verdict.FAIL,
            f"could not check: {type(exc).__name__}: {exc}",
        )


def run_launch_checks(
    config: LaunchCheckConfig, *, progress: Progress | None = None, run_id: str | None = None
) -> LaunchReport:
    """Run checks 1 to 5 with a new synthetic run (``check-...``) and report each.

    Starts a counting effects service on 127.0.0.1 and the synthetic agent as child
    processes (each waited for); stops the service before returning. The run's events stay
    in the log (they are history); a run a failed check left open is cancelled.

    Raises:
        QueryError: the query API does not answer (no check could run).
        BrokerError: Kafka is unreachable, or the deployment's topics cannot be read.
    """
    say = progress or (lambda _text: None)
    run_id = run_id or new_check_run_id()
    report = LaunchReport(run_id)
    with QueryClient(config.query_url, timeout_s=10.0) as health:
        health.get("/health")
    require_reachable(config.bootstrap_servers)
    d = CheckedDeployment(config)
    try:
        d.note_starts()
    except Exception as exc:  # confluent_kafka raises KafkaException, not ours
        raise BrokerError(
            f"cannot read the topics of {config.names.prefix!r} at {config.bootstrap_servers}:"
            f" {exc}; check --bootstrap and --topic-prefix (`runstate topics ensure`)"
        ) from exc
    with (
        EffectsService(honour_keys=False) as effects,
        EventProducer(
            bootstrap_servers=config.bootstrap_servers,
            topic_prefix=config.names.prefix,
            producer_name=AGENT,
        ) as producer,
    ):
        scenario = Scenario(d, run_id, effects, producer)
        say(f"1/5 starting {run_id}, killing it mid-step, restarting it")
        report.results.append(_guarded(1, scenario.restart_mid_task))
        say("2/5 watching the approval become visible, approving")
        report.results.append(_guarded(2, scenario.pause_at_approval))
        say("3/5 running the same step again")
        report.results.append(_guarded(3, scenario.same_step_twice))
        scenario.close_if_open()
    say("4/5 searching topics, archive and logs for the run's personal data")
    report.results.append(_guarded(4, lambda: _personal_data(d, run_id)))
    say("5/5 estimating storage")
    report.results.append(_guarded(5, lambda: estimate_volume(d, run_id)))
    return report


def _personal_data(d: CheckedDeployment, run_id: str) -> CheckResult:
    fields = {f.name: f for f in pii_plan(run_id).values()}
    rules = d.topic_policy(d.names.events)
    tags = {
        f"{event_type}.{name}": action
        for event_type, named in (rules.personal_data if rules else {}).items()
        for name, action in named.items()
    }
    places = collect_places(d, run_id, fields)
    return judge_personal_data(tags, fields, places, scan_places(places, fields))
