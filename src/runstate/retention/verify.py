"""Checking an archived partition end to end: coverage, checksums, contents.

``verify`` reports instead of raising on the first problem, so one run of
``archive verify`` shows the whole extent of the damage: every gap, overlap and bad segment.

Coverage is proven from the partition's first offset, not from wherever the archive happens
to start: history is whole only if every offset from 0 (or from an explicitly given start,
for an archive that continues an earlier store's) up to Kafka's earliest offset is archived.
An archive that starts at offset 15 after Kafka was trimmed to 15 is *not* sound - offsets
0..14 are neither archived here nor in Kafka - even though its own segments are contiguous.

Hold segments (the held runs' records of an expired segment, see ``holds``) cover no
offsets of their own: their tombstone does. They are checked like segments (body, checksum,
records inside the range), and paired with their tombstones: a tombstone naming a hold
segment that is not there is a ``missing`` issue, since held runs' records are then lost.

Tamper evidence: the manifests' hash chain (see ``manifest``) is recomputed from the first
manifest on; a link that does not follow from its predecessor is a ``chain`` issue, so a
segment changed, removed, re-ordered or inserted together with a manifest rewritten to match
is still found. Removing the newest segments, or rewriting the whole chain, leaves a chain
that is consistent in itself: only a chain head recorded elsewhere (:class:`ChainHead`, from
``archive anchor``) shows that. Manifests written before chaining are accepted unchained, as
long as no chained manifest precedes them.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from runstate.errors import ArchiveError
from runstate.retention.backends import ArchiveStore
from runstate.retention.manifest import (
    CHAIN_GENESIS,
    SegmentManifest,
    chain_link,
    contiguous_watermark,
    effective_link,
)
from runstate.retention.segment import iter_segment, key_as_run_id

__all__ = ["ArchiveIssue", "ArchiveReport", "ChainHead", "IssueKind", "chain_head", "verify"]


class IssueKind(enum.StrEnum):
    """What is wrong; each kind has its own remedy."""

    GAP = "gap"  # offsets no manifest covers: re-archive them while Kafka still has them
    OVERLAP = "overlap"  # two manifests claim the same offsets: remove the wrong one
    CHECKSUM = "checksum"  # body bytes differ from the manifest: restore from a copy
    MISSING = "missing"  # manifest without body (or unreadable sidecar)
    CONTENT = "content"  # decodes, but records disagree with the manifest
    CHAIN = "chain"  # the manifests' hash chain is broken: the archive was altered


@dataclass(frozen=True, slots=True)
class ArchiveIssue:
    """One problem, located by offsets so it can be re-archived or restored."""

    kind: IssueKind
    first_offset: int
    last_offset: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: offsets {self.first_offset}..{self.last_offset}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A partition's newest chain link, recorded apart from the archive (an anchor).

    Attributes:
        topic: The archived topic.
        partition: The partition.
        last_offset: Last offset of the segment whose link this is.
        link: That segment's chain link (hex SHA-256).
    """

    topic: str
    partition: int
    last_offset: int
    link: str


def chain_head(manifests: list[SegmentManifest]) -> ChainHead | None:
    """The newest link of a partition's manifests (listed in offset order), if any."""
    if not manifests:
        return None
    last = manifests[-1]
    return ChainHead(last.topic, last.partition, last.last_offset, effective_link(last))


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    """Outcome of :func:`verify` for one partition.

    Attributes:
        segments: Live segments checked.
        expired: Tombstones (segments deleted by retention), counted as covered.
        records: Records in live segments, per their manifests.
        first_offset: First archived offset, or None if nothing is archived.
        watermark: Next offset not archived after the contiguous run from the first.
        issues: Everything wrong, in offset order; empty when the archive is sound.
        orphans: Blobs no manifest accounts for: debris of interrupted puts, harmless.
        hold_segments: Live hold segments checked (held runs' records of expired ranges).
        held_records: Records in live hold segments, per their manifests.
        head: The partition's chain head (newest link), to anchor elsewhere.
        unchained: Manifests without a chain link (written before chaining).
    """

    location: str
    topic: str
    partition: int
    segments: int
    expired: int
    records: int
    first_offset: int | None
    watermark: int | None
    issues: tuple[ArchiveIssue, ...]
    orphans: tuple[str, ...]
    hold_segments: int = 0
    held_records: int = 0
    head: ChainHead | None = None
    unchained: int = 0

    @property
    def ok(self) -> bool:
        """True when there are no issues (orphans do not count)."""
        return not self.issues


