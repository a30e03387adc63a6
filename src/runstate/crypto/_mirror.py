"""A persistent local mirror of the data-keys topic: RocksDB in a folder.

It holds what the compacted ``<prefix>.data-keys`` topic holds - the wrapped keys, by
``<subject>/<version>`` - and, in the same database, the topic's next offset per partition,
written in the same atomic batch as the records they follow, so after any crash the mirror
holds exactly the topic up to its stored offsets. Catching up reads only the records after
them (:class:`~runstate.crypto._kafka_store.KafkaKeyStore` does the reading), like a Kafka
Streams global store: a kept folder starts by reading what was written since, a key is one
point read, the versions of a subject one prefix scan. Memory is RocksDB's small block cache
and memtables, whatever the number of keys.

A tombstone deletes the key from the mirror. Compaction drops tombstones from the topic after
``delete.retention.ms``, so a mirror that was not caught up for that long may have missed an
erasure; :attr:`KeyMirror.caught_up_ms` says when it last was, and the store rebuilds a mirror
older than its window from the start of the topic (docs/security.md).

Only wrapped keys are stored: the folder, like the topic, opens nothing without the master
key. Its files keep an erased key until RocksDB compacts them; the folder is a cache, never
backed up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, ReadOptions, WriteBatch

from runstate.crypto._store import WrappedKey, record_key
from runstate.errors import ConfigError, StoreDamaged, StoreError, StoreInUse
from runstate.streams.reader import RawRecord

__all__ = ["KeyMirror"]

log = logging.getLogger(__name__)

_META_FAMILY = "runstate.meta"
_OFFSET_PREFIX = b"next-offset/"
_SOURCE_KEY = b"source"
_CAUGHT_UP_KEY = b"caught-up-ms"
_INT = struct.Struct(">q")
_MiB = 1024 * 1024
#: Records per RocksDB batch while catching up: large enough that the per-batch cost is small,
#: small enough that one write holds the GIL only a few milliseconds.
BATCH_RECORDS = 5_000


class KeyMirror:
    """The data-keys topic in a RocksDB folder. Not thread-safe: its store locks around it.

    A damaged folder is deleted and made anew (it is a cache: the catch-up reads the topic
    again), with a warning.

    Raises:
        StoreInUse: another process holds the folder open.
        ConfigError: the folder cannot be made.
    """

    def __init__(self, folder: Path, *, cache_bytes: int = 8 * _MiB) -> None:
        self.folder = folder
        self._cache_bytes = cache_bytes
        self._db: Rdict | None = None
        self._meta: Any = None
        try:
            self._open()
        except StoreDamaged as exc:
            # a cache: read again from the topic rather than stop the process
            log.warning("%s; deleted, the data-keys topic is read again", exc)
            shutil.rmtree(self.folder, ignore_errors=True)
            self._open()

    def _open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"key cache folder {self.folder}: {exc.strerror}") from None
        opts = _options(self._cache_bytes)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_keep_log_file_num(2)
        try:
            self._db = Rdict(
                str(self.folder), opts, column_families={_META_FAMILY: _options(self._cache_bytes)}
            )
        except Exception as exc:
            raise _error(exc, self.folder) from exc
        self._meta = self._db.get_column_family_handle(_META_FAMILY)

    def _open_db(self) -> Rdict:
        if self._db is None:
            raise StoreError(f"the key mirror at {self.folder} is closed")
        return self._db

    # -- where it is -----------------------------------------------------------------------
    def offsets(self) -> dict[int, int]:
        """The next offset to read, per partition (empty: nothing read yet)."""
        meta = self._open_db().get_column_family(_META_FAMILY)
        found: dict[int, int] = {}
        for key, value in _scan(meta, _OFFSET_PREFIX):
            found[int(key[len(_OFFSET_PREFIX) :])] = _INT.unpack(value)[0]
        return found

    @property
    def source(self) -> str | None:
        """Which cluster and topic the mirror follows (None: a new mirror)."""
        raw = self._open_db().get_column_family(_META_FAMILY).get(_SOURCE_KEY)
        return None if raw is None else bytes(raw).decode()

    @property
    def caught_up_ms(self) -> int | None:
        """Wall-clock time (ms) at which the last complete catch-up started."""
        raw = self._open_db().get_column_family(_META_FAMILY).get(_CAUGHT_UP_KEY)
        return None if raw is None else int(_INT.unpack(raw)[0])

    # -- reading ---------------------------------------------------------------------------
    def get(self, subject: str, version: str) -> WrappedKey | None:
        raw = self._open_db().get(record_key(subject, version))
        return None if raw is None else _parse(raw)

    def versions(self, subject: str) -> list[WrappedKey]:
        """Every stored version of ``subject``: one prefix scan (``<subject>/``), skipping the
        keys of subjects that merely start with ``<subject>/`` (a version has no ``/``)."""
        prefix = f"{subject}/".encode()
        found = []
        for key, value in _scan(self._open_db(), prefix):
            if b"/" in key[len(prefix) :]:
                continue
            parsed = _parse(value)
            if parsed is not None:
                found.append(parsed)
        return found

    def scan(self) -> Iterator[WrappedKey]:
        """Every key, in key order, read lazily from a snapshot (a rotation streams them)."""
        read_options = ReadOptions()
        it = self._open_db().iter(read_options)
        try:
            it.seek_to_first()
            while it.valid():
                parsed = _parse(it.value())
                if parsed is not None:
                    yield parsed
                it.next()
        finally:
            del it

    def __len__(self) -> int:
        """Keys held, as RocksDB estimates them (no scan)."""
        return int(self._open_db().property_int_value("rocksdb.estimate-num-keys") or 0)

    # -- writing ---------------------------------------------------------------------------
    def apply(self, records: Iterable[RawRecord]) -> int:
        """Apply records read from the topic, in batches that carry the offsets they reach;
        a tombstone deletes its key. Returns how many were applied."""
        count = 0
        batch = WriteBatch(raw_mode=True)
        reached: dict[int, int] = {}
        pending = 0
        for record in records:
            key = record.key or b""
            if record.value is None:
                batch.delete(key)
            elif _parse(record.value) is not None:
                batch.put(key, record.value)
            # (a record that is not a wrapped key opens nothing: skipped, its offset kept)
            reached[record.partition] = record.offset + 1
            pending += 1
            count += 1
            if pending >= BATCH_RECORDS:
                self._write(batch, reached)
                batch, reached, pending = WriteBatch(raw_mode=True), {}, 0
        if pending:
            self._write(batch, reached)
        return count

    def finish(self, ends: dict[int, int], *, started_ms: int, source: str) -> None:
        """Record a complete catch-up: the partitions' ends seen before it started (compaction
        and markers can leave the last offsets without a record), and when it started."""
        batch = WriteBatch(raw_mode=True)
        have = self.offsets()
        for partition, end in ends.items():
            if end > have.get(partition, 0):
                batch.put(_OFFSET_PREFIX + str(partition).encode(), _INT.pack(end), self._meta)
        batch.put(_CAUGHT_UP_KEY, _INT.pack(started_ms), self._meta)
        batch.put(_SOURCE_KEY, source.encode(), self._meta)
        self._open_db().write(batch)

    def put(self, key: WrappedKey) -> None:
        """Hold a key this process just wrote to the topic, before the topic is read again."""
        self._open_db().put(key.record_key, key.to_json())

    def delete(self, subject: str, version: str) -> None:
        """Drop one key now (its tombstone, read later, deletes it again)."""
        self._open_db().delete(record_key(subject, version))

    def _write(self, batch: WriteBatch, reached: dict[int, int]) -> None:
        for partition, offset in reached.items():
            batch.put(_OFFSET_PREFIX + str(partition).encode(), _INT.pack(offset), self._meta)
        try:
            self._open_db().write(batch)
        except Exception as exc:
            raise _error(exc, self.folder) from exc

    def clear(self) -> None:
        """Forget everything (the folder is deleted and made anew): the next catch-up reads
        the topic from its start."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._open()

    def close(self) -> None:
        """Flush and close; idempotent."""
        db, self._db, self._meta = self._db, None, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.flush()
            db.close()


