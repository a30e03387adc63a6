"""The local broker: idempotent start, clean stop, data kept across stop/start."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from runstate.errors import BrokerError
from runstate.streams.broker import KAFKA_VERSION, BrokerConfig, LocalBroker, free_port
from runstate.streams.topics import TopicSpec, admin_client, ensure_topics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _broker(tmp_path: Path) -> LocalBroker:
    return LocalBroker(
        BrokerConfig(
            data_dir=tmp_path / "broker",
            jars_dir=ROOT / ".runstate" / "jars" / f"kafka-{KAFKA_VERSION}",
            port=free_port(),
            controller_port=free_port(),
        )
    )


def test_start_is_idempotent_and_stop_start_keeps_data(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    first = broker.start()
    try:
        again = broker.start()
        assert again.pid == first.pid
        bootstrap = broker.config.bootstrap
        ensure_topics(admin_client(bootstrap), [TopicSpec("kept", 1)])
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i in range(5):
            producer.produce("kept", key=b"k", value=f"v{i}".encode())
        assert producer.flush(30) == 0

        assert broker.stop() is True
        assert broker.status() is None
        assert broker.stop() is False

        # a new object reading the same folder reuses the ports recorded at first start
        reopened = LocalBroker(
            BrokerConfig(data_dir=tmp_path / "broker", jars_dir=broker.config.jars_dir)
        )
        assert reopened.config.port == broker.config.port
        reopened.start()
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g"})
        consumer.assign([TopicPartition("kept", 0, 0)])
        values = []
        while len(values) < 5:
            msg = consumer.poll(20)
            assert msg is not None, f"only {values} came back after restart"
            if not msg.error():
                values.append(msg.value())
        consumer.close()
        assert values == [f"v{i}".encode() for i in range(5)]
    finally:
        broker.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path, kafka_broker: LocalBroker | None) -> None:
    if kafka_broker is None:
        pytest.skip("external cluster: no local broker port to collide with")
    broker = LocalBroker(
        BrokerConfig(
            data_dir=tmp_path / "other",
            jars_dir=kafka_broker.config.jars_dir,
            port=kafka_broker.config.port,
            controller_port=free_port(),
        )
    )
    with pytest.raises(BrokerError, match="already in use"):
        broker.start()
