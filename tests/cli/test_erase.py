"""`runstate erase` against the real broker: the keys go, the record stays; errors are one
line each (no master key, unknown subject, broker down, wrong arguments)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.crypto import ERASURE_SCHEMA, FileKeyStore, PersonalDataCipher, parse_master_key
from runstate.crypto._kafka_store import KafkaKeyStore
from runstate.errors import DataKeyMissing
from runstate.schemas.codec import default_codec
from runstate.streams.reader import read_topic
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from tests.cli_process import runstate_cli

pytestmark = pytest.mark.integration

MASTER = base64.b64encode(os.urandom(32)).decode()


def _erase(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    mine = ("RUNSTATE_MASTER_KEY", "RUNSTATE_MASTER_KEY_FILE", "RUNSTATE_KEY_STORE")
    return runstate_cli("erase", *args, cwd=cwd, env=env, unset=mine)


@pytest.fixture
def deployment(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> tuple[str, TopicNames]:
    names = TopicNames(unique_name("erase"))
    ensure_topics(admin_client(kafka_bootstrap), topic_specs(names, partitions=1))
    return kafka_bootstrap, names


def _records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    return [(r.key, r.value) for r in read_topic(bootstrap, topic)]


def test_erase_destroys_the_kafka_keys_and_records_it(
    deployment: tuple[str, TopicNames], tmp_path: Path
) -> None:
    bootstrap, names = deployment
    store = KafkaKeyStore(bootstrap, names.data_keys)
    cipher = PersonalDataCipher(parse_master_key(MASTER), store)
    gone = cipher.seal_value("ada", subject="cust-1", run_id="r1", field="input")
    kept = cipher.seal_value("bob", subject="cust-2", run_id="r2", field="input")
    env = {
        "RUNSTATE_MASTER_KEY": MASTER,
        "RUNSTATE_TOPIC_PREFIX": names.prefix,
        "RUNSTATE_BOOTSTRAP_SERVERS": bootstrap,
    }
    done = _erase(tmp_path, "--subject", "cust-1", "--by", "dpo", **env)
    assert done.returncode == 0, done.stderr
    assert "erased data subject 'cust-1': 1 data key version(s) destroyed" in done.stdout
    # A fresh reader (another process) has no key of cust-1, still has cust-2's.
    fresh = PersonalDataCipher(
        parse_master_key(MASTER),
        KafkaKeyStore(bootstrap, names.data_keys, mirror=tmp_path / "fresh-mirror"),
    )
    assert fresh.store.get("cust-1", gone.split(".")[2]) is None
    assert fresh.open_value(kept, run_id="r2") == "bob"
    # The tombstone is in the topic; the audit record names subject, who and the version.
    tombstones = [k for k, v in _records(bootstrap, names.data_keys) if v is None]
    assert tombstones == [f"cust-1/{gone.split('.')[2]}".encode()]
    [(key, value)] = _records(bootstrap, names.erasures)
    assert key == b"cust-1" and value is not None
    decoded = default_codec().decode(value)
    assert decoded.name == ERASURE_SCHEMA
    assert (decoded.record["subject"], decoded.record["by"]) == ("cust-1", "dpo")
    assert decoded.record["key_versions"] == [gone.split(".")[2]]
    # Again: nothing left to erase, one line, exit 1.
    again = _erase(tmp_path, "--subject", "cust-1", **env)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("error: no data key of subject 'cust-1'")
    assert len(again.stderr.strip().splitlines()) == 1


def test_erase_destroys_every_version_made_by_every_process(
    deployment: tuple[str, TopicNames], tmp_path: Path
) -> None:
    """Agent processes hold no mirror, so each makes its own version of a subject's key;
    erase finds them all in its mirror (the key cache folder) and destroys each."""
    bootstrap, names = deployment
    sealed = []
    for i in range(3):
        agent = KafkaKeyStore(bootstrap, names.data_keys)
        try:
            cipher = PersonalDataCipher(parse_master_key(MASTER), agent)
            sealed.append(cipher.seal_value(f"v{i}", subject="cust-9", run_id="r", field="f"))
        finally:
            agent.close()
    versions = sorted({t.split(".")[2] for t in sealed})
    assert len(versions) == 3
    env = {
        "RUNSTATE_MASTER_KEY": MASTER,
        "RUNSTATE_TOPIC_PREFIX": names.prefix,
        "RUNSTATE_BOOTSTRAP_SERVERS": bootstrap,
        "RUNSTATE_KEY_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = _erase(tmp_path, "--subject", "cust-9", **env)
    assert done.returncode == 0, done.stderr
    assert f"3 data key version(s) destroyed ({', '.join(versions)})" in done.stdout
    [cache] = (tmp_path / "cache").iterdir()
    assert cache.name.startswith(names.data_keys)
    fresh = KafkaKeyStore(bootstrap, names.data_keys, mirror=tmp_path / "fresh-mirror")
    try:
        opener = PersonalDataCipher(parse_master_key(MASTER), fresh)
        for text in sealed:
            with pytest.raises(DataKeyMissing):
                opener.open_value(text, run_id="r")
    finally:
        fresh.close()


def test_erase_by_run_with_a_file_store(deployment: tuple[str, TopicNames], tmp_path: Path) -> None:
    bootstrap, names = deployment
    keys = tmp_path / "keys"
    cipher = PersonalDataCipher(parse_master_key(MASTER), FileKeyStore(keys))
    text = cipher.seal_value("ada", subject="run-9", run_id="run-9", field="input")
    env = {
        "RUNSTATE_MASTER_KEY": MASTER,
        "RUNSTATE_KEY_STORE": str(keys),
        "RUNSTATE_TOPIC_PREFIX": names.prefix,
        "RUNSTATE_BOOTSTRAP_SERVERS": bootstrap,
    }
    done = _erase(tmp_path, "--run", "run-9", **env)
    assert done.returncode == 0, done.stderr
    assert [p for p in keys.iterdir() if p.suffix == ".json"] == []
    assert FileKeyStore(keys).get("run-9", text.split(".")[2]) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_erase_errors_are_one_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    cipher = PersonalDataCipher(parse_master_key(MASTER), FileKeyStore(keys))
    cipher.seal_value("ada", subject="s", run_id="r", field="input")
    down = f"127.0.0.1:{_free_port()}"
    cases = [
        ((), {}, 2, "give exactly one of --subject"),
        (("--subject", "s", "--run", "r"), {}, 2, "give exactly one of --subject"),
        (("--subject", "s"), {"RUNSTATE_BOOTSTRAP_SERVERS": down}, 1, "error: no master key"),
        (
            ("--subject", "s"),
            {"RUNSTATE_MASTER_KEY": "bad!", "RUNSTATE_BOOTSTRAP_SERVERS": down},
            1,
            "error: RUNSTATE_MASTER_KEY is not base64",
        ),
        (
            ("--subject", "s"),
            {
                "RUNSTATE_MASTER_KEY": MASTER,
                "RUNSTATE_KEY_STORE": str(keys),
                "RUNSTATE_BOOTSTRAP_SERVERS": down,
            },
            3,
            "error: cannot reach Kafka",
        ),
    ]
    for args, env, code, line in cases:
        done = _erase(tmp_path, *args, **env)
        assert done.returncode == code, (args, done.stderr)
        assert line in done.stderr, (args, done.stderr)
        if code != 2:
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # Broker down: nothing was destroyed (the record could not have followed).
    assert FileKeyStore(keys).current("s") is not None
