"""Damaged RocksDB stores are set aside before faust opens them; healthy ones are kept."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import rocksdict

from runstate.processors.local_state import set_aside_damaged_stores


def _store(root: Path, name: str) -> Path:
    path = root / "app-data" / "v1" / "tables" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    db = rocksdict.Rdict(str(path), options=options)
    for i in range(5000):
        db[f"run-{i}".encode()] = os.urandom(64)
    db.flush()
    db.close()
    return path


def _truncate_sst(db: Path) -> None:
    sst = max(db.glob("*.sst"), key=lambda p: p.stat().st_size)
    os.truncate(sst, sst.stat().st_size // 2)


def _delete_manifest(db: Path) -> None:
    for manifest in db.glob("MANIFEST-*"):
        manifest.unlink()


def _delete_current(db: Path) -> None:
    (db / "CURRENT").unlink()


@pytest.mark.parametrize("damage", [_truncate_sst, _delete_manifest, _delete_current])
def test_a_damaged_store_is_moved_aside_and_healthy_ones_stay(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    healthy = _store(tmp_path, "runs-0.db")
    broken = _store(tmp_path, "runs-1.db")
    damage(broken)
    found = set_aside_damaged_stores(tmp_path, now=lambda: 1234.0)
    assert [d.path for d in found] == [broken]
    assert not broken.exists() and (broken.parent / "runs-1.db.damaged-1234").is_dir()
    assert healthy.is_dir()
    # what is left opens cleanly: nothing more to set aside
    assert set_aside_damaged_stores(tmp_path) == []


def test_a_store_locked_by_another_process_is_left_alone(tmp_path: Path) -> None:
    path = _store(tmp_path, "runs-0.db")
    holder = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    try:
        assert set_aside_damaged_stores(tmp_path) == []
        assert path.is_dir()
    finally:
        holder.close()


def test_a_stale_lock_file_is_no_damage(tmp_path: Path) -> None:
    path = _store(tmp_path, "runs-0.db")
    (path / "LOCK").write_text("junk left by a killed process")
    assert set_aside_damaged_stores(tmp_path) == []
