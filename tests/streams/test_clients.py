"""The client factories: librdkafka's lines through logging, once each; transport errors named."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from runstate.errors import BrokerError
from runstate.streams import clients
from runstate.streams.broker import free_port


def _rdkafka_record(text: str, client: str = "rdkafka#producer-1") -> logging.LogRecord:
    return logging.LogRecord(
        clients.KAFKA_LOGGER, logging.ERROR, __file__, 1, "%s [%s] %s", ("FAIL", client, text), None
    )


def test_the_same_line_passes_once_per_period_whatever_its_numbers_or_client() -> None:
    repeat = clients._RepeatFilter(every_s=60.0)
    assert repeat.filter(_rdkafka_record("Connect failed (after 0ms in state CONNECT)"))
    assert not repeat.filter(_rdkafka_record("Connect failed (after 12ms in state CONNECT)"))
    assert not repeat.filter(
        _rdkafka_record("Connect failed (after 3ms in state CONNECT)", "rdkafka#consumer-2")
    )
    assert repeat.filter(_rdkafka_record("Disconnected"))
    assert repeat.filter(_rdkafka_record("Connect to 10.0.0.2:9092 failed"))
    assert repeat.filter(_rdkafka_record("Connect to 10.0.0.3:9092 failed"))


def test_a_line_passes_again_after_the_period() -> None:
    repeat = clients._RepeatFilter(every_s=0.05)
    assert repeat.filter(_rdkafka_record("Connect failed"))
    time.sleep(0.06)
    assert repeat.filter(_rdkafka_record("Connect failed"))


def test_every_client_config_carries_the_rate_limited_logger() -> None:
    config = clients.client_config({"bootstrap.servers": "127.0.0.1:1"})
    log = config["logger"]
    assert log.name == clients.KAFKA_LOGGER
    assert sum(isinstance(f, clients._RepeatFilter) for f in log.filters) == 1
    clients.client_config({})
    assert sum(isinstance(f, clients._RepeatFilter) for f in log.filters) == 1


def test_transport_failures_become_broker_errors_others_pass() -> None:
    expected = r"cannot reach Kafka at h:1 .*runstate broker start"
    with pytest.raises(BrokerError, match=expected), clients.broker_errors("h:1"):
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "down"))
    with pytest.raises(KafkaException), clients.broker_errors("h:1"):
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))


def test_require_reachable_fails_fast_on_a_closed_port() -> None:
    # Fast because a closed port refuses at once; a timeout would mean it waited instead.
    port = free_port()
    address = rf"127\.0\.0\.1:{port}"
    refused = rf"cannot reach Kafka at {address} \({address}: Connection refused\)"
    with pytest.raises(BrokerError, match=refused):
        clients.require_reachable(f"127.0.0.1:{port}", timeout_s=60.0)


def test_require_reachable_passes_when_something_listens() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        clients.require_reachable(f"PLAINTEXT://127.0.0.1:{free_port()},127.0.0.1:{port}")


def test_librdkafka_lines_go_through_logging_once_not_to_fd_2(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    for f in logging.getLogger(clients.KAFKA_LOGGER).filters:
        if isinstance(f, clients._RepeatFilter):
            f._last.clear()  # another test's refused connection must not hide this one's
    closed = f"127.0.0.1:{free_port()}"
    c = clients.consumer({"bootstrap.servers": closed, "group.id": "g"})
    with caplog.at_level(logging.DEBUG, logger=clients.KAFKA_LOGGER):
        try:
            with (
                pytest.raises(BrokerError, match="cannot reach Kafka"),
                clients.broker_errors(closed),
            ):
                c.list_topics(timeout=1.5)
            c.poll(0.5)  # serves the queued log lines
        finally:
            c.close()
    assert "%3|" not in capfd.readouterr().err
    failures = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert 1 <= len(failures) <= 2  # one per address librdkafka tried, not one per retry


def test_a_consumer_error_event_is_judged_like_an_exception() -> None:
    assert clients.is_transport_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert not clients.is_transport_error(KafkaError(KafkaError._PARTITION_EOF))
    assert not clients.is_transport_error(None)
    assert not clients.is_transport_error(RuntimeError("x"))
