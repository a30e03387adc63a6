"""Master-key rotation: every stored data key re-wrapped under the new master key.

The data keys themselves do not change, so no sealed value is touched (events, archive and
backups stay as they are); only their wrapped form in the key store does. Meanwhile every
process holds both master keys - the new one in ``RUNSTATE_MASTER_KEY`` (it wraps new data
keys), the other in ``RUNSTATE_MASTER_KEY_ACCEPTED`` (it only unwraps) - and the master key's
id stored with each wrapped key says which one opens it (docs/security.md, "Rotating the
master key").

On Kafka the keys are streamed from a mirror caught up to the topic's end (erased keys are
already gone from it, so none is written back), and the re-wrapped ones written as new
records of the same ``<subject>/<version>``: compaction then drops the old records. An
erasure that lands between the mirror's read and the re-wrapped record's write would be
undone by that record, so after the pass the records written since are read once more and
every key erased meanwhile is tombstoned again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from runstate.crypto._kafka_store import KafkaKeyStore
from runstate.crypto._keys import KeyManager
from runstate.crypto._store import FileKeyStore, KeyStore, WrappedKey
from runstate.errors import ConfigError
from runstate.streams.reader import read_topic

__all__ = ["Rotation", "reapply_erasures", "rotate_master_key"]

_Rewrap = Callable[[WrappedKey], WrappedKey | None]


@dataclass
class Rotation:
    """What a rotation did.

    Attributes:
        rewrapped: keys re-wrapped under the new master key.
        current: keys already under it (a rotation run again, or keys made meanwhile).
        unknown: master key ids of keys that could not be re-wrapped (neither the new key nor
            an accepted one), with how many keys each.
        erasures_reapplied: keys erased during the pass, tombstoned again after it.
    """

    master_key_id: str
    rewrapped: int = 0
    current: int = 0
    unknown: dict[str, int] = field(default_factory=dict)
    erasures_reapplied: int = 0


def rotate_master_key(
    store: KeyStore, keys: KeyManager, accepted: Sequence[KeyManager]
) -> Rotation:
    """Re-wrap every data key of ``store`` under ``keys`` (the new master key); keys wrapped
    by one of ``accepted`` are unwrapped with it. Safe to run again.

    Raises:
        ConfigError: a Kafka store without a mirror, or a store of another kind.
        BrokerError, DeliveryError: Kafka could not be reached or refused a write.
    """
    unwrappers = {k.key_id: k for k in (*accepted, keys)}
    report = Rotation(master_key_id=keys.key_id)

    def rewrap(key: WrappedKey) -> WrappedKey | None:
        if key.master_key_id == keys.key_id:
            report.current += 1
            return None
        old = unwrappers.get(key.master_key_id)
        if old is None:
            report.unknown[key.master_key_id] = report.unknown.get(key.master_key_id, 0) + 1
            return None
        report.rewrapped += 1
        return replace(key, wrapped=keys.wrap(old.unwrap(key.wrapped)), master_key_id=keys.key_id)

    if isinstance(store, KafkaKeyStore):
        _rotate_topic(store, rewrap, report)
    elif isinstance(store, FileKeyStore):
        store.rewrite(rewrap)
    else:
        raise ConfigError(f"rotating the master key of a {type(store).__name__} is not supported")
    return report


def _rotate_topic(store: KafkaKeyStore, rewrap: _Rewrap, report: Rotation) -> None:
    mirror = store.mirror
    if mirror is None:
        raise ConfigError(
            "rotating the master key streams every key from a mirror of the data-keys topic:"
            " give the key store a key cache folder (RUNSTATE_KEY_CACHE_DIR)"
        )
    store.refresh(asked=time.monotonic())
    since = mirror.offsets()

    def records() -> Iterator[tuple[bytes, bytes | None]]:
        for key in mirror.scan():
            new = rewrap(key)
            if new is not None:
                yield new.record_key, new.to_json()

    store.write_many(records())
    report.erasures_reapplied = reapply_erasures(store, since)


def reapply_erasures(store: KafkaKeyStore, since: dict[int, int]) -> int:
    """Tombstone again every key that got a tombstone after ``since`` and a record after
    that tombstone (a re-wrapped copy written back over the erasure); returns how many.
    A data key's ``<subject>/<version>`` is never made twice, so a record after its
    tombstone can only be such a copy. Reads only the records written since."""
    erased_then_written: set[bytes] = set()
    erased: set[bytes] = set()
    for record in read_topic(
        store.bootstrap_servers, store.topic, start=since, timeout_s=store.timeout_s
    ):
        key = record.key or b""
        if record.value is None:
            erased.add(key)
            erased_then_written.discard(key)
        elif key in erased:
            erased_then_written.add(key)
    return store.write_many((key, None) for key in sorted(erased_then_written))
