"""A stalled worker (a zombie) must not make anything visible after its partitions moved on.

Worker A is SIGSTOPped mid-work, past its session timeout, so the group gives its
partitions to worker B; then A is SIGCONTed and carries on where it stopped, with an open
transaction and a stale group generation. Its ``send_offsets_to_transaction`` is refused
(the generation moved) or its producer was already fenced when the broker aborted its
timed-out transaction; either way nothing it produced after the takeover is committed. A
``read_committed`` reader must find every ``(run_id, version)`` exactly once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually
from tests.runtime.support import (
    BAD_RECORDS,
    Load,
    WorkerProcess,
    agent_runs,
    check_outputs,
    create_topics,
    interleave,
    produce_raw,
    runtime_config,
    wait_s,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
SESSION_TIMEOUT_MS = 6000
EXIT_FENCED = 75


@pytest.mark.parametrize(
    "transaction_timeout_ms",
    [10_000, 60_000],
    ids=["txn-timed-out-first", "generation-refused-first"],
)
def test_a_zombie_worker_commits_nothing_after_the_takeover(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    transaction_timeout_ms: int,
) -> None:
    """With a short transaction timeout the broker usually aborts A's open transaction
    (fencing its producer) before B starts; with a long one, B usually takes over first
    and A's checkpoint is refused for its stale generation (or, if A stalled between
    sending offsets and committing, B waits for that transaction to time out)."""
    names = TopicNames(unique_name("rtz"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(150, prefix="run", seed=11), seed=11))
    produce_raw(kafka_bootstrap, names.events, BAD_RECORDS)

    def worker(worker_id: str) -> WorkerProcess:
        config = runtime_config(
            kafka_bootstrap,
            names,
            PARTITIONS,
            worker_id=worker_id,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            transaction_timeout_ms=transaction_timeout_ms,
            broker_timeout_s=20.0,
            batch_size=50,
        )
        return WorkerProcess(config, tmp_path / f"{worker_id}.log")

    a, b = worker("w-a"), worker("w-b")
    load = Load(kafka_bootstrap, names, events, rate_per_s=60).start()
    try:
        a.start()
        assert_eventually(
            lambda: a.log_of_this_start().count("assigned:") == PARTITIONS,
            timeout_s=60,
            what=a.log_tail(),
        )
        wait_s(1.5)  # working, with a transaction open most of the time
        a.signal(signal.SIGSTOP)
        stopped_log = len(a.log_path.read_text(errors="replace"))
        b.start()
        # B gets A's partitions once A's session has expired
        assert_eventually(
            lambda: b.log_of_this_start().count("assigned:") == PARTITIONS,
            timeout_s=120,
            what=b.log_tail(),
        )
        wait_s(2.0)  # B works on A's partitions
        a.signal(signal.SIGCONT)

        # the zombie finds out: its checkpoint is refused (or its partitions are lost)
        def zombie_refused() -> bool:
            after = a.log_path.read_text(errors="replace")[stopped_log:]
            return "aborting the checkpoint" in after or a.returncode == EXIT_FENCED

        assert_eventually(
            zombie_refused,
            timeout_s=60,
            what=f"the zombie is refused\n{a.log_tail()}",
        )
        load.join(240)
        verdict = assert_eventually(
            lambda: (
                (v := check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS)))
                and v.complete
                and not v.problems
                and v
            ),
            timeout_s=120,
            interval_s=2.0,
            what=f"every change once\n{a.log_tail()}\n{b.log_tail()}",
        )
        assert verdict.expected.events == len(events)
    finally:
        load.stop()
        code_a, code_b = a.stop(), b.stop()
    assert code_a in (0, EXIT_FENCED), a.log_tail()
    assert code_b == 0, b.log_tail()
    final = check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS))
    assert final.problems == [], final.problems
    assert set(final.change_counts.values()) == {1}
