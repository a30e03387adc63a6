"""One error root for everything runstate raises on purpose.

Catch :class:`Error` to handle any runstate failure; catch a subclass to act on one kind.
Every message says what to do next, not only what went wrong.
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "ApprovalError",
    "ArchiveError",
    "BrokerError",
    "CompatibilityError",
    "ConfigError",
    "CryptoError",
    "DataKeyMissing",
    "DecodeError",
    "DeliveryError",
    "Error",
    "IllegalTransition",
    "InvalidSchema",
    "MaskKeyError",
    "MasterKeyError",
    "MissingExtra",
    "OversizeRecord",
    "PolicyError",
    "QueryError",
    "QueryUnreachable",
    "ReconcileRequired",
    "ReplayError",
    "RestoreError",
    "RunFenced",
    "RunLeased",
    "RunSuspended",
    "StepAttemptFailed",
    "StepError",
    "StorageFull",
    "StoreDamaged",
    "StoreError",
    "StoreInUse",
    "TamperedValue",
    "TopicMismatch",
    "UnknownSchema",
    "UnknownSubject",
    "ValidationError",
]


class Error(Exception):
    """Root of every error runstate raises on purpose."""


class ConfigError(Error):
    """Settings or a policy file are invalid; the message names the bad key."""


#: The optional libraries and the extra (``pip install 'runstate[extra]'``) that brings each.
EXTRA_OF_MODULE = {
    "rocksdict": "processor",
    "aiohttp": "processor",
    "prometheus_client": "processor",
    "yaml": "archive",
    "boto3": "s3",
    "botocore": "s3",
    "jinja2": "console",
}


class MissingExtra(ConfigError):
    """What was asked needs an optional part of runstate that is not installed."""

    @classmethod
    def from_import(cls, exc: ModuleNotFoundError) -> MissingExtra | None:
        """The error naming the extra to install, or None if ``exc`` is not about one."""
        module = (exc.name or "").split(".")[0]
        extra = EXTRA_OF_MODULE.get(module)
        if extra is None:
            return None
        return cls(
            f"this needs runstate's {extra!r} extra ({module} is not installed):"
            f" pip install 'runstate[{extra}]'"
        )


class BrokerError(Error):
    """The local Kafka broker could not be started, stopped or reached."""


class CompatibilityError(Error):
    """A schema version cannot read (or be read by) an earlier one."""


class InvalidSchema(Error):
    """An Avro contract file is malformed or misnamed; the message names the file to fix."""


class DecodeError(Error):
    """Bytes could not be decoded into an event; names topic, partition and offset."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        where = ""
        if topic is not None:
            where = f" (topic {topic!r}, partition {partition}, offset {offset})"
        super().__init__(message + where)
        self.reason = message
        self.topic = topic
        self.partition = partition
        self.offset = offset


class UnknownSchema(DecodeError):
    """The writer schema's fingerprint is not known locally nor on the schemas topic."""


class ValidationError(Error):
    """An event failed validation before it was sent; nothing was sent."""


class OversizeRecord(ValidationError):
    """An encoded record is larger than the configured maximum; nothing was sent."""


class DeliveryError(Error):
    """Kafka did not confirm delivery of a record."""


class TopicMismatch(Error):
    """An existing topic has a setting a promise depends on set wrong (partitions, cleanup
    policy, retention, min.insync.replicas); the message has one line per setting."""


class IllegalTransition(Error):
    """An event is not allowed in the run's current state."""


class QueryError(Error):
    """A state query could not be answered (no owner, timeout, unknown run)."""


class QueryUnreachable(QueryError):
    """No processor worker's query API answered at the given URL; start one or fix the URL."""


class StepError(Error):
    """A durable step could not run."""


class ReconcileRequired(StepError):
    """An external action's outcome is unknown and no reconcile callback was given."""


class ApprovalError(Error):
    """An approval decision is not possible (nothing pending, stale subject, decided)."""


class PolicyError(ConfigError):
    """A retention policy file is invalid."""


class MaskKeyError(ConfigError):
    """No usable mask key: masking refuses to run rather than write guessable masks."""


class MasterKeyError(ConfigError):
    """No usable master key (``RUNSTATE_MASTER_KEY`` / ``RUNSTATE_MASTER_KEY_FILE``), or
    the key does not open the stored data keys (another master key wrapped them)."""


class CryptoError(Error):
    """A sealed personal-data value could not be sealed or opened."""


class DataKeyMissing(CryptoError):
    """No data key for a subject and key version: the subject was erased (or the key store
    is not the one the writer used). The value is gone for good; show it as erased."""


class TamperedValue(CryptoError):
    """A sealed value is malformed or fails authentication: changed, copied to another run
    or field, or opened with the wrong key."""


class UnknownSubject(CryptoError):
    """The key store has no key of the subject: never sealed for, or already erased."""


class ArchiveError(Error):
    """The archive is inconsistent (gaps, overlaps, bad checksums) or unreachable."""


class ReplayError(Error):
    """History could not be replayed (offset gap between archive and topic, bad data)."""


class StoreError(Error):
    """The local state store failed; the subclasses say what the caller can do about it."""


class StorageFull(StoreError):
    """The disk under the state store is full; nothing of the failed write was applied.

    Free space (or give the store a larger volume) and restart: the store resumes from its
    last applied changelog offset.
    """


class StoreDamaged(StoreError):
    """A partition store cannot be opened or read (corrupt files, foreign directory).

    Drop the partition (``Store.drop``) and restore it from the changelog.
    """


class StoreInUse(StoreError):
    """Another process (or another handle in this one) holds the partition store open.

    Stop the other worker using the same data directory, or give each worker its own.
    """


class RestoreError(Error):
    """A partition store could not be restored from its changelog (timeout, broker error)."""


class StepAttemptFailed(StepError):
    """One attempt of a durable step failed for a known reason; the retry policy decides.

    Raise it from a step body with the article's reason (``timeout``, ``empty_response``,
    ``rejected_by_service``, ``invalid_format``, ``other``) so the failure is recorded and
    retried (or not) by that reason instead of by exception type.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message


class RunSuspended(Error):
    """The run waits (for an approval, or for a retry's not-before time): exit and resume later.

    Not a failure. The agent process may stop here; the state says what it waits for, and
    whoever resumes the run (a reactor handler, a scheduler, a person) calls the agent again.
    """

    def __init__(self, message: str, *, run_id: str, until: datetime | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.until = until


class RunFenced(Error):
    """Another process claimed the run after this one did: stop driving it.

    The run lease (``RunClaimed``) lets one process drive a run; a later claim fences the
    earlier holder, whose events from then on are dead-lettered as fenced. Do not retry: the
    holder named here drives the run now. End this pass (acknowledge the task, exit).
    """

    def __init__(self, message: str, *, run_id: str, holder: str | None, epoch: int | None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.holder = holder
        self.epoch = epoch


class RunLeased(Error):
    """The run's lease is held by another process that may still be alive (not yet expired).

    Raised only when attaching with ``takeover=False``. Try again after ``until``, when the
    lease runs out unless its holder writes again, or attach with ``takeover=True`` to fence it.
    """

    def __init__(
        self, message: str, *, run_id: str, holder: str | None, until: datetime | None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.holder = holder
        self.until = until
