"""Fixtures of the fault battery: deployments, brokers of their own, and result rows.

Every scenario gets a :class:`~tests.faults.report.ScenarioResult` (the ``scenario``
fixture) to fill in; when the test ends its row is saved with the outcome, pass or fail, and
the session's end renders ``docs/reliability.md``. Only ``faults``-marked tests save rows:
the quick variants that run in ``make test`` must not rewrite the report.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runstate.streams.broker import LocalBroker
from tests.faults.harness import Deployment, fresh_broker
from tests.faults.report import ScenarioResult, render, save_row

DeploymentFactory = Callable[..., Deployment]

_saved_this_session: list[str] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.stash[_REPORT] = rep
    return rep


_REPORT = pytest.StashKey[pytest.TestReport]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _saved_this_session:
        render()


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[ScenarioResult]:
    """The test's report row; set ``scenario``, ``title``, ``injections`` and figures."""
    row = ScenarioResult(scenario="?", title=request.node.name, injections="")
    row.reproduce = f"make faults PYTEST_ARGS='-k {request.node.name}'"
    began = time.monotonic()
    yield row
    row.duration_s = time.monotonic() - began
    rep = request.node.stash.get(_REPORT, None)
    if rep is None:
        row.result = "error"
    elif rep.passed:
        if row.result == "not run":
            row.result = "pass"
    else:
        row.result = "FAIL" if row.result == "not run" else row.result
        if rep.longrepr is not None and not row.notes:
            # the oracle's summary says it all when there is one; else the assertion does
            row.notes.append(str(rep.longrepr)[-1500:])
    if request.node.get_closest_marker("faults") is not None and row.scenario != "?":
        save_row(row)
        _saved_this_session.append(row.scenario)


#: Set to replay a scenario's random choices (its report row and output name the seed).
SEED_ENV = "FAULTS_SEED"


@pytest.fixture
def seed(request: pytest.FixtureRequest, scenario: ScenarioResult) -> int:
    """The scenario's random seed: ``FAULTS_SEED`` if set, else a fresh one; printed and put
    in the report row with a ``reproduce`` line that sets it."""
    fixed = os.environ.get(SEED_ENV)
    value = int(fixed) if fixed else random.SystemRandom().randrange(1, 1_000_000)
    print(f"{request.node.name}: seed {value} (reproduce with {SEED_ENV}={value})")
    scenario.figures["seed"] = value
    scenario.reproduce = f"{SEED_ENV}={value} {scenario.reproduce}"
    return value


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker only this scenario uses (it may be stopped or killed)."""
    broker = fresh_broker(tmp_path / "kafka")
    try:
        yield broker
    finally:
        broker.kill()
        broker.stop()


@pytest.fixture
def deployment_factory(
    tmp_path: Path, unique_name: Callable[[str], str]
) -> Iterator[DeploymentFactory]:
    """``make(bootstrap, partitions=4)``: topics with a unique prefix; workers reaped after."""
    made: list[Deployment] = []

    def make(bootstrap: str, *, partitions: int = 4, **kw: Any) -> Deployment:
        d = Deployment(bootstrap, unique_name("f"), partitions, tmp_path / f"d{len(made)}", **kw)
        d.root.mkdir(parents=True, exist_ok=True)
        d.ensure_topics()
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.close()
