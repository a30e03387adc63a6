"""The master key and the key-management interface that wraps data keys with it.

A data key (32 random bytes, AES-256) is never stored in clear: it is wrapped (AES key
wrap, RFC 3394) by the master key, and only the wrapped form goes to the key store. The
master key comes from settings (``RUNSTATE_MASTER_KEY``, base64 of 32 bytes, or
``RUNSTATE_MASTER_KEY_FILE``) through :class:`LocalKeyManager`; a deployment with a KMS puts
its own :class:`KeyManager` in its place (wrap/unwrap calls to the KMS). The key's id (a
keyed digest of it, never the key) is stored with each wrapped key, so a wrong master key is
told apart from a damaged wrapped key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from runstate.errors import MasterKeyError

if TYPE_CHECKING:
    from runstate.settings import Settings

__all__ = [
    "KeyManager",
    "LocalKeyManager",
    "accepted_key_managers",
    "key_manager_from_settings",
    "parse_master_key",
]

KEY_BYTES: Final = 32
HOW_TO_SET: Final = (
    "set RUNSTATE_MASTER_KEY to base64 of 32 random bytes (e.g. $(openssl rand -base64 32))"
    " or RUNSTATE_MASTER_KEY_FILE to a file holding it; keep it out of the repository"
)


class KeyManager(Protocol):
    """Wraps and unwraps data keys; the only holder of the master key."""

    @property
    def key_id(self) -> str:
        """Names the master key (stored with each wrapped key); not secret."""
        ...

    def wrap(self, data_key: bytes) -> bytes:
        """The data key, encrypted under the master key."""
        ...

    def unwrap(self, wrapped: bytes) -> bytes:
        """The data key back.

        Raises:
            MasterKeyError: the wrapped key was not made with this master key or is damaged.
        """
        ...

    def digest_key(self) -> bytes:
        """A key for keyed digests of clear values (derived, not the master key itself)."""
        ...


class LocalKeyManager:
    """A master key held in process memory (from settings); AES key wrap (RFC 3394)."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise MasterKeyError(
                f"the master key has {len(master_key)} bytes, needs {KEY_BYTES}: {HOW_TO_SET}"
            )
        self._key = master_key
        self._id = hmac.new(master_key, b"runstate master key id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:  # never the key
        return f"LocalKeyManager(key_id={self._id!r})"

    @property
    def key_id(self) -> str:
        return self._id

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self._key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._key, wrapped)
        except (InvalidUnwrap, ValueError):
            raise MasterKeyError(
                "a stored data key does not unwrap with this master key: it was wrapped by"
                " another master key, or the key store is damaged"
            ) from None

    def digest_key(self) -> bytes:
        return hmac.new(self._key, b"runstate digest key", hashlib.sha256).digest()


def parse_master_key(text: str, *, source: str = "RUNSTATE_MASTER_KEY") -> LocalKeyManager:
    """A key manager for base64 text of 32 bytes; errors name the source, never the key.

    Raises:
        MasterKeyError: empty, not base64, or not 32 bytes.
    """
    text = text.strip()
    if not text:
        raise MasterKeyError(f"{source} is empty: {HOW_TO_SET}")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{source} is not base64: {HOW_TO_SET}") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{source} holds {len(key)} bytes, needs {KEY_BYTES}: {HOW_TO_SET}")
    return LocalKeyManager(key)


def key_manager_from_settings(settings: Settings, *, required: bool = False) -> KeyManager | None:
    """The master key the settings name; None when none is set (and not ``required``).

    Raises:
        MasterKeyError: both variables set, the file unreadable, the key malformed, or none
            set while ``required``.
    """
    if settings.master_key is not None and settings.master_key_file is not None:
        raise MasterKeyError("set RUNSTATE_MASTER_KEY or RUNSTATE_MASTER_KEY_FILE, not both")
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value())
    path: Path | None = settings.master_key_file
    if path is None:
        if required:
            raise MasterKeyError(f"no master key: {HOW_TO_SET}")
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MasterKeyError(
            f"RUNSTATE_MASTER_KEY_FILE: cannot read {path}: {exc.strerror}"
        ) from None
    return parse_master_key(text, source=str(path))


def accepted_key_managers(settings: Settings) -> tuple[KeyManager, ...]:
    """The master keys ``RUNSTATE_MASTER_KEY_ACCEPTED`` names: they unwrap data keys wrapped
    by them (a rotation in progress), never wrap new ones.

    Raises:
        MasterKeyError: one of them is not base64 of 32 bytes.
    """
    if settings.master_key_accepted is None:
        return ()
    texts = [t for t in settings.master_key_accepted.get_secret_value().split(",") if t.strip()]
    return tuple(
        parse_master_key(t, source=f"RUNSTATE_MASTER_KEY_ACCEPTED (key {i + 1})")
        for i, t in enumerate(texts)
    )
