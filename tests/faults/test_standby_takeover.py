"""Scenario 10: a takeover with a standby replica restores only the tail.

w-2 keeps a standby (``standby_replicas=1``) of every partition w-1 owns by tailing their
changelog; w-1 is killed with -9 while new events arrive, and w-2 takes its partitions over.
For each partition taken over, the figure compares what w-2's restore read with what was
committed to the changelog after its standby's last read (counted from the changelog, no
timing) and with the whole partition (what a worker without a standby reads). The
mechanics are :func:`tests.runtime.standby_takeover.standby_takeover`, shared with the
runtime's integration test; here it runs at a larger size and its figures go in the report.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.streams.topics import TopicNames
from tests.faults.report import ScenarioResult
from tests.runtime.standby_takeover import standby_takeover

#: (how w-1 ends, w-2's standby reading interval) per round.
ROUNDS = [(signal.SIGKILL, 0.2), (signal.SIGKILL, 0.2), (signal.SIGTERM, 5.0)]


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_standby_takeover_restores_at_most_what_was_committed_since_its_last_read(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    scenario: ScenarioResult,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "10", "standby takeover (kill -9, stop)"
    scenario.injections = (
        f"{len(ROUNDS)} rounds: 2 workers (one with standby_replicas=1), 4 partitions, 600 runs;"
        " kill -9 (2 rounds) or stop (1 round, dynamic membership) of the owner while the"
        " second half of the events arrives"
    )
    scenario.figures["recovery"] = "restore of a taken-over partition (changelog records read)"
    per_partition: dict[str, str] = {}
    restored = since = whole = 0
    bad: list[str] = []
    for r, (ending, interval_s) in enumerate(ROUNDS):
        names = TopicNames(unique_name(f"f10r{r}"))
        logs = tmp_path / f"round-{r}"
        logs.mkdir()
        t = standby_takeover(
            kafka_bootstrap,
            names,
            logs,
            ending=ending,
            standby_interval_s=interval_s,
            runs=600,
            seed=seed + r,
            static_membership=ending == signal.SIGKILL,
        )
        if t.verdict.problems or not t.verdict.complete:
            bad.append(f"round {r}: outputs {t.verdict.problems or 'incomplete'}")
        for p in t.partitions:
            per_partition[f"round {r} ({ending.name}) partition {p.partition}"] = (
                f"restored {p.restored}, committed since the standby's last read"
                f" {p.committed_since_standby}, whole partition {p.whole_partition}"
            )
            restored += p.restored
            since += p.committed_since_standby
            whole += p.whole_partition
            if p.restored > p.committed_since_standby:
                bad.append(f"round {r} partition {p.partition}: restored more than the tail")
            if p.standby_last_read is None or p.restored >= p.whole_partition:
                bad.append(f"round {r} partition {p.partition}: no warm standby used")
    scenario.figures["kill -9"] = sum(1 for e, _ in ROUNDS if e == signal.SIGKILL)
    scenario.figures["takeover restores (changelog records)"] = per_partition
    scenario.figures["total: restored / committed since standby read / whole partitions"] = (
        f"{restored} / {since} / {whole}"
        f" ({100 * restored / whole:.1f}% of a restore without standby)"
        if whole
        else "no partition taken over"
    )
    if not any("outputs" in b for b in bad):  # each round's outputs exactly once
        scenario.lost, scenario.doubled, scenario.wrong = 0, 0, 0
    if bad:
        scenario.notes.append("\n".join(bad))
    assert per_partition, "no partition was taken over"
    assert not bad, bad
