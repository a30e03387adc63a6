"""The cipher and key store a process's settings describe.

Which Kafka key store a process gets (docs/security.md, "Key store"):

* a processor worker: a mirror of the data-keys topic in its data dir (``mirror_dir``);
* ``runstate replay`` and ``erase``: a mirror in the key cache folder
  (:func:`key_cache_folder`, ``RUNSTATE_KEY_CACHE_DIR``);
* an agent process (the SDK, reactors, the CLI's decisions): no mirror - the keys it makes,
  and a worker's query API (``RUNSTATE_QUERY_URL``) for a key an earlier process made - or,
  with ``RUNSTATE_KEY_CACHE_DIR`` set, a mirror there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from runstate.crypto._cipher import PersonalDataCipher
from runstate.crypto._keys import accepted_key_managers, key_manager_from_settings
from runstate.crypto._store import FileKeyStore, KeyStore
from runstate.settings import Settings
from runstate.streams.topics import TopicNames

__all__ = ["cipher_from_settings", "key_cache_folder", "key_store_from_settings"]


def key_cache_folder(settings: Settings, *, bootstrap_servers: str, topic: str) -> Path:
    """The mirror folder of ``topic`` on these servers under the key cache folder: one per
    cluster address and topic, so tools pointed at two deployments do not read each other's
    topic again and again."""
    root = settings.key_cache_dir or settings.state_dir / "key-cache"
    where = hashlib.sha256(bootstrap_servers.encode()).hexdigest()[:8]
    return root / f"{topic}-{where}"


def key_store_from_settings(
    settings: Settings,
    *,
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
    mirror_dir: Path | None = None,
    cached: bool = False,
) -> KeyStore:
    """``RUNSTATE_KEY_STORE``: ``kafka`` (the data-keys topic) or a folder for local use.

    Args:
        mirror_dir: keep a mirror of the topic here (a worker's data dir).
        cached: keep a mirror in the key cache folder (the CLI's replay and erase).
    """
    if settings.key_store != "kafka":
        return FileKeyStore(Path(settings.key_store))
    from runstate.crypto._kafka_store import KafkaKeyStore
    from runstate.crypto._lookup import QueryApiKeyLookup

    servers = bootstrap_servers or settings.bootstrap_servers
    topic = TopicNames(topic_prefix or settings.topic_prefix).data_keys
    if mirror_dir is None and (cached or settings.key_cache_dir is not None):
        mirror_dir = key_cache_folder(settings, bootstrap_servers=servers, topic=topic)
    if mirror_dir is not None:
        return KafkaKeyStore(servers, topic, mirror=mirror_dir)
    token = None if settings.token is None else settings.token.get_secret_value()
    return KafkaKeyStore(servers, topic, lookup=QueryApiKeyLookup(settings.query_url, token=token))


def cipher_from_settings(
    settings: Settings,
    *,
    required: bool = False,
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
    mirror_dir: Path | None = None,
    cached: bool = False,
) -> PersonalDataCipher | None:
    """The cipher for the configured master key and key store (see
    :func:`key_store_from_settings`); None without a master key (personal fields are then
    written in clear, as before encryption existed).

    Raises:
        MasterKeyError: the master key is malformed, or missing while ``required``.
    """
    keys = key_manager_from_settings(settings, required=required)
    if keys is None:
        return None
    accepted = accepted_key_managers(settings)
    store = key_store_from_settings(
        settings,
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        mirror_dir=mirror_dir,
        cached=cached,
    )
    return PersonalDataCipher(keys, store, accepted=accepted)
