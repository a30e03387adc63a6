"""The Kafka key store: wrapped data keys in the compacted ``<prefix>.data-keys`` topic.

One partition, keyed ``<subject>/<key version>``, value the wrapped-key record (JSON);
erasure writes a tombstone for each version, and compaction then removes the key from the
log for good (docs/security.md: how long a tombstone and the old segments stay). The topic
is never archived: the archive keeps sealed values for years, the keys that open them must
stay erasable.

Nothing here reads the whole topic at start-up or holds it in memory: the topic grows with
every data subject ever sealed for (the run, by default: millions a year), and every agent
process, worker and CLI tool would pay for it. A store works in one of two ways:

* **With a mirror** (:class:`~runstate.crypto._mirror.KeyMirror`, a RocksDB folder: workers
  keep it in their data dir, ``runstate replay`` and ``erase`` in the key cache folder): the
  topic kept on disk with its offsets, caught up incrementally - at most every ``refresh_s``
  when used (or by :meth:`KafkaKeyStore.follow`'s thread), and at once when a key is missing
  (a read starting after the caller saw a value finds the key that sealed it). A kept folder
  reads only what was written since it last caught up; keys are point reads, a subject's
  versions one prefix scan. A mirror not caught up within ``tombstone_window_s`` (half the
  topic's ``delete.retention.ms``) may have missed a tombstone that compaction has dropped
  since, so it is read again from the start.
* **Without one** (agent processes): the store holds the keys it made (and looked up) in a
  bounded LRU, so ``current`` of a subject it holds no key for is None and the caller makes
  a new key version (erasure destroys every version of a subject, so several are fine). A key
  made by another process is asked of a :class:`~runstate.crypto._lookup.KeyLookup` (a
  worker's query API). To notice an erasure by another process the store reads the topic's
  *tail*: from the end as it was at its first use, only what was written since, at most every
  ``refresh_s``, dropping the held keys that got a tombstone. Its cost follows the rate at
  which keys are made, never the number held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from runstate.crypto._lookup import KeyLookup
from runstate.crypto._store import WrappedKey
from runstate.errors import BrokerError, ConfigError, DeliveryError
from runstate.streams import clients
from runstate.streams.reader import RawRecord, read_topic, topic_ends

if TYPE_CHECKING:  # RocksDB is the processor extra's: an agent (core install) never opens one
    from runstate.crypto._mirror import KeyMirror

__all__ = ["KafkaKeyStore"]

log = logging.getLogger(__name__)

_K = TypeVar("_K")
_MAX_MISSING = 100_000
#: Keys an agent process holds (its own and looked-up ones); about 300 bytes each.
CACHED_KEYS = 4_096
#: Half the data-keys topic's ``delete.retention.ms`` (one day, runstate.streams.topics).
TOMBSTONE_WINDOW_S = 12 * 3600.0


class _Closing(Exception):
    """The store is closing: a catch-up in progress stops."""


class KafkaKeyStore:
    """Wrapped data keys in a compacted topic. Thread-safe; ``close()`` when done.

    Args:
        bootstrap_servers: Kafka.
        topic: the data-keys topic.
        mirror: a folder (or an open mirror) to keep the topic in; None: hold only the
            keys this process makes or looks up.
        lookup: where a store without a mirror asks for a key it does not hold.
        refresh_s: longest a held key is trusted without reading what was written since
            (an erasure by another process stops its use within this).
        cached_keys: bound of the held keys without a mirror.
        tombstone_window_s: a mirror last caught up longer ago than this is read again from
            the start (compaction may have dropped a tombstone it missed).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        mirror: KeyMirror | Path | None = None,
        lookup: KeyLookup | None = None,
        timeout_s: float = 30.0,
        refresh_s: float = 5.0,
        cached_keys: int = CACHED_KEYS,
        tombstone_window_s: float = TOMBSTONE_WINDOW_S,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self.cached_keys = cached_keys
        self.tombstone_window_s = tombstone_window_s
        if isinstance(mirror, Path):
            from runstate.crypto._mirror import KeyMirror

            mirror = KeyMirror(mirror)
        self.mirror = mirror
        self.lookup = lookup
        #: Records read from the topic by this store (tests and benchmarks count them).
        self.records_read = 0
        #: Times the mirror was read again from the start (new, stale or foreign).
        self.rebuilds = 0
        self._lock = threading.RLock()
        self._read_at = float("-inf")  # monotonic start of the last complete read
        self._tail: dict[int, int] | None = None  # no mirror: where the tail read goes on
        self._held: OrderedDict[tuple[str, str], WrappedKey] = OrderedDict()
        self._current: OrderedDict[str, WrappedKey] = OrderedDict()
        #: Keys found missing by a read that started after they were first asked for: gone
        #: (erased, or never in this store). Asking again costs no read.
        self._missing: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._producer = clients.producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
            }
        )

    # -- reading the topic -----------------------------------------------------------------
    def refresh(self, *, asked: float | None = None) -> None:
        """Read what was written since the last read: at most every ``refresh_s``, or - with
        ``asked`` (a ``time.monotonic()``) - unless a read that started after it finished.

        Raises:
            BrokerError: Kafka could not be reached.
        """
        with self._lock:
            if asked is None:
                if time.monotonic() - self._read_at <= self.refresh_s:
                    return
            elif self._read_at >= asked:
                return
            started = time.monotonic()
            try:
                if self.mirror is not None:
                    self._catch_up_mirror(self.mirror)
                else:
                    self._read_tail()
            except _Closing:
                return  # the batches applied are kept with their offsets; not caught up
            self._read_at = started

    def _counted(self, records: Iterable[RawRecord]) -> Iterator[RawRecord]:
        for record in records:
            if self._stop.is_set():  # closing: a long first build stops between records
                raise _Closing
            self.records_read += 1
            yield record

    def _catch_up_mirror(self, mirror: KeyMirror) -> None:
        started_ms = int(time.time() * 1000)
        cluster, ends = topic_ends(self.bootstrap_servers, self.topic, timeout_s=self.timeout_s)
        source = f"{cluster}/{self.topic}"
        stored = mirror.offsets()
        caught_up = mirror.caught_up_ms
        why = None
        if mirror.source not in (None, source):
            why = f"it followed {mirror.source}"
        elif any(stored.get(p, 0) > high for p, (_low, high) in ends.items()):
            why = "the topic is shorter than what it read (recreated?)"
        elif stored and caught_up is None:
            why = "its first catch-up did not finish"
        elif caught_up is not None and started_ms - caught_up > self.tombstone_window_s * 1000:
            why = (
                f"it was last caught up {(started_ms - caught_up) / 3_600_000:.1f} h ago, longer"
                " than tombstones are sure to stay"
            )
        if why is not None:
            log.info("key mirror %s read again from the start: %s", mirror.folder, why)
            mirror.clear()
            stored = {}
            self.rebuilds += 1
        elif caught_up is None:
            self.rebuilds += 1
        start = {p: max(low, stored.get(p, 0)) for p, (low, _high) in ends.items()}
        todo = [p for p, (_low, high) in ends.items() if start[p] < high]
        if todo:
            mirror.apply(
                self._counted(
                    read_topic(
                        self.bootstrap_servers,
                        self.topic,
                        start=start,
                        partitions=todo,
                        timeout_s=self.timeout_s,
                    )
                )
            )
        mirror.finish(
            {p: high for p, (_low, high) in ends.items()}, started_ms=started_ms, source=source
        )

    def _start_tail(self) -> None:
        """Without a mirror: the tail starts at the end as it is now (nothing is read)."""
        with self._lock:
            if self._tail is None:
                _cluster, ends = topic_ends(
                    self.bootstrap_servers, self.topic, timeout_s=self.timeout_s
                )
                self._tail = {p: high for p, (_low, high) in ends.items()}
                self._read_at = time.monotonic()

    def _read_tail(self) -> None:
        if self._tail is None:
            self._start_tail()
            return
        for record in self._counted(
            read_topic(
                self.bootstrap_servers, self.topic, start=self._tail, timeout_s=self.timeout_s
            )
        ):
            self._tail[record.partition] = record.offset + 1
            if record.value is None:
                subject, _, version = (record.key or b"").decode().rpartition("/")
                self._forget(subject, version)

    # -- the KeyStore protocol -------------------------------------------------------------
    def get(self, subject: str, version: str, *, fresh: bool = False) -> WrappedKey | None:
        """The key, or None when it is gone (erased) or was never made.

        ``fresh``: read what was written up to now first (the query API's key lookup does, so
        an agent's answer reflects every erasure before its question).

        Raises:
            BrokerError: Kafka could not be reached to read a key not held.
            ConfigError: no mirror and no lookup, for a key this process does not hold.
            QueryError: the lookup could not be answered.
        """
        asked = time.monotonic()
        pair = (subject, version)
        if fresh:
            self.refresh(asked=asked)
        else:
            self._refresh_quietly()
        with self._lock:
            if self.mirror is not None:
                found = self.mirror.get(subject, version)
            else:
                found = self._held.get(pair)
                if found is not None:
                    self._held.move_to_end(pair)
            if found is not None or pair in self._missing:
                return found
        if self.mirror is not None:
            # A value sealed under this key was written after the key was stored, and the
            # caller saw the value before asking: a read starting now finds the key.
            self.refresh(asked=asked)
            with self._lock:
                found = self.mirror.get(subject, version)
        elif self.lookup is not None:
            self._start_tail()  # before the answer: an erasure after it reaches the tail
            found = self.lookup.lookup(subject, version)
            if found is not None:
                with self._lock:
                    self._hold(found, current=False)
        else:
            raise ConfigError(
                f"the key store holds no key {subject!r}/{version} and has nowhere to look it"
                " up: give it a key cache folder (RUNSTATE_KEY_CACHE_DIR) or a processor"
                " worker's query API (RUNSTATE_QUERY_URL)"
            )
        if found is None:
            with self._lock:
                self._missed(pair)
        return found

    def _missed(self, pair: tuple[str, str]) -> None:
        self._missing[pair] = None
        while len(self._missing) > _MAX_MISSING:
            self._missing.popitem(last=False)

    def current(self, subject: str) -> WrappedKey | None:
        """The newest key of the subject this store knows (without a mirror: one it made);
        None makes the caller make a new version, which costs no read of the topic."""
        self._refresh_quietly()
        with self._lock:
            held = self._current.get(subject)
            if held is not None:
                self._current.move_to_end(subject)
                return held
            if self.mirror is None:
                return None
            keys = self.mirror.versions(subject)
        return max(keys, key=lambda k: (k.created_ms, k.version)) if keys else None

    def put(self, key: WrappedKey) -> None:
        if self.mirror is None:
            self._start_tail()  # before the key exists: its erasure reaches the tail
        self._write(key.record_key, key.to_json())
        with self._lock:
            self._hold(key, current=True)

    def erase(self, subject: str) -> tuple[str, ...]:
        """Tombstone every version of ``subject`` the topic holds (the mirror, caught up
        first, lists them).

        Raises:
            ConfigError: this store has no mirror (erasing needs every version).
            BrokerError, DeliveryError: Kafka could not be reached or refused a tombstone.
        """
        if self.mirror is None:
            raise ConfigError(
                "erasing needs every version of the subject's key: give the key store a key"
                " cache folder (RUNSTATE_KEY_CACHE_DIR)"
            )
        self.refresh(asked=time.monotonic())
        with self._lock:
            versions = tuple(sorted(k.version for k in self.mirror.versions(subject)))
        for version in versions:
            self._write(f"{subject}/{version}".encode(), None)
            with self._lock:
                self.mirror.delete(subject, version)
                self._forget(subject, version)
        return versions

    # -- held keys -------------------------------------------------------------------------
    def _hold(self, key: WrappedKey, *, current: bool) -> None:
        pair = (key.subject, key.version)
        self._missing.pop(pair, None)
        if self.mirror is not None:
            # in the mirror at once (its record, read later, writes it again): a new key is
            # the subject's current one from now on, and its tombstone can only come later
            self.mirror.put(key)
            return
        self._held[pair] = key
        self._trim(self._held)
        if current:
            self._current[key.subject] = key
            self._trim(self._current)

    def _trim(self, cache: OrderedDict[_K, WrappedKey]) -> None:
        while len(cache) > self.cached_keys:
            cache.popitem(last=False)

    def _forget(self, subject: str, version: str) -> None:
        """Drop an erased key (a tombstone): asking for it again answers None at once."""
        self._held.pop((subject, version), None)
        self._missed((subject, version))
        held = self._current.get(subject)
        if held is not None and held.version == version:
            del self._current[subject]

    def _refresh_quietly(self) -> None:
        """The periodic read; a broker that does not answer leaves the keys as last read
        (logged), since only a missing key needs the topic to be sure."""
        try:
            self.refresh()
        except (BrokerError, TimeoutError) as exc:
            log.warning("key store: could not read %s: %s", self.topic, exc)

    # -- writing ---------------------------------------------------------------------------
    def write_many(self, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Write records (``value`` None: a tombstone) without waiting for each; returns how
        many were confirmed, once all were (a rotation writes every key this way).

        Raises:
            BrokerError, DeliveryError: as :meth:`put`.
        """
        errors: list[str] = []
        count = 0

        def done(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        with clients.broker_errors(self.bootstrap_servers):
            for key, value in records:
                while True:
                    try:
                        self._producer.produce(self.topic, key=key, value=value, on_delivery=done)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        self._producer.poll(0.1)
                count += 1
                if errors:
                    break
            if self._producer.flush(self.timeout_s):
                raise BrokerError(
                    f"the key store topic {self.topic} did not confirm {count} writes within"
                    f" {self.timeout_s:.0f}s; is Kafka at {self.bootstrap_servers} up?"
                )
        if errors:
            raise DeliveryError(f"the key store topic {self.topic} refused a write: {errors[0]}")
        return count

    def _write(self, key: bytes, value: bytes | None) -> None:
        self.write_many([(key, value)])

    # -- lifecycle -------------------------------------------------------------------------
    def follow(self, interval_s: float | None = None) -> None:
        """Keep reading the topic in a thread of its own every ``interval_s`` (default
        ``refresh_s``), so a worker's mirror stays caught up while no one asks, and a
        question never waits for more than what was written since the last tick."""
        if self._follower is not None:
            return
        every = self.refresh_s if interval_s is None else interval_s

        def run() -> None:
            while True:
                self._refresh_quietly()
                if self._stop.wait(every):
                    return

        self._follower = threading.Thread(target=run, name="key-mirror", daemon=True)
        self._follower.start()

    def close(self) -> None:
        """Stop following, flush the producer, close the mirror and the lookup."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(self.timeout_s)
            self._follower = None
        self._producer.flush(5.0)
        with self._lock:
            if self.mirror is not None:
                self.mirror.close()
        if self.lookup is not None:
            self.lookup.close()
