"""The archiver: resume rules (pure) and exactly-once archiving under kill -9 (real broker)."""

from __future__ import annotations

import base64
import functools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.retention import LocalArchive, verify
from runstate.retention.archiver import Archiver, ArchiverConfig, resume_point, writer_schema_mask
from runstate.retention.masking import mask_text, masker_for_topic, parse_mask_keys
from runstate.retention.policy import load_policy
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event
from runstate.schemas.events import ApprovalGranted, RunStarted
from tests.factories import make_run
from tests.polling import assert_eventually

from .kafka_support import (
    archived_offsets,
    create_topics,
    generate_runs,
    in_time_order,
    produce,
    topic_offsets,
    write_policy,
)

ROOT = Path(__file__).resolve().parents[2]


# -- resume_point: pure ------------------------------------------------------------------


def test_resume_point_of_an_empty_archive_is_kafkas_earliest_offset() -> None:
    assert resume_point([], 0) == (0, [])
    assert resume_point([], 42) == (42, [])


def test_resume_point_follows_contiguous_segments() -> None:
    assert resume_point([(0, 9), (10, 19)], 0) == (20, [])


def test_resume_point_keeps_published_ranges_past_a_hole_as_fences() -> None:
    assert resume_point([(0, 9), (20, 29), (30, 39)], 0) == (10, [(20, 29), (30, 39)])


def test_resume_point_skips_what_kafka_no_longer_has() -> None:
    # Kafka trimmed to 15 (archive held up to 19): resume at 20, not at 15.
    assert resume_point([(0, 9), (10, 19)], 15) == (20, [])
    # Archive entirely below Kafka's earliest offset: start at the earliest offset.
    assert resume_point([(0, 9)], 50) == (50, [])


def test_resume_point_counts_unsorted_and_tombstoned_ranges() -> None:
    assert resume_point([(10, 19), (0, 9), (25, 30)], 0) == (20, [(25, 30)])


# -- archiving through Kafka ---------------------------------------------------------------


def _config(bootstrap: str, topic: str, group: str, **kwargs: object) -> ArchiverConfig:
    return ArchiverConfig(bootstrap, topic, group, **kwargs)  # type: ignore[arg-type]


