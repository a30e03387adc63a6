"""Archive on a local (or mounted) filesystem.

Each blob is published the POSIX way: write a temp file in the same directory, fsync it,
rename it over the final name, fsync the directory. Rename within a directory is atomic, so
a reader sees the whole old file or the whole new one; the directory fsync makes the rename
itself survive a power cut, not just the file's bytes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from runstate.errors import ArchiveError
from runstate.retention.backends import BlobArchive

__all__ = ["LocalArchive"]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalArchive(BlobArchive):
    """Segments and manifests under a directory: ``<root>/<topic>/<partition:05d>/``.

    Args:
        root: Archive root; created on first write.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalArchive({str(self.root)!r})"

    @property
    def location(self) -> str:
        """``local:<root>``, as written in a retention policy."""
        return f"local:{self.root}"

    def _path(self, name: str) -> Path:
        # Names are built from validated topic names and integers; this guards hand-made ones.
        if name.startswith("/") or ".." in name.split("/"):
            raise ArchiveError(f"{name!r} is not a name inside the archive")
        return self.root / name

    def _ensure_dir(self, directory: Path) -> None:
        missing = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            # A new directory entry is only durable once its parent is fsynced.
            _fsync_dir(path.parent)

    def _write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            self._ensure_dir(path.parent)
            with open(temp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise ArchiveError(f"{self.location}: cannot write {name}: {exc}") from exc

    def _read(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError as exc:
            raise ArchiveError(
                f"{self.location}/{name} is missing; run `archive verify` on its partition"
            ) from exc
        except OSError as exc:
            raise ArchiveError(f"{self.location}: cannot read {name}: {exc}") from exc

    def _delete(self, name: str) -> None:
        path = self._path(name)
        try:
            if path.exists():
                path.unlink(missing_ok=True)
                _fsync_dir(path.parent)
        except OSError as exc:
            raise ArchiveError(f"{self.location}: cannot delete {name}: {exc}") from exc

    def _list(self, directory: str) -> list[str]:
        path = self._path(directory)
        try:
            return [p.name for p in path.iterdir() if p.is_file()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ArchiveError(f"{self.location}: cannot list {directory}: {exc}") from exc

    def _list_dirs(self, directory: str) -> list[str]:
        path = self._path(directory)
        try:
            return [p.name for p in path.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ArchiveError(f"{self.location}: cannot list {directory}: {exc}") from exc
