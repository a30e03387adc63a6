"""Scenario 7: the disk fills up - the worker's state folder, then the archiver's store.

Each folder is a small tmpfs (we run as root here; without ``mount`` the test skips) that
is filled with a filler file while load arrives. While it is full no consumer offset may be
committed ahead of what is durable (the runtime's changelog and the change stream, which
its transactions commit together with the offsets; published segments for the archiver), and
once the filler is deleted the work resumes and ends exactly where the oracle says. The
runtime's store raises ``StorageFull`` after the broker committed: the worker stops, and
on restart restores the store from the changelog."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from runstate.retention.local import LocalArchive
from runstate.runs.layout import load_run
from runstate.runs.state_codec import decode_change
from runstate.streams.reader import read_topic
from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import ROOT, Deployment, Load, agent_runs, interleave
from tests.faults.oracle import Oracle, converge, fold_log, restore_changelog
from tests.faults.report import ScenarioResult
from tests.polling import assert_eventually


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    return filler


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result(30)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def commits_ahead_of_state(d: Deployment, oracle: Oracle) -> list[str]:
    """Runs whose events below the committed offset are not all in the changelog/changes."""
    marks = committed(d.bootstrap, d.names.runtime_group, d.names.events, d.partitions)
    events = [r for r in oracle.read(d.names.events) if r.offset < marks.get(r.partition, 0)]
    upto = fold_log(events, oracle.codec, max_event_bytes=oracle.max_event_bytes)
    stores = restore_changelog(oracle.read(d.names.runs_changelog))
    changes = {(c.run_id, c.version) for c in (
        decode_change(r.value) for r in oracle.read(d.names.state_changes) if r.value)}  # fmt: skip
    ahead = []
    for run_id, state in upto.states.items():
        have = [s for store in stores.values() if (s := load_run(store, run_id)) is not None]
        if not have or have[0].version < state.version:
            ahead.append(f"{run_id}: committed past v{state.version}, changelog behind")
    ahead += [f"{k[0]} v{k[1]}: committed, change not published" for k in upto.changes
              if k not in changes]  # fmt: skip
    return ahead


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_full_disk_state_folder_and_archive_store(
    kafka_bootstrap: str,
    deployment_factory: DeploymentFactory,
    scenario: ScenarioResult,
    tmp_path: Path,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "7", "full disk (state folder, archive store)"
    scenario.injections = (
        "worker state folder on a 16 MiB tmpfs filled to the last byte under load, the worker"
        " stopped (flush) and restarted while full, then space freed;"
        " archiver store on a 4 MiB tmpfs filled the same way"
    )
    scenario.figures["recovery"] = (
        "space returned until the oracle is clean (worker), then until the archive caught up"
        " (archiver)"
    )
    # the store's free-space reserve scaled to the 16 MiB folder (64 MiB by default)
    d = deployment_factory(
        kafka_bootstrap, partitions=2, runtime={"store_min_free_bytes": str(1 << 20)}
    )
    oracle = Oracle(d.bootstrap, d.names)
    figures: dict[str, object] = {}
    recoveries: list[float] = []
    with small_tmpfs(tmp_path / "state", "16m") as state:
        w = d.worker("w1", data_dir=state / "w1").start()
        w.wait_ready()
        first = list(interleave(agent_runs(150, prefix="s7a", seed=seed), active=30, seed=seed))
        Load(d, first, rate_per_s=2000).start().wait()
        verdict, _ = converge(oracle, timeout_s=90)
        assert verdict.clean, verdict.summary()
        filler = fill(state)
        more = list(
            interleave(agent_runs(300, prefix="s7b", seed=seed + 1), active=30, seed=seed + 1)
        )
        load = Load(d, more, rate_per_s=300).start()
        load.wait()
        ahead = commits_ahead_of_state(d, oracle)
        # Without a WAL the store writes to disk only when a memtable is flushed: on the
        # clean stop (which must flush) and when a restarted worker creates its files.
        w.stop()
        figures["clean stop while full (must flush the memtables)"] = (
            f"exit {w.proc.returncode if w.proc else None}"
        )
        w.start()  # a supervisor's restart, while the disk is still full
        exited_at: float | None = None
        full_since = time.monotonic()
        while time.monotonic() - full_since < 20:
            ahead += commits_ahead_of_state(d, oracle)
            if not w.alive and exited_at is None:
                exited_at = time.monotonic() - full_since
            time.sleep(2)
        figures["worker restarted while the state folder was full"] = (
            f"exited after {exited_at:.1f} s (code {w.proc.returncode if w.proc else None})"
            if exited_at is not None
            else "kept running"
        )
        figures["log lines mentioning no space"] = w.log_count("No space left")
        figures["offsets committed ahead of durable state while full"] = len(ahead)
        filler.unlink()
        freed = time.monotonic()
        restarted = not w.alive
        if restarted:
            w.start()  # a supervisor's restart; counted in the figures
        verdict, _ = converge(oracle, timeout_s=180, acked=list(load.acked))
        recoveries.append(time.monotonic() - freed)
        figures["restart needed after space returned"] = restarted
        scenario.verdict(verdict)
        if ahead:
            scenario.notes.append("commits ahead of state:\n" + "\n".join(ahead[:10]))
        w.kill9()
    archive_fig = _archive_on_full_disk(d, tmp_path, seed=seed)
    figures.update(archive_fig.figures)
    recoveries.append(archive_fig.recovery_s)
    scenario.recovery_s = [round(x, 2) for x in recoveries]
    scenario.figures.update(figures)
    if archive_fig.diagnosis:
        scenario.notes.append(
            "archive offsets missing, with the manifest covering them and the archiver's log:\n"
            + "\n".join(archive_fig.diagnosis)
        )
    scenario.lost = (scenario.lost or 0) + archive_fig.missing
    scenario.doubled = (scenario.doubled or 0) + archive_fig.doubled
    assert not ahead, ahead[:10]
    assert verdict.clean, verdict.summary()
    assert not archive_fig.ahead, archive_fig.ahead
    assert archive_fig.missing == 0 and archive_fig.doubled == 0, archive_fig


@dataclass
class ArchiveOutcome:
    figures: dict[str, object]
    recovery_s: float
    ahead: list[str]
    missing: int
    doubled: int
    diagnosis: list[str]


def _archive_on_full_disk(d: Deployment, tmp_path: Path, *, seed: int) -> ArchiveOutcome:
    names = d.names
    with small_tmpfs(tmp_path / "archive", "4m") as root:
        store_dir = root / "store"
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            f"version: 1\nlegal_holds: []\ntopics:\n  {names.events}:\n    hot: 1ms\n"
            f"    archive:\n      target: local:{store_dir}\n    archive_retention: forever\n"
        )
        log = tmp_path / "archiver.log"
        env = {**d.env(), "RUNSTATE_BOOTSTRAP_SERVERS": d.bootstrap}
        args = [str(Path(sys.executable).parent / "runstate"), "archive", "run", "--policy",
                str(policy), "--roll-records", "200", "--roll-seconds", "0.5",
                "--instance-id", "archiver-1", "--log-level", "warning"]  # fmt: skip

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("ab"),
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

        store = LocalArchive(store_dir)
        group = f"{d.prefix}-archiver-events"
        proc = start()
        total = sum(1 for _ in read_topic(d.bootstrap, names.events))

        def caught_up() -> bool:
            got = sum((store.archived_watermark(names.events, p) or 0) for p in range(d.partitions))
            assert got >= total, f"{got}/{total} archived"
            return True

        assert_eventually(caught_up, timeout_s=90, what="archiver caught up")
        filler = fill(root)
        more = list(
            interleave(agent_runs(200, prefix="s7c", seed=seed + 2), active=30, seed=seed + 2)
        )
        Load(d, more, rate_per_s=2000).start().wait()
        ahead: list[str] = []
        began = time.monotonic()
        while time.monotonic() - began < 15:
            marks = committed(d.bootstrap, group, names.events, d.partitions)
            for p, off in marks.items():
                wm = store.archived_watermark(names.events, p) or 0
                if off > wm:
                    ahead.append(f"partition {p}: committed {off} > archived up to {wm}")
            time.sleep(1.5)
        alive_while_full = proc.poll() is None
        filler.unlink()
        freed = time.monotonic()
        if proc.poll() is not None:
            proc = start()
        total = sum(1 for _ in read_topic(d.bootstrap, names.events))
        assert_eventually(caught_up, timeout_s=120, what="archiver resumed")
        recovery = time.monotonic() - freed
        os.killpg(proc.pid, 15)
        proc.wait(30)
        seen: dict[tuple[int, int], int] = {}
        covering: dict[tuple[int, int], str] = {}
        for p in range(d.partitions):
            for m in store.list_manifests(names.events, p):
                count = 0
                for rec in store.read_segment(m):
                    k = (p, rec.offset)
                    seen[k] = seen.get(k, 0) + 1
                    count += 1
                for o in range(m.first_offset, m.last_offset + 1):
                    covering[(p, o)] = f"{m.first_offset}-{m.last_offset} ({count} records)"
        offsets = {(r.partition, r.offset) for r in read_topic(d.bootstrap, names.events)}
        gone = sorted(offsets - set(seen))
        if gone:
            holes = sorted({f"p{p} {covering.get((p, o), 'no manifest')}" for p, o in gone})
            log_tail = log.read_text(errors="replace").splitlines()[-5:]
            diagnosis = [f"first missing {gone[:3]}", *holes[:10], *log_tail]
        else:
            diagnosis = []
        return ArchiveOutcome(
            figures={
                "archiver while its store was full": (
                    "kept running" if alive_while_full else "exited (restarted once space returned)"
                ),
                "archiver commits ahead of published segments while full": len(ahead),
                "archive offsets missing": len(gone),
            },
            recovery_s=recovery,
            ahead=ahead,
            missing=len(gone),
            doubled=sum(1 for n in seen.values() if n > 1),
            diagnosis=diagnosis,
        )
