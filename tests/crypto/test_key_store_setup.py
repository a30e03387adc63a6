"""Which key store a process's settings give it: agents no mirror and the query API's
lookup; workers a mirror in their data dir; replay and erase one in the key cache folder; a
folder store as before. And the accepted master keys of a rotation."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from runstate.crypto import (
    FileKeyStore,
    KafkaKeyStore,
    QueryApiKeyLookup,
    accepted_key_managers,
    cipher_from_settings,
    key_cache_folder,
    key_store_from_settings,
    parse_master_key,
)
from runstate.errors import MasterKeyError
from runstate.settings import Settings

SERVERS = "127.0.0.1:1"  # never contacted: making a store reads nothing


def _settings(tmp_path: Path, **more: object) -> Settings:
    return Settings(
        bootstrap_servers=SERVERS,
        topic_prefix="p",
        state_dir=tmp_path / "state",
        query_url="http://127.0.0.1:7777",
        **more,  # type: ignore[arg-type]
    )


def test_each_kind_of_process_gets_its_store(tmp_path: Path) -> None:
    agent = key_store_from_settings(_settings(tmp_path, token="t-1"))
    assert isinstance(agent, KafkaKeyStore) and agent.mirror is None
    assert isinstance(agent.lookup, QueryApiKeyLookup)
    assert agent.lookup.base_url == "http://127.0.0.1:7777" and agent.topic == "p.data-keys"
    agent.close()

    tool = key_store_from_settings(_settings(tmp_path), cached=True)
    assert isinstance(tool, KafkaKeyStore) and tool.mirror is not None
    expected = key_cache_folder(_settings(tmp_path), bootstrap_servers=SERVERS, topic="p.data-keys")
    assert tool.mirror.folder == expected
    assert expected.parent == tmp_path / "state" / "key-cache"
    assert expected.name.startswith("p.data-keys-")
    tool.close()

    cache = tmp_path / "cache"
    kept = key_store_from_settings(_settings(tmp_path, key_cache_dir=cache))  # an agent too
    assert isinstance(kept, KafkaKeyStore) and kept.mirror is not None
    assert kept.mirror.folder.parent == cache and kept.lookup is None
    kept.close()

    worker = key_store_from_settings(_settings(tmp_path), mirror_dir=tmp_path / "data" / "keys")
    assert isinstance(worker, KafkaKeyStore) and worker.mirror is not None
    assert worker.mirror.folder == tmp_path / "data" / "keys"
    worker.close()

    folder = key_store_from_settings(_settings(tmp_path, key_store=str(tmp_path / "keys")))
    assert isinstance(folder, FileKeyStore)


def test_accepted_master_keys(tmp_path: Path) -> None:
    keys = [base64.b64encode(os.urandom(32)).decode() for _ in range(3)]
    s = _settings(
        tmp_path,
        key_store=str(tmp_path / "keys"),
        master_key=keys[0],
        master_key_accepted=f"{keys[1]}, {keys[2]},",
    )
    accepted = accepted_key_managers(s)
    assert [k.key_id for k in accepted] == [parse_master_key(k).key_id for k in keys[1:]]
    cipher = cipher_from_settings(s)
    assert cipher is not None
    assert [k.key_id for k in cipher.accepted] == [k.key_id for k in accepted]
    assert accepted_key_managers(_settings(tmp_path)) == ()
    with pytest.raises(MasterKeyError, match=r"RUNSTATE_MASTER_KEY_ACCEPTED \(key 2\) is not"):
        accepted_key_managers(_settings(tmp_path, master_key_accepted=f"{keys[1]},nope!"))
