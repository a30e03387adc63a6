"""Event identifiers: UUIDv7 (RFC 9562), time-ordered so ids sort roughly by creation."""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["uuid7"]


def uuid7(*, unix_ms: int | None = None) -> str:
    """A new UUIDv7 as text: 48-bit Unix milliseconds, version 7, 74 random bits."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b
    return str(uuid.UUID(int=value))
