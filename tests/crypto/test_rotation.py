"""Master-key rotation: `runstate keys rotate` re-wraps every stored data key under the new
master key (against the real broker), every sealed value opens with the new key alone, an
erased key is not written back (before the pass or during it), running it again changes
nothing, and keys under a master key not given are reported (exit 1). The folder store too."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.crypto import (
    FileKeyStore,
    KafkaKeyStore,
    PersonalDataCipher,
    parse_master_key,
    reapply_erasures,
    rotate_master_key,
)
from runstate.errors import DataKeyMissing, MasterKeyError
from runstate.schemas.sealed import parse_sealed
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from tests.cli_process import runstate_cli

OLD, NEW, OTHER = (base64.b64encode(os.urandom(32)).decode() for _ in range(3))


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    mine = ("RUNSTATE_MASTER_KEY", "RUNSTATE_MASTER_KEY_FILE", "RUNSTATE_MASTER_KEY_ACCEPTED")
    return runstate_cli(*args, cwd=cwd, env=env, unset=(*mine, "RUNSTATE_KEY_STORE"))


@pytest.fixture
def names(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> TopicNames:
    names = TopicNames(unique_name("rotate"))
    ensure_topics(admin_client(kafka_bootstrap), topic_specs(names, partitions=1))
    return names


def _mirror_store(bootstrap: str, names: TopicNames, folder: Path) -> KafkaKeyStore:
    return KafkaKeyStore(bootstrap, names.data_keys, mirror=folder)


@pytest.mark.integration
def test_rotate_rewraps_every_key_and_keeps_erasures(
    kafka_bootstrap: str, names: TopicNames, tmp_path: Path
) -> None:
    agent = KafkaKeyStore(kafka_bootstrap, names.data_keys)
    old = PersonalDataCipher(parse_master_key(OLD), agent)
    texts = {s: old.seal_value(f"value of {s}", subject=s, run_id="r", field="f") for s in "abc"}
    agent.close()
    env = {
        "RUNSTATE_TOPIC_PREFIX": names.prefix,
        "RUNSTATE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RUNSTATE_KEY_CACHE_DIR": str(tmp_path / "cache"),
    }
    erased = _cli(tmp_path, "erase", "--subject", "c", **env, RUNSTATE_MASTER_KEY=OLD)
    assert erased.returncode == 0, erased.stderr

    rotation = {"RUNSTATE_MASTER_KEY": NEW, "RUNSTATE_MASTER_KEY_ACCEPTED": OLD}
    done = _cli(tmp_path, "keys", "rotate", **env, **rotation)
    assert done.returncode == 0, done.stderr
    new_id = parse_master_key(NEW).key_id
    assert f"re-wrapped 2 data key(s) under master key {new_id} (0 already under it)" in (
        done.stdout
    )

    fresh = _mirror_store(kafka_bootstrap, names, tmp_path / "fresh")
    try:
        fresh.refresh()
        assert {(k.subject, k.master_key_id) for k in fresh.mirror.scan()} == {  # type: ignore[union-attr]
            ("a", new_id),
            ("b", new_id),
        }
        with_new = PersonalDataCipher(parse_master_key(NEW), fresh)
        assert with_new.open_value(texts["a"], run_id="r") == "value of a"
        assert with_new.open_value(texts["b"], run_id="r") == "value of b"
        with pytest.raises(DataKeyMissing):  # erased before: not written back
            with_new.open_value(texts["c"], run_id="r")
        with pytest.raises(MasterKeyError, match="RUNSTATE_MASTER_KEY_ACCEPTED"):
            PersonalDataCipher(parse_master_key(OLD), fresh).open_value(texts["a"], run_id="r")
        # A process still on the old key, the new one accepted (the first step of a rotation).
        before = PersonalDataCipher(parse_master_key(OLD), fresh, accepted=[parse_master_key(NEW)])
        assert before.open_value(texts["a"], run_id="r") == "value of a"
    finally:
        fresh.close()

    again = _cli(tmp_path, "keys", "rotate", **env, **rotation)
    assert again.returncode == 0, again.stderr
    assert "re-wrapped 0 data key(s)" in again.stdout and "(2 already under it)" in again.stdout
    wrong = _cli(tmp_path, "keys", "rotate", **env, RUNSTATE_MASTER_KEY=OTHER)
    assert wrong.returncode == 1
    assert wrong.stderr.strip().startswith("error: 2 data key(s) are wrapped by master keys")
    assert len(wrong.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_an_erasure_during_the_pass_is_not_undone(
    kafka_bootstrap: str, names: TopicNames, tmp_path: Path
) -> None:
    old, new = parse_master_key(OLD), parse_master_key(NEW)
    writer = PersonalDataCipher(old, KafkaKeyStore(kafka_bootstrap, names.data_keys))
    texts = {s: writer.seal_value("v", subject=s, run_id="r", field="f") for s in ("k", "l")}
    store = _mirror_store(kafka_bootstrap, names, tmp_path / "rotation")
    eraser = _mirror_store(kafka_bootstrap, names, tmp_path / "eraser")
    try:
        rotation = rotate_master_key(store, new, [old])  # nothing raced: nothing re-applied
        assert (rotation.rewrapped, rotation.erasures_reapplied) == (2, 0)
        store.refresh(asked=time.monotonic())  # its mirror past the pass's own records
        since = store.mirror.offsets()  # type: ignore[union-attr]
        # As if the pass read "k", then an erasure of "k" landed, then the pass wrote the
        # re-wrapped "k" back over it; "l" was erased after its re-wrapped record.
        k = store.get("k", parse_sealed(texts["k"]).key_version)
        assert k is not None
        eraser.erase("k")
        store.write_many([(k.record_key, k.to_json())])
        eraser.erase("l")
        assert reapply_erasures(store, since) == 1
        check = _mirror_store(kafka_bootstrap, names, tmp_path / "check")
        try:
            check.refresh()
            assert list(check.mirror.scan()) == []  # type: ignore[union-attr]
        finally:
            check.close()
    finally:
        store.close()
        eraser.close()
        writer.store.close()  # type: ignore[attr-defined]


def test_rotate_a_folder_store(tmp_path: Path) -> None:
    old, new = parse_master_key(OLD), parse_master_key(NEW)
    c = PersonalDataCipher(old, FileKeyStore(tmp_path))
    texts = [c.seal_value(f"v{i}", subject=f"s{i}", run_id="r", field="f") for i in range(3)]
    rotation = rotate_master_key(FileKeyStore(tmp_path), new, [old])
    assert (rotation.rewrapped, rotation.current, rotation.unknown) == (3, 0, {})
    opener = PersonalDataCipher(new, FileKeyStore(tmp_path))
    assert [opener.open_value(t, run_id="r") for t in texts] == ["v0", "v1", "v2"]
    again = rotate_master_key(FileKeyStore(tmp_path), new, [])
    assert (again.rewrapped, again.current) == (0, 3)
    other = rotate_master_key(FileKeyStore(tmp_path), parse_master_key(OTHER), [])
    assert other.unknown == {new.key_id: 3} and other.rewrapped == 0
