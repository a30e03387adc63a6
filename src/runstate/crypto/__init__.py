"""Per-data-subject encryption of personal fields (issue 14).

The SDK seals every personal field (:func:`runstate.schemas.sealed.sealed_fields`) before it
reaches Kafka, with AES-256-GCM under a data key of the run's data subject; the data keys are
wrapped by a master key (:class:`KeyManager`) and kept in a :class:`KeyStore` (a compacted
topic, mirrored in a local RocksDB folder by the processes that need any key and never read
whole by an agent; or a folder). The processor only ever holds the sealed text. The query
API and replay open it for whoever may see it (:func:`reveal`); erasing a subject destroys
its keys, after which every copy of its values reads as ``erased``. See docs/security.md.
"""

from __future__ import annotations

from typing import Any

from runstate.crypto._cipher import (
    UNREADABLE,
    Opener,
    PersonalDataCipher,
    reveal,
    reveal_event,
    shown_value,
)
from runstate.crypto._erasure import ERASURE_SCHEMA, Erasure, erase_subject, publish_erasure
from runstate.crypto._kafka_store import KafkaKeyStore
from runstate.crypto._keys import (
    KeyManager,
    LocalKeyManager,
    accepted_key_managers,
    key_manager_from_settings,
    parse_master_key,
)
from runstate.crypto._lookup import KeyLookup, QueryApiKeyLookup, data_key_path
from runstate.crypto._rotation import Rotation, reapply_erasures, rotate_master_key
from runstate.crypto._setup import cipher_from_settings, key_cache_folder, key_store_from_settings
from runstate.crypto._store import FileKeyStore, KeyStore, WrappedKey

__all__ = [
    "ERASURE_SCHEMA",
    "UNREADABLE",
    "Erasure",
    "FileKeyStore",
    "KafkaKeyStore",
    "KeyLookup",
    "KeyManager",
    "KeyMirror",
    "KeyStore",
    "LocalKeyManager",
    "Opener",
    "PersonalDataCipher",
    "QueryApiKeyLookup",
    "Rotation",
    "WrappedKey",
    "accepted_key_managers",
    "cipher_from_settings",
    "data_key_path",
    "erase_subject",
    "key_cache_folder",
    "key_manager_from_settings",
    "key_store_from_settings",
    "parse_master_key",
    "publish_erasure",
    "reapply_erasures",
    "reveal",
    "reveal_event",
    "rotate_master_key",
    "shown_value",
]


def __getattr__(name: str) -> Any:
    """``KeyMirror`` on first use: it needs RocksDB (the processor extra), which an agent's
    core install does not have."""
    if name == "KeyMirror":
        from runstate.crypto._mirror import KeyMirror

        return KeyMirror
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
