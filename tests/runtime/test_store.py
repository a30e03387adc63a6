"""The store contract, run against both implementations (memory and RocksDB)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import pytest
from rocksdict import Cache, Options, Rdict

from runstate.errors import StorageFull, StoreDamaged, StoreError, StoreInUse
from runstate.runtime import rocksdb_store
from runstate.runtime.memory_store import MemoryStore
from runstate.runtime.rocksdb_store import RocksDBOptions, RocksDBStore
from runstate.runtime.store import PartitionTransaction, Store

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "rocksdb"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens the store "again" on each call: a new RocksDBStore on the same directory, or
    the same MemoryStore (whose partitions live as long as it does, like a directory)."""
    opened: list[Store] = []
    memory = MemoryStore()

    def make() -> Store:
        if request.param == "memory":
            return memory
        for earlier in opened:
            earlier.close()
        store = RocksDBStore(tmp_path / "state", options=RocksDBOptions(block_cache_bytes=1 << 20))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_get_apply_delete(store_factory: StoreFactory) -> None:
    part = store_factory().open(0)
    assert part.get(b"a") is None
    assert part.changelog_offset() is None

    part.apply([(b"a", b"1"), (b"b", b"2")], changelog_offset=0)
    assert part.get(b"a") == b"1"
    assert part.get(b"b") == b"2"

    part.apply([(b"a", None), (b"b", b"3"), (b"missing", None)], changelog_offset=5)
    assert part.get(b"a") is None
    assert part.get(b"b") == b"3"
    assert part.get(b"missing") is None
    assert part.changelog_offset() == 5


def test_writes_in_one_batch_apply_in_order(store_factory: StoreFactory) -> None:
    part = store_factory().open(0)
    part.apply(
        [(b"k", b"1"), (b"k", None), (b"k", b"2"), (b"j", b"x"), (b"j", None)], changelog_offset=3
    )
    assert part.get(b"k") == b"2"
    assert part.get(b"j") is None


def _filled(store_factory: StoreFactory) -> Store:
    store = store_factory()
    store.open(0).apply([(bytes([c]), bytes([c]) * 2) for c in b"abcdefgh"], changelog_offset=7)
    return store


def test_items_forward_within_bounds_end_exclusive(store_factory: StoreFactory) -> None:
    part = _filled(store_factory).open(0)
    assert [k for k, _ in part.items(b"b", b"e")] == [b"b", b"c", b"d"]
    assert list(part.items(b"c", b"d")) == [(b"c", b"cc")]
    assert list(part.items(b"a", b"\xff")) == [(bytes([c]), bytes([c]) * 2) for c in b"abcdefgh"]


def test_items_reverse_within_bounds(store_factory: StoreFactory) -> None:
    part = _filled(store_factory).open(0)
    assert [k for k, _ in part.items(b"b", b"e", reverse=True)] == [b"d", b"c", b"b"]
    assert [k for k, _ in part.items(b"", b"c", reverse=True)] == [b"b", b"a"]
    assert [k for k, _ in part.items(b"g", b"\xff", reverse=True)] == [b"h", b"g"]


def test_items_bounds_between_keys_and_empty_ranges(store_factory: StoreFactory) -> None:
    part = _filled(store_factory).open(0)
    assert [k for k, _ in part.items(b"bb", b"dd")] == [b"c", b"d"]
    assert [k for k, _ in part.items(b"bb", b"dd", reverse=True)] == [b"d", b"c"]
    assert list(part.items(b"x", b"z")) == []
    assert list(part.items(b"e", b"e")) == []
    assert list(part.items(b"e", b"b", reverse=True)) == []


def test_items_prefix_range_excludes_longer_prefixes(store_factory: StoreFactory) -> None:
    part = store_factory().open(0)
    part.apply(
        [(b"run1/a", b"1"), (b"run1/b", b"2"), (b"run10/a", b"3"), (b"run2/a", b"4")],
        changelog_offset=0,
    )
    assert [k for k, _ in part.items(b"run1/", b"run10")] == [b"run1/a", b"run1/b"]
    assert [k for k, _ in part.items(b"run1/", b"run10", reverse=True)] == [b"run1/b", b"run1/a"]


def test_items_stop_early(store_factory: StoreFactory) -> None:
    part = _filled(store_factory).open(0)
    assert [k for k, _ in islice(part.items(b"a", b"z"), 2)] == [b"a", b"b"]
    assert [k for k, _ in islice(part.items(b"a", b"z", reverse=True), 2)] == [b"h", b"g"]


def test_items_are_not_disturbed_by_later_writes(store_factory: StoreFactory) -> None:
    part = _filled(store_factory).open(0)
    it = part.items(b"a", b"z")
    assert next(it)[0] == b"a"
    part.apply([(b"b", None), (b"bb", b"new")], changelog_offset=8)
    rest = [k for k, _ in it]
    assert rest[0] == b"b"  # the iteration reads the store as it was when it began
    assert b"bb" not in rest
    assert [k for k, _ in part.items(b"a", b"c")] == [b"a", b"bb"]


