"""Damaged local stores are set aside at start-up, so the worker rebuilds them.

The RocksDB folders under the data dir are a cache of the changelog: losing one costs a
restore, never data. A damaged one (a truncated SST file, a missing MANIFEST or CURRENT, a
crash mid-write on a full disk) makes RocksDB refuse to open, and faust then crashes on
every start: a restart loop that never serves. Before faust opens anything, each store is
opened once; a store that fails for any reason but a held lock is renamed to
``<name>.damaged-<time>`` (kept for a post-mortem, never read again) and faust, finding no
store, restores that partition from the changelog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import rocksdict

__all__ = ["DamagedStore", "open_store_once", "set_aside_damaged_stores"]

log = logging.getLogger(__name__)

#: How the stores are found: faust keeps ``<datadir>/<app>-data/v<N>/tables/<table>-<p>.db``.
STORE_GLOB = "**/tables/*.db"


@dataclass(frozen=True)
class DamagedStore:
    path: Path
    moved_to: Path
    error: str


def open_store_once(path: Path) -> None:
    """Open and close the store at ``path``, as faust would (raw mode, must exist).

    Raises:
        Exception: whatever RocksDB says is wrong with it.
    """
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(False)
    rocksdict.Rdict(str(path), options=options).close()


def _held_by_a_process(error: str) -> bool:
    # Another process (or a previous incarnation still exiting) holds the LOCK: the store
    # is fine, faust retries the open. A stale LOCK *file* is no problem for RocksDB.
    return "lock" in error.lower() and "LOCK" in error


def set_aside_damaged_stores(
    data_dir: Path,
    *,
    open_store: Callable[[Path], None] = open_store_once,
    now: Callable[[], float] = time.time,
) -> list[DamagedStore]:
    """Rename every store under ``data_dir`` that RocksDB cannot open.

    Returns:
        The stores set aside (empty when all are healthy).
    """
    damaged: list[DamagedStore] = []
    for path in sorted(data_dir.glob(STORE_GLOB)):
        if not path.is_dir():
            continue
        try:
            open_store(path)
        except Exception as exc:  # RocksDB reports every problem as a bare Exception
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if _held_by_a_process(error):
                continue
            moved_to = path.with_name(f"{path.name}.damaged-{int(now())}")
            path.rename(moved_to)
            log.error(
                "local store %s cannot be opened (%s); moved to %s, the partition is "
                "rebuilt from the changelog",
                path,
                error,
                moved_to,
            )
            damaged.append(DamagedStore(path, moved_to, error))
    return damaged
