"""Envelope encryption of personal fields: AES-256-GCM under a data key per data subject.

:class:`PersonalDataCipher` seals a field's text for a subject (making the subject's data
key on first use: 32 random bytes, wrapped by the master key, stored in the key store before
any value uses it) and opens sealed text again. It is the :class:`EventSealer` the producer
uses, and the opener the query API and replay use (:func:`reveal`).

Opening fails closed: a value whose key was destroyed raises :class:`DataKeyMissing` (shown
as ``erased``), one that fails authentication (changed, copied to another run or field,
wrong subject or key) raises :class:`TamperedValue`. Nothing here logs a value or a key.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runstate.crypto._keys import KeyManager
from runstate.crypto._store import KeyStore, WrappedKey
from runstate.errors import DataKeyMissing, MasterKeyError, TamperedValue
from runstate.schemas.events import AgentEvent
from runstate.schemas.sealed import (
    ERASED,
    MASKED,
    aad_of,
    format_sealed,
    is_sealed,
    parse_sealed,
    sealed_fields,
)

__all__ = ["UNREADABLE", "Opener", "PersonalDataCipher", "reveal", "reveal_event", "shown_value"]

#: Shown for a sealed value that fails authentication (tampered, or from another run).
UNREADABLE: Final = "unreadable"
_CACHED_KEYS: Final = 1024


class PersonalDataCipher:
    """Seals and opens personal fields; thread-safe.

    Keeps at most 1,024 unwrapped data keys of subjects it sealed for (the newest used), so
    a busy SDK process does not read the key store per event; opening always asks the store,
    so an erasure stops a reader within the store's refresh.
    """

    def __init__(
        self, keys: KeyManager, store: KeyStore, *, accepted: Sequence[KeyManager] = ()
    ) -> None:
        self.keys = keys
        self.store = store
        #: Master keys that unwrap data keys wrapped by them (a rotation in progress).
        self.accepted = tuple(accepted)
        self._unwrappers = {k.key_id: k for k in (*self.accepted, keys)}
        self._sealing: OrderedDict[str, tuple[str, AESGCM]] = OrderedDict()
        self._lock = threading.Lock()

    # -- sealing -------------------------------------------------------------------------
    def _sealing_key(self, subject: str) -> tuple[str, AESGCM]:
        with self._lock:
            found = self._sealing.get(subject)
            if found is not None:
                self._sealing.move_to_end(subject)
        # A cached key may have been erased since: sealing with it would write a value
        # nobody can ever open, so the store confirms it (a dict lookup for the Kafka store).
        if found is not None and self.store.get(subject, found[0]) is not None:
            return found
        stored = self.store.current(subject)
        if stored is None:
            data_key = AESGCM.generate_key(bit_length=256)
            stored = WrappedKey(
                subject=subject,
                version=secrets.token_hex(4),
                wrapped=self.keys.wrap(data_key),
                master_key_id=self.keys.key_id,
                created_ms=int(time.time() * 1000),
            )
            self.store.put(stored)
        else:
            data_key = self._unwrap(stored)
        entry = (stored.version, AESGCM(data_key))
        with self._lock:
            self._sealing[subject] = entry
            while len(self._sealing) > _CACHED_KEYS:
                self._sealing.popitem(last=False)
        return entry

    def seal_value(self, value: str, *, subject: str, run_id: str, field: str) -> str:
        """``value`` sealed for ``subject``, bound to ``run_id`` and ``field``; sealed
        values are returned unchanged (sealing twice would hide the first subject)."""
        if is_sealed(value):
            return value
        version, aead = self._sealing_key(subject)
        nonce = os.urandom(12)
        body = aead.encrypt(nonce, value.encode(), aad_of(subject, version, run_id, field))
        return format_sealed(subject, version, field, nonce + body)

    def seal(self, event: AgentEvent, subject: str) -> AgentEvent:
        """A copy of ``event`` with every sealed field of its type encrypted for ``subject``
        (text fields, and the values of text maps such as ModelCalled's tags)."""
        changes: dict[str, Any] = {}
        for name in sealed_fields(event.event_type):
            value = getattr(event, name, None)
            if isinstance(value, str):
                changes[name] = self.seal_value(
                    value, subject=subject, run_id=event.run_id, field=name
                )
            elif isinstance(value, Mapping):
                changes[name] = {
                    k: self.seal_value(v, subject=subject, run_id=event.run_id, field=name)
                    if isinstance(v, str)
                    else v
                    for k, v in value.items()
                }
        return event.model_copy(update=changes) if changes else event

    # -- opening -------------------------------------------------------------------------
    def _unwrap(self, stored: WrappedKey) -> bytes:
        unwrapper = self._unwrappers.get(stored.master_key_id)
        if unwrapper is None:
            raise MasterKeyError(
                f"the data key of subject {stored.subject!r} (version {stored.version}) was"
                f" wrapped by master key {stored.master_key_id}, this process has"
                f" {', '.join(self._unwrappers)}; set the master key the writers use (during"
                " a rotation, the other one in RUNSTATE_MASTER_KEY_ACCEPTED)"
            )
        return unwrapper.unwrap(stored.wrapped)

    def open_value(self, text: str, *, run_id: str) -> str:
        """The clear text of a sealed value written for ``run_id``.

        Raises:
            TamperedValue: malformed, or fails authentication (changed; another run, field
                or subject; a key that does not match).
            DataKeyMissing: the subject's key version is not in the store (erased).
            MasterKeyError: the key was wrapped by another master key.
        """
        try:
            sealed = parse_sealed(text)
        except ValueError as exc:
            raise TamperedValue(f"a sealed value of run {run_id!r} is malformed: {exc}") from None
        stored = self.store.get(sealed.subject, sealed.key_version)
        if stored is None:
            raise DataKeyMissing(
                f"no data key for subject {sealed.subject!r} version {sealed.key_version}:"
                " the subject was erased (or this is not the writers' key store)"
            )
        aead = AESGCM(self._unwrap(stored))
        try:
            clear = aead.decrypt(sealed.nonce, sealed.ciphertext, sealed.aad(run_id))
        except InvalidTag:
            raise TamperedValue(
                f"a sealed {sealed.field} of run {run_id!r} fails authentication: changed,"
                " copied from another run or field, or sealed with another key"
            ) from None
        return clear.decode()


#: ``(sealed text, run id) -> what to show``.
Opener = Callable[[str, str], str]


def shown_value(cipher: PersonalDataCipher | None, *, allowed: bool) -> Opener:
    """The opener :func:`reveal` uses: clear text when ``allowed`` and a cipher is given,
    ``masked`` otherwise; ``erased`` when the key is gone, ``unreadable`` when tampered."""

    def show(text: str, run_id: str) -> str:
        if cipher is None or not allowed:
            try:
                sealed = parse_sealed(text)
            except ValueError:
                return UNREADABLE
            if cipher is not None and cipher.store.get(sealed.subject, sealed.key_version) is None:
                return ERASED
            return MASKED
        try:
            return cipher.open_value(text, run_id=run_id)
        except DataKeyMissing:
            return ERASED
        except TamperedValue:
            return UNREADABLE

    return show


def reveal_event(event: AgentEvent, opener: Opener) -> AgentEvent:
    """A copy of ``event`` with its sealed fields shown by ``opener`` (opened, ``masked``,
    ``erased``); for describing events to people, never for sending or folding."""
    changes: dict[str, Any] = {}
    for name in sealed_fields(event.event_type):
        value = getattr(event, name, None)
        if isinstance(value, str) and is_sealed(value):
            changes[name] = opener(value, event.run_id)
        elif isinstance(value, Mapping):
            changes[name] = {
                k: opener(v, event.run_id) if is_sealed(v) else v for k, v in value.items()
            }
    return event.model_copy(update=changes) if changes else event


def reveal(value: Any, opener: Opener, *, run_id: str | None = None) -> Any:
    """A copy of a JSON-like value with every sealed string replaced by ``opener``'s answer.

    The run id of a value is the ``run_id`` of the nearest enclosing mapping that has one
    (a state, a summary, a history entry); a sealed string with no run around it is shown
    as ``masked``.
    """
    if isinstance(value, str):
        if not is_sealed(value):
            return value
        return opener(value, run_id) if run_id is not None else MASKED
    if isinstance(value, Mapping):
        own = value.get("run_id")
        here = own if isinstance(own, str) else run_id
        return {k: reveal(v, opener, run_id=here) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [reveal(v, opener, run_id=run_id) for v in value]
    return value
