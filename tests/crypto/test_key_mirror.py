"""The key mirror on its own (real RocksDB on tmp_path, records as the topic gives them):
keys by subject and version, tombstones, offsets in the same batches, a prefix read that
does not mix up subjects, a reopened folder that keeps everything, one folder per process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runstate.crypto import KeyMirror, LocalKeyManager, WrappedKey
from runstate.crypto._mirror import BATCH_RECORDS
from runstate.errors import StoreInUse
from runstate.streams.reader import RawRecord

MASTER = LocalKeyManager(os.urandom(32))


def _key(subject: str, version: str, created_ms: int = 1) -> WrappedKey:
    return WrappedKey(
        subject=subject,
        version=version,
        wrapped=MASTER.wrap(os.urandom(32)),
        master_key_id=MASTER.key_id,
        created_ms=created_ms,
    )


def _record(offset: int, key: WrappedKey | None, *, tombstone: str | None = None) -> RawRecord:
    name = key.record_key if key is not None else (tombstone or "").encode()
    return RawRecord(
        topic="p.data-keys",
        partition=0,
        offset=offset,
        timestamp_ms=0,
        key=name,
        value=None if key is None else key.to_json(),
    )


def test_keys_versions_tombstones_and_offsets(tmp_path: Path) -> None:
    mirror = KeyMirror(tmp_path / "m")
    a1, a2, nested, b1 = _key("a", "01", 1), _key("a", "02", 2), _key("a/x", "03"), _key("b", "04")
    junk = RawRecord("p.data-keys", 0, 4, 0, b"c/05", b"not a key")
    assert mirror.apply([_record(i, k) for i, k in enumerate((a1, a2, nested, b1))] + [junk]) == 5
    assert mirror.offsets() == {0: 5}
    assert mirror.get("a", "01") == a1 and mirror.get("c", "05") is None
    # The prefix read of "a" leaves out subject "a/x", which merely starts with "a/".
    assert sorted(k.version for k in mirror.versions("a")) == ["01", "02"]
    assert [k.version for k in mirror.versions("a/x")] == ["03"]
    assert mirror.versions("") == [] and mirror.versions("zz") == []
    mirror.apply([_record(5, None, tombstone="a/01")])
    assert mirror.get("a", "01") is None and [k.version for k in mirror.versions("a")] == ["02"]
    assert mirror.offsets() == {0: 6}
    # A complete catch-up records the end seen (past compacted-away offsets) and its time.
    mirror.finish({0: 9}, started_ms=1234, source="cluster/p.data-keys")
    mirror.close()
    again = KeyMirror(tmp_path / "m")
    assert again.offsets() == {0: 9} and again.caught_up_ms == 1234
    assert again.source == "cluster/p.data-keys"
    assert again.get("b", "04") == b1 and again.get("a", "01") is None
    again.clear()
    assert again.offsets() == {} and again.get("b", "04") is None and again.source is None
    again.close()


def test_large_catch_up_is_batched_with_its_offsets(tmp_path: Path) -> None:
    mirror = KeyMirror(tmp_path / "m")
    n = BATCH_RECORDS * 2 + 7
    keys = [_key(f"run-{i}", "0a") for i in range(n)]
    assert mirror.apply(_record(i, k) for i, k in enumerate(keys)) == n
    assert mirror.offsets() == {0: n}
    assert mirror.get(f"run-{n - 1}", "0a") == keys[-1]
    assert n * 0.5 <= len(mirror) <= n * 1.5  # RocksDB's estimate
    mirror.close()


def test_one_process_per_folder(tmp_path: Path) -> None:
    mirror = KeyMirror(tmp_path / "m")
    try:
        with pytest.raises(StoreInUse, match="RUNSTATE_KEY_CACHE_DIR"):
            KeyMirror(tmp_path / "m")
    finally:
        mirror.close()
    KeyMirror(tmp_path / "m").close()  # free again once closed


def test_a_damaged_folder_is_made_anew(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mirror = KeyMirror(tmp_path / "m")
    mirror.apply([_record(0, _key("a", "01"))])
    mirror.close()
    (tmp_path / "m" / "CURRENT").write_bytes(b"MANIFEST-999999\n")  # names no file
    again = KeyMirror(tmp_path / "m")
    try:
        assert again.offsets() == {} and again.get("a", "01") is None  # read again from Kafka
        assert "is damaged" in caplog.text
    finally:
        again.close()
