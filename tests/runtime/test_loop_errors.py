"""Which consumer errors stop the worker (the loop raises Fenced, exit 75)."""

from __future__ import annotations

from confluent_kafka import KafkaError

from runstate.runtime.loop import _is_fatal


def test_a_fatal_consumer_error_as_consume_returns_it_stops_the_worker() -> None:
    """Found by the fault battery (scenario 3): after a broker restart librdkafka fenced a
    static member and returned the error from ``consume()`` with code ``_FATAL`` and
    ``fatal()`` False; the loop took it for a passing error (and discarded it with the
    batch its lost-partitions abort dropped) and the worker stayed in the group with no
    partitions for good."""
    as_returned = KafkaError(
        KafkaError._FATAL,
        "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id",
    )
    assert not as_returned.fatal()
    assert _is_fatal(as_returned)
    assert _is_fatal(KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced", fatal=True))


def test_passing_consumer_errors_do_not_stop_the_worker() -> None:
    assert not _is_fatal(KafkaError(KafkaError._TRANSPORT, "broker down"))
    assert not _is_fatal(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down"))