def _coverage_issues(manifests: list[SegmentManifest]) -> list[ArchiveIssue]:
    issues: list[ArchiveIssue] = []
    previous: SegmentManifest | None = None
    for m in manifests:
        if previous is not None:
            if m.first_offset > previous.last_offset + 1:
                issues.append(
                    ArchiveIssue(
                        IssueKind.GAP,
                        previous.last_offset + 1,
                        m.first_offset - 1,
                        f"between {previous.stem} and {m.stem}",
                    )
                )
            elif m.first_offset <= previous.last_offset:
                issues.append(
                    ArchiveIssue(
                        IssueKind.OVERLAP,
                        m.first_offset,
                        min(m.last_offset, previous.last_offset),
                        f"{previous.stem} and {m.stem} both cover these offsets",
                    )
                )
        if previous is None or m.last_offset > previous.last_offset:
            previous = m
    return issues


def _chain_issues(manifests: list[SegmentManifest], anchor: ChainHead | None) -> list[ArchiveIssue]:
    """Links that do not follow from their predecessors, and an anchor the chain lacks."""
    issues: list[ArchiveIssue] = []
    previous: SegmentManifest | None = None
    for m in manifests:
        if m.chain is None:
            if previous is not None and previous.chain is not None:
                issues.append(
                    ArchiveIssue(
                        IssueKind.CHAIN,
                        m.first_offset,
                        m.last_offset,
                        f"{m.manifest_name}: no chain link after chained segments: written"
                        " outside the archiver, or its link was removed",
                    )
                )
        else:
            before = CHAIN_GENESIS if previous is None else effective_link(previous)
            if chain_link(before, m) != m.chain:
                after = "the partition's start" if previous is None else previous.stem
                issues.append(
                    ArchiveIssue(
                        IssueKind.CHAIN,
                        m.first_offset,
                        m.last_offset,
                        f"{m.manifest_name}: its chain link does not follow from {after}: this"
                        " segment or one before it was changed, removed, re-ordered or"
                        " inserted",
                    )
                )
        previous = m
    if anchor is not None:
        anchored = next((m for m in manifests if m.last_offset == anchor.last_offset), None)
        if anchored is None or effective_link(anchored) != anchor.link:
            found = "no segment ends there" if anchored is None else "its link differs"
            issues.append(
                ArchiveIssue(
                    IssueKind.CHAIN,
                    anchor.last_offset,
                    anchor.last_offset,
                    f"the anchored chain head ({anchor.link[:12]}… at offset"
                    f" {anchor.last_offset}) is not in this archive: {found}; history up to"
                    " the anchor was rewritten or cut short",
                )
            )
    return issues


def _segment_issues(store: ArchiveStore, m: SegmentManifest) -> list[ArchiveIssue]:
    def issue(kind: IssueKind, detail: str) -> ArchiveIssue:
        return ArchiveIssue(kind, m.first_offset, m.last_offset, f"{m.segment_name}: {detail}")

    try:
        data = store.fetch_segment(m)
    except ArchiveError as exc:
        return [issue(IssueKind.MISSING, str(exc))]
    issues = []
    digest = hashlib.sha256(data).hexdigest()
    if digest != m.sha256 or len(data) != m.size_bytes:
        issues.append(
            issue(
                IssueKind.CHECKSUM,
                f"sha256 {digest} ({len(data)} bytes), manifest says {m.sha256}"
                f" ({m.size_bytes} bytes)",
            )
        )
    try:
        records = list(iter_segment(data, source=m.segment_name))
    except ArchiveError as exc:
        return [*issues, issue(IssueKind.CONTENT, str(exc))]
    offsets = [r.offset for r in records]
    if m.hold is not None:
        strays = {key_as_run_id(r) for r in records} - set(m.hold.holds)
        if strays:
            issues.append(
                issue(
                    IssueKind.CONTENT,
                    "hold segment holds records of runs it was not kept for:"
                    f" {sorted(map(str, strays))}",
                )
            )
    if len(offsets) != m.record_count:
        issues.append(
            issue(IssueKind.CONTENT, f"{len(offsets)} records, manifest says {m.record_count}")
        )
    if offsets and (offsets[0] < m.first_offset or offsets[-1] > m.last_offset):
        issues.append(
            issue(IssueKind.CONTENT, f"records span {offsets[0]}..{offsets[-1]}, outside range")
        )
    if m.run_ids_sidecar is not None:
        try:
            store.run_ids(m)
        except ArchiveError as exc:
            issues.append(issue(IssueKind.MISSING, f"run-ids sidecar: {exc}"))
    return issues


