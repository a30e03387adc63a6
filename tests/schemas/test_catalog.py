from __future__ import annotations

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint

from runstate.errors import InvalidSchema
from runstate.schemas.catalog import SchemaCatalog, crc64_avro, fingerprint_of, load_schema_text
from runstate.schemas.events import EVENT_TYPES
from tests.schemas.conftest import WriteSchema, record

# Published by the Avro project (share/test/data/schema-tests.txt) as signed Java longs.
AVRO_VECTORS = [
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"string"', -8142146995180207161),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    (
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
        7843277075252814651,
    ),
]


@pytest.mark.parametrize(("canonical", "java_long"), AVRO_VECTORS)
def test_crc64_matches_the_avro_project_vectors(canonical: str, java_long: int) -> None:
    assert crc64_avro(canonical.encode()) == java_long % 2**64
    # Java writes the long little-endian after C3 01; fastavro's hex digest agrees.
    wire = java_long.to_bytes(8, "little", signed=True)
    assert fingerprint_of(canonical) == wire
    assert fastavro_fingerprint(canonical, "CRC-64-AVRO") == wire.hex()


def test_every_event_type_is_shipped_and_its_newest_version_carries_the_epoch(
    catalog: SchemaCatalog,
) -> None:
    assert {f"runstate.events.{name}" for name in EVENT_TYPES} <= set(catalog.names())
    # RunStarted v2 added the tenant, then every event gained the lease epoch.
    assert [sv.version for sv in catalog.versions("RunStarted")] == [1, 2, 3]
    assert catalog.latest("RunClaimed").version == 1
    # Operators' events came after the lease; decisions and requests gained who decides.
    operators = {"StepRetryRequested", "ExternalActionResolved"}
    deciders = {"ApprovalRequested", "ApprovalGranted", "ApprovalRejected"}
    for name in operators:
        assert catalog.latest(name).version == 1
    for name in deciders:
        assert catalog.latest(name).version == 3
    for name in set(EVENT_TYPES) - {"RunStarted", "RunClaimed"} - operators - deciders:
        assert catalog.latest(name).version == 2
    for name in EVENT_TYPES:
        fields = {f["name"]: f for f in catalog.latest(name).definition["fields"]}
        epoch = fields["epoch"]
        assert (epoch["type"], epoch["default"]) == (["null", "long"], None), name


def test_lookups_by_name_and_fingerprint(catalog: SchemaCatalog) -> None:
    latest = catalog.latest("runstate.events.RunStarted")
    assert catalog.latest("RunStarted") is latest
    assert catalog.get("RunStarted", 1).version == 1
    assert catalog.by_fingerprint(latest.fingerprint) is latest
    assert catalog.by_fingerprint(b"\x00" * 8) is None
    assert catalog.versions("NoSuchEvent") == []
    with pytest.raises(KeyError):
        catalog.latest("NoSuchEvent")
    assert latest.header == b"\xc3\x01" + latest.fingerprint
    assert latest.fingerprint == fingerprint_of(latest.canonical_form)


def test_fingerprints_are_distinct_per_version(catalog: SchemaCatalog) -> None:
    fingerprints = [sv.fingerprint for sv in catalog]
    assert len(set(fingerprints)) == len(fingerprints)


def test_any_subfolder_is_loaded(write_schema: WriteSchema) -> None:
    write_schema("a/Foo.v1.avsc", record("Foo", {"name": "x", "type": "int"}))
    root = write_schema("b/c/Bar.v3.avsc", record("Bar", {"name": "y", "type": "string"}))
    catalog = SchemaCatalog.from_directory(root)
    assert catalog.names() == ["t.Bar", "t.Foo"]
    assert catalog.latest("Bar").source == "b/c/Bar.v3.avsc"


def test_short_names_that_clash_need_the_full_name(write_schema: WriteSchema) -> None:
    write_schema("Foo.v1.avsc", record("Foo", {"name": "x", "type": "int"}, namespace="a"))
    root = write_schema("Foo.v2.avsc", record("Foo", {"name": "x", "type": "int"}, namespace="b"))
    catalog = SchemaCatalog.from_directory(root)
    with pytest.raises(KeyError, match="ambiguous"):
        catalog.latest("Foo")
    assert catalog.latest("b.Foo").version == 2


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("Foo.avsc", record("Foo"), "must be named"),
        ("Foo.v0.avsc", record("Foo"), "must be named"),
        ("Bar.v1.avsc", record("Foo"), "named for 'Bar' but defines 't.Foo'"),
        ("Foo.v1.avsc", {"type": "enum", "name": "Foo", "symbols": ["A"]}, "must be a record"),
        ("Foo.v1.avsc", record("Foo", {"name": "x", "type": "Nope"}), "not a valid Avro schema"),
    ],
)
def test_bad_contract_files_are_refused_naming_the_file(
    write_schema: WriteSchema, file_name: str, content: dict[str, object], message: str
) -> None:
    root = write_schema(f"events/{file_name}", content)
    with pytest.raises(InvalidSchema, match=message) as caught:
        SchemaCatalog.from_directory(root)
    assert f"events/{file_name}" in str(caught.value)


def test_invalid_json_and_duplicates_are_refused(write_schema: WriteSchema) -> None:
    with pytest.raises(InvalidSchema, match="not valid JSON"):
        load_schema_text("{nope", source="x.avsc")
    write_schema("a/Foo.v1.avsc", record("Foo"))
    root = write_schema("b/Foo.v1.avsc", record("Foo"))
    with pytest.raises(InvalidSchema, match="defined twice"):
        SchemaCatalog.from_directory(root)


def test_versions_differing_only_in_defaults_share_a_fingerprint(
    write_schema: WriteSchema,
) -> None:
    write_schema("Foo.v1.avsc", record("Foo", {"name": "x", "type": "string"}))
    root = write_schema(
        "Foo.v2.avsc", record("Foo", {"name": "x", "type": "string", "default": ""})
    )
    catalog = SchemaCatalog.from_directory(root)
    v1, v2 = catalog.versions("Foo")
    assert v1.fingerprint == v2.fingerprint
    assert catalog.by_fingerprint(v1.fingerprint) is v2
