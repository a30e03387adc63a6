"""Personal-data masking for the archive: decoded event in, masked event out.

The archiver keeps values as their original bytes, so masking is decode, mask, re-encode.
The masking itself is a pure function over a field mapping; decoding and encoding are passed
in, so this module needs no codec and the same masker serves tests, the archiver and any
re-masking job.

``mask`` replaces a value with ``mask:<key id>:<32 hex digits>``: the HMAC-SHA256 of the value
under a secret key (:class:`MaskKeys`, from ``RUNSTATE_MASK_KEYS`` or
``RUNSTATE_MASK_KEYS_FILE``). Equal inputs give equal outputs under one key, so masked values
can still be counted and joined (the same owner across runs), but not read, and without the
key nobody can confirm a guess by masking candidates. The key id in the text lets keys
rotate: new masks use the first (newest) key, older masks still say which key made them.
There is no keyless fallback: without a key, masking refuses to run (:class:`MaskKeyError`).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from pydantic import SecretBytes

from runstate.errors import MaskKeyError
from runstate.retention.policy import PersonalDataAction, RetentionPolicy, TopicPolicy
from runstate.retention.segment import ArchivedRecord, RecordMask

if TYPE_CHECKING:
    from runstate.settings import Settings

__all__ = [
    "MASK_PREFIX",
    "EventMasker",
    "MaskKey",
    "MaskKeys",
    "ValueDecoder",
    "ValueEncoder",
    "event_masker",
    "mask_key_id",
    "mask_keys_from_settings",
    "mask_text",
    "masker_for_topic",
    "parse_mask_keys",
    "record_masker",
]

MASK_PREFIX: Final = "mask:"
_DIGITS: Final = 32
_MIN_SECRET_BYTES: Final = 16
_KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MASK: Final = re.compile(r"mask:([A-Za-z0-9_-]{1,32}):[0-9a-f]{32}")
HOW_TO_SET: Final = (
    "set RUNSTATE_MASK_KEYS=k1:<base64 secret> (e.g. k1:$(openssl rand -base64 32)), newest"
    " key first, or RUNSTATE_MASK_KEYS_FILE to a file holding that text"
)

_Text = TypeVar("_Text", str, bytes)

#: ``(event_type, fields) -> masked copy of fields``; the input is never modified.
EventMasker = Callable[[str, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class MaskKey:
    """One mask key: its id (written into every mask it makes) and its secret."""

    key_id: str
    secret: SecretBytes


@dataclass(frozen=True)
class MaskKeys:
    """The mask keys, newest first: the first masks, the others only identify old masks.

    Raises:
        MaskKeyError: no keys, or two keys with one id.
    """

    keys: tuple[MaskKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise MaskKeyError(f"no mask key: {HOW_TO_SET}")
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise MaskKeyError(f"mask key ids must differ, got {', '.join(ids)}")

    @property
    def current(self) -> MaskKey:
        """The key new masks are made with."""
        return self.keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys)

    def get(self, key_id: str) -> MaskKey | None:
        """The key with ``key_id``, or None when it is not (or no longer) configured."""
        return next((k for k in self.keys if k.key_id == key_id), None)


def parse_mask_keys(text: str, *, source: str = "RUNSTATE_MASK_KEYS") -> MaskKeys:
    """``id1:<base64 secret>[,id2:<base64 secret>...]``, newest first.

    Error messages name the key id and the source, never a secret.

    Raises:
        MaskKeyError: the text is empty or malformed, a secret is not base64 or is shorter
            than 16 bytes.
    """
    keys: list[MaskKey] = []
    for n, item in enumerate(p.strip() for p in text.replace("\n", ",").split(",")):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        key_id = key_id.strip()
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise MaskKeyError(
                f"{source}: entry {n + 1} is not <id>:<base64 secret> with an id of letters,"
                f" digits, '-' or '_'; {HOW_TO_SET}"
            )
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MaskKeyError(f"{source}: key {key_id!r}: the secret is not base64") from None
        if len(secret) < _MIN_SECRET_BYTES:
            raise MaskKeyError(
                f"{source}: key {key_id!r}: the secret has {len(secret)} bytes, needs at least"
                f" {_MIN_SECRET_BYTES} (32 random bytes are best)"
            )
        keys.append(MaskKey(key_id, SecretBytes(secret)))
    if not keys:
        raise MaskKeyError(f"{source} is empty: {HOW_TO_SET}")
    return MaskKeys(tuple(keys))


def mask_keys_from_settings(settings: Settings) -> MaskKeys | None:
    """The keys ``RUNSTATE_MASK_KEYS`` or ``RUNSTATE_MASK_KEYS_FILE`` hold; None if neither.

    Raises:
        MaskKeyError: both are set, the file cannot be read, or the keys are malformed.
    """
    if settings.mask_keys is not None and settings.mask_keys_file is not None:
        raise MaskKeyError("set RUNSTATE_MASK_KEYS or RUNSTATE_MASK_KEYS_FILE, not both")
    if settings.mask_keys is not None:
        return parse_mask_keys(settings.mask_keys.get_secret_value())
    path: Path | None = settings.mask_keys_file
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MaskKeyError(f"RUNSTATE_MASK_KEYS_FILE: cannot read {path}: {exc.strerror}") from None
    return parse_mask_keys(text, source=str(path))


def mask_text(value: _Text, keys: MaskKeys) -> _Text:
    """``mask:<key id>:<32 hex digits of HMAC-SHA256>`` of a value with the newest key.

    Returns the same type as ``value`` (text or bytes).
    """
    raw = value.encode() if isinstance(value, str) else value
    key = keys.current
    digest = hmac.new(key.secret.get_secret_value(), raw, hashlib.sha256).hexdigest()
    masked = f"{MASK_PREFIX}{key.key_id}:{digest[:_DIGITS]}"
    return masked if isinstance(value, str) else masked.encode()


def mask_key_id(text: str | bytes) -> str | None:
    """The key id of a mask made by :func:`mask_text`, or None if ``text`` is not one."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found = _MASK.fullmatch(text)
    return found.group(1) if found else None


