"""Segment manifests: what a segment holds, how to check it, and where it lives.

A manifest is the commit record of a segment: stores publish it last, so a manifest exists
only for a segment that was written completely. Listing, watermarks, verification and
retention planning read manifests only, never segment bodies.

Deleting an expired segment does not remove its manifest: the manifest is rewritten as a
*tombstone* (``expired_at`` set, run ids dropped). That keeps the offset range accounted
for, so a segment kept back by a legal hold, with expired neighbours on both sides, does
not turn into a gap that would stall the archived watermark; and it leaves an audit trail of
what retention deleted and when.

A legal hold is scoped to runs, not segments. When a segment past its retention holds
records of held runs, those records alone are copied into a *hold segment* (``hold`` set:
the holds it serves and the segment it came from) filed beside the segment under
``<stem>.hold.*`` with the same covered range; then the segment expires as usual and its
tombstone names the hold segment (``hold_segment_sha256``). Readers treat the pair as one
sparse segment: the held runs' records at their original offsets, every other offset of the
range expired. Hold manifests are listed apart (``list_hold_manifests``), so coverage,
watermarks and the archiver see only the primary segments and tombstones.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from runstate.errors import ArchiveError

__all__ = [
    "CHAIN_GENESIS",
    "HOLD_SUFFIX",
    "MANIFEST_FORMAT_VERSION",
    "RUN_IDS_INLINE_LIMIT",
    "HoldOrigin",
    "RunIdsSidecar",
    "SegmentManifest",
    "chain_link",
    "contiguous_watermark",
    "decode_run_ids_sidecar",
    "effective_link",
    "encode_run_ids_sidecar",
    "parse_stem",
    "partition_dir",
    "validate_topic",
]

MANIFEST_FORMAT_VERSION: Final = 1

#: Above this many distinct run ids a segment's ids go to a sidecar, keeping manifests
#: small enough that listing a partition's manifests stays a cheap, bounded read.
RUN_IDS_INLINE_LIMIT: Final = 1000

# Kafka's own rule for topic names; it also keeps names safe as path and key components.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

_Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_Fingerprint = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
_Offset = Annotated[int, Field(ge=0)]

#: Inserted between a hold segment's stem and its extensions: ``<stem>.hold.avro``.
HOLD_SUFFIX: Final = ".hold"
_HOLD_FIELDS: Final = ("hold", "hold_segment_sha256")
#: Written only when set, so manifests of earlier versions stay byte for byte the same.
_OPTIONAL_FIELDS: Final = (*_HOLD_FIELDS, "chain")

#: The link a partition's first segment chains from.
CHAIN_GENESIS: Final = "0" * 64


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a legal Kafka topic name.

    Raises:
        ArchiveError: not a Kafka topic name; such a name could also escape the archive
            root as a path.
    """
    if not _TOPIC_NAME.fullmatch(topic) or topic in {".", ".."}:
        raise ArchiveError(
            f"{topic!r} is not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')"
        )
    return topic


def partition_dir(topic: str, partition: int) -> str:
    """Relative directory (or key prefix) of a partition: ``<topic>/<partition:05d>``."""
    if partition < 0:
        raise ArchiveError(f"partition must be >= 0, got {partition}")
    return f"{validate_topic(topic)}/{partition:05d}"


class RunIdsSidecar(BaseModel):
    """Where a large segment's run ids went: a gzip JSON list next to the segment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int = Field(ge=0)
    sha256: _Hex64
    size_bytes: int = Field(ge=0)


class HoldOrigin(BaseModel):
    """What a hold segment keeps, and where its records came from.

    Attributes:
        holds: The legal holds (run ids) the hold segment was written for; emptied when it
            expires, like a tombstone's run ids.
        source_sha256: Checksum of the expired segment the records were copied from (its
            tombstone keeps the same checksum), so a hold segment cannot be paired with
            another segment of the same range. None when the records were read from Kafka
            right before a trim, for a topic that is not archived (its ``hold_archive``).
        source_record_count: Records the source (segment or trimmed range) held.
        held_at: When the records were split off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    holds: list[str]
    source_sha256: _Hex64 | None
    source_record_count: int = Field(ge=0)
    held_at: AwareDatetime


