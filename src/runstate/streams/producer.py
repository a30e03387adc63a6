"""The producer SDK: agent events to Kafka, validated, size-checked, delivery confirmed.

Guarantees a caller can rely on:

* Nothing half-sent: an event that fails validation, encoding or the size limit raises
  before anything reaches Kafka.
* Nothing lost silently: ``emit`` returns only once the broker confirmed the write (acks=all,
  idempotent producer), with the partition and offset; ``send`` returns a future that fails
  with :class:`DeliveryError` instead of dropping the event.
* No waiting for nothing: ``emit`` sends at once (no ``linger.ms`` wait: one event a caller
  waits for has nothing to be batched with); ``send`` batches as configured.
* One order per run: the key is ``run_id`` and the partitioner is murmur2, the Java client's
  default, so the processor's partitions and Java consumers agree with the SDK's.
* Every record says which schema wrote it (single-object encoding), and that schema is on the
  schemas topic before the first record that uses it.
* Personal fields never leave in clear when the producer has a sealer
  (:class:`~runstate.crypto.PersonalDataCipher`, from the master key): :meth:`new_event`
  seals them for the run's data subject, and :meth:`encode` refuses an event that still has
  one in clear.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

from confluent_kafka import KafkaError, Message

from runstate.errors import DeliveryError, OversizeRecord, ValidationError
from runstate.schemas.codec import encode
from runstate.schemas.convert import event_to_record
from runstate.schemas.events import AgentEvent
from runstate.schemas.ids import uuid7
from runstate.schemas.sealed import EventSealer, is_sealed, sealed_fields
from runstate.settings import Settings, load_settings
from runstate.streams import clients
from runstate.streams.schema_topic import SchemaPublisher
from runstate.streams.topics import TopicNames

__all__ = ["AgentRun", "Delivery", "EventProducer", "producer_config"]

E = TypeVar("E", bound=AgentEvent)

HEADER_EVENT_TYPE = "rs-event-type"
HEADER_SCHEMA = "rs-schema"


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored an event: pass it to queries for read-your-writes."""

    topic: str
    partition: int
    offset: int
    run_id: str
    event_id: str


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings for a producer that neither loses nor duplicates on retry."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 120_000,
    }
    config.update(overrides)
    return config