class ValueDecoder(Protocol):
    """Decodes a single-object-encoded value into ``(event type, fields)``."""

    def __call__(self, value: bytes, /) -> tuple[str, dict[str, Any]]: ...


class ValueEncoder(Protocol):
    """Encodes masked fields again, with the writer schema of ``original``.

    Re-encoding with the original's schema version (its fingerprint is in ``original``'s
    header) keeps the archive's record of which versions were written truthful.
    """

    def __call__(self, event_type: str, fields: dict[str, Any], *, original: bytes) -> bytes: ...


def _compile(topic: TopicPolicy) -> dict[str, dict[str, tuple[PersonalDataAction, Any]]]:
    rules: dict[str, dict[str, tuple[PersonalDataAction, Any]]] = {}
    for event_type, fields in topic.personal_data.items():
        active: dict[str, tuple[PersonalDataAction, Any]] = {
            name: (
                action,
                topic.drop_value(event_type, name) if action is PersonalDataAction.DROP else None,
            )
            for name, action in fields.items()
            if action is not PersonalDataAction.KEEP
        }
        if active:
            rules[event_type] = active
    return rules


def event_masker(topic: TopicPolicy, *, keys: MaskKeys | None) -> EventMasker | None:
    """The masking function for a topic's personal-data rules.

    Args:
        topic: The topic's policy.
        keys: The mask keys; only needed when a rule says ``mask`` (``drop`` needs none).

    Returns:
        A pure function applying ``mask`` and ``drop`` to the fields of events of the
        listed types (short or ``runstate.events.``-qualified names), or None when the
        topic masks nothing, so the archiver can skip decoding entirely.

    Raises:
        MaskKeyError: a rule says ``mask`` and ``keys`` is None.
    """
    rules = _compile(topic)
    if not rules:
        return None
    masks = sorted(
        f"{event_type}.{name}"
        for event_type, fields in rules.items()
        for name, (action, _dropped) in fields.items()
        if action is PersonalDataAction.MASK
    )
    if masks and keys is None:
        raise MaskKeyError(
            f"the policy masks {', '.join(masks[:3])}{', ...' if len(masks) > 3 else ''} but"
            f" no mask key is configured: {HOW_TO_SET}"
        )

    def apply(event_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        masked = dict(fields)
        for name, (action, dropped) in rules.get(event_type.rsplit(".", 1)[-1], {}).items():
            if name not in masked:
                continue  # an older schema version without the field: nothing to hide
            if action is PersonalDataAction.DROP:
                masked[name] = copy.copy(dropped)  # a default such as {} is not shared
            elif isinstance(masked[name], str | bytes):
                assert keys is not None  # checked above
                masked[name] = mask_text(masked[name], keys)
        return masked

    return apply


def masker_for_topic(
    policy: RetentionPolicy, topic: str, *, keys: MaskKeys | None
) -> EventMasker | None:
    """:func:`event_masker` for a topic named in the policy.

    Raises:
        PolicyError: the topic has no policy.
        MaskKeyError: the topic masks a field and ``keys`` is None.
    """
    return event_masker(policy.topic(topic), keys=keys)


def record_masker(masker: EventMasker, *, decode: ValueDecoder, encode: ValueEncoder) -> RecordMask:
    """Lift an event masker to archived records (the ``mask`` of ``build_segment``).

    Records whose value the masker leaves unchanged keep their original bytes; null values
    pass through. Decoding errors propagate: archiving stops rather than store a value it
    could not check for personal data.
    """

    def apply(record: ArchivedRecord) -> ArchivedRecord:
        if record.value is None:
            return record
        event_type, fields = decode(record.value)
        masked = masker(event_type, fields)
        if masked == fields:
            return record
        return replace(record, value=encode(event_type, masked, original=record.value))

    return apply
