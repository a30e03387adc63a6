"""Personal-data masking for the archive: decoded event in, masked event out.

The archiver keeps values as their original bytes, so masking is decode, mask, re-encode.
The masking itself is a pure function over a field mapping; decoding and encoding are passed
in, so this module needs no codec and the same masker serves tests, the archiver and any
re-masking job.

``mask`` replaces a value with ``sha256:`` and the first 16 hex digits of its SHA-256: equal
inputs give equal outputs, so masked values can still be counted and joined (the same owner
across runs), but not read. The hash is unsalted, so a guessable value (a short user name)
can be confirmed by hashing candidates; ``drop`` is the choice for those.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final, Protocol, TypeVar

from runstate.retention.policy import PersonalDataAction, RetentionPolicy, TopicPolicy
from runstate.retention.segment import ArchivedRecord, RecordMask

__all__ = [
    "MASK_PREFIX",
    "EventMasker",
    "ValueDecoder",
    "ValueEncoder",
    "event_masker",
    "mask_text",
    "masker_for_topic",
    "record_masker",
]

MASK_PREFIX: Final = "sha256:"
_DIGITS: Final = 16

_Text = TypeVar("_Text", str, bytes)

#: ``(event_type, fields) -> masked copy of fields``; the input is never modified.
EventMasker = Callable[[str, Mapping[str, Any]], dict[str, Any]]


class ValueDecoder(Protocol):
    """Decodes a single-object-encoded value into ``(event type, fields)``."""

    def __call__(self, value: bytes, /) -> tuple[str, dict[str, Any]]: ...


class ValueEncoder(Protocol):
    """Encodes masked fields again, with the writer schema of ``original``.

    Re-encoding with the original's schema version (its fingerprint is in ``original``'s
    header) keeps the archive's record of which versions were written truthful.
    """

    def __call__(self, event_type: str, fields: dict[str, Any], *, original: bytes) -> bytes: ...


def mask_text(value: _Text) -> _Text:
    """``sha256:<16 hex digits>`` of a text or bytes value, in the same type."""
    raw = value.encode() if isinstance(value, str) else value
    masked = MASK_PREFIX + hashlib.sha256(raw).hexdigest()[:_DIGITS]
    return masked if isinstance(value, str) else masked.encode()


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


def event_masker(topic: TopicPolicy) -> EventMasker | None:
    """The masking function for a topic's personal-data rules.

    Returns:
        A pure function applying ``mask`` and ``drop`` to the fields of events of the
        listed types (short or ``runstate.events.``-qualified names), or None when the
        topic masks nothing, so the archiver can skip decoding entirely.
    """
    rules = _compile(topic)
    if not rules:
        return None

    def apply(event_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        masked = dict(fields)
        for name, (action, dropped) in rules.get(event_type.rsplit(".", 1)[-1], {}).items():
            if name not in masked:
                continue  # an older schema version without the field: nothing to hide
            if action is PersonalDataAction.DROP:
                masked[name] = copy.copy(dropped)  # a default such as {} is not shared
            elif isinstance(masked[name], str | bytes):
                masked[name] = mask_text(masked[name])
        return masked

    return apply


def masker_for_topic(policy: RetentionPolicy, topic: str) -> EventMasker | None:
    """:func:`event_masker` for a topic named in the policy.

    Raises:
        PolicyError: the topic has no policy.
    """
    return event_masker(policy.topic(topic))


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
