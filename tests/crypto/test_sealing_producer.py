"""The producer with a sealer, against the real broker: personal fields leave sealed for
the run's data subject; an event built around ``new_event`` with one in clear is refused
before anything is sent."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runstate.crypto import FileKeyStore, LocalKeyManager, PersonalDataCipher
from runstate.errors import ValidationError
from runstate.schemas.convert import decode_event
from runstate.schemas.events import RunStarted
from runstate.schemas.sealed import parse_sealed
from runstate.streams.producer import EventProducer
from runstate.streams.reader import end_offsets, read_topic
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs

pytestmark = pytest.mark.integration

CANARY = "canary-3c1d@example.com"


def test_sealed_on_the_way_out_and_clear_refused(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = TopicNames(unique_name("seal"))
    ensure_topics(admin_client(kafka_bootstrap), topic_specs(names, partitions=1))
    cipher = PersonalDataCipher(LocalKeyManager(os.urandom(32)), FileKeyStore(tmp_path))
    with EventProducer(
        bootstrap_servers=kafka_bootstrap, topic_prefix=names.prefix, sealer=cipher
    ) as producer:
        run = producer.run("run-1", data_subject="cust-7")
        run.emit(RunStarted, agent="a", input=CANARY, prompt_version="p", owner="o", source="t")
        clear = RunStarted(
            event_id="e-clear", run_id="run-2", occurred_at=datetime.now(UTC), producer="p",
            agent="a", input=CANARY, prompt_version="p", owner="o", source="t",
        )  # fmt: skip
        with pytest.raises(ValidationError, match=r"RunStarted\.input of run 'run-2' is personal"):
            producer.emit(clear)
    [record] = list(read_topic(kafka_bootstrap, names.events))
    assert record.value is not None and CANARY.encode() not in record.value
    event = decode_event(record.value)
    assert isinstance(event, RunStarted) and event.owner == "o"
    assert parse_sealed(event.input).subject == "cust-7"
    assert cipher.open_value(event.input, run_id="run-1") == CANARY
    assert end_offsets(kafka_bootstrap, names.events)[0][1] == 1  # the clear one never left
