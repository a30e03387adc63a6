"""The harness starts each contender with this checkout's code and equal settings."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import harness as h


def _worker(system: str) -> h.WorkerProcess:
    return h.WorkerProcess(system, "127.0.0.1:1", "p", Path("/tmp/w"), web_port=7001)


def test_the_runtime_is_configured_by_env_in_the_guarantee_it_names() -> None:
    eos, alo = _worker(h.RUNTIME_EOS), _worker(h.RUNTIME_ALO)
    assert eos.command() == [sys.executable, "-m", "runstate.runtime"]
    env = eos.env()
    assert env["RUNSTATE_RUNTIME_EXACTLY_ONCE"] == "true"
    assert alo.env()["RUNSTATE_RUNTIME_EXACTLY_ONCE"] == "false"
    assert env["RUNSTATE_TOPIC_PREFIX"] == "p"
    assert env["RUNSTATE_RUNTIME_WEB_PORT"] == "7001"
    assert float(env["RUNSTATE_RUNTIME_COMMIT_INTERVAL_S"]) == h.COMMIT_INTERVAL_S
    assert env["PYTHONPATH"].split(":")[0] == str(h.ROOT / "src")


def test_quix_runs_in_the_guarantee_it_names() -> None:
    eos, alo = _worker(h.QUIX_EOS).command(), _worker(h.QUIX_ALO).command()
    assert eos[eos.index("--guarantee") + 1] == "exactly-once"
    assert alo[alo.index("--guarantee") + 1] == "at-least-once"


def test_every_pair_compares_the_same_guarantee() -> None:
    for ours, base in h.PAIRS:
        assert ours in h.SYSTEMS and base in h.SYSTEMS
        assert ours.endswith(base.rsplit("-", 1)[1])
