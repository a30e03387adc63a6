"""Plain helpers shared by the retention tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from runstate.retention import ArchivedRecord, ArchiveSegment

#: Wall-clock origin of factory records: 2025-01-01T00:00:00Z.
T0_MS = 1_735_689_600_000
CREATED = datetime(2025, 6, 1, tzinfo=UTC)

RecordFactory = Callable[..., list[ArchivedRecord]]
SegmentFactory = Callable[..., ArchiveSegment]


def event_value(fingerprint: bytes = b"\x01" * 8, body: bytes = b"payload") -> bytes:
    """A value framed like single-object-encoded Avro: C3 01, 8 fingerprint bytes, body."""
    return b"\xc3\x01" + fingerprint + body