def test_offset_is_recorded_with_the_data(store_factory: StoreFactory) -> None:
    part = store_factory().open(0)
    part.apply([], changelog_offset=3)  # a batch of only control records still moves on
    assert part.changelog_offset() == 3
    part.apply([(b"a", b"1")], changelog_offset=9)
    assert (part.get(b"a"), part.changelog_offset()) == (b"1", 9)


def test_reopen_keeps_data_and_offset(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.open(0).apply([(b"a", b"1"), (b"b", b"2")], changelog_offset=41)
    store.open(0).apply([(b"b", None)], changelog_offset=42)
    store.open(1).apply([(b"z", b"9")], changelog_offset=7)

    again = store_factory()
    part = again.open(0)
    assert (part.get(b"a"), part.get(b"b"), part.changelog_offset()) == (b"1", None, 42)
    assert list(part.items(b"", b"\xff")) == [(b"a", b"1")]
    assert (again.open(1).get(b"z"), again.open(1).changelog_offset()) == (b"9", 7)


def test_partitions_are_separate(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.open(0).apply([(b"a", b"0")], changelog_offset=1)
    store.open(1).apply([(b"a", b"1")], changelog_offset=2)
    assert store.open(0).get(b"a") == b"0"
    assert store.open(1).get(b"a") == b"1"
    assert store.open(0).partition == 0
    assert store.open(1).changelog_offset() == 2


def test_drop_forgets_data_and_offset(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.open(0).apply([(b"a", b"1")], changelog_offset=5)
    store.open(1).apply([(b"b", b"2")], changelog_offset=6)
    store.drop(0)
    store.drop(3)  # never opened: nothing to do
    assert store.open(0).get(b"a") is None
    assert store.open(0).changelog_offset() is None
    assert store.open(1).get(b"b") == b"2"


def test_transaction_reads_its_own_writes_over_the_store(store_factory: StoreFactory) -> None:
    part = store_factory().open(0)
    part.apply([(b"a", b"store"), (b"b", b"store")], changelog_offset=0)
    tx = PartitionTransaction(part)
    assert not tx
    tx.set(b"a", b"tx")
    tx.delete(b"b")
    tx.set(b"c", b"new")
    assert (tx.get(b"a"), tx.get(b"b"), tx.get(b"c")) == (b"tx", None, b"new")
    assert (part.get(b"a"), part.get(b"b"), part.get(b"c")) == (b"store", b"store", None)
    assert tx


def test_transaction_last_write_wins_and_applies(store_factory: StoreFactory) -> None:
    part = store_factory().open(0)
    tx = PartitionTransaction(part)
    tx.set(b"k", b"1")
    tx.delete(b"k")
    tx.set(b"k", b"2")
    tx.set(b"gone", b"x")
    tx.delete(b"gone")
    assert tx.writes() == [(b"k", b"2"), (b"gone", None)]
    part.apply(tx.writes(), changelog_offset=11)
    assert (part.get(b"k"), part.get(b"gone"), part.changelog_offset()) == (b"2", None, 11)


# RocksDB only: what the files on disk do.


def test_rocksdb_corrupt_directory_raises_store_damaged(tmp_path: Path) -> None:
    store = RocksDBStore(tmp_path)
    store.open(0).apply([(b"a", b"1")], changelog_offset=1)
    store.close()
    (store.partition_path(0) / "CURRENT").write_text("garbage\n")

    again = RocksDBStore(tmp_path)
    with pytest.raises(StoreDamaged, match="drop the partition"):
        again.open(0)
    again.drop(0)
    assert again.open(0).changelog_offset() is None
    again.close()


def test_rocksdb_missing_manifest_raises_store_damaged(tmp_path: Path) -> None:
    """Found by the fault battery (scenario 5): a deleted MANIFEST made RocksDB's open fail
    with "IO error: No such file or directory", which was not taken for damage, so the
    worker crash-looped instead of restoring the partition."""
    store = RocksDBStore(tmp_path)
    store.open(0).apply([(b"a", b"1")], changelog_offset=1)
    store.close()
    for manifest in store.partition_path(0).glob("MANIFEST-*"):
        manifest.unlink()

    again = RocksDBStore(tmp_path)
    with pytest.raises(StoreDamaged, match="drop the partition"):
        again.open(0)
    again.drop(0)
    assert again.open(0).changelog_offset() is None
    again.close()


def test_rocksdb_malformed_offset_raises_store_damaged_and_releases_the_store(
    tmp_path: Path,
) -> None:
    """Found by the fault battery (scenario 5): a store whose offset record was garbled
    raised StoreDamaged but stayed open (and locked) while the error was alive, so the loop's
    drop-and-reopen in its ``except`` block failed with StoreInUse and the worker exited."""
    store = RocksDBStore(tmp_path)
    store.open(0).apply([(b"a", b"1")], changelog_offset=1)
    store.close()
    families = {"runstate.meta": Options(raw_mode=True)}
    db = Rdict(str(store.partition_path(0)), Options(raw_mode=True), column_families=families)
    db.get_column_family("runstate.meta")[b"changelog-offset"] = b"garbled"
    db.close()

    again = RocksDBStore(tmp_path)
    with pytest.raises(StoreDamaged, match="malformed changelog offset") as caught:
        again.open(0)
    assert caught.value.__traceback__ is not None  # the error (and its frames) still alive
    again.drop(0)
    assert again.open(0).changelog_offset() is None
    again.close()


def test_rocksdb_directory_held_elsewhere_raises_store_in_use(tmp_path: Path) -> None:
    first = RocksDBStore(tmp_path)
    first.open(0)
    second = RocksDBStore(tmp_path)
    with pytest.raises(StoreInUse):
        second.open(0)
    first.close()
    assert second.open(0).changelog_offset() is None
    second.close()


def test_rocksdb_large_batch_round_trips(tmp_path: Path) -> None:
    store = RocksDBStore(tmp_path, options=RocksDBOptions(write_buffer_bytes=1 << 20))
    part = store.open(0)
    writes: list[tuple[bytes, bytes | None]] = [
        (b"run-%06d" % i, b"v" * 200) for i in range(20_000)
    ]
    part.apply(writes, changelog_offset=19_999)
    store.close()
    part = RocksDBStore(tmp_path).open(0)
    assert part.changelog_offset() == 19_999
    assert sum(1 for _ in part.items(b"run-", b"run.")) == 20_000
    assert next(part.items(b"run-", b"run.", reverse=True))[0] == b"run-019999"
    part.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs; needs the right to mount (root in the test container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_rocksdb_full_disk_raises_storage_full_and_applies_nothing(small_disk: Path) -> None:
    """The free-space reserve stops writes with StorageFull before RocksDB meets a full
    device (where a failed background flush can stall a writer inside the write call: seen
    as a hang of this test with no reserve, now and then, under load)."""
    store = RocksDBStore(
        small_disk,
        options=RocksDBOptions(
            write_buffer_bytes=256 * 1024, block_cache_bytes=1 << 20, min_free_bytes=600 * 1024
        ),
    )
    part = store.open(0)
    batch = 0
    with pytest.raises(StorageFull, match="free space"):
        for batch in range(1_000):
            part.apply(
                [(b"k%08d" % (batch * 100 + i), os.urandom(200)) for i in range(100)],
                changelog_offset=batch,
            )
    assert batch > 0
    assert part.changelog_offset() == batch - 1
    assert part.get(b"k%08d" % (batch * 100)) is None
    with pytest.raises(StorageFull):
        part.apply([(b"late", b"1")], changelog_offset=batch + 1)
    assert (part.get(b"late"), part.changelog_offset()) == (None, batch - 1)
    store.close()  # RocksDB never met the full device: it closes cleanly
    reopened = RocksDBStore(small_disk, options=RocksDBOptions(min_free_bytes=0))
    again = reopened.open(0)
    assert again.changelog_offset() == batch - 1
    assert again.get(b"k%08d" % (batch * 100 - 1)) is not None
    reopened.close()


_CRASHING_WRITER = """
import sys
from runstate.runtime.rocksdb_store import RocksDBOptions, RocksDBStore
store = RocksDBStore(
    sys.argv[1], options=RocksDBOptions(write_buffer_bytes=64 * 1024, wal=sys.argv[2] == "wal")
)
part = store.open(0)
for batch in range(1_000_000):
    writes = [(b"batch-%08d-%02d" % (batch, i), b"x" * 100) for i in range(20)]
    writes.append((b"last-batch", b"%d" % batch))
    part.apply(writes, changelog_offset=batch)
    if batch == 300:
        print("ready", flush=True)
"""


@pytest.mark.parametrize("wal", ["wal", "no-wal"])
def test_rocksdb_a_crash_keeps_data_and_offset_together(tmp_path: Path, wal: str) -> None:
    # No WAL: a kill loses the memtables, but what survives must be a consistent prefix of
    # the batches, offset included (atomic flush of both column families). With the WAL
    # the same holds, for a longer prefix.
    src = Path(__file__).resolve().parents[2] / "src"
    writer = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, str(tmp_path / "state"), wal],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    writer.kill()
    writer.wait(10)

    store = RocksDBStore(tmp_path / "state")
    part = store.open(0)
    offset = part.changelog_offset()
    assert offset is not None and offset > 0  # small memtables: many flushes happened
    assert part.get(b"last-batch") == b"%d" % offset
    keys = [k for k, _ in part.items(b"batch-", b"batch.")]
    assert len(keys) == 20 * (offset + 1)
    assert keys[-1] == b"batch-%08d-19" % offset
    store.close()


_IDLE_WRITER = """
import sys, time
from runstate.runtime.rocksdb_store import RocksDBOptions, RocksDBStore
store = RocksDBStore(sys.argv[1], options=RocksDBOptions(wal=sys.argv[2] == "wal"))
part = store.open(0)
for batch in range(200):
    part.apply([(b"k%05d" % batch, b"v" * 100)], changelog_offset=batch)
print("applied", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("wal", "kept"), [("wal", 199), ("no-wal", None)])
def test_rocksdb_a_kill_9_keeps_every_applied_batch_with_the_wal(
    tmp_path: Path, wal: str, kept: int | None
) -> None:
    """With the WAL (the default), everything applied before a kill -9 is there after it,
    with its offset, although no memtable was flushed; without it, nothing is."""
    src = Path(__file__).resolve().parents[2] / "src"
    writer = subprocess.Popen(
        [sys.executable, "-c", _IDLE_WRITER, str(tmp_path / "state"), wal],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == b"applied"
    writer.kill()
    writer.wait(10)
    store = RocksDBStore(tmp_path / "state")
    part = store.open(0)
    assert part.changelog_offset() == kept
    assert len(list(part.items(b"k", b"l"))) == (0 if kept is None else kept + 1)
    store.close()


def test_rocksdb_write_stalls_are_waited_out_by_the_store_not_inside_rocksdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rocksdict holds the GIL for a whole write: a write RocksDB stalled itself would stop
    # every thread of the worker. Compaction due after every flush, and a pending-compaction
    # limit of 2 bytes: writes stop after each flush until the compaction is done.
    family_options = rocksdb_store._family_options

    def stalling(options: RocksDBOptions, cache: Cache) -> Options:
        made = family_options(options, cache)
        made.set_level_zero_file_num_compaction_trigger(1)
        made.set_soft_pending_compaction_bytes_limit(1)
        made.set_hard_pending_compaction_bytes_limit(2)
        return made

    monkeypatch.setattr(rocksdb_store, "_family_options", stalling)
    store = RocksDBStore(
        tmp_path,
        options=RocksDBOptions(
            write_buffer_bytes=64 * 1024, max_write_buffers=2, block_cache_bytes=1 << 20
        ),
    )
    part = store.open(0)
    for offset in range(3_000):
        chunk = [(b"k%06d-%02d" % (offset, i), b"v" * 100) for i in range(10)]
        part.apply(chunk, changelog_offset=offset)
    assert part.stalls > 0  # RocksDB refused and the store waited (0 if RocksDB waits)
    assert part.changelog_offset() == 2_999
    assert sum(1 for _ in part.items(b"k", b"l")) == 30_000
    store.close()


def test_rocksdb_a_write_stalled_for_good_waits_without_the_gil_then_says_so(
    tmp_path: Path,
) -> None:
    store = RocksDBStore(
        tmp_path,
        options=RocksDBOptions(
            write_buffer_bytes=64 * 1024,
            max_write_buffers=2,
            block_cache_bytes=1 << 20,
            stall_timeout_s=2.0,
        ),
    )
    part = store.open(0)
    part.apply([(b"kept", b"v")], changelog_offset=0)
    # Stop the background threads: the memtables fill up, RocksDB stops writes for good.
    part._open_db().cancel_all_background(True)
    ticks = 0
    done = threading.Event()
    reasons: set[str] = set()  # what /health would say meanwhile (Store.waiting_on)

    def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            reason = store.waiting_on
            if reason is not None:
                reasons.add(reason.split(" for ")[0])
            time.sleep(0.001)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    applied = 0
    try:
        with pytest.raises(StoreError, match="RocksDB kept writes stalled for 2 s"):
            for offset in range(1, 10_000):
                chunk = [(b"k%06d-%02d" % (offset, i), b"v" * 100) for i in range(10)]
                before = ticks
                part.apply(chunk, changelog_offset=offset)
                applied = offset
        assert ticks > before  # the ticker ran while the refused write waited
    finally:
        done.set()
        ticker.join(10)
    assert applied > 0 and part.stalls == 1
    assert reasons == {"partition 0: RocksDB stalls writes (flushes or compactions behind)"}
    assert store.waiting_on is None  # the write gave up: nothing waits any more
    assert part.changelog_offset() == applied  # the refused batch left nothing behind
    assert part.get(b"k%06d-00" % (applied + 1)) is None
    assert part.get(b"k%06d-09" % applied) == b"v" * 100
    with contextlib.suppress(StoreError):  # its flush cannot run any more
        store.close()
