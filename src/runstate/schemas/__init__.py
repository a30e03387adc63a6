"""Avro event contracts, their catalog, the single-object codec and compatibility rules.

The lowest layer: it imports nothing else from runstate except :mod:`runstate.errors`.
"""

from __future__ import annotations

from runstate.schemas.catalog import (
    SchemaCatalog,
    SchemaVersion,
    crc64_avro,
    default_catalog,
    fingerprint_of,
    load_schema_text,
)
from runstate.schemas.codec import (
    DecodedRecord,
    InMemoryWriterSchemaSource,
    SingleObjectCodec,
    WriterSchemaSource,
    decode,
    default_codec,
    encode,
)
from runstate.schemas.compat import (
    CatalogProblem,
    CompatibilityMode,
    CompatibilityReport,
    Direction,
    Incompatibility,
    check_catalog,
    check_pair,
    check_versions,
)
from runstate.schemas.convert import decode_event, encode_event, event_to_record, record_to_event

__all__ = [
    "CatalogProblem",
    "CompatibilityMode",
    "CompatibilityReport",
    "DecodedRecord",
    "Direction",
    "InMemoryWriterSchemaSource",
    "Incompatibility",
    "SchemaCatalog",
    "SchemaVersion",
    "SingleObjectCodec",
    "WriterSchemaSource",
    "check_catalog",
    "check_pair",
    "check_versions",
    "crc64_avro",
    "decode",
    "decode_event",
    "default_catalog",
    "default_codec",
    "encode",
    "encode_event",
    "event_to_record",
    "fingerprint_of",
    "load_schema_text",
    "record_to_event",
]
