"""Dead letters: input the processor cannot apply, kept with the reason instead of dropped.

A bad record must never stop its partition (every later run on it would stall) nor vanish
(someone has to fix the producer). So it goes to the dead-letter topic unchanged - the
original key, value and headers - plus ``rs-*`` headers that say why and where it came from,
and the worker moves on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "HEADER_DETAIL",
    "HEADER_ERROR_CLASS",
    "HEADER_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "HEADER_WORKER",
    "DeadLetter",
    "DeadLetterReason",
    "SourceRecord",
]

HEADER_REASON = "rs-reason"
HEADER_DETAIL = "rs-detail"
HEADER_ERROR_CLASS = "rs-error-class"
HEADER_SOURCE_TOPIC = "rs-source-topic"
HEADER_SOURCE_PARTITION = "rs-source-partition"
HEADER_SOURCE_OFFSET = "rs-source-offset"
HEADER_WORKER = "rs-worker"

#: Longest ``rs-detail`` header kept; error messages can quote large inputs.
_DETAIL_LIMIT = 2000


class DeadLetterReason(enum.StrEnum):
    """Why a record was set aside; stable strings for alerts and metrics."""

    NULL_VALUE = "null_value"
    OVERSIZE = "oversize"
    MISSING_KEY = "missing_key"
    UNDECODABLE = "undecodable"
    UNKNOWN_SCHEMA = "unknown_schema"
    KEY_MISMATCH = "key_mismatch"
    BAD_CIPHERTEXT = "bad_ciphertext"
    REJECTED = "rejected"
    PROCESSING_ERROR = "processing_error"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of the events topic exactly as consumed: raw bytes, never deserialized."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record to set aside, and why.

    Attributes:
        reason: The kind of problem (the ``rs-reason`` header).
        error_class: The error's class name, or the reducer's reject code for rejections.
        detail: A human-readable message saying what to fix (``rs-detail``).
    """

    source: SourceRecord
    reason: DeadLetterReason
    error_class: str
    detail: str

    def headers(self, *, worker_id: str) -> list[tuple[str, bytes]]:
        """The original headers followed by the ``rs-*`` ones."""
        src = self.source
        return [
            *src.headers,
            (HEADER_REASON, self.reason.value.encode()),
            (HEADER_ERROR_CLASS, self.error_class.encode()),
            (HEADER_DETAIL, self.detail[:_DETAIL_LIMIT].encode("utf-8", "replace")),
            (HEADER_SOURCE_TOPIC, src.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(src.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(src.offset).encode()),
            (HEADER_WORKER, worker_id.encode()),
        ]
