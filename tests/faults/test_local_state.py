"""Scenario 5: corrupted local state. The runtime keeps one RocksDB directory per partition
(``<data dir>/partition-<n>``), its changelog offset in a ``runstate.meta`` column family
written in the same batch as the data, and no write-ahead log (the changelog is the durable
copy). After the worker ends (a clean stop, so there are SST files to cut, or a kill -9),
one partition directory is damaged: a truncated SST, a garbled offset record in the meta
column family, a deleted CURRENT or MANIFEST, a stale LOCK file, a second process holding
the lock. On restart the damage must be detected (``StoreDamaged``: the store is dropped and
restored from the changelog; ``StoreInUse``: the worker stops and a supervisor restarts it
with a back-off), and no query answered with a wrong state meanwhile."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from runstate.runs.state import RunState
from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import Deployment, Load, WorkerProcess, agent_runs, interleave
from tests.faults.oracle import Oracle, converge
from tests.faults.report import ScenarioResult

#: Restarts a supervisor would make before the case counts as a crash loop.
MAX_RESTARTS = 3
#: The supervisor's wait before the first restart, doubled for each further one (as a
#: pod's crash-loop back-off does).
RESTART_BACKOFF_S = 5.0
LOCK_HELD_S = 20.0


def partition_dbs(w: WorkerProcess) -> list[Path]:
    return sorted(w.data_dir.glob("partition-*"))


def _largest(db: Path, pattern: str) -> Path | None:
    files = sorted(db.glob(pattern), key=lambda f: f.stat().st_size)
    return files[-1] if files else None


def truncate_sst(db: Path) -> str:
    sst = _largest(db, "*.sst")
    if sst is None:
        return "no SST file (nothing flushed yet)"
    size = sst.stat().st_size
    with sst.open("r+b") as f:
        f.truncate(size // 2)
    return f"{sst.name} {size} -> {size // 2} bytes"


#: Python that opens a partition store (``sys.argv[1]``) as ``db``, meta column family too.
_OPEN = (
    "import sys, rocksdict as r\n"
    "families = {'runstate.meta': r.Options(raw_mode=True)}\n"
    "db = r.Rdict(sys.argv[1], r.Options(raw_mode=True), column_families=families)"
)


def garble_offset(db: Path) -> str:
    """Overwrite the changelog offset in the meta column family with bytes of a wrong size."""
    code = (
        f"{_OPEN}\n"
        "db.get_column_family('runstate.meta')[b'changelog-offset'] = b'garbled'\n"
        "db.flush()\n"
        "db.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=60)
    return "changelog offset in runstate.meta overwritten with 7 junk bytes"


def delete_current(db: Path) -> str:
    (db / "CURRENT").unlink()
    return "CURRENT deleted"


def delete_manifest(db: Path) -> str:
    gone = [m.name for m in db.glob("MANIFEST-*")]
    for m in db.glob("MANIFEST-*"):
        m.unlink()
    return f"{', '.join(gone)} deleted"


def stale_lock(db: Path) -> str:
    (db / "LOCK").write_bytes(b"pid 999999 held this once\n")
    return "LOCK file left with junk in it"


Damage = Callable[[Path], str]
#: Each case and how the worker ends before it: a clean stop flushes the memtables into
#: SST files (without a WAL, a kill -9 leaves only what was flushed before).
CASES: dict[str, Damage] = {
    "truncated SST": truncate_sst,
    "garbled offset (meta column family)": garble_offset,
    "deleted CURRENT": delete_current,
    "deleted MANIFEST": delete_manifest,
    "stale LOCK file": stale_lock,
}


def _victim(dbs: list[Path], case: str, i: int) -> Path:
    """The partition folder with the most to damage for ``case`` (round robin otherwise)."""
    pattern = {"truncated SST": "*.sst"}.get(case)
    if pattern is None:
        return dbs[i % len(dbs)]
    return max(dbs, key=lambda db: sum(f.stat().st_size for f in db.glob(pattern)))


def hold_lock(db: Path, seconds: float) -> subprocess.Popen[bytes]:
    """A second process that opens ``db`` (taking RocksDB's lock) for ``seconds``."""
    code = (
        f"import time\n{_OPEN}\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "db.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"locked", f"the helper could not lock {db}: {line!r}"
    return proc


def restart_and_watch(
    d: Deployment, w: WorkerProcess, oracle_states: Mapping[str, RunState], sample: list[str]
) -> dict[str, object]:
    """Restart ``w`` (again, up to MAX_RESTARTS, if it dies) and ask about ``sample`` runs
    until it is ready; every answer given must equal the fold."""
    from runstate.runs.run_view import run_to_json

    began = time.monotonic()
    w.start()
    restarts = 0
    wrong: list[str] = []
    answered = 0
    while time.monotonic() - began < 150:
        if not w.alive:
            if restarts >= MAX_RESTARTS:
                break
            restarts += 1
            time.sleep(RESTART_BACKOFF_S * 2 ** (restarts - 1))
            w.start()
        for run_id in sample:
            status, body = w.get(f"/runs/{run_id}", timeout=0)
            if status == 200:
                answered += 1
                for extra in ("served_by", "partition", "as_of"):
                    body.pop(extra, None)
                if body != run_to_json(oracle_states[run_id]):
                    wrong.append(f"{run_id} answered v{body.get('version')}")
        h = w.health()
        if h is not None and h.get("ready") and len(h["active_partitions"]) == d.partitions:
            break
        time.sleep(0.5)
    return {
        "ready_s": time.monotonic() - began if w.alive else None,
        "restarts": restarts,
        "wrong_answers": wrong,
        "answers": answered,
    }


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_corrupted_local_state_is_rebuilt_from_the_changelog(
    kafka_bootstrap: str,
    deployment_factory: DeploymentFactory,
    scenario: ScenarioResult,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "5", "corrupted local state (RocksDB)"
    scenario.injections = (
        "one partition store of the only worker damaged after a clean stop (truncated SST)"
        " or a kill -9 (the rest): " + ", ".join([*CASES, "second process holding the lock"])
    )
    scenario.figures["recovery"] = (
        "restart until ready and owning every partition (damaged store set aside and rebuilt)"
    )
    d = deployment_factory(kafka_bootstrap, partitions=4)
    w = d.worker("w1").start()
    w.wait_ready()
    events = list(interleave(agent_runs(400, prefix="s5", seed=seed), active=60, seed=seed))
    load = Load(d, events, rate_per_s=1000).start()
    load.wait()
    oracle = Oracle(d.bootstrap, d.names)
    verdict, _ = converge(oracle, timeout_s=120, acked=load.acked)
    assert verdict.clean, verdict.summary()
    states = oracle.expected().states
    sample = sorted(states)[:: max(1, len(states) // 20)]
    outcomes: dict[str, dict[str, object]] = {}
    recoveries: list[float] = []
    failures: list[str] = []
    cases: list[tuple[str, Damage | None]] = [
        *CASES.items(),
        ("second process holding the lock", None),
    ]
    for i, (name, damage) in enumerate(cases):
        if damage is truncate_sst:
            w.stop()
        else:
            w.kill9()
        dbs = partition_dbs(w)
        assert dbs, f"no RocksDB folders under {w.data_dir}"
        db = _victim(dbs, name, i)
        helper = None
        if damage is not None:
            what = damage(db)
        else:
            helper = hold_lock(db, LOCK_HELD_S)
            what = f"{db.name} locked by pid {helper.pid} for {LOCK_HELD_S:.0f} s"
        seen = restart_and_watch(d, w, states, sample)
        if helper is not None:
            helper.wait(LOCK_HELD_S + 30)
        seen["damage"] = f"{db.name}: {what}"
        outcomes[name] = seen
        if seen["ready_s"] is None:
            failures.append(f"{name}: not serving after {seen['restarts']} restarts")
            w.kill9()
            for other in partition_dbs(w):
                if other == db:
                    import shutil

                    shutil.rmtree(other)  # what an operator would do, to go on
            w.start()
            w.wait_ready(timeout_s=120)
        else:
            recoveries.append(float(seen["ready_s"]))  # type: ignore[arg-type]
        if seen["wrong_answers"]:
            failures.append(f"{name}: wrong answers {seen['wrong_answers'][:3]}")  # type: ignore[index]
        check = oracle.check(query=w)
        if not check.clean:
            failures.append(f"{name}: after recovery {check.summary()}")
        scenario.verdict(check)
    scenario.recovery_s = [round(x, 2) for x in recoveries]
    scenario.figures["kill -9"] = len(cases) - 1
    scenario.figures["per case"] = {
        k: {kk: (round(vv, 1) if isinstance(vv, float) else vv) for kk, vv in v.items()}
        for k, v in outcomes.items()
    }
    if failures:
        scenario.notes.append("\n".join(failures))
    assert not failures, failures