def _hold_issues(
    manifests: list[SegmentManifest], holds: list[SegmentManifest]
) -> list[ArchiveIssue]:
    """Tombstones whose hold segment is missing, and hold segments without their source."""
    issues: list[ArchiveIssue] = []
    by_range = {m.offsets: m for m in manifests}
    hold_keys = {(h.offsets, h.sha256) for h in holds}
    for m in manifests:
        if (
            m.hold_segment_sha256 is not None
            and (m.offsets, m.hold_segment_sha256) not in hold_keys
        ):
            issues.append(
                ArchiveIssue(
                    IssueKind.MISSING,
                    m.first_offset,
                    m.last_offset,
                    f"{m.manifest_name}: its hold segment ({m.hold_segment_sha256[:12]}…) is"
                    " missing: held runs' records of these offsets are lost; restore"
                    f" {m.stem}.hold.* from a copy",
                )
            )
    for h in holds:
        if h.hold is not None and h.hold.source_sha256 is None:
            continue  # cut from Kafka before a trim (a hold archive): there is no source
        source = by_range.get(h.offsets)
        if h.hold is None or source is None or source.sha256 != h.hold.source_sha256:
            detail = "no segment of this range with the checksum it was cut from"
        elif not source.is_live and source.hold_segment_sha256 != h.sha256:
            detail = "its source's tombstone names another hold segment"
        else:
            continue
        issues.append(
            ArchiveIssue(
                IssueKind.CONTENT, h.first_offset, h.last_offset, f"{h.manifest_name}: {detail}"
            )
        )
    return issues


def _continuity_issues(
    manifests: list[SegmentManifest], *, start: int, kafka_earliest: int | None
) -> list[ArchiveIssue]:
    """Holes between ``start`` and the archive, and between the archive and Kafka."""
    issues: list[ArchiveIssue] = []
    first = manifests[0].first_offset if manifests else None
    watermark = contiguous_watermark(m.offsets for m in manifests)
    if first is not None and first > start:
        where = (
            "Kafka no longer has them either"
            if kafka_earliest is not None and kafka_earliest >= first
            else "Kafka may still have them: run `runstate archive run` to archive them"
            if kafka_earliest is not None and kafka_earliest <= start
            else "Kafka's log starts later too"
        )
        issues.append(
            ArchiveIssue(
                IssueKind.GAP,
                start,
                first - 1,
                f"not in this archive, which starts at {first}; {where}. If an earlier"
                f" store holds them, verify it too and check this one with --from-offset {first}",
            )
        )
    covered_to = watermark if watermark is not None else start
    if kafka_earliest is not None and kafka_earliest > covered_to:
        issues.append(
            ArchiveIssue(
                IssueKind.GAP,
                covered_to,
                kafka_earliest - 1,
                f"neither archived nor in Kafka (its log starts at {kafka_earliest}): these"
                " offsets are lost unless another store holds them",
            )
        )
    return issues


def verify(
    store: ArchiveStore,
    topic: str,
    partition: int,
    *,
    deep: bool = True,
    start: int = 0,
    kafka_earliest: int | None = None,
    holds_only: bool = False,
    anchor: ChainHead | None = None,
) -> ArchiveReport:
    """Check a partition's archive for gaps, overlaps and damaged segments.

    Args:
        store: The archive to check.
        topic: Topic whose partition to check.
        partition: Partition to check.
        deep: Also re-hash and decode every live segment (reads the whole partition);
            without it only manifests are compared, which is quick.
        start: The offset the archive must cover from (0: the partition's whole history);
            larger only for an archive that continues another store's.
        kafka_earliest: Kafka's earliest offset of the partition, when known: every offset
            below it must be archived, or it is lost. None skips that comparison.
        holds_only: The store is the ``hold_archive`` of a topic that is not archived: it
            keeps held runs' records only, so coverage is not expected; hold segments are
            checked, and must not overlap.
        anchor: A chain head recorded earlier (``archive anchor``): the chain must still
            pass through it.

    Returns:
        A report listing every issue; ``report.ok`` when there are none.

    Raises:
        ArchiveError: the store cannot be listed, or a manifest is unreadable: then
            nothing about the partition can be trusted until that is fixed.
    """
    manifests = store.list_manifests(topic, partition)
    holds = store.list_hold_manifests(topic, partition)
    if holds_only:
        issues = _coverage_issues(holds)
        issues = [i for i in issues if i.kind is IssueKind.OVERLAP]
    else:
        issues = _coverage_issues(manifests)
        issues += _continuity_issues(manifests, start=start, kafka_earliest=kafka_earliest)
        issues += _chain_issues(manifests, anchor)
    issues += _hold_issues(manifests, holds)
    live = [m for m in manifests if m.is_live]
    live_holds = [h for h in holds if h.is_live]
    if deep:
        for m in [*live, *live_holds]:
            issues += _segment_issues(store, m)
    issues.sort(key=lambda i: (i.first_offset, i.last_offset, i.kind))
    return ArchiveReport(
        location=store.location,
        topic=topic,
        partition=partition,
        segments=len(live),
        expired=len(manifests) - len(live),
        records=sum(m.record_count for m in live),
        first_offset=manifests[0].first_offset if manifests else None,
        watermark=contiguous_watermark(m.offsets for m in manifests),
        issues=tuple(issues),
        orphans=tuple(store.orphans(topic, partition)),
        hold_segments=len(live_holds),
        held_records=sum(h.record_count for h in live_holds),
        head=chain_head(manifests),
        unchained=sum(1 for m in manifests if m.chain is None),
    )
