"""Key stores: where the wrapped data keys live, one record per subject and key version.

Only wrapped keys are stored (encrypted under the master key, :mod:`._keys`): a copy of a
store without the master key opens nothing. Erasing a subject destroys every stored
version of its key; a value sealed under a destroyed key can never be opened again, wherever
its copies are (topics, changelog, archive, backups of those).

Records are keyed by subject *and* version, so two processes that create a first key for
one subject at the same moment both keep theirs (each value names the version that sealed
it); a store keyed by subject alone would let the later write hide the earlier key and lose
the values sealed under it.

Two stores share the :class:`KeyStore` protocol: :class:`FileKeyStore` (a folder, for local
use and tests) and :class:`~runstate.crypto._kafka_store.KafkaKeyStore` (a compacted topic;
erasure writes tombstones).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from runstate.errors import ConfigError

__all__ = ["FileKeyStore", "KeyStore", "WrappedKey"]


@dataclass(frozen=True)
class WrappedKey:
    """One version of a subject's data key, wrapped by the master key ``master_key_id``."""

    subject: str
    version: str
    wrapped: bytes
    master_key_id: str
    created_ms: int

    @property
    def record_key(self) -> bytes:
        return record_key(self.subject, self.version)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "subject": self.subject,
                "version": self.version,
                "wrapped": base64.b64encode(self.wrapped).decode(),
                "master_key_id": self.master_key_id,
                "created_ms": self.created_ms,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any]) -> WrappedKey:
        """Raises: ValueError: not a wrapped-key record."""
        try:
            d = data if isinstance(data, dict) else json.loads(data)
            return cls(
                subject=str(d["subject"]),
                version=str(d["version"]),
                wrapped=base64.b64decode(d["wrapped"]),
                master_key_id=str(d["master_key_id"]),
                created_ms=int(d["created_ms"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a wrapped data key record: {exc}") from None


def record_key(subject: str, version: str) -> bytes:
    """``<subject>/<version>``: the version is hex, so the last ``/`` splits them."""
    return f"{subject}/{version}".encode()


class KeyStore(Protocol):
    """Stores wrapped data keys by subject and version."""

    def get(self, subject: str, version: str) -> WrappedKey | None:
        """The key that sealed a value; None when there is none (erased, or never made)."""
        ...

    def current(self, subject: str) -> WrappedKey | None:
        """The newest key of a subject, to seal new values with; None if it has none."""
        ...

    def put(self, key: WrappedKey) -> None:
        """Store a new key version durably before any value is sealed with it."""
        ...

    def erase(self, subject: str) -> tuple[str, ...]:
        """Destroy every key of ``subject``; the versions destroyed (none: unknown)."""
        ...

    def close(self) -> None:
        """Release what the store holds open (connections, a mirror); idempotent."""
        ...


class FileKeyStore:
    """A folder of one JSON file per subject (named by a digest of the subject).

    Writes go to a temporary file that replaces the old one (fsynced), under an exclusive
    lock on ``.lock``, so concurrent processes on one machine neither lose nor tear a key.
    Erasure removes the subject's file; backups of the folder keep whatever they copied,
    which is why they must be as short-lived as docs/security.md says.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"key store folder {folder}: {exc.strerror}") from None

    def _path(self, subject: str) -> Path:
        return self.folder / f"{hashlib.sha256(subject.encode()).hexdigest()}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, subject: str) -> list[WrappedKey]:
        try:
            raw = self._path(subject).read_bytes()
        except FileNotFoundError:
            return []
        try:
            return [WrappedKey.from_json(d) for d in json.loads(raw)["keys"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"key store file {self._path(subject)} is damaged ({exc}); restore it from"
                " the key store's backup"
            ) from None

    def get(self, subject: str, version: str) -> WrappedKey | None:
        return next((k for k in self._read(subject) if k.version == version), None)

    def current(self, subject: str) -> WrappedKey | None:
        keys = self._read(subject)
        return max(keys, key=lambda k: (k.created_ms, k.version)) if keys else None

    def put(self, key: WrappedKey) -> None:
        with self._locked():
            keys = [k for k in self._read(key.subject) if k.version != key.version] + [key]
            self._save(self._path(key.subject), keys)

    def rewrite(self, change: Callable[[WrappedKey], WrappedKey | None]) -> None:
        """Every subject's file rewritten under the lock with ``change(key)`` in place of
        each key it returns one for (None: the key stays); a file nothing changed in is left
        as it is (a master-key rotation)."""
        with self._locked():
            for path in sorted(self.folder.glob("*.json")):
                keys = [WrappedKey.from_json(d) for d in json.loads(path.read_bytes())["keys"]]
                new = [change(k) for k in keys]
                if any(n is not None for n in new):
                    self._save(
                        path, [k if n is None else n for k, n in zip(keys, new, strict=True)]
                    )

    def _save(self, path: Path, keys: list[WrappedKey]) -> None:
        """``keys`` as ``path``: a temporary file, fsynced, then renamed over it."""
        body = json.dumps({"keys": [json.loads(k.to_json()) for k in keys]}).encode()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def erase(self, subject: str) -> tuple[str, ...]:
        with self._locked():
            versions = tuple(sorted(k.version for k in self._read(subject)))
            with contextlib.suppress(FileNotFoundError):
                self._path(subject).unlink()
            return versions

    def close(self) -> None:
        pass  # nothing held open between calls
