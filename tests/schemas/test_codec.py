from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastavro import schemaless_reader
from hypothesis import given
from hypothesis import strategies as st

from runstate.errors import DecodeError, UnknownSchema, ValidationError
from runstate.schemas.catalog import SchemaCatalog, default_catalog
from runstate.schemas.codec import (
    InMemoryWriterSchemaSource,
    SingleObjectCodec,
    decode,
    encode,
)

WHEN = datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)


def run_started(**extra: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "run_id": "r1",
        "occurred_at": WHEN,
        "producer": "p",
        "agent": "a",
        "input": "{}",
        "prompt_version": "1",
        "owner": "o",
        "source": "api",
        **extra,
    }


@pytest.fixture
def codec(catalog: SchemaCatalog) -> SingleObjectCodec:
    return SingleObjectCodec(catalog)


def only_v1(catalog: SchemaCatalog) -> SchemaCatalog:
    """A catalog as an older consumer has it: RunStarted v1 is its newest."""
    return SchemaCatalog(
        sv for sv in catalog if sv.name != "runstate.events.RunStarted" or sv.version == 1
    )


def test_layout_is_marker_fingerprint_then_fastavro_body(
    codec: SingleObjectCodec, catalog: SchemaCatalog
) -> None:
    latest = catalog.latest("RunStarted")
    data = codec.encode(run_started(tenant="t", epoch=3), latest)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == latest.fingerprint
    assert schemaless_reader(io.BytesIO(data[10:]), latest.parsed) == run_started(
        tenant="t", epoch=3
    )


def test_round_trip_reports_versions(codec: SingleObjectCodec, catalog: SchemaCatalog) -> None:
    latest = catalog.latest("RunStarted")
    decoded = codec.decode(codec.encode(run_started(tenant=None, epoch=None), latest))
    assert decoded.name == "runstate.events.RunStarted"
    assert (decoded.writer_version, decoded.reader_version) == (3, 3)
    assert decoded.writer_fingerprint == latest.fingerprint
    assert decoded.record == run_started(tenant=None, epoch=None)
    assert decoded.record["occurred_at"].tzinfo is not None
    # A field with a default may be left out when encoding.
    decoded = codec.decode(codec.encode(run_started(), latest))
    assert decoded.record == run_started(tenant=None, epoch=None)


def test_v1_writer_read_by_the_newest_reader_gets_tenant_and_epoch_none(
    codec: SingleObjectCodec, catalog: SchemaCatalog
) -> None:
    data = encode(run_started(), catalog.get("RunStarted", 1))
    decoded = codec.decode(data)
    assert (decoded.writer_version, decoded.reader_version) == (1, 3)
    assert decoded.record == run_started(tenant=None, epoch=None)


def test_v2_writer_read_by_v1_reader_drops_tenant_once_the_schema_is_found(
    catalog: SchemaCatalog,
) -> None:
    v2 = catalog.latest("RunStarted")
    data = encode(run_started(tenant="acme"), v2)
    old_consumer = SingleObjectCodec(only_v1(catalog))
    with pytest.raises(UnknownSchema, match=v2.fingerprint_hex) as caught:
        old_consumer.decode(data, topic="events", partition=3, offset=42)
    assert (caught.value.topic, caught.value.partition, caught.value.offset) == ("events", 3, 42)
    assert "offset 42" in str(caught.value)

    source = InMemoryWriterSchemaSource([json.dumps(dict(v2.definition))])
    old_consumer = SingleObjectCodec(only_v1(catalog), writer_source=source)
    decoded = old_consumer.decode(data)
    assert (decoded.writer_version, decoded.reader_version) == (None, 1)
    assert decoded.record == run_started()


def test_source_answering_with_the_wrong_schema_is_refused(catalog: SchemaCatalog) -> None:
    class Liar:
        def lookup(self, fingerprint: bytes) -> str | None:
            return json.dumps(dict(catalog.latest("RunCompleted").definition))

    data = encode(run_started(), catalog.get("RunStarted", 1))
    with pytest.raises(UnknownSchema, match="registry is corrupt"):
        SingleObjectCodec(SchemaCatalog([]), writer_source=Liar()).decode(data)


def test_reader_name_reads_as_another_record_only_if_compatible(
    codec: SingleObjectCodec, catalog: SchemaCatalog
) -> None:
    data = encode(run_started(), catalog.get("RunStarted", 1))
    with pytest.raises(DecodeError, match=r"cannot be read as runstate\.events\.RunCompleted"):
        codec.decode(data, reader_name="RunCompleted")
    with pytest.raises(DecodeError, match="no schema named"):
        codec.decode(data, reader_name="Nope")


def test_unknown_record_type_is_returned_as_written(catalog: SchemaCatalog) -> None:
    schema = {"type": "record", "name": "x.Other", "fields": [{"name": "n", "type": "int"}]}
    source = InMemoryWriterSchemaSource()
    fingerprint = source.add(json.dumps(schema))
    data = b"\xc3\x01" + fingerprint + b"\x04"
    decoded = SingleObjectCodec(catalog, writer_source=source).decode(data)
    assert (decoded.name, decoded.reader_version, decoded.record) == ("x.Other", None, {"n": 2})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "expected marker c301 at byte position 0, found nothing"),
        (b"\x00\x01" + b"\x00" * 20, "found 0001"),
        (b"\xc3\x01\x00\x00", "too short.*byte position 4"),
    ],
)
def test_bad_header_is_a_decode_error(codec: SingleObjectCodec, data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.decode(data, topic="events", partition=0, offset=7)


def test_truncated_or_trailing_body_names_the_position(
    codec: SingleObjectCodec, catalog: SchemaCatalog
) -> None:
    data = codec.encode(run_started(), catalog.latest("RunStarted"))
    with pytest.raises(DecodeError, match=r"corrupt body.*byte position") as caught:
        codec.decode(data[:-3], topic="events", partition=1, offset=9)
    assert caught.value.offset == 9
    assert not isinstance(caught.value, UnknownSchema)
    with pytest.raises(
        DecodeError, match=f"2 unexpected trailing bytes from byte position {len(data)}"
    ):
        codec.decode(data + b"\x00\x00")


@given(name=st.sampled_from(["RunFailed", "ModelCalled", "ApprovalRequested"]), body=st.binary())
def test_any_body_decodes_or_raises_decode_error(name: str, body: bytes) -> None:
    header = default_catalog().latest(name).header
    try:
        decode(header + body)
    except UnknownSchema:  # the fingerprint is local: this must never happen
        raise
    except DecodeError:
        pass


def test_records_that_do_not_fit_are_validation_errors(
    codec: SingleObjectCodec, catalog: SchemaCatalog
) -> None:
    v2 = catalog.get("RunStarted", 2)
    with pytest.raises(ValidationError, match="RunStarted v2"):
        codec.encode({**run_started(), "agent": 5}, v2)
    with pytest.raises(ValidationError, match="missing"):
        codec.encode({k: v for k, v in run_started().items() if k != "agent"}, v2)
    with pytest.raises(ValidationError):
        codec.encode(run_started(unknown_field=1), v2)


def test_plans_are_prepared_once_per_writer_and_reader(
    codec: SingleObjectCodec, catalog: SchemaCatalog
) -> None:
    data = encode(run_started(), catalog.get("RunStarted", 1))
    codec.decode(data)
    plan = codec._plans[(data[2:10], None)]
    codec.decode(data)
    assert codec._plans[(data[2:10], None)] is plan
    assert plan.reader_parsed is catalog.latest("RunStarted").parsed