def _options(cache_bytes: int) -> Options:
    opts = Options(raw_mode=True)
    opts.set_write_buffer_size(4 * _MiB)
    opts.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(cache_bytes))
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


def _scan(db: Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    read_options = ReadOptions()
    read_options.set_iterate_upper_bound(_prefix_end(prefix))
    it = db.iter(read_options)
    try:
        it.seek(prefix)
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(prefix):
                break
            yield key, it.value()
            it.next()
    finally:
        del it


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (its last byte + 1)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\xff" * (len(prefix) + 8)
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _parse(raw: bytes) -> WrappedKey | None:
    try:
        return WrappedKey.from_json(bytes(raw))
    except (ValueError, json.JSONDecodeError):
        return None


def _error(exc: Exception, folder: Path) -> StoreError:
    text = str(exc)
    lowered = text.lower()
    if "lock" in lowered:
        return StoreInUse(
            f"the key cache folder {folder} is in use by another process ({text}); wait for it"
            " to finish, or give this process its own folder (RUNSTATE_KEY_CACHE_DIR)"
        )
    if any(w in lowered for w in ("corruption", "invalid argument", "no such file")):
        return StoreDamaged(
            f"the key cache folder {folder} is damaged ({text}); delete it (it is a cache of"
            " the data-keys topic, read again on the next start)"
        )
    return StoreError(f"the key cache folder {folder}: {text}")
