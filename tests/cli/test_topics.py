"""`runstate topics ensure` against the real broker, output piped as in a log or a script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.streams.topics import TopicNames, topic_specs

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"


def test_ensure_prints_every_topic_name_whole_and_nothing_on_stderr(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("cli")
    env = {**os.environ, "PYTHONPATH": str(SRC), "RUNSTATE_TOPIC_PREFIX": prefix}
    command = ["topics", "ensure", "--partitions", "2", "--bootstrap", kafka_bootstrap]
    done = subprocess.run(
        [sys.executable, "-c", "from runstate.cli import main; main()", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for spec in topic_specs(TopicNames(prefix), partitions=2):
        assert spec.name in done.stdout  # e.g. <prefix>.runs-changelog: long names, not cut
