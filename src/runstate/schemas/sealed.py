"""Sealed personal fields: the text form of an encrypted value, and which fields carry one.

A tagged field (``"personal": true``) that the SDK encrypts keeps its Avro type: the
ciphertext is written as text in the same string field (or map value), so no contract
changes and readers that only route, count or order events need nothing new. The text is
self-describing::

    rsenc1.<subject, base64url>.<key version>.<field>.<nonce + ciphertext + tag, base64url>

* ``rsenc1`` names the format (AES-256-GCM, 12-byte nonce, 16-byte tag);
* the data subject and the version of its data key say which key opens it (the key store
  keeps one wrapped data key per subject and version, :mod:`runstate.crypto`);
* the field names where the value was written (``input``, ``output_ref``, ``comment``, ...).

The authenticated data binds the format, subject, key version, field and the **run id**
(not in the text: it is the record's own run), so a value copied to another run, another
field or given another subject fails to open.

This module is the language-neutral contract part (parsing, the field table); it needs no
cryptography library. Which fields are sealed: every field of an event contract tagged as
personal, except the principal fields (:data:`PRINCIPAL_FIELDS`): the names of the
deployment's users (owner, approver, decider, canceller), which the processor needs in clear
to decide who may approve or read a run. Those must hold a principal id, never a customer's
name or address (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final, Protocol

from runstate.schemas.catalog import default_catalog
from runstate.schemas.personal import personal_fields

if TYPE_CHECKING:
    from runstate.schemas.events import AgentEvent

__all__ = [
    "ERASED",
    "MASKED",
    "PRINCIPAL_FIELDS",
    "SEALED_PREFIX",
    "EventSealer",
    "SealedValue",
    "is_sealed",
    "parse_sealed",
    "sealed_fields",
    "subject_of",
]

SEALED_PREFIX: Final = "rsenc1."
#: What a reader without the right to see a sealed value gets instead.
MASKED: Final = "masked"
#: What everybody gets for a value whose data subject was erased.
ERASED: Final = "erased"
#: Tagged fields that name the deployment's principals; kept in clear (see module doc).
PRINCIPAL_FIELDS: Final = frozenset({"owner", "approver", "by", "decided_by", "cancelled_by"})

_NONCE: Final = 12
_TAG: Final = 16
_FIELD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_VERSION: Final = re.compile(r"[0-9a-f]{1,32}")


@dataclass(frozen=True)
class SealedValue:
    """A parsed sealed value (nothing decrypted)."""

    subject: str
    key_version: str
    field: str
    nonce: bytes
    ciphertext: bytes

    def aad(self, run_id: str) -> bytes:
        """The authenticated data: format, subject, key version, run and field."""
        return aad_of(self.subject, self.key_version, run_id, self.field)

    def text(self) -> str:
        """The value as written into the field."""
        return format_sealed(
            self.subject, self.key_version, self.field, self.nonce + self.ciphertext
        )


def aad_of(subject: str, key_version: str, run_id: str, field: str) -> bytes:
    return "\x00".join((SEALED_PREFIX, subject, key_version, run_id, field)).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def format_sealed(subject: str, key_version: str, field: str, sealed: bytes) -> str:
    """The text of a sealed value (``sealed`` = nonce + ciphertext + tag)."""
    return f"{SEALED_PREFIX}{_b64(subject.encode())}.{key_version}.{field}.{_b64(sealed)}"


def is_sealed(value: object) -> bool:
    """Whether ``value`` is text in the sealed format (well formed or not)."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def parse_sealed(value: str) -> SealedValue:
    """The parts of a sealed value.

    Raises:
        ValueError: ``value`` is not a well-formed sealed value; the message says which
            part is wrong (never the value).
    """
    if not value.startswith(SEALED_PREFIX):
        raise ValueError("not a sealed value (no rsenc1. prefix)")
    parts = value[len(SEALED_PREFIX) :].split(".")
    if len(parts) != 4:
        raise ValueError(f"a sealed value has 4 parts after rsenc1., this one {len(parts)}")
    subject_b64, version, field, body = parts
    try:
        subject = _unb64(subject_b64).decode()
        sealed = _unb64(body)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("a sealed value's subject or body is not base64url") from None
    if not subject:
        raise ValueError("a sealed value names no data subject")
    if not _VERSION.fullmatch(version):
        raise ValueError("a sealed value's key version is not 1-32 hex digits")
    if not _FIELD.fullmatch(field):
        raise ValueError("a sealed value's field name is malformed")
    if len(sealed) < _NONCE + _TAG:
        raise ValueError(f"a sealed value's body has {len(sealed)} bytes, fewer than 28")
    return SealedValue(subject, version, field, sealed[:_NONCE], sealed[_NONCE:])


def subject_of(value: object) -> str | None:
    """The data subject a sealed value names, or None for clear or malformed values."""
    if not is_sealed(value):
        return None
    try:
        return parse_sealed(str(value)).subject
    except ValueError:
        return None


@cache
def sealed_fields(event_type: str) -> frozenset[str]:
    """The top-level fields of an event type's latest contract that the SDK seals."""
    catalog = default_catalog()
    try:
        definition = catalog.latest(event_type).definition
    except Exception:  # an unknown type has nothing to seal
        return frozenset()
    return (
        frozenset(path for path in personal_fields(definition) if "." not in path)
        - PRINCIPAL_FIELDS
    )


def malformed_sealed(event_type: str, fields: Mapping[str, Any]) -> str | None:
    """Why a sealed field of a decoded event is malformed, or None when all are fine.

    Clear values are not malformed (a deployment without a master key writes them); text
    that starts like a sealed value but does not parse is (a broken or forged writer).
    """
    for name in sorted(sealed_fields(event_type)):
        value = fields.get(name)
        values = value.values() if isinstance(value, Mapping) else [value]
        for v in values:
            if is_sealed(v):
                try:
                    parse_sealed(str(v))
                except ValueError as exc:
                    return f"{event_type}.{name}: {exc}"
    return None


class EventSealer(Protocol):
    """Encrypts an event's sealed fields for a data subject (:mod:`runstate.crypto`)."""

    def seal(self, event: AgentEvent, subject: str) -> AgentEvent:
        """A copy of ``event`` with each sealed field encrypted (sealed ones left alone)."""
        ...

    def open_value(self, text: str, *, run_id: str) -> str:
        """The clear text of a value this sealer's keys sealed for ``run_id``."""
        ...
