"""Writer schemas on a compacted Kafka topic, keyed by fingerprint.

Producers publish each schema before the first record that uses it; any reader, years later,
can then resolve a fingerprint its own code does not ship. The topic has one partition and is
compacted, so it holds exactly one record per schema forever.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaError, Message, TopicPartition

from runstate.errors import DeliveryError
from runstate.schemas.catalog import SchemaVersion, fingerprint_of, load_schema_text
from runstate.streams import clients
from runstate.streams.reader import watermarks

__all__ = ["SchemaPublisher", "SchemaTopicSource"]


class _Producer(Protocol):
    def produce(
        self,
        topic: str,
        value: bytes | None = ...,
        key: bytes | None = ...,
        *,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = ...,
    ) -> None: ...
    def flush(self, timeout: float = ...) -> int: ...


class SchemaPublisher:
    """Publishes each writer schema once per process (cheap to call per record)."""

    def __init__(self, producer: _Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._published: set[bytes] = set()
        self._lock = threading.Lock()

    def ensure_published(self, schema: SchemaVersion, *, timeout_s: float = 30.0) -> None:
        """Publish ``schema`` and wait for the broker, unless this process already did.

        Raises:
            DeliveryError: the schema could not be stored; the record must not be sent.
        """
        if schema.fingerprint in self._published:
            return
        with self._lock:
            if schema.fingerprint in self._published:
                return
            errors: list[str] = []

            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    errors.append(err.str())

            self._producer.produce(
                self._topic,
                key=schema.fingerprint_hex.encode(),
                value=json.dumps(schema.definition, sort_keys=True).encode(),
                on_delivery=on_delivery,
            )
            left = self._producer.flush(timeout_s)
            if left or errors:
                raise DeliveryError(
                    f"could not publish schema {schema.name} ({schema.fingerprint_hex}) to "
                    f"{self._topic!r}: {errors[0] if errors else 'timed out'}; run "
                    "`runstate topics ensure` and check the broker"
                )
            self._published.add(schema.fingerprint)


class SchemaTopicSource:
    """Looks writer schemas up on the schemas topic (a ``WriterSchemaSource``).

    The whole topic is read on the first miss and again on each later miss, so a schema
    published after start-up is still found. Schemas whose text does not hash to their key
    are ignored: a reader must never decode with a schema other than the writer's.
    """

    def __init__(self, bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._timeout_s = timeout_s
        self._known: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def lookup(self, fingerprint: bytes) -> str | None:
        """The writer schema JSON for ``fingerprint``, or None if nobody published it."""
        found = self._known.get(fingerprint)
        if found is None:
            with self._lock:
                self._refresh()
            found = self._known.get(fingerprint)
        return found

    def _refresh(self) -> None:
        consumer = clients.consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "runstate-schema-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            low, high = watermarks(consumer, self._topic, 0, timeout_s=self._timeout_s)
            if high <= low:
                return
            consumer.assign([TopicPartition(self._topic, 0, low)])
            position = low
            while position < high:
                msg = consumer.poll(self._timeout_s)
                if msg is None:
                    break
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        break
                    continue
                position = (msg.offset() or 0) + 1
                self._remember(msg.key(), msg.value())
        finally:
            consumer.close()

    def _remember(self, key: bytes | None, value: bytes | None) -> None:
        if not key or not value:
            return
        try:
            fingerprint = bytes.fromhex(key.decode())
            text = value.decode()
            schema: SchemaVersion = load_schema_text(text, source=f"topic {self._topic}")
        except (ValueError, UnicodeDecodeError):
            return
        if fingerprint_of(schema.canonical_form) == fingerprint:
            self._known[fingerprint] = text
