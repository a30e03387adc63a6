"""The cipher and key store a process's settings describe."""

from __future__ import annotations

from pathlib import Path

from runstate.crypto._cipher import PersonalDataCipher
from runstate.crypto._keys import key_manager_from_settings
from runstate.crypto._store import FileKeyStore, KeyStore
from runstate.settings import Settings
from runstate.streams.topics import TopicNames

__all__ = ["cipher_from_settings", "key_store_from_settings"]


def key_store_from_settings(
    settings: Settings, *, bootstrap_servers: str | None = None, topic_prefix: str | None = None
) -> KeyStore:
    """``RUNSTATE_KEY_STORE``: ``kafka`` (the data-keys topic) or a folder for local use."""
    if settings.key_store == "kafka":
        from runstate.crypto._kafka_store import KafkaKeyStore

        return KafkaKeyStore(
            bootstrap_servers or settings.bootstrap_servers,
            TopicNames(topic_prefix or settings.topic_prefix).data_keys,
        )
    return FileKeyStore(Path(settings.key_store))


def cipher_from_settings(
    settings: Settings,
    *,
    required: bool = False,
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
) -> PersonalDataCipher | None:
    """The cipher for the configured master key and key store; None without a master key
    (personal fields are then written in clear, as before encryption existed).

    Raises:
        MasterKeyError: the master key is malformed, or missing while ``required``.
    """
    keys = key_manager_from_settings(settings, required=required)
    if keys is None:
        return None
    store = key_store_from_settings(
        settings, bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix
    )
    return PersonalDataCipher(keys, store)
