"""Retention tiers: hot in Kafka, archived as segments, deleted only by policy.

The archiver (a later Kafka consumer) builds segments with :func:`build_segment`, masks
personal data through a :data:`RecordMask` from :func:`record_masker`, and publishes them to
an :class:`ArchiveStore` (:class:`LocalArchive` or :class:`S3Archive`). Retention decisions
are pure functions (:func:`plan_trim`, :func:`plan_expiry`) over a validated
:class:`RetentionPolicy`; :func:`verify` checks an archived partition end to end.
"""

from runstate.retention.backends import ArchiveStore, BlobArchive
from runstate.retention.local import LocalArchive
from runstate.retention.manifest import (
    MANIFEST_FORMAT_VERSION,
    RUN_IDS_INLINE_LIMIT,
    RunIdsSidecar,
    SegmentManifest,
    contiguous_watermark,
)
from runstate.retention.masking import (
    EventMasker,
    ValueDecoder,
    ValueEncoder,
    event_masker,
    mask_text,
    masker_for_topic,
    record_masker,
)
from runstate.retention.planning import (
    ExpiryPlan,
    HeldSegment,
    OffsetForTime,
    TrimPlan,
    plan_expiry,
    plan_trim,
)
from runstate.retention.policy import (
    ArchiveConfig,
    PersonalDataAction,
    RetentionPolicy,
    TopicPolicy,
    format_duration,
    load_policy,
    open_store,
    parse_duration,
    parse_policy,
)
from runstate.retention.s3 import S3Archive, S3Client
from runstate.retention.segment import (
    ARCHIVE_RECORD_SCHEMA,
    SEGMENT_CODEC,
    ArchivedRecord,
    ArchiveSegment,
    RecordMask,
    build_segment,
    iter_segment,
    key_as_run_id,
    writer_fingerprint,
)
from runstate.retention.verify import ArchiveIssue, ArchiveReport, IssueKind, verify

__all__ = [
    "ARCHIVE_RECORD_SCHEMA",
    "MANIFEST_FORMAT_VERSION",
    "RUN_IDS_INLINE_LIMIT",
    "SEGMENT_CODEC",
    "ArchiveConfig",
    "ArchiveIssue",
    "ArchiveReport",
    "ArchiveSegment",
    "ArchiveStore",
    "ArchivedRecord",
    "BlobArchive",
    "EventMasker",
    "ExpiryPlan",
    "HeldSegment",
    "IssueKind",
    "LocalArchive",
    "OffsetForTime",
    "PersonalDataAction",
    "RecordMask",
    "RetentionPolicy",
    "RunIdsSidecar",
    "S3Archive",
    "S3Client",
    "SegmentManifest",
    "TopicPolicy",
    "TrimPlan",
    "ValueDecoder",
    "ValueEncoder",
    "build_segment",
    "contiguous_watermark",
    "event_masker",
    "format_duration",
    "iter_segment",
    "key_as_run_id",
    "load_policy",
    "mask_text",
    "masker_for_topic",
    "open_store",
    "parse_duration",
    "parse_policy",
    "plan_expiry",
    "plan_trim",
    "record_masker",
    "verify",
    "writer_fingerprint",
]