class EventProducer:
    """Sends agent events for any number of runs. Thread-safe; close it (or use ``with``)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap_servers: str | None = None,
        topic_prefix: str | None = None,
        max_event_bytes: int | None = None,
        producer_name: str | None = None,
        kafka_config: dict[str, Any] | None = None,
        sealer: EventSealer | None = None,
    ) -> None:
        s = settings or load_settings()
        #: Seals personal fields (None: written in clear, for deployments without a key).
        self.sealer = sealer
        self.bootstrap_servers = bootstrap_servers or s.bootstrap_servers
        self.names = TopicNames(topic_prefix or s.topic_prefix)
        self.max_event_bytes = max_event_bytes or s.max_event_bytes
        self.producer_name = producer_name or s.producer_name
        self._producer = clients.producer(
            producer_config(self.bootstrap_servers, **(kafka_config or {}))
        )
        self._schemas = SchemaPublisher(self._producer, self.names.schemas)
        self._lock = threading.Lock()
        self._closed = False

    # -- building events -------------------------------------------------------------------
    def new_event(
        self, cls: type[E], run_id: str, *, data_subject: str | None = None, **fields: Any
    ) -> E:
        """An event of ``cls`` with a fresh UUIDv7, now as its time and this producer's name,
        its personal fields sealed for ``data_subject`` (the run id by default) if this producer
        has a sealer.

        Raises:
            ValidationError: a field is missing or has the wrong type (nothing was sent).
        """
        fields.setdefault("event_id", uuid7())
        fields.setdefault("occurred_at", datetime.now(UTC))
        fields.setdefault("producer", self.producer_name)
        try:
            event = cls(run_id=run_id, **fields)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ValidationError(f"invalid {cls.__name__} for run {run_id!r}: {exc}") from exc
        if self.sealer is None:
            return event
        sealed = self.sealer.seal(event, data_subject or run_id)
        assert isinstance(sealed, cls)
        return sealed

    # -- sending ---------------------------------------------------------------------------
    def encode(self, event: AgentEvent) -> tuple[bytes, list[tuple[str, str | bytes | None]]]:
        """Validate and encode ``event``; raise before anything is sent.

        Raises:
            ValidationError: the event does not satisfy its schema.
            OversizeRecord: the encoded event is larger than ``max_event_bytes``.
        """
        if not isinstance(event, AgentEvent) or not event.event_type:
            raise ValidationError(f"not an agent event: {type(event).__name__}")
        if self.sealer is not None:
            _require_sealed(event)
        try:
            schema, record = event_to_record(event)
            value = encode(record, schema)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValidationError(f"{event.event_type} does not fit its schema: {exc}") from exc
        if len(value) > self.max_event_bytes:
            raise OversizeRecord(
                f"{event.event_type} for run {event.run_id!r} encodes to {len(value)} bytes, "
                f"over the limit of {self.max_event_bytes} (RUNSTATE_MAX_EVENT_BYTES); store "
                "large inputs or outputs elsewhere and put a reference in the event"
            )
        self._schemas.ensure_published(schema)
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_EVENT_TYPE, event.event_type.encode()),
            (HEADER_SCHEMA, schema.fingerprint_hex.encode()),
        ]
        return value, headers

    def send(self, event: AgentEvent) -> Future[Delivery]:
        """Queue ``event``; the future resolves with its Delivery or fails with DeliveryError.

        Raises:
            ValidationError, OversizeRecord: as :meth:`encode`; nothing was queued.
        """
        if self._closed:
            raise DeliveryError("this producer is closed")
        value, headers = self.encode(event)
        future: Future[Delivery] = Future()
        on_delivery = _delivery_callback(future, event)
        with self._lock:
            while True:
                try:
                    self._producer.produce(
                        self.names.events,
                        key=event.run_id.encode(),
                        value=value,
                        headers=headers,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)  # local queue full: serve deliveries, retry
            self._producer.poll(0)
        return future

    def emit(self, event: AgentEvent, *, timeout_s: float = 60.0) -> Delivery:
        """Send ``event`` and wait until the broker confirmed it.

        Raises:
            DeliveryError: not confirmed within ``timeout_s`` or refused by the broker.
        """
        future = self.send(event)
        # The caller waits for this one event, so there is nothing to batch it with: send it
        # now instead of waiting out linger.ms (librdkafka's flush ignores the linger; it
        # also sends whatever else is queued, which the caller would wait behind anyway).
        deadline = _deadline(timeout_s)
        while not future.done():
            if _remaining(deadline) <= 0:
                raise DeliveryError(f"no delivery confirmation within {timeout_s:.0f}s")
            self._producer.flush(min(0.1, _remaining(deadline)))
        return future.result()

    def wait(self, future: Future[Delivery], *, timeout_s: float = 60.0) -> None:
        """Serve delivery reports until ``future`` is done."""
        deadline = _deadline(timeout_s)
        while not future.done():
            if _remaining(deadline) <= 0:
                raise DeliveryError(f"no delivery confirmation within {timeout_s:.0f}s")
            self._producer.poll(min(0.1, _remaining(deadline)))

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every queued event to be confirmed.

        Raises:
            DeliveryError: events are still unconfirmed after ``timeout_s``.
        """
        left = self._producer.flush(timeout_s)
        if left:
            raise DeliveryError(f"{left} events still unconfirmed after {timeout_s:.0f}s")

    def close(self, timeout_s: float = 60.0) -> None:
        """Flush and stop accepting events."""
        if not self._closed:
            self.flush(timeout_s)
            self._closed = True

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self, run_id: str | None = None, *, data_subject: str | None = None) -> AgentRun:
        """A handle that emits events for one run (a new UUIDv7 run id if none is given),
        sealing personal fields for ``data_subject`` (the run id if None)."""
        return AgentRun(self, run_id or uuid7(), data_subject=data_subject)


class AgentRun:
    """Emits the events of one run, remembering where the last one landed."""

    def __init__(
        self, producer: EventProducer, run_id: str, *, data_subject: str | None = None
    ) -> None:
        self.producer = producer
        self.run_id = run_id
        self.data_subject = data_subject
        self.last_delivery: Delivery | None = None

    def emit(self, cls: type[AgentEvent], **fields: Any) -> Delivery:
        """Build an event of ``cls`` for this run, send it and wait for the broker.

        Example:
            ``run.emit(StepStarted, step="check_form", step_index=0, attempt=1)``
        """
        event = self.producer.new_event(cls, self.run_id, data_subject=self.data_subject, **fields)
        self.last_delivery = self.producer.emit(event)
        return self.last_delivery


def _require_sealed(event: AgentEvent) -> None:
    """Refuse an event built around :meth:`EventProducer.new_event` with a personal field in
    clear: with a sealer configured nothing personal may reach Kafka unsealed."""
    for name in sealed_fields(event.event_type):
        value = getattr(event, name, None)
        values = value.values() if isinstance(value, dict) else [value]
        if any(isinstance(v, str) and not is_sealed(v) for v in values):
            raise ValidationError(
                f"{event.event_type}.{name} of run {event.run_id!r} is personal data in clear;"
                " build events with EventProducer.new_event (it seals them) and nothing was sent"
            )


def _delivery_callback(
    future: Future[Delivery], event: AgentEvent
) -> Callable[[KafkaError | None, Message], None]:
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            future.set_exception(
                DeliveryError(f"{event.event_type} {event.event_id} was not stored: {err.str()}")
            )
            return
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        future.set_result(
            Delivery(msg.topic() or "", partition, offset, event.run_id, event.event_id)
        )

    return on_delivery


def _deadline(timeout_s: float) -> float:
    return time.monotonic() + timeout_s


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()
