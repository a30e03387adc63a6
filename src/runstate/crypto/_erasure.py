"""Erasing a data subject: destroy its data keys, then record who did it and when.

Destroying the keys is the erasure: every sealed value of the subject, wherever a copy sits
(the events and derived topics, the changelog, RocksDB, the archive, backups of any of
these), can no longer be opened, while the rest of each record stays readable and
replayable. The record of it (``DataSubjectErased`` v1) goes to the ``<prefix>.erasures``
topic, keyed by the subject, after the keys are gone: an erasure that was recorded has
happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runstate.crypto._store import KeyStore
from runstate.errors import DeliveryError, UnknownSubject
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import encode
from runstate.schemas.ids import uuid7
from runstate.streams import clients
from runstate.streams.schema_topic import SchemaPublisher
from runstate.streams.topics import TopicNames

__all__ = ["ERASURE_SCHEMA", "Erasure", "erase_subject", "publish_erasure"]

ERASURE_SCHEMA = "runstate.audit.DataSubjectErased"


@dataclass(frozen=True)
class Erasure:
    """What one erasure destroyed (the DataSubjectErased record)."""

    subject: str
    by: str
    key_versions: tuple[str, ...]
    runs: tuple[str, ...] = ()
    erasure_id: str = field(default_factory=uuid7)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def record(self) -> dict[str, Any]:
        return {
            "erasure_id": self.erasure_id,
            "subject": self.subject,
            "occurred_at": self.occurred_at,
            "by": self.by,
            "key_versions": list(self.key_versions),
            "runs": list(self.runs),
        }


def erase_subject(store: KeyStore, subject: str, *, by: str, runs: Sequence[str] = ()) -> Erasure:
    """Destroy every data key of ``subject``.

    Raises:
        UnknownSubject: no key of ``subject`` is stored (nothing was sealed for it, it was
            erased before, or this is not the writers' key store).
        BrokerError: the Kafka key store could not be reached.
    """
    versions = store.erase(subject)
    if not versions:
        raise UnknownSubject(
            f"no data key of subject {subject!r} in the key store: nothing was sealed for it"
            " (check the id; a run's subject is the run id unless the agent named one), or it"
            " was erased before"
        )
    return Erasure(subject=subject, by=by, key_versions=versions, runs=tuple(runs))


def publish_erasure(
    bootstrap_servers: str, names: TopicNames, erasure: Erasure, *, timeout_s: float = 30.0
) -> None:
    """Write the DataSubjectErased record to the erasures topic, keyed by the subject.

    Raises:
        BrokerError, DeliveryError: Kafka could not be reached or refused the record.
    """
    schema = default_catalog().latest(ERASURE_SCHEMA)
    value = encode(erasure.record(), schema)
    producer = clients.producer(
        {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all"}
    )
    errors: list[str] = []

    def done(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    with clients.broker_errors(bootstrap_servers):
        SchemaPublisher(producer, names.schemas).ensure_published(schema, timeout_s=timeout_s)
        producer.produce(
            names.erasures, key=erasure.subject.encode(), value=value, on_delivery=done
        )
        left = producer.flush(timeout_s)
    if left or errors:
        raise DeliveryError(
            f"the erasure of {erasure.subject!r} was done (its keys are destroyed) but its"
            f" record was not stored in {names.erasures}: {errors[0] if errors else 'timeout'};"
            f" note erasure {erasure.erasure_id} by hand"
        )
