"""Partition stores on RocksDB (rocksdict): one database directory per partition.

Why the design looks the way it does:

* **Offset and data in one atomic batch.** Every :meth:`RocksDBPartitionStore.apply` is one
  RocksDB ``WriteBatch`` holding the data writes (default column family) and the changelog
  offset they reach (the ``runstate.meta`` column family, so no data key can collide with it).
  RocksDB applies a batch all or nothing, so the offset and the data can never disagree:
  after any crash the store holds exactly the changelog up to its recorded offset.
* **Write-ahead log on, not synced.** Each batch is appended to RocksDB's WAL with a plain
  ``write()`` (no ``fsync``): a killed process (kill -9, OOM kill) leaves it in the OS page
  cache, so the restarted worker finds every batch it applied, with its offset, and
  restores only the tail it had not applied yet (at most the last checkpoint's). Only a
  crash of the machine loses the unsynced end of the WAL, and then what survives is still a
  consistent prefix of the batches, which the restore completes from the changelog (the
  durable copy). Measured (``python -m benchmarks.restore --wal-only``, same run): at a
  checkpoint's batch size (100 records) the WAL costs nothing measurable (0.99x records/s
  of off), at a restore's (5,000) 0.82x. ``wal=False`` (``RUNSTATE_RUNTIME_STORE_WAL=false``)
  gives that back and makes a kill -9 restore its partitions mostly from the start:
  ``atomic_flush`` then keeps data and offset consistent across flushes, and whatever was
  still in the memtables (up to 16 MiB per partition) is read from the changelog again.
* **A write stall waits outside the GIL.** rocksdict holds the GIL for the whole of a
  write, and RocksDB makes a write wait there when flushes and compactions fall behind
  (delayed or stopped writes): every other thread of the worker, ``/health``'s included,
  would wait with it. Writes are made with ``no_slowdown``, so RocksDB refuses at once
  instead, and :meth:`RocksDBPartitionStore.apply` sleeps (the GIL released) and retries,
  up to ``stall_timeout_s``.
* **Nothing is scanned at open.** Opening reads one key (the offset), whatever the number
  of runs, so a restarted worker with its data kept is ready at once.
* **Errors a caller can act on.** A full disk raises :class:`~runstate.errors.StorageFull`,
  corrupt files :class:`~runstate.errors.StoreDamaged` (drop and restore), a directory held
  by another process :class:`~runstate.errors.StoreInUse`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from runstate.errors import StorageFull, StoreDamaged, StoreError, StoreInUse
from runstate.runtime.store import PartitionStore, Store, Write

__all__ = ["RocksDBOptions", "RocksDBPartitionStore", "RocksDBStore"]

_META_FAMILY = "runstate.meta"
_OFFSET_KEY = b"changelog-offset"
_OFFSET = struct.Struct(">q")
_MiB = 1024 * 1024


@dataclass(frozen=True)
class RocksDBOptions:
    """Sizing of the partition databases; the defaults suit a worker with a few GiB of RAM.

    Attributes:
        block_cache_bytes: read cache shared by every partition of one :class:`RocksDBStore`.
        write_buffer_bytes: size of one memtable per partition; larger means fewer, bigger
            flushes (faster restores) and more memory per partition.
        max_write_buffers: memtables per partition before writes stall for a flush.
        wal: RocksDB's write-ahead log, not synced (the module docstring says why it is on).
        background_jobs: flush and compaction threads per partition database.
        min_free_bytes: free space the device must keep: a write that finds less raises
            :class:`~runstate.errors.StorageFull` before RocksDB is asked (one ``statvfs``
            per batch, about a microsecond). RocksDB itself, when a flush meets a full
            device, can stall writers inside the write call (a background error that waits
            for space) instead of failing them; the reserve keeps it from getting there.
            0 turns the check off.
        stall_timeout_s: how long a write waits for RocksDB to lift a write stall before
            it fails (the worker stops; its restart restores the store).
    """

    block_cache_bytes: int = 64 * _MiB
    write_buffer_bytes: int = 16 * _MiB
    max_write_buffers: int = 3
    wal: bool = True
    background_jobs: int = 2
    min_free_bytes: int = 64 * _MiB
    stall_timeout_s: float = 300.0


class RocksDBPartitionStore:
    """One partition's table in its own RocksDB directory.

    Not thread-safe for writes: one batch at a time applies to a partition, as the runtime
    does. Finish (or drop) the iterators of :meth:`items` before :meth:`close`: a live
    iterator keeps the database, and its lock, open.
    """

    def __init__(self, partition: int, path: Path, options: RocksDBOptions, cache: Cache) -> None:
        self._partition = partition
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db: Rdict | None = Rdict(
                str(path),
                _db_options(options, cache),
                column_families={_META_FAMILY: _family_options(options, cache)},
            )
        except Exception as exc:
            raise _store_error(exc, f"opening partition {partition} store at {path}") from exc
        self._meta: Any = self._db.get_column_family_handle(_META_FAMILY)
        self._min_free_bytes = options.min_free_bytes
        self._write_options = WriteOptions()
        # a property at run time; rocksdict's stub declares it a method
        self._write_options.disable_wal = not options.wal  # type: ignore[method-assign,assignment]
        # refuse instead of stalling with the GIL held; apply() waits outside it
        self._write_options.no_slowdown = True
        self._stall_timeout_s = options.stall_timeout_s
        #: Writes that found RocksDB stalling writes and waited for it.
        self.stalls = 0
        #: Since when the current write waits for RocksDB to lift a stall (None: it does not)
        self.stalled_since: float | None = None
        try:
            self._offset = self._read_offset()
        except StoreError:
            # Release the directory's lock now: the caller drops and reopens the partition
            # while this error (and with it this half-made object) is still alive.
            db, self._db, self._meta = self._db, None, None
            with contextlib.suppress(Exception):
                db.close()
            raise

    @property
    def partition(self) -> int:
        return self._partition

    @property
    def path(self) -> Path:
        return self._path

    @property
    def closed(self) -> bool:
        return self._db is None

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None.

        Raises:
            StoreDamaged: the files holding the key are corrupt.
        """
        try:
            value: bytes | None = self._open_db().get(key)
        except StoreError:
            raise
        except Exception as exc:
            raise _store_error(exc, f"reading partition {self._partition}") from exc
        return value

    def items(
        self, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` in key order (or reversed), read lazily.

        The iterator reads a snapshot taken when iteration begins, so writes applied while
        it runs do not disturb it.

        Raises:
            StoreDamaged: the files holding the range are corrupt.
        """
        if start >= end:
            return
        read_options = ReadOptions()
        # Only the upper bound: rocksdict 0.3.29 applies set_iterate_lower_bound as an upper
        # bound, so the lower end is checked here instead.
        read_options.set_iterate_upper_bound(end)
        it = self._open_db().iter(read_options)
        try:
            if reverse:
                it.seek_to_last()
                while it.valid():
                    key: bytes = it.key()
                    if key < start:
                        break
                    yield key, it.value()
                    it.prev()
            else:
                it.seek(start)
                while it.valid():
                    yield it.key(), it.value()
                    it.next()
            it.status()
        except StoreError:
            raise
        except Exception as exc:
            raise _store_error(exc, f"reading partition {self._partition}") from exc
        finally:
            del it

    def apply(self, writes: Sequence[Write], *, changelog_offset: int) -> None:
        """Apply ``writes`` and the offset they reach in one atomic RocksDB batch.

        While RocksDB stalls writes (flushes or compactions behind) it refuses the batch at
        once; this waits with the GIL released, 5 ms at first and at most 100 ms apart, and
        tries again.

        Raises:
            StorageFull: no space left on the device; nothing was applied.
            StoreError: RocksDB refused the batch for another reason, or kept writes stalled
                for ``stall_timeout_s``; nothing was applied.
        """
        self._check_free_space(f"writing partition {self._partition}")
        deadline: float | None = None
        pause = 0.005
        try:
            while True:
                try:
                    self._open_db().write(
                        self._batch(writes, changelog_offset), self._write_options
                    )
                    break
                except StoreError:
                    raise
                except Exception as exc:
                    if "stall" not in str(exc).lower():
                        raise _store_error(exc, f"writing partition {self._partition}") from exc
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self._stall_timeout_s
                        self.stalls += 1
                        self.stalled_since = now
                    if now >= deadline:
                        raise StoreError(
                            f"writing partition {self._partition}: RocksDB kept writes stalled"
                            f" for {self._stall_timeout_s:g} s ({exc}); its flushes and"
                            " compactions do not keep up: check the disk, then restart the"
                            " worker"
                        ) from exc
                    time.sleep(pause)
                    pause = min(pause * 2, 0.1)
        finally:
            self.stalled_since = None
        self._offset = changelog_offset

    def _batch(self, writes: Sequence[Write], changelog_offset: int) -> WriteBatch:
        """The writes and the offset as one batch (made anew per attempt: a batch given to
        a write is used up, written or not)."""
        batch = WriteBatch(raw_mode=True)
        for key, value in writes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(_OFFSET_KEY, _OFFSET.pack(changelog_offset), self._meta)
        return batch

    def changelog_offset(self) -> int | None:
        return self._offset

    def _check_free_space(self, doing: str) -> None:
        """Raise :class:`StorageFull` when the device has less than the reserve free."""
        if self._min_free_bytes <= 0:
            return
        try:
            st = os.statvfs(self._path)
        except OSError:
            return  # the write itself reports what is wrong with the directory
        free = st.f_bavail * st.f_frsize
        if free < self._min_free_bytes:
            raise StorageFull(
                f"{doing}: {free} bytes free on the store's device, below the reserve of"
                f" {self._min_free_bytes} (RUNSTATE_RUNTIME_STORE_MIN_FREE_BYTES); free space"
                " and retry"
            )

    def size_estimate(self) -> tuple[int, int]:
        """``(keys, bytes)`` as RocksDB estimates them from its own counters (no read of the
        data): keys of the data family (heads, entries and index keys together), and bytes in
        SST files plus memtables. For ``/metrics``; (0, 0) once closed."""
        db = self._db
        if db is None:
            return 0, 0
        try:
            keys = db.property_int_value("rocksdb.estimate-num-keys") or 0
            disk = db.property_int_value("rocksdb.total-sst-files-size") or 0
            memory = db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        except Exception:  # closed meanwhile by the loop: nothing to report
            return 0, 0
        return int(keys), int(disk) + int(memory)

    def flush(self) -> None:
        """Write the memtables to disk, so a crash after this loses nothing applied so far.

        Raises:
            StorageFull: no space left on the device.
        """
        self._check_free_space(f"flushing partition {self._partition}")
        try:
            self._open_db().flush()
        except StoreError:
            raise
        except Exception as exc:
            raise _store_error(exc, f"flushing partition {self._partition}") from exc

    def close(self) -> None:
        """Flush and close; idempotent. Without the WAL, flushing is what keeps the writes (with
        it, a reopen finds them anyway, but without its WAL to replay)."""
        if self._db is None:
            return
        db, self._db = self._db, None
        self._meta = None
        failure: Exception | None = None
        try:
            db.flush()
        except Exception as exc:
            failure = exc
        try:
            db.close()
        except Exception as exc:
            failure = failure or exc
        if failure is not None:
            raise _store_error(failure, f"closing partition {self._partition}") from failure

    def _open_db(self) -> Rdict:
        if self._db is None:
            raise StoreError(f"partition {self._partition} store is closed; open it again")
        return self._db

    def _read_offset(self) -> int | None:
        try:
            raw = self._open_db().get_column_family(_META_FAMILY).get(_OFFSET_KEY)
        except Exception as exc:
            raise _store_error(exc, f"reading partition {self._partition} offset") from exc
        if raw is None:
            return None
        if len(raw) != _OFFSET.size:
            raise StoreDamaged(
                f"partition {self._partition} store at {self._path} has a malformed changelog "
                "offset; drop the partition and restore it from the changelog"
            )
        offset: int = _OFFSET.unpack(raw)[0]
        return offset


class RocksDBStore:
    """Partition stores under ``data_dir``, one directory each (``partition-<n>``).

    The block cache is shared by all partitions of this store, so its size bounds the read
    cache of the whole worker rather than of each partition.
    """

    def __init__(self, data_dir: Path | str, *, options: RocksDBOptions | None = None) -> None:
        self._data_dir = Path(data_dir)
        self._options = options or RocksDBOptions()
        self._cache = Cache(self._options.block_cache_bytes)
        self._open: dict[int, RocksDBPartitionStore] = {}

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def partition_path(self, partition: int) -> Path:
        return self._data_dir / f"partition-{partition}"

    def open(self, partition: int) -> RocksDBPartitionStore:
        """The partition's store, opened (or created) once and shared until closed.

        Raises:
            StoreDamaged: the directory holds corrupt or foreign files; :meth:`drop` it.
            StoreInUse: another process holds the directory open.
            StorageFull: no space left to create it.
        """
        store = self._open.get(partition)
        if store is None or store.closed:
            store = RocksDBPartitionStore(
                partition, self.partition_path(partition), self._options, self._cache
            )
            self._open[partition] = store
        return store

    @property
    def waiting_on(self) -> str | None:
        """A partition whose write waits for RocksDB to lift a write stall, and how long."""
        for store in list(self._open.values()):
            since = store.stalled_since
            if since is not None:
                return (
                    f"partition {store.partition}: RocksDB stalls writes (flushes or"
                    f" compactions behind) for {time.monotonic() - since:.0f}s; waiting"
                )
        return None

    def drop(self, partition: int) -> None:
        """Close the partition if open and delete its directory (no need for it to open)."""
        store = self._open.pop(partition, None)
        if store is not None:
            with contextlib.suppress(StoreError):  # being deleted: a failed flush loses nothing
                store.close()
        shutil.rmtree(self.partition_path(partition), ignore_errors=True)

    def close(self) -> None:
        """Close every open partition (flushing each).

        Raises:
            StoreError: the first partition that failed to flush or close (all are closed).
        """
        stores, self._open = list(self._open.values()), {}
        failure: StoreError | None = None
        for store in stores:
            try:
                store.close()
            except StoreError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


if TYPE_CHECKING:

    def _conforms(store: RocksDBStore, part: RocksDBPartitionStore) -> tuple[Store, PartitionStore]:
        return store, part  # mypy proves both satisfy the interface


def _db_options(options: RocksDBOptions, cache: Cache) -> Options:
    opts = _family_options(options, cache)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    # Without the WAL only an atomic flush of both families keeps data and offset together
    # (with it, a flush of one family alone would also be safe; atomic costs nothing more).
    opts.set_atomic_flush(True)
    opts.set_max_background_jobs(options.background_jobs)
    opts.set_keep_log_file_num(3)
    return opts


def _family_options(options: RocksDBOptions, cache: Cache) -> Options:
    opts = Options(raw_mode=True)
    opts.set_write_buffer_size(options.write_buffer_bytes)
    opts.set_max_write_buffer_number(options.max_write_buffers)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


def _store_error(exc: Exception, doing: str) -> StoreError:
    """Translate a RocksDB error (rocksdict raises plain ``Exception`` with RocksDB's status
    text) into the subclass that tells the caller what to do."""
    text = str(exc)
    lowered = text.lower()
    if "no space left" in lowered or "enospc" in lowered:
        return StorageFull(f"{doing}: no space left on the device ({text}); free space and retry")
    if "lock" in lowered and ("io error" in lowered or "resource temporarily" in lowered):
        return StoreInUse(
            f"{doing}: the store is open elsewhere ({text}); stop the other worker using it"
        )
    if (
        "corruption" in lowered
        or "invalid argument" in lowered
        or "not a directory" in lowered
        # a file the store's own metadata names is gone (e.g. a deleted MANIFEST)
        or "no such file or directory" in lowered
    ):
        return StoreDamaged(
            f"{doing}: the store is damaged ({text}); drop the partition and restore it "
            "from the changelog"
        )
    return StoreError(f"{doing}: {text}")
