"""The archive store interface, and the publication protocol every backend shares.

Backends differ only in how they put, get, delete and list named blobs; everything that
makes the archive trustworthy lives once, in :class:`BlobArchive`:

* publication order: segment, then run-ids sidecar, then manifest, so a manifest exists
  only for a complete segment; a crash leaves at most an orphan that listing ignores and
  the retried put removes;
* refusing a segment that overlaps a published one, so a confused archiver cannot make two
  versions of the same offsets;
* checksums checked on every read, so replay never decodes silently damaged bytes;
* deletion as a tombstone manifest written before the body goes (see ``manifest``);
* hold segments (a legal hold's records of an expired segment) filed apart from the
  primary segments, so coverage and watermarks never see them twice.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Protocol

from runstate.errors import ArchiveError
from runstate.retention.manifest import (
    CHAIN_GENESIS,
    HOLD_SUFFIX,
    SegmentManifest,
    chain_link,
    contiguous_watermark,
    decode_run_ids_sidecar,
    effective_link,
    parse_stem,
    partition_dir,
    validate_topic,
)
from runstate.retention.segment import ArchivedRecord, ArchiveSegment, iter_segment

__all__ = ["ArchiveStore", "BlobArchive"]

_MANIFEST_SUFFIX = ".manifest.json"
_HOLD_MANIFEST_SUFFIX = HOLD_SUFFIX + _MANIFEST_SUFFIX


class ArchiveStore(Protocol):
    """Where archive segments live; what the archiver, ``verify`` and replay talk to."""

    @property
    def location(self) -> str:
        """Human-readable address (``local:/path``, ``s3://bucket/prefix``) for messages."""
        ...

    def put_segment(self, segment: ArchiveSegment) -> SegmentManifest:
        """Publish a segment atomically; see :meth:`BlobArchive.put_segment`."""
        ...

    def list_manifests(self, topic: str, partition: int) -> list[SegmentManifest]:
        """Published manifests of a partition (tombstones included), in offset order."""
        ...

    def put_hold_segment(self, segment: ArchiveSegment) -> SegmentManifest:
        """Publish a hold segment beside its live source (``BlobArchive.put_hold_segment``)."""
        ...

    def list_hold_manifests(self, topic: str, partition: int) -> list[SegmentManifest]:
        """Hold-segment manifests of a partition (expired ones included), in offset order."""
        ...

    def partitions(self, topic: str) -> list[int]:
        """Partitions of ``topic`` that have anything archived, ascending."""
        ...

    def fetch_segment(self, manifest: SegmentManifest) -> bytes:
        """The segment file's bytes, unchecked (``verify`` does its own checking)."""
        ...

    def read_segment(self, manifest: SegmentManifest) -> Iterator[ArchivedRecord]:
        """The segment's records, after checking size and checksum."""
        ...

    def run_ids(self, manifest: SegmentManifest) -> frozenset[str]:
        """Run ids in the segment (inline or from its sidecar); empty for a tombstone."""
        ...

    def delete_segment(
        self,
        manifest: SegmentManifest,
        *,
        at: datetime | None = None,
        hold_segment: SegmentManifest | None = None,
    ) -> SegmentManifest:
        """Delete the segment body, leaving a tombstone manifest; returns the tombstone."""
        ...

    def orphans(self, topic: str, partition: int) -> list[str]:
        """Names of blobs no manifest accounts for (debris of interrupted puts)."""
        ...

    def archived_watermark(
        self, topic: str, partition: int, *, start: int | None = None
    ) -> int | None:
        """Next offset not archived after a contiguous run from ``start`` (or the first)."""
        ...


def _stem(name: str) -> str:
    """``<first>-<last>`` of any blob in a partition directory (segment, manifest, temp)."""
    return name.rsplit("/", 1)[-1].split(".", 1)[0]


class BlobArchive(ABC):
    """An :class:`ArchiveStore` over four blob operations a backend provides.

    Names passed to the primitives are relative ``/``-separated paths such as
    ``events/00003/00000000000000000100-00000000000000000199.avro``; a backend maps them
    to files or object keys. ``_write`` must replace a blob atomically: readers see the old
    bytes or the new ones, never a part.
    """

    @property
    @abstractmethod
    def location(self) -> str:
        """Human-readable address of the archive root."""

    @abstractmethod
    def _write(self, name: str, data: bytes) -> None:
        """Create or atomically replace a blob; durable when this returns."""

    @abstractmethod
    def _read(self, name: str) -> bytes:
        """A blob's bytes; raises ArchiveError if it is missing or unreachable."""

    @abstractmethod
    def _delete(self, name: str) -> None:
        """Remove a blob if present (deleting a missing blob is not an error)."""

    @abstractmethod
    def _list(self, directory: str) -> list[str]:
        """Names directly under ``directory`` (relative to the root), any order."""

    @abstractmethod
    def _list_dirs(self, directory: str) -> list[str]:
        """Names of subdirectories directly under ``directory`` (last component only)."""

    def put_segment(self, segment: ArchiveSegment) -> SegmentManifest:
        """Publish a segment: body, then sidecar, then manifest.

        Retrying after a crash is safe: the retry replaces the same names, and debris of an
        interrupted put that began at the same offset (temp files, a body under a different
        last offset) is removed first. Republishing the exact range of a live manifest
        replaces it, so a retry after the manifest was already written also succeeds.

        Raises:
            ArchiveError: the checksum does not match the data; the sidecar is missing or
                wrong; the range overlaps another published segment (or re-covers an
                expired one); or the backend failed (nothing half-visible is left behind).
        """
        manifest = segment.manifest
        self._check_segment(segment)
        if manifest.is_hold:
            raise ArchiveError(
                f"segment {manifest.stem}: publish hold segments with put_hold_segment"
            )
        if not manifest.is_live:
            raise ArchiveError(f"segment {manifest.stem}: cannot publish an expired manifest")

        directory = partition_dir(manifest.topic, manifest.partition)
        names = self._list(directory)
        self._refuse_overlap(manifest, names)
        self._remove_debris(manifest, names, keep_sidecar=segment.run_ids_sidecar is not None)
        manifest = manifest.model_copy(
            update={"chain": chain_link(self._link_before(manifest, names), manifest)}
        )

        self._write(manifest.segment_name, segment.data)
        if segment.run_ids_sidecar is not None:
            self._write(manifest.sidecar_name, segment.run_ids_sidecar)
        self._write(manifest.manifest_name, manifest.to_json())
        return manifest

    def _link_before(self, manifest: SegmentManifest, names: list[str]) -> str:
        """The chain link this segment follows: its predecessor's, or the genesis link."""
        before = [
            (published, name)
            for name in names
            if name.endswith(_MANIFEST_SUFFIX)
            and not name.endswith(_HOLD_MANIFEST_SUFFIX)
            and (published := parse_stem(name)) is not None
            and published[1] < manifest.first_offset
        ]
        if not before:
            return CHAIN_GENESIS
        _, name = max(before)
        directory = partition_dir(manifest.topic, manifest.partition)
        return effective_link(self._load_manifest(f"{directory}/{name}"))

    @staticmethod
    def _check_segment(segment: ArchiveSegment) -> None:
        manifest = segment.manifest
        if (
            hashlib.sha256(segment.data).hexdigest() != manifest.sha256
            or len(segment.data) != manifest.size_bytes
        ):
            raise ArchiveError(
                f"segment {manifest.stem} does not match its manifest's checksum or size;"
                " build it with build_segment"
            )
        ref = manifest.run_ids_sidecar
        if (ref is None) != (segment.run_ids_sidecar is None) or (
            ref is not None
            and segment.run_ids_sidecar is not None
            and hashlib.sha256(segment.run_ids_sidecar).hexdigest() != ref.sha256
        ):
            raise ArchiveError(f"segment {manifest.stem}: run-ids sidecar missing or mismatched")

    def _refuse_overlap(self, manifest: SegmentManifest, names: list[str]) -> None:
        for name in names:
            if not name.endswith(_MANIFEST_SUFFIX) or name.endswith(_HOLD_MANIFEST_SUFFIX):
                continue
            published = parse_stem(name)
            if published is None:
                continue
            lo, hi = published
            if hi < manifest.first_offset or lo > manifest.last_offset:
                continue
            if (lo, hi) == (manifest.first_offset, manifest.last_offset):
                existing = self._load_manifest(
                    f"{partition_dir(manifest.topic, manifest.partition)}/{name}"
                )
                if existing.is_live:
                    continue
                raise ArchiveError(
                    f"{self.location}: offsets {lo}..{hi} of {manifest.topic}/"
                    f"{manifest.partition} expired at {existing.expired_at}; they are not"
                    " archived again"
                )
            raise ArchiveError(
                f"{self.location}: segment {manifest.first_offset}..{manifest.last_offset} of"
                f" {manifest.topic}/{manifest.partition} overlaps published {lo}..{hi};"
                " resume archiving from archived_watermark()"
            )

    def _remove_debris(
        self, manifest: SegmentManifest, names: list[str], *, keep_sidecar: bool
    ) -> None:
        directory = partition_dir(manifest.topic, manifest.partition)
        published = {_stem(n) for n in names if n.endswith(_MANIFEST_SUFFIX)}
        stale_sidecar = None if keep_sidecar else manifest.sidecar_name.rsplit("/", 1)[-1]
        for name in names:
            stem = _stem(name)
            if (parse_stem(name) or (-1, -1))[0] != manifest.first_offset:
                continue
            if (
                name.endswith(".tmp")
                or name == stale_sidecar
                or (stem not in published and stem != manifest.stem)
            ):
                self._delete(f"{directory}/{name}")

    def _load_manifest(self, name: str) -> SegmentManifest:
        return SegmentManifest.from_json(self._read(name), source=f"{self.location}/{name}")

    def list_manifests(self, topic: str, partition: int) -> list[SegmentManifest]:
        """Published manifests of a partition (tombstones included), in offset order.

        Segments without a manifest are not listed: their put never completed.

        Raises:
            ArchiveError: a manifest is unreadable, or describes another partition than the
                one it is filed under (someone copied files by hand).
        """
        directory = partition_dir(topic, partition)
        manifests = []
        for name in sorted(self._list(directory)):
            if not name.endswith(_MANIFEST_SUFFIX) or name.endswith(_HOLD_MANIFEST_SUFFIX):
                continue
            manifest = self._load_manifest(f"{directory}/{name}")
            if (manifest.topic, manifest.partition) != (topic, partition) or (
                manifest.manifest_name != f"{directory}/{name}"
            ):
                raise ArchiveError(
                    f"{self.location}/{directory}/{name} describes {manifest.manifest_name};"
                    " move it back where it belongs"
                )
            if manifest.is_hold:
                raise ArchiveError(
                    f"{self.location}/{directory}/{name} is a hold segment's manifest filed"
                    f" as a segment's; move it to {manifest.manifest_name}"
                )
            manifests.append(manifest)
        return sorted(manifests, key=lambda m: (m.first_offset, m.last_offset))

    def list_hold_manifests(self, topic: str, partition: int) -> list[SegmentManifest]:
        """Hold-segment manifests of a partition (expired ones included), in offset order.

        Raises:
            ArchiveError: a hold manifest is unreadable, is not a hold segment's, or is
                filed under another name than its own.
        """
        directory = partition_dir(topic, partition)
        holds = []
        for name in sorted(self._list(directory)):
            if not name.endswith(_HOLD_MANIFEST_SUFFIX):
                continue
            manifest = self._load_manifest(f"{directory}/{name}")
            if not manifest.is_hold or manifest.manifest_name != f"{directory}/{name}":
                raise ArchiveError(
                    f"{self.location}/{directory}/{name} describes {manifest.manifest_name};"
                    " move it back where it belongs"
                )
            holds.append(manifest)
        return sorted(holds, key=lambda m: (m.first_offset, m.last_offset))

    def put_hold_segment(self, segment: ArchiveSegment) -> SegmentManifest:
        """Publish a hold segment: body, then sidecar, then its ``.hold`` manifest.

        The source segment must still be live here: the hold segment is written before the
        source expires, so a crash in between leaves both live (readers prefer the source)
        and the next ``retention apply`` repeats the split. A live hold segment of the same
        range is replaced, an expired one never is. A hold segment cut from Kafka (no
        source segment: the topic is not archived) must not overlap another one.

        Raises:
            ArchiveError: not a hold segment, the checksum or sidecar does not match, no
                live source segment with the checksum the hold names, an overlap, the hold
                segment for the range already expired, or the backend failed.
        """
        manifest = segment.manifest
        if manifest.hold is None or not manifest.is_live:
            raise ArchiveError(f"segment {manifest.stem}: not a live hold segment")
        self._check_segment(segment)
        directory = partition_dir(manifest.topic, manifest.partition)
        names = self._list(directory)
        if manifest.hold.source_sha256 is None:
            self._refuse_hold_overlap(manifest, names)
        else:
            self._check_hold_source(manifest, names)
        if manifest.manifest_name.rsplit("/", 1)[-1] in names:
            existing = self._load_manifest(manifest.manifest_name)
            if not existing.is_live:
                raise ArchiveError(
                    f"{self.location}/{manifest.manifest_name} expired at"
                    f" {existing.expired_at}; it is not written again"
                )
        if segment.run_ids_sidecar is None:
            self._delete(manifest.sidecar_name)
        self._write(manifest.segment_name, segment.data)
        if segment.run_ids_sidecar is not None:
            self._write(manifest.sidecar_name, segment.run_ids_sidecar)
        self._write(manifest.manifest_name, manifest.to_json())
        return manifest

    def _check_hold_source(self, manifest: SegmentManifest, names: list[str]) -> None:
        directory = partition_dir(manifest.topic, manifest.partition)
        source_name = f"{directory}/{manifest.stem}{_MANIFEST_SUFFIX}"
        if f"{manifest.stem}{_MANIFEST_SUFFIX}" not in names:
            raise ArchiveError(f"{self.location}/{source_name}: no segment to keep records of")
        source = self._load_manifest(source_name)
        if (
            not source.is_live
            or manifest.hold is None
            or source.sha256 != manifest.hold.source_sha256
        ):
            raise ArchiveError(
                f"{self.location}/{source_name}: not the live segment the hold segment was"
                " cut from; list the manifests again"
            )

    def _refuse_hold_overlap(self, manifest: SegmentManifest, names: list[str]) -> None:
        for name in names:
            published = parse_stem(name) if name.endswith(_HOLD_MANIFEST_SUFFIX) else None
            if published is None or published == manifest.offsets:
                continue
            lo, hi = published
            if hi >= manifest.first_offset and lo <= manifest.last_offset:
                raise ArchiveError(
                    f"{self.location}: hold segment {manifest.stem} of {manifest.topic}/"
                    f"{manifest.partition} overlaps hold segment {lo}..{hi}"
                )

    def partitions(self, topic: str) -> list[int]:
        """Partitions of ``topic`` that have anything archived, ascending."""
        return sorted(int(d) for d in self._list_dirs(validate_topic(topic)) if d.isdigit())

    def fetch_segment(self, manifest: SegmentManifest) -> bytes:
        """The segment file's bytes, unchecked.

        Raises:
            ArchiveError: the segment expired, is missing or the backend failed.
        """
        if not manifest.is_live:
            raise ArchiveError(
                f"segment {manifest.segment_name} expired at {manifest.expired_at} under the"
                " retention policy; its records are no longer archived"
            )
        return self._read(manifest.segment_name)

    def read_segment(self, manifest: SegmentManifest) -> Iterator[ArchivedRecord]:
        """The segment's records in offset order, after checking size and checksum.

        Raises:
            ArchiveError: expired, missing, damaged (checksum or size mismatch) or not
                decodable; run ``verify`` on the partition to see the extent.
        """
        data = self.fetch_segment(manifest)
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != manifest.size_bytes or digest != manifest.sha256:
            raise ArchiveError(
                f"{self.location}/{manifest.segment_name}: checksum mismatch (manifest"
                f" {manifest.sha256[:12]}…, {manifest.size_bytes} bytes; found {digest[:12]}…,"
                f" {len(data)} bytes); restore it from a copy or re-archive the range"
            )
        return iter_segment(data, source=f"{self.location}/{manifest.segment_name}")

    def run_ids(self, manifest: SegmentManifest) -> frozenset[str]:
        """Run ids in the segment: inline, or read and checked from the sidecar.

        Raises:
            ArchiveError: the sidecar is missing or damaged; treat the segment as held.
        """
        if manifest.run_ids is not None:
            return frozenset(manifest.run_ids)
        ref = manifest.run_ids_sidecar
        if ref is None:
            return frozenset()
        data = self._read(manifest.sidecar_name)
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise ArchiveError(f"{self.location}/{manifest.sidecar_name}: checksum mismatch")
        return decode_run_ids_sidecar(data, source=f"{self.location}/{manifest.sidecar_name}")

    def delete_segment(
        self,
        manifest: SegmentManifest,
        *,
        at: datetime | None = None,
        hold_segment: SegmentManifest | None = None,
    ) -> SegmentManifest:
        """Delete a segment body and sidecar, keeping a tombstone manifest.

        The tombstone is written first: a crash afterwards leaves an orphan body that no
        listing serves, never a manifest pointing at nothing. Deleting an expired segment
        again only removes leftovers. Legal holds are the caller's check (``plan_expiry``).

        Args:
            manifest: The segment (or hold segment) to expire, as listed.
            at: Expiry time written into the tombstone; defaults to now.
            hold_segment: The hold segment already published with this segment's held
                runs' records; the tombstone names it, so readers can tell a missing hold
                segment from one that was never needed.

        Returns:
            The tombstone manifest now stored.

        Raises:
            ArchiveError: the manifest is not published here, or the backend failed.
        """
        current = self._load_manifest(manifest.manifest_name)
        if current.sha256 != manifest.sha256:
            raise ArchiveError(
                f"{self.location}/{manifest.manifest_name} changed since it was listed;"
                " list again before deleting"
            )
        if hold_segment is not None and (
            hold_segment.hold is None or hold_segment.hold.source_sha256 != current.sha256
        ):
            raise ArchiveError(
                f"{hold_segment.manifest_name} is not a hold segment of {manifest.stem}"
            )
        tombstone = current
        if current.is_live:
            tombstone = current.expire(at or datetime.now(UTC))
            if hold_segment is not None:
                tombstone = tombstone.model_copy(
                    update={"hold_segment_sha256": hold_segment.sha256}
                )
            self._write(manifest.manifest_name, tombstone.to_json())
        self._delete(manifest.sidecar_name)
        self._delete(manifest.segment_name)
        return tombstone

    def orphans(self, topic: str, partition: int) -> list[str]:
        """Blobs under a partition that no live manifest accounts for, sorted."""
        directory = partition_dir(topic, partition)
        names = self._list(directory)
        live = {m.stem for m in self.list_manifests(topic, partition) if m.is_live}
        held = {m.stem for m in self.list_hold_manifests(topic, partition) if m.is_live}

        def accounted(name: str) -> bool:
            if name.endswith(".tmp"):
                return False
            return _stem(name) in (held if f"{HOLD_SUFFIX}." in name else live)

        return sorted(
            f"{directory}/{n}"
            for n in names
            if not n.endswith(_MANIFEST_SUFFIX) and not accounted(n)
        )

    def archived_watermark(
        self, topic: str, partition: int, *, start: int | None = None
    ) -> int | None:
        """Next offset not archived, after a contiguous run of segments.

        Reads only the listing: ranges are in the manifest names.

        Args:
            start: Offset the run must reach, usually Kafka's earliest offset for the
                partition (see ``contiguous_watermark``); defaults to the first archived.

        Returns:
            The watermark, or None when nothing archived reaches ``start``.
        """
        names = self._list(partition_dir(topic, partition))
        ranges = [parse_stem(n) for n in names if n.endswith(_MANIFEST_SUFFIX)]
        return contiguous_watermark((r for r in ranges if r is not None), start=start)
