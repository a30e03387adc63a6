"""Archive segments: raw Kafka records of one partition, in an Avro object container file.

A segment holds the records of one topic-partition over a contiguous offset range exactly as
Kafka stored them. Values stay the original single-object-encoded bytes, so the archive does
not depend on the codec or on which schema versions were live when it was written: any
version a reader knows (or later learns from the schemas topic) can still decode them.

The file is a plain Avro container, readable by any Avro tool; its header metadata repeats
topic, partition and offset range so a stray file can be identified without its manifest.

The codec is ``deflate``: fastavro (>= 1.10) writes ``zstandard`` only through
``compression.zstd`` (Python 3.14) or ``backports.zstd``, not through the ``zstandard``
package runstate already depends on, and a segment written with a codec a reader lacks is
unreadable there. Deflate is in every Avro implementation.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import fastavro

from runstate.errors import ArchiveError
from runstate.retention.manifest import (
    RUN_IDS_INLINE_LIMIT,
    RunIdsSidecar,
    SegmentManifest,
    encode_run_ids_sidecar,
    validate_topic,
)

__all__ = [
    "ARCHIVE_RECORD_SCHEMA",
    "SEGMENT_CODEC",
    "ArchiveSegment",
    "ArchivedRecord",
    "RecordMask",
    "build_segment",
    "iter_segment",
    "key_as_run_id",
    "writer_fingerprint",
]

SEGMENT_CODEC: Final = "deflate"

#: Avro schema of one archived Kafka record. Field names follow the Kafka record, not ours.
ARCHIVE_RECORD_SCHEMA: Final[dict[str, Any]] = {
    "type": "record",
    "name": "ArchivedRecord",
    "namespace": "runstate.archive",
    "doc": "One Kafka record as the broker stored it; value is the original bytes.",
    "fields": [
        {"name": "offset", "type": "long"},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "key", "type": ["null", "bytes"], "default": None},
        {"name": "value", "type": ["null", "bytes"], "default": None},
        {
            "name": "headers",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Header",
                    "fields": [
                        {"name": "key", "type": "string"},
                        {"name": "value", "type": ["null", "bytes"], "default": None},
                    ],
                },
            },
            "default": [],
        },
    ],
}

_PARSED_SCHEMA: Final = fastavro.parse_schema(ARCHIVE_RECORD_SCHEMA)
_SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    """One Kafka record as archived.

    Attributes:
        offset: Kafka offset within the partition.
        timestamp_ms: Kafka record timestamp, milliseconds since the epoch.
        key: Record key bytes (the run_id for runstate events), or None.
        value: Record value bytes exactly as produced (or masked), or None for a tombstone.
        headers: Kafka headers in order; a key may repeat, as in Kafka.
    """

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


#: Applied to each record before it is written; returns the record to archive instead.
#: The retention policy's personal-data handling plugs in here (see ``masking.record_masker``).
RecordMask = Callable[[ArchivedRecord], ArchivedRecord]


@dataclass(frozen=True, slots=True)
class ArchiveSegment:
    """A segment ready to publish: its manifest, the file bytes and the run-ids sidecar.

    ``run_ids_sidecar`` is set only when the manifest says the run ids did not fit inline;
    stores write it between segment and manifest.
    """

    manifest: SegmentManifest
    data: bytes
    run_ids_sidecar: bytes | None = None


def writer_fingerprint(value: bytes | None) -> str | None:
    """Hex writer-schema fingerprint from a single-object-encoded value's header.

    Reads bytes 2-9 after the ``C3 01`` marker in wire order (little-endian CRC-64-AVRO), the
    same spelling as ``SchemaVersion.fingerprint_hex``, so no codec is needed.

    Returns:
        The 16-hex-digit fingerprint, or None for a null value or one not in that framing.
    """
    if value is None or len(value) < 10 or value[:2] != _SINGLE_OBJECT_MAGIC:
        return None
    return value[2:10].hex()


def key_as_run_id(record: ArchivedRecord) -> str | None:
    """The record key as a run id: runstate partitions events by run, keyed by run_id.

    Undecodable bytes are escaped rather than rejected, so a foreign key cannot stop archiving;
    it simply matches no legal hold.
    """
    if record.key is None:
        return None
    return record.key.decode("utf-8", errors="backslashreplace")


def _to_avro(record: ArchivedRecord) -> dict[str, Any]:
    return {
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": record.key,
        "value": record.value,
        "headers": [{"key": k, "value": v} for k, v in record.headers],
    }


def _from_avro(raw: dict[str, Any]) -> ArchivedRecord:
    return ArchivedRecord(
        offset=raw["offset"],
        timestamp_ms=raw["timestamp_ms"],
        key=raw["key"],
        value=raw["value"],
        headers=tuple((h["key"], h["value"]) for h in raw["headers"]),
    )


def _ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def build_segment(
    topic: str,
    partition: int,
    records: Iterable[ArchivedRecord],
    *,
    first_offset: int | None = None,
    last_offset: int | None = None,
    mask: RecordMask | None = None,
    run_id_of: Callable[[ArchivedRecord], str | None] = key_as_run_id,
    run_ids_inline_limit: int = RUN_IDS_INLINE_LIMIT,
    created_at: datetime | None = None,
) -> ArchiveSegment:
    """Encode records into a segment file and describe it in a manifest.

    The offset range a segment *covers* may be wider than its records' offsets: transaction
    markers and compacted-away records take offsets but are never consumed. The archiver
    passes its consumer positions as ``first_offset``/``last_offset`` so consecutive
    segments meet without a false gap; they default to the first and last record's offsets.

    Args:
        topic: Kafka topic the records came from.
        partition: Kafka partition the records came from.
        records: Records in increasing offset order; at least one.
        first_offset: First offset the segment covers (<= first record's offset).
        last_offset: Last offset the segment covers (>= last record's offset).
        mask: Applied to each record before writing (personal-data handling); must keep
            the offset. Manifest fingerprints and run ids describe the masked records.
        run_id_of: Extracts the run id that legal holds match against.
        run_ids_inline_limit: Above this many run ids, they go to a gzip sidecar instead of
            the manifest, so listing manifests stays cheap.
        created_at: Manifest creation time; defaults to now (tests pin it).

    Returns:
        The segment bytes with their manifest (checksum and size of exactly those bytes).

    Raises:
        ArchiveError: no records, offsets not strictly increasing, a record outside the
            covered range, or a mask that changed an offset.
    """
    validate_topic(topic)
    kept: list[ArchivedRecord] = []
    fingerprints: set[str] = set()
    run_ids: set[str] = set()
    for original in records:
        record = mask(original) if mask is not None else original
        if record.offset != original.offset:
            raise ArchiveError(
                f"mask changed offset {original.offset} to {record.offset} on {topic}/{partition};"
                " a mask may change key, value and headers only"
            )
        if kept and record.offset <= kept[-1].offset:
            raise ArchiveError(
                f"offsets must increase within a segment: {record.offset} after"
                f" {kept[-1].offset} on {topic}/{partition}"
            )
        kept.append(record)
        if (fp := writer_fingerprint(record.value)) is not None:
            fingerprints.add(fp)
        if (run_id := run_id_of(record)) is not None:
            run_ids.add(run_id)
    if not kept:
        raise ArchiveError(
            f"a segment needs at least one record ({topic}/{partition}); fold an empty offset"
            " range into the next segment's first_offset instead"
        )
    first = kept[0].offset if first_offset is None else first_offset
    last = kept[-1].offset if last_offset is None else last_offset
    if first > kept[0].offset or last < kept[-1].offset:
        raise ArchiveError(
            f"records {kept[0].offset}..{kept[-1].offset} fall outside the covered range"
            f" {first}..{last} on {topic}/{partition}"
        )

    buffer = io.BytesIO()
    fastavro.writer(
        buffer,
        _PARSED_SCHEMA,
        (_to_avro(r) for r in kept),
        codec=SEGMENT_CODEC,
        metadata={
            "runstate.topic": topic,
            "runstate.partition": str(partition),
            "runstate.first_offset": str(first),
            "runstate.last_offset": str(last),
        },
    )
    data = buffer.getvalue()

    sorted_ids = sorted(run_ids)
    sidecar: bytes | None = None
    sidecar_ref: RunIdsSidecar | None = None
    inline: list[str] | None = sorted_ids
    if len(sorted_ids) > run_ids_inline_limit:
        sidecar = encode_run_ids_sidecar(sorted_ids)
        sidecar_ref = RunIdsSidecar(
            count=len(sorted_ids),
            sha256=hashlib.sha256(sidecar).hexdigest(),
            size_bytes=len(sidecar),
        )
        inline = None

    timestamps = [r.timestamp_ms for r in kept]
    manifest = SegmentManifest(
        topic=topic,
        partition=partition,
        first_offset=first,
        last_offset=last,
        first_timestamp=_ms_to_datetime(min(timestamps)),
        last_timestamp=_ms_to_datetime(max(timestamps)),
        record_count=len(kept),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        codec=SEGMENT_CODEC,
        writer_fingerprints=sorted(fingerprints),
        run_ids=inline,
        run_ids_sidecar=sidecar_ref,
        created_at=created_at or datetime.now(UTC),
    )
    return ArchiveSegment(manifest=manifest, data=data, run_ids_sidecar=sidecar)


def iter_segment(data: bytes, *, source: str = "segment") -> Iterator[ArchivedRecord]:
    """Records of a segment file, in offset order.

    Checksums are the store's job (it knows the manifest); this only decodes.

    Raises:
        ArchiveError: the bytes are not an archive segment (bad Avro or wrong schema).
    """
    try:
        reader = fastavro.reader(io.BytesIO(data))
        schema = reader.writer_schema
        if not isinstance(schema, dict) or schema.get("name") != "runstate.archive.ArchivedRecord":
            raise ArchiveError(f"{source} is an Avro file but not an archive segment")
        for raw in reader:
            if not isinstance(raw, dict):
                raise ArchiveError(f"{source} holds a non-record value")
            yield _from_avro(raw)
    except ArchiveError:
        raise
    except Exception as exc:  # fastavro raises bare ValueError/EOFError/... on damage
        raise ArchiveError(f"{source} is damaged and cannot be decoded: {exc}") from exc