class SegmentManifest(BaseModel):
    """Description of one archive segment, stored as JSON beside it.

    Attributes:
        format_version: Manifest format; readers refuse versions they do not know.
        first_offset: First offset the segment covers (inclusive).
        last_offset: Last offset the segment covers (inclusive). Records may be fewer than
            ``last_offset - first_offset + 1``: transaction markers take offsets too.
        first_timestamp: Earliest record timestamp. Producer timestamps can go backwards,
            so this is the minimum, not the first record's.
        last_timestamp: Latest record timestamp (the maximum); retention counts from it.
        sha256: Hex SHA-256 of the segment file; readers and ``verify`` re-hash against it.
        writer_fingerprints: Hex writer-schema fingerprints of the values (wire order),
            so replay knows which schema versions it needs before reading the segment.
        run_ids: Distinct run ids (record keys) in the segment, when few enough; legal
            holds are matched against them.
        run_ids_sidecar: Set instead of ``run_ids`` when there were too many.
        expired_at: Set when retention deleted the segment body; the manifest stays as a
            tombstone so the range remains accounted for.
        hold: Set on a hold segment only: the held runs' records of an expired segment,
            kept at their offsets (see the module docstring).
        hold_segment_sha256: Set on a tombstone whose held runs' records live on in a hold
            segment; readers that find no such hold segment report it missing.
        chain: The partition's hash-chain link at this segment (:func:`chain_link` of the
            previous segment's link); set by the store when it publishes the segment. None
            on hold segments and on manifests written before chaining.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1] = MANIFEST_FORMAT_VERSION
    topic: str
    partition: int = Field(ge=0)
    first_offset: _Offset
    last_offset: _Offset
    first_timestamp: AwareDatetime
    last_timestamp: AwareDatetime
    record_count: int = Field(ge=0)
    sha256: _Hex64
    size_bytes: int = Field(ge=0)
    codec: str
    writer_fingerprints: list[_Fingerprint] = Field(default_factory=list)
    run_ids: list[str] | None = None
    run_ids_sidecar: RunIdsSidecar | None = None
    created_at: AwareDatetime
    expired_at: AwareDatetime | None = None
    hold: HoldOrigin | None = None
    hold_segment_sha256: _Hex64 | None = None
    chain: _Hex64 | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SegmentManifest:
        validate_topic(self.topic)
        if self.last_offset < self.first_offset:
            raise ValueError(f"last_offset {self.last_offset} < first_offset {self.first_offset}")
        if self.record_count > self.last_offset - self.first_offset + 1:
            raise ValueError("record_count exceeds the offset range")
        if self.last_timestamp < self.first_timestamp:
            raise ValueError("last_timestamp is before first_timestamp")
        if self.run_ids is not None and self.run_ids_sidecar is not None:
            raise ValueError("run ids are either inline or in a sidecar, not both")
        if self.hold is not None and self.hold_segment_sha256 is not None:
            raise ValueError("a hold segment is not itself split into a hold segment")
        if self.hold is not None and self.chain is not None:
            raise ValueError("hold segments are not part of the chain")
        return self

    @property
    def offsets(self) -> tuple[int, int]:
        """``(first_offset, last_offset)``, the covered range, both inclusive."""
        return (self.first_offset, self.last_offset)

    @property
    def stem(self) -> str:
        """File name stem; zero-padded so names sort in offset order."""
        return f"{self.first_offset:020d}-{self.last_offset:020d}"

    @property
    def is_hold(self) -> bool:
        """True for a hold segment (held runs' records kept from an expired segment)."""
        return self.hold is not None

    @property
    def _base(self) -> str:
        suffix = HOLD_SUFFIX if self.is_hold else ""
        return f"{partition_dir(self.topic, self.partition)}/{self.stem}{suffix}"

    @property
    def segment_name(self) -> str:
        """Path of the segment file relative to the archive root."""
        return f"{self._base}.avro"

    @property
    def manifest_name(self) -> str:
        """Path of this manifest relative to the archive root."""
        return f"{self._base}.manifest.json"

    @property
    def sidecar_name(self) -> str:
        """Path of the run-ids sidecar relative to the archive root (if there is one)."""
        return f"{self._base}.run_ids.json.gz"

    @property
    def is_live(self) -> bool:
        """True while the segment body exists (not expired by retention)."""
        return self.expired_at is None

    def to_json(self) -> bytes:
        """Canonical JSON bytes as stored (stable key order, one trailing newline).

        The hold and chain fields are written only when set, so a manifest without them is
        byte for byte what earlier runstate versions wrote and can still read.
        """
        unset = {name for name in _OPTIONAL_FIELDS if getattr(self, name) is None}
        return (self.model_dump_json(indent=2, exclude=unset) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> SegmentManifest:
        """Parse a stored manifest.

        Raises:
            ArchiveError: not a valid manifest (names ``source`` and the bad field), or a
                newer format version this runstate does not know; upgrade runstate to read it.
        """
        try:
            return cls.model_validate_json(data)
        except ValueError as exc:
            raise ArchiveError(f"{source}: not a valid segment manifest: {exc}") from exc

    def expire(self, at: datetime) -> SegmentManifest:
        """The tombstone that replaces this manifest once the segment body is deleted.

        Run ids are dropped: the body they described is gone, and they are the part of the
        manifest closest to personal data.
        """
        update: dict[str, object] = {"expired_at": at, "run_ids": None, "run_ids_sidecar": None}
        if self.hold is not None:
            update["hold"] = self.hold.model_copy(update={"holds": []})
        return self.model_copy(update=update)


def chain_link(previous: str, manifest: SegmentManifest) -> str:
    """The chain link of ``manifest`` following the link ``previous``.

    Covers what identifies the segment for good: partition, range, record count and the
    body's checksum. Not the timestamps of creation or expiry, nor run ids, which a tombstone
    drops: expiring a segment keeps its link.
    """
    identity = (
        f"runstate-archive-chain/1|{previous}|{manifest.topic}|{manifest.partition}"
        f"|{manifest.first_offset}|{manifest.last_offset}|{manifest.record_count}"
        f"|{manifest.sha256}"
    )
    return hashlib.sha256(identity.encode()).hexdigest()


def effective_link(manifest: SegmentManifest) -> str:
    """The link the next segment chains from: the stored one, or for a manifest written
    before chaining, the link it would have as a chain's first segment."""
    return manifest.chain or chain_link(CHAIN_GENESIS, manifest)


def parse_stem(name: str) -> tuple[int, int] | None:
    """The ``(first_offset, last_offset)`` a blob name encodes, or None if it encodes none."""
    first, _, last = name.rsplit("/", 1)[-1].split(".", 1)[0].partition("-")
    if len(first) == len(last) == 20 and first.isdigit() and last.isdigit():
        return int(first), int(last)
    return None


def encode_run_ids_sidecar(run_ids: Iterable[str]) -> bytes:
    """Gzip JSON list of run ids; ``mtime=0`` so equal input gives equal bytes."""
    return gzip.compress(json.dumps(sorted(run_ids)).encode(), mtime=0)


def decode_run_ids_sidecar(data: bytes, *, source: str) -> frozenset[str]:
    """Run ids from a sidecar written by :func:`encode_run_ids_sidecar`.

    Raises:
        ArchiveError: the sidecar is damaged.
    """
    try:
        ids = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError) as exc:
        raise ArchiveError(f"{source}: damaged run-ids sidecar: {exc}") from exc
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ArchiveError(f"{source}: run-ids sidecar is not a JSON list of strings")
    return frozenset(ids)


def contiguous_watermark(
    ranges: Iterable[tuple[int, int]], *, start: int | None = None
) -> int | None:
    """Next offset not archived, following a contiguous run of segments from ``start``.

    Works on ``(first_offset, last_offset)`` pairs, which stores read from file names
    alone, so a watermark costs one listing and no manifest reads. Tombstones count as
    covered: their records were archived, then expired by policy. Overlapping segments
    extend the run too (``verify`` reports the overlap).

    Args:
        ranges: A partition's segment ranges (``SegmentManifest.offsets``), any order.
        start: Offset the run must cover, typically Kafka's earliest offset, so a trim can
            never cross offsets that exist in Kafka but were never archived. Defaults to the
            first archived offset.

    Returns:
        ``last_offset + 1`` of the run's end, or None when nothing is archived or no run
        reaches ``start``. When ``start`` lies beyond a run's end (Kafka already removed
        what was never archived), the answer is None too: nothing is safe to trim.
    """
    ordered = sorted(ranges)
    if not ordered:
        return None
    begin = ordered[0][0] if start is None else start
    end: int | None = None
    for first, last in ordered:
        if end is None:
            # A run ending right before ``begin`` counts: [begin, begin) is trivially covered.
            if first <= begin <= last + 1:
                end = last + 1
            elif first > begin:
                return None
        elif first <= end:
            end = max(end, last + 1)
        else:
            break
    return end
