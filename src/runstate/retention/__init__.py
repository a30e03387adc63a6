"""Retention tiers: hot in Kafka, archived as segments, deleted only by policy.

The :class:`Archiver` (a Kafka consumer group) builds segments with :func:`build_segment`,
masks personal data through a :data:`RecordMask`, and publishes them to an
:class:`ArchiveStore` (:class:`LocalArchive` or :class:`S3Archive`). Retention decisions are
pure functions (:func:`plan_trim`, :func:`plan_expiry`) over a validated
:class:`RetentionPolicy`, carried out by :func:`apply_retention`; :func:`verify` checks an
archived partition end to end. :func:`replay_all` / :func:`replay_until` rebuild run state
from archive and Kafka with the live reducer; :func:`estimate_storage` sizes the tiers.
"""

from runstate.retention.apply import (
    PartitionTrim,
    RetentionOutcome,
    RetentionPlan,
    apply_retention,
    plan_retention,
)
from runstate.retention.archiver import Archiver, ArchiverConfig, ArchiverStats, resume_point
from runstate.retention.audit import Mismatch, Timeline, compare_states, read_live_summaries
from runstate.retention.backends import ArchiveStore, BlobArchive
from runstate.retention.context import RetentionContext, load_context
from runstate.retention.estimate import Measurement, TierEstimate, Workload, estimate_storage
from runstate.retention.kafka_log import ConfluentKafkaLog, KafkaLog
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
    MaskKey,
    MaskKeys,
    ValueDecoder,
    ValueEncoder,
    event_masker,
    mask_key_id,
    mask_keys_from_settings,
    mask_text,
    masker_for_topic,
    parse_mask_keys,
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
from runstate.retention.replay import (
    HistorySource,
    ReplayResult,
    ReplayStats,
    replay_all,
    replay_until,
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
from runstate.retention.verify import ArchiveIssue, ArchiveReport, ChainHead, IssueKind, verify

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
    "Archiver",
    "ArchiverConfig",
    "ArchiverStats",
    "BlobArchive",
    "ChainHead",
    "ConfluentKafkaLog",
    "EventMasker",
    "ExpiryPlan",
    "HeldSegment",
    "HistorySource",
    "IssueKind",
    "KafkaLog",
    "LocalArchive",
    "MaskKey",
    "MaskKeys",
    "Measurement",
    "Mismatch",
    "OffsetForTime",
    "PartitionTrim",
    "PersonalDataAction",
    "RecordMask",
    "ReplayResult",
    "ReplayStats",
    "RetentionContext",
    "RetentionOutcome",
    "RetentionPlan",
    "RetentionPolicy",
    "RunIdsSidecar",
    "S3Archive",
    "S3Client",
    "SegmentManifest",
    "TierEstimate",
    "Timeline",
    "TopicPolicy",
    "TrimPlan",
    "ValueDecoder",
    "ValueEncoder",
    "Workload",
    "apply_retention",
    "build_segment",
    "compare_states",
    "contiguous_watermark",
    "estimate_storage",
    "event_masker",
    "format_duration",
    "iter_segment",
    "key_as_run_id",
    "load_context",
    "load_policy",
    "mask_key_id",
    "mask_keys_from_settings",
    "mask_text",
    "masker_for_topic",
    "open_store",
    "parse_duration",
    "parse_mask_keys",
    "parse_policy",
    "plan_expiry",
    "plan_retention",
    "plan_trim",
    "read_live_summaries",
    "record_masker",
    "replay_all",
    "replay_until",
    "resume_point",
    "verify",
    "writer_fingerprint",
]
