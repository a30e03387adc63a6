"""A batch that fails is never committed: the worker stops at once, and after a restart its
events are applied as if nothing had happened."""

from __future__ import annotations

import pytest

from runstate.processors.fencing import EXIT_BATCH_FAILED
from runstate.runs.run_view import run_to_json
from tests.factories import make_run
from tests.polling import assert_eventually
from tests.processors.processor_support import (
    Deployment,
    DeploymentFactory,
    wait_processed_all,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(deployment_factory: DeploymentFactory) -> Deployment:
    return deployment_factory("crash", 2)


def test_a_failed_batch_is_redelivered_not_committed(deployment: Deployment) -> None:
    """Regression: faust's ``take_events`` acknowledged the failed batch in its clean-up and
    faust committed it while stopping, so the restarted worker skipped those events."""
    d = deployment
    w = d.worker("w1", env={"RUNSTATE_TEST_FAIL_CHANGE_AT": "25"}).start()
    w.wait_ready()
    events = [e for i in range(12) for e in make_run(f"run-{i:02d}", seed=i, end="completed")]
    with d.producer() as p:
        for e in events:
            p.send(e)
        p.flush()

    def stopped() -> bool:
        assert w.proc is not None and w.proc.poll() is not None, "still running"
        return True

    assert_eventually(stopped, timeout_s=45, what="the worker stopped on the failed delivery")
    assert w.proc is not None and w.proc.returncode == EXIT_BATCH_FAILED, w.tail()
    assert "stopping the worker without committing" in w.tail(200)

    del w.env["RUNSTATE_TEST_FAIL_CHANGE_AT"]
    w.start()
    w.wait_ready()
    wait_processed_all(d, w)
    oracle = d.oracle()
    for run_id, expected in oracle.items():
        assert expected is not None
        status, body = w.get(f"/runs/{run_id}")
        assert status == 200, body
        body.pop("served_by"), body.pop("partition")
        assert body == run_to_json(expected), run_id
    seen: dict[tuple[str, int], bytes] = {}
    for run_id, version, value in d.changes():
        assert seen.setdefault((run_id, version), value) == value, (run_id, version)
    for run_id, expected in oracle.items():
        assert expected is not None
        assert {v for (r, v) in seen if r == run_id} == set(range(1, expected.version + 1))
