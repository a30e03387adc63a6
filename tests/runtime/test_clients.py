"""The consumer's error callback: fatal errors that never come out of ``consume()``."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from runstate.runtime.clients import ConsumerErrors


def test_a_fatal_error_is_remembered_and_the_first_one_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = ConsumerErrors()
    errors(KafkaError(KafkaError._TRANSPORT, "broker down"))
    assert errors.fatal is None
    first = KafkaError(KafkaError.FENCED_INSTANCE_ID, "static consumer fenced", fatal=True)
    with caplog.at_level(logging.WARNING, logger="runstate.runtime.clients"):
        errors(first)
        errors(KafkaError(KafkaError._FATAL, "another", fatal=True))
    assert errors.fatal is first
    assert "static consumer fenced" in caplog.text