@pytest.mark.integration
def test_archiver_once_archives_every_offset_exactly_once(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("arch")
    names = create_topics(kafka_bootstrap, prefix)
    events = in_time_order(generate_runs(60))
    produce(kafka_bootstrap, prefix, events)
    store = LocalArchive(tmp_path / "archive")
    config = _config(kafka_bootstrap, names.events, f"{prefix}-g", roll_records=100)

    stats = Archiver(config, store).run(once=True)

    assert stats.records == len(events)
    seen = archived_offsets(store, names.events)
    assert set(seen) == topic_offsets(kafka_bootstrap, names.events)
    assert max(seen.values()) == 1
    for p in store.partitions(names.events):
        assert verify(store, names.events, p).ok
    # A second pass finds nothing new and publishes nothing.
    more = [e for e in make_run("run-late", seed=3)]
    produce(kafka_bootstrap, prefix, more)
    again = Archiver(config, store).run(once=True)
    assert again.records == len(more)
    assert max(archived_offsets(store, names.events).values()) == 1
    print(
        f"\narchive throughput: {stats.records_per_s:,.0f} events/s;"
        f" {stats.segment_bytes / stats.records:.0f} bytes/event archived vs"
        f" {stats.payload_bytes / stats.records:.0f} bytes/event of Kafka payload"
    )


@pytest.mark.integration
def test_archiver_masks_personal_data_and_keeps_the_writer_version(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("mask")
    names = create_topics(kafka_bootstrap, prefix)
    policy_path = write_policy(
        tmp_path / "policy.yaml",
        names,
        target=f"local:{tmp_path / 'archive'}",
        personal_data="    personal_data:\n      RunStarted:\n        owner: mask\n"
        "      ApprovalGranted:\n        comment: drop\n",
    )
    policy = load_policy(policy_path)
    produce(kafka_bootstrap, prefix, make_run("run-m", seed=1, with_approval=True))
    store = LocalArchive(tmp_path / "archive")
    codec = SingleObjectCodec(default_catalog())
    keys = parse_mask_keys("k1:" + base64.b64encode(b"archiver-test-key-32-bytes-long!").decode())
    masker = masker_for_topic(policy, names.events, keys=keys)
    assert masker is not None
    config = _config(kafka_bootstrap, names.events, f"{prefix}-g")

    Archiver(config, store, mask=writer_schema_mask(masker, codec)).run(once=True)

    values = [
        r.value
        for p in store.partitions(names.events)
        for m in store.list_manifests(names.events, p)
        for r in store.read_segment(m)
        if r.value is not None
    ]
    decoded = [decode_event(v, codec=codec) for v in values]
    started = [e for e in decoded if isinstance(e, RunStarted)]
    granted = [e for e in decoded if isinstance(e, ApprovalGranted)]
    assert len(started) == len(granted) == 1
    assert started[0].owner == mask_text("team-procurement", keys)
    assert started[0].agent == "purchase-approver"  # not listed: kept as is
    assert granted[0].comment is None  # dropped
    assert granted[0].by == "alice"


def _start_archiver(
    bootstrap: str, prefix: str, policy: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RUNSTATE_BOOTSTRAP_SERVERS": bootstrap, "RUNSTATE_TOPIC_PREFIX": prefix}
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "runstate"),
            "archive",
            "run",
            "--policy",
            str(policy),
            "--roll-records",
            "150",
            "--roll-seconds",
            "0.3",
            "--instance-id",
            "archiver-1",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_kill_9_at_random_moments_neither_skips_nor_doubles_an_offset(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("kill")
    names = create_topics(kafka_bootstrap, prefix)
    archive = tmp_path / "archive"
    policy = write_policy(tmp_path / "policy.yaml", names, target=f"local:{archive}")
    store = LocalArchive(archive)
    log = tmp_path / "archiver.log"
    events = in_time_order(generate_runs(600, seed=9))
    rng = random.Random(1234)

    def published() -> int:
        """Offsets archived contiguously, over every partition: the archiver's progress."""
        return sum(
            store.archived_watermark(names.events, p) or 0 for p in store.partitions(names.events)
        )

    def publishes_after(before: int, proc: subprocess.Popen[bytes]) -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        return published() > before

    # Each incarnation finds a backlog (and so has segments to publish), and is killed only
    # after it published one of its own: a kill before any publish would test nothing but a
    # restart. The random extra delay lands the kill at other moments of the next segment
    # (written, manifest not yet published, offsets not yet committed).
    kills = 5
    size = -(-len(events) // (kills + 1))
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    assert len(chunks) == kills + 1
    for chunk in chunks[:kills]:
        before = published()
        produce(kafka_bootstrap, prefix, chunk)
        proc = _start_archiver(kafka_bootstrap, prefix, policy, log)
        try:
            assert_eventually(
                functools.partial(publishes_after, before, proc),
                timeout_s=60,
                what="this incarnation publishes a segment",
            )
            time.sleep(rng.uniform(0.0, 0.5))
            assert proc.poll() is None, log.read_text()[-2000:]
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    produce(kafka_bootstrap, prefix, chunks[kills])

    proc = _start_archiver(kafka_bootstrap, prefix, policy, log)
    try:
        expected = topic_offsets(kafka_bootstrap, names.events)
        assert len(expected) == len(events)
        assert_eventually(
            lambda: (
                sum((store.archived_watermark(names.events, p) or 0) for p in range(3))
                >= len(events)
            ),
            timeout_s=45,
            what="the restarted archiver catches up",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    seen = archived_offsets(store, names.events)
    doubled = {k: n for k, n in seen.items() if n > 1}
    assert not doubled, f"archived twice: {sorted(doubled)[:10]}"
    assert set(seen) == expected, f"missing: {sorted(expected - set(seen))[:10]}"
    for p in range(3):
        assert verify(store, names.events, p).ok
