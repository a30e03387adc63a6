"""`runstate demo` end to end: the article's example against a real broker and processor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runstate.streams.broker import LocalBroker
from runstate.testing.credit_limit import notification_keys

pytestmark = pytest.mark.integration


def test_demo_runs_the_credit_limit_example_once_per_side_effect(
    kafka_broker: LocalBroker | None, kafka_bootstrap: str, tmp_path: Path
) -> None:
    if kafka_broker is None:
        pytest.skip("the demo manages a local broker; an external cluster is configured")
    # the demo reuses a running broker found in its state folder: point it at the session's
    env = {
        **os.environ,
        "RUNSTATE_STATE_DIR": str(tmp_path / "state"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),  # this checkout's code
    }
    broker_dir = tmp_path / "state" / "broker"
    broker_dir.parent.mkdir(parents=True)
    broker_dir.symlink_to(kafka_broker.config.data_dir)
    (tmp_path / "state" / "jars").symlink_to(kafka_broker.config.jars_dir.parent)
    proc = subprocess.run(
        [sys.executable, "-m", "runstate", "demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert kafka_bootstrap.split(":")[1] in out  # it used the session's broker
    # The service's rows, counted here rather than trusted from the demo's own verdict line.
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in proc.stdout.splitlines()]
    notifications = {row[1]: (row[2], row[3]) for row in rows if row[:1] == ["notification"]}
    expected = {key.replace("run-1", "<run>") for key in notification_keys("run-1").values()}
    assert notifications == dict.fromkeys(expected, ("1", "1")), out[-3000:]
    assert "each of the 3 notifications was sent exactly once" in out
    assert "check_form ran 1 time(s)" in out
    assert "RunCompleted" in out
