"""The Kafka key store: wrapped data keys in the compacted ``<prefix>.data-keys`` topic.

One partition, keyed ``<subject>/<key version>``, value the wrapped-key record (JSON);
erasure writes a tombstone for each version, and compaction then removes the key from the
log for good (docs/security.md: how long a tombstone and the old segments stay). Readers
keep the records they have read in memory (about 200 bytes a key: the store grows with the
number of data subjects, not with runs or events) and read on from where they stopped when
asked for a key they do not hold, or every ``refresh_s`` seconds, so a key another process
just made is found, and an erasure seen, without re-reading the topic.

The topic is never archived: the archive keeps sealed values for years, the keys that open
them must stay erasable.
"""

from __future__ import annotations

import threading
import time

from runstate.crypto._store import WrappedKey
from runstate.errors import BrokerError, DeliveryError
from runstate.streams import clients
from runstate.streams.reader import read_topic

__all__ = ["KafkaKeyStore"]

_MAX_MISSING = 100_000


class KafkaKeyStore:
    """Wrapped data keys in a compacted topic. Thread-safe; ``close()`` when done."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        timeout_s: float = 30.0,
        refresh_s: float = 5.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.refresh_s = refresh_s
        self._read_at = float("-inf")
        #: Keys found missing by a read that started after they were first asked for: gone
        #: (erased, or never in this store). Asking again costs no read.
        self._missing: dict[tuple[str, str], float | None] = {}
        self.topic = topic
        self.timeout_s = timeout_s
        self._keys: dict[str, dict[str, WrappedKey]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._producer = clients.producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
            }
        )

    def _catch_up(self) -> None:
        with self._lock:
            self._read_at = time.monotonic()
            for record in read_topic(
                self.bootstrap_servers, self.topic, start={0: self._next}, timeout_s=self.timeout_s
            ):
                self._next = record.offset + 1
                subject, _, version = (record.key or b"").decode().rpartition("/")
                if record.value is None:
                    self._keys.get(subject, {}).pop(version, None)
                    if not self._keys.get(subject, True):
                        del self._keys[subject]
                    continue
                try:
                    key = WrappedKey.from_json(record.value)
                except ValueError:
                    continue  # not ours; a damaged record opens nothing
                self._keys.setdefault(key.subject, {})[key.version] = key

    def get(self, subject: str, version: str) -> WrappedKey | None:
        """The key, read on from the topic when missing or last read over ``refresh_s``
        ago (an erasure by another process reaches a long-lived reader within that)."""
        found = self._keys.get(subject, {}).get(version)
        if found is not None and time.monotonic() - self._read_at <= self.refresh_s:
            return found
        pair = (subject, version)
        if found is None and self._missing.get(pair) is not None:
            return None
        # A value sealed under this key was written after the key was stored, and the caller
        # saw the value before asking: a read starting now finds the key if it exists.
        asked = time.monotonic()
        self._catch_up()
        found = self._keys.get(subject, {}).get(version)
        if found is None and len(self._missing) < _MAX_MISSING:
            self._missing[pair] = asked
        return found

    def current(self, subject: str) -> WrappedKey | None:
        """The newest key this reader knows, reading on at most every ``refresh_s``: a new
        subject (a run id, typically) costs no read of its own. Missing another process's
        brand-new key only makes a second version (both open their own values)."""
        if time.monotonic() - self._read_at > self.refresh_s:
            self._catch_up()
        keys = list(self._keys.get(subject, {}).values())
        return max(keys, key=lambda k: (k.created_ms, k.version)) if keys else None

    def _write(self, key: bytes, value: bytes | None) -> None:
        errors: list[str] = []

        def done(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        with clients.broker_errors(self.bootstrap_servers):
            self._producer.produce(self.topic, key=key, value=value, on_delivery=done)
            deadline = time.monotonic() + self.timeout_s
            while self._producer.flush(0.5):
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"the key store topic {self.topic} did not confirm a write within"
                        f" {self.timeout_s:.0f}s; is Kafka at {self.bootstrap_servers} up?"
                    )
        if errors:
            raise DeliveryError(f"the key store topic {self.topic} refused a write: {errors[0]}")

    def put(self, key: WrappedKey) -> None:
        self._write(key.record_key, key.to_json())
        with self._lock:
            self._keys.setdefault(key.subject, {})[key.version] = key

    def erase(self, subject: str) -> tuple[str, ...]:
        self._catch_up()
        versions = tuple(sorted(self._keys.get(subject, {})))
        for version in versions:
            self._write(f"{subject}/{version}".encode(), None)
        with self._lock:
            self._keys.pop(subject, None)
        return versions

    def close(self) -> None:
        self._producer.flush(5.0)
