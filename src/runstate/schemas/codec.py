"""Avro single-object encoding: ``C3 01``, the writer schema's fingerprint, then the body.

The fingerprint makes every record self-describing, so a consumer can read records from
producers older or newer than itself: it finds the writer schema (locally, or through a
:class:`WriterSchemaSource` such as the schemas topic) and resolves it into its own newest
version of the record. Everything that can be prepared once per (writer, reader) pair is
prepared once and cached, so the per-record cost is fastavro's own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Protocol, cast

from fastavro import schemaless_reader, schemaless_writer

from runstate.errors import DecodeError, InvalidSchema, UnknownSchema, ValidationError
from runstate.schemas.catalog import (
    SchemaCatalog,
    SchemaVersion,
    default_catalog,
    load_schema_text,
)
from runstate.schemas.compat import check_pair

__all__ = [
    "MARKER",
    "DecodedRecord",
    "InMemoryWriterSchemaSource",
    "SingleObjectCodec",
    "WriterSchemaSource",
    "decode",
    "default_codec",
    "encode",
]

MARKER = b"\xc3\x01"
_HEADER_SIZE = len(MARKER) + 8


class WriterSchemaSource(Protocol):
    """Where writer schemas unknown to the local catalog are found (e.g. the schemas topic)."""

    def lookup(self, fingerprint: bytes) -> str | None:
        """The schema JSON whose CRC-64-AVRO fingerprint is ``fingerprint``, or None.

        Args:
            fingerprint: 8 bytes, little-endian, exactly as they follow ``C3 01`` on the wire.
        """
        ...


class InMemoryWriterSchemaSource:
    """A :class:`WriterSchemaSource` held in a dict; for tests and tools without Kafka."""

    def __init__(self, schemas: Iterable[str] = ()) -> None:
        """Start with ``schemas`` (JSON texts) already added.

        Raises:
            InvalidSchema: one of them is not a valid Avro record schema.
        """
        self._by_fingerprint: dict[bytes, str] = {}
        for text in schemas:
            self.add(text)

    def add(self, schema_json: str) -> bytes:
        """Remember a schema; returns its fingerprint (wire order).

        Raises:
            InvalidSchema: the text is not a valid Avro record schema.
        """
        fingerprint = load_schema_text(schema_json).fingerprint
        self._by_fingerprint[fingerprint] = schema_json
        return fingerprint

    def lookup(self, fingerprint: bytes) -> str | None:
        """The schema JSON added under ``fingerprint``, or None."""
        return self._by_fingerprint.get(fingerprint)


@dataclass(frozen=True)
class DecodedRecord:
    """A decoded record and the schemas it was written and read with.

    Attributes:
        name: Full record name it was read as (the reader's name).
        writer_fingerprint: Fingerprint from the record's header (wire order).
        writer_version: Local version of the writer schema; None when the writer schema came
            from the :class:`WriterSchemaSource` (a producer newer than this code).
        reader_version: Local version the record was resolved into; None when this code has
            no schema of that name and returned the record as written.
        record: Field values; timestamps as aware UTC datetimes, enums as strings.
    """

    name: str
    writer_fingerprint: bytes
    writer_version: int | None
    reader_version: int | None
    record: dict[str, Any]


@dataclass(frozen=True)
class _Plan:
    """What decoding one (writer fingerprint, reader name) pair needs, prepared once."""

    writer: SchemaVersion
    writer_is_local: bool
    reader: SchemaVersion | None
    #: None when the writer schema is read as is (same schema, or no local reader).
    reader_parsed: dict[str, Any] | None
    #: Why the writer cannot be read as the reader; raised on every record of this pair.
    incompatible: str | None


def encode(record: Mapping[str, Any], schema: SchemaVersion) -> bytes:
    """Encode ``record`` with ``schema`` in Avro single-object encoding.

    Args:
        record: Field values; every field without a default must be present, and no others.
        schema: The writer schema (usually ``catalog.latest(name)``).

    Raises:
        ValidationError: the record does not fit the schema; nothing was encoded.
    """
    buffer = BytesIO()
    buffer.write(MARKER)
    buffer.write(schema.fingerprint)
    try:
        schemaless_writer(buffer, schema.parsed, record, strict_allow_default=True)
    except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError, OverflowError...
        raise ValidationError(
            f"record does not fit {schema.name} v{schema.version}: {exc}; fix the values"
        ) from exc
    return buffer.getvalue()


class SingleObjectCodec:
    """Encodes with a given schema version; decodes into the reader's newest local version.

    Safe to share between threads: the caches only ever gain complete entries.
    """

    def __init__(
        self, catalog: SchemaCatalog, *, writer_source: WriterSchemaSource | None = None
    ) -> None:
        """Build a codec over ``catalog``.

        Args:
            catalog: Local schemas: what this code writes and reads into.
            writer_source: Consulted for writer fingerprints the catalog does not know.
        """
        self.catalog = catalog
        self._writer_source = writer_source
        self._foreign: dict[bytes, SchemaVersion] = {}
        self._plans: dict[tuple[bytes, str | None], _Plan] = {}

    def encode(self, record: Mapping[str, Any], schema: SchemaVersion) -> bytes:
        """See :func:`encode`."""
        return encode(record, schema)

    def decode(
        self,
        data: bytes,
        *,
        reader_name: str | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> DecodedRecord:
        """Decode one single-object-encoded record.

        Args:
            data: The record bytes (a Kafka record value).
            reader_name: Read as this record (its newest local version); by default, as the
                writer's record name.
            topic: Where the bytes came from; only for error messages.
            partition: As ``topic``.
            offset: As ``topic``.

        Raises:
            DecodeError: not single-object encoded, corrupt body, trailing bytes, or the
                writer schema cannot be resolved into the reader's.
            UnknownSchema: the writer fingerprint is neither local nor in the writer source.
        """
        if len(data) < _HEADER_SIZE or data[:2] != MARKER:
            raise DecodeError(
                _header_problem(data), topic=topic, partition=partition, offset=offset
            )
        fingerprint = bytes(data[2:_HEADER_SIZE])
        plan = self._plans.get((fingerprint, reader_name))
        if plan is None:
            plan = self._plan(fingerprint, reader_name, topic, partition, offset)
        if plan.incompatible is not None:
            raise DecodeError(plan.incompatible, topic=topic, partition=partition, offset=offset)
        buffer = BytesIO(data)
        buffer.seek(_HEADER_SIZE)
        try:
            record = cast(
                "dict[str, Any]", schemaless_reader(buffer, plan.writer.parsed, plan.reader_parsed)
            )
        except Exception as exc:  # corrupt bytes surface as EOF, index, unicode, value errors
            raise DecodeError(
                f"corrupt body of a {plan.writer.name} record: {type(exc).__name__}: {exc}"
                f" (stopped at byte position {buffer.tell()} of {len(data)}); the record cannot"
                " be read, skip it or restore it from the archive",
                topic=topic,
                partition=partition,
                offset=offset,
            ) from exc
        if buffer.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buffer.tell()} unexpected trailing bytes from byte position"
                f" {buffer.tell()} after a {plan.writer.name} record; the record is corrupt"
                " or was written with a different schema than its fingerprint names",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        reader = plan.reader
        return DecodedRecord(
            name=reader.name if reader is not None else plan.writer.name,
            writer_fingerprint=fingerprint,
            writer_version=plan.writer.version if plan.writer_is_local else None,
            reader_version=reader.version if reader is not None else None,
            record=record,
        )

    def writer_schema(
        self,
        fingerprint: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> tuple[SchemaVersion, bool]:
        """The writer schema for ``fingerprint`` and whether it is in the local catalog.

        Raises:
            UnknownSchema: neither the catalog nor the writer source knows it, or the source
                answered with a schema of a different fingerprint.
        """
        local = self.catalog.by_fingerprint(fingerprint)
        if local is not None:
            return local, True
        foreign = self._foreign.get(fingerprint)
        if foreign is not None:
            return foreign, False
        text = self._writer_source.lookup(fingerprint) if self._writer_source else None
        if text is None:
            raise UnknownSchema(
                f"writer schema with fingerprint {fingerprint.hex()} is unknown here"
                + ("" if self._writer_source else " and no writer schema source was given")
                + "; make sure producers register their schemas (schemas topic) or upgrade",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        try:
            foreign = load_schema_text(text, source=f"writer schema {fingerprint.hex()}")
        except InvalidSchema as exc:
            raise UnknownSchema(
                f"the writer schema source returned a bad schema: {exc}",
                topic=topic,
                partition=partition,
                offset=offset,
            ) from exc
        if foreign.fingerprint != fingerprint:
            raise UnknownSchema(
                f"the writer schema source answered {fingerprint.hex()} with a schema whose"
                f" fingerprint is {foreign.fingerprint.hex()}; its registry is corrupt",
                topic=topic,
                partition=partition,
                offset=offset,
            )
        self._foreign[fingerprint] = foreign
        return foreign, False

    def _plan(
        self,
        fingerprint: bytes,
        reader_name: str | None,
        topic: str | None,
        partition: int | None,
        offset: int | None,
    ) -> _Plan:
        writer, is_local = self.writer_schema(
            fingerprint, topic=topic, partition=partition, offset=offset
        )
        if reader_name is not None:
            try:
                reader: SchemaVersion | None = self.catalog.latest(reader_name)
            except KeyError as exc:
                raise DecodeError(
                    f"cannot read as {reader_name!r}: {exc.args[0]}",
                    topic=topic,
                    partition=partition,
                    offset=offset,
                ) from exc
        else:
            known = self.catalog.versions(writer.name)
            reader = known[-1] if known else None
        incompatible = None
        if reader is not None and reader.fingerprint != writer.fingerprint:
            problems = check_pair(reader, writer)
            if problems:
                incompatible = (
                    f"records written with {writer.name} (fingerprint {fingerprint.hex()}) cannot"
                    f" be read as {reader.name} v{reader.version}: "
                    + "; ".join(str(p) for p in problems)
                )
        same = reader is None or reader.fingerprint == writer.fingerprint
        plan = _Plan(
            writer=writer,
            writer_is_local=is_local,
            reader=reader,
            reader_parsed=None if same or reader is None else reader.parsed,
            incompatible=incompatible,
        )
        self._plans[(fingerprint, reader_name)] = plan
        return plan


def _header_problem(data: bytes) -> str:
    if len(data) < len(MARKER) or data[:2] != MARKER:
        return (
            f"not Avro single-object encoded: expected marker c301 at byte position 0, found"
            f" {bytes(data[:2]).hex() or 'nothing'}; was this written by a runstate producer?"
        )
    return (
        f"record of {len(data)} bytes is too short: the header needs {_HEADER_SIZE}"
        f" (marker and 8-byte fingerprint), truncated at byte position {len(data)}"
    )


@functools.cache
def default_codec() -> SingleObjectCodec:
    """A codec over the shipped catalog without a writer source (one per process)."""
    return SingleObjectCodec(default_catalog())


def decode(
    data: bytes,
    *,
    reader_name: str | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> DecodedRecord:
    """Decode with :func:`default_codec`; see :meth:`SingleObjectCodec.decode`.

    Raises:
        DecodeError: the bytes are not a readable record.
        UnknownSchema: the writer schema is not in the shipped catalog.
    """
    return default_codec().decode(
        data, reader_name=reader_name, topic=topic, partition=partition, offset=offset
    )
