"""Which pairs of a record's versions each mode checks, and the envelope rule.

The resolution rules for one pair are tested in ``test_resolution.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from runstate.errors import CompatibilityError
from runstate.schemas.catalog import SchemaCatalog, SchemaVersion, load_schema_text
from runstate.schemas.compat import (
    CompatibilityMode,
    Direction,
    check_catalog,
    check_versions,
)
from tests.schemas.conftest import WriteSchema, record


def field(name: str, avro_type: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": avro_type, **extra}


def _versions(*schemas: dict[str, Any]) -> list[SchemaVersion]:
    return [load_schema_text(json.dumps(s), version=i + 1) for i, s in enumerate(schemas)]


def test_backward_transitive_checks_every_earlier_version_not_only_the_last() -> None:
    versions = _versions(
        record("R", field("a", "string")),
        record("R"),
        record("R", field("a", "int", default=0)),
    )
    pairs, problems = check_versions(versions, CompatibilityMode.BACKWARD_TRANSITIVE)
    assert pairs == 3
    assert [str(p) for p in problems] == [
        "R v3 (reader) cannot read v1 (writer) [backward, BACKWARD_TRANSITIVE]: R.a: v1 writes"
        " string and v3 reads int, which is not a permitted promotion; keep the earlier type"
        " and carry the new one in a new field with a default (Avro only widens"
        " int->long/float/double, long->float/double, float->double and swaps string<->bytes,"
        " and an old reader never reads a widened type)"
    ]


def test_backward_checks_neighbours_only() -> None:
    versions = _versions(
        record("R", field("a", "string")),
        record("R"),
        record("R", field("a", "int", default=0)),
    )
    assert check_versions(versions, CompatibilityMode.BACKWARD) == (2, [])


def test_full_transitive_also_checks_old_readers_of_new_data() -> None:
    versions = _versions(record("R", field("a", "string")), record("R"))
    assert check_versions(versions, CompatibilityMode.BACKWARD_TRANSITIVE)[1] == []
    pairs, problems = check_versions(versions, CompatibilityMode.FULL_TRANSITIVE)
    assert pairs == 2
    [problem] = problems
    assert problem.subject == "R v1 (reader) cannot read v2 (writer)"
    assert (problem.record, problem.reader_version, problem.writer_version) == ("t.R", 1, 2)
    assert problem.direction is Direction.FORWARD
    assert problem.mode == "forward, FULL_TRANSITIVE"
    assert problem.incompatibility.path == "R.a"


# v1 -> v2 drops a required field (only forward fails), v2 -> v3 adds a required one (only
# backward fails), and v1 -> v3 does both.
THREE = (
    record("R", field("a", "string"), field("b", "int")),
    record("R", field("a", "string")),
    record("R", field("a", "string"), field("c", "int")),
)


@pytest.mark.parametrize(
    ("mode", "pairs", "expected"),
    [
        (CompatibilityMode.BACKWARD, 2, ["R v3 (reader) cannot read v2 (writer)"]),
        (
            CompatibilityMode.BACKWARD_TRANSITIVE,
            3,
            ["R v3 (reader) cannot read v1 (writer)", "R v3 (reader) cannot read v2 (writer)"],
        ),
        (CompatibilityMode.FORWARD, 2, ["R v1 (reader) cannot read v2 (writer)"]),
        (
            CompatibilityMode.FORWARD_TRANSITIVE,
            3,
            ["R v1 (reader) cannot read v2 (writer)", "R v1 (reader) cannot read v3 (writer)"],
        ),
        (
            CompatibilityMode.FULL,
            4,
            ["R v1 (reader) cannot read v2 (writer)", "R v3 (reader) cannot read v2 (writer)"],
        ),
        (
            CompatibilityMode.FULL_TRANSITIVE,
            6,
            [
                "R v1 (reader) cannot read v2 (writer)",
                "R v3 (reader) cannot read v1 (writer)",
                "R v1 (reader) cannot read v3 (writer)",
                "R v3 (reader) cannot read v2 (writer)",
            ],
        ),
    ],
    ids=lambda v: v.value if isinstance(v, CompatibilityMode) else None,
)
def test_each_mode_checks_its_pairs_and_directions(
    mode: CompatibilityMode, pairs: int, expected: list[str]
) -> None:
    checked, problems = check_versions(_versions(*THREE), mode)
    assert checked == pairs
    assert [p.subject for p in problems] == expected


def test_versions_are_checked_oldest_first_whatever_the_given_order() -> None:
    versions = _versions(*THREE)
    assert check_versions(versions[::-1], CompatibilityMode.FULL) == check_versions(
        versions, CompatibilityMode.FULL
    )


def test_the_default_mode_is_full_transitive(write_schema: WriteSchema) -> None:
    write_schema("R.v1.avsc", THREE[0])
    root = write_schema("R.v2.avsc", THREE[1])
    report = check_catalog(SchemaCatalog.from_directory(root))
    assert report.mode is CompatibilityMode.FULL_TRANSITIVE
    assert [str(p.incompatibility) for p in report.problems] == [
        "R.b: field b has no default in v1 and v2 does not write it; keep writing b in v2, or"
        " give b a default in v1 (which helps only readers redeployed with the edited v1)"
    ]


def test_shipped_catalog_is_full_transitive(catalog: SchemaCatalog) -> None:
    report = check_catalog(catalog, mode=CompatibilityMode.FULL_TRANSITIVE)
    assert report.ok, [str(p) for p in report.problems]
    report.raise_if_incompatible()
    assert report.pairs_checked >= 2


ENVELOPE = [
    field("event_id", "string"),
    field("run_id", "string"),
    field("occurred_at", {"type": "long", "logicalType": "timestamp-millis"}),
    field("producer", "string"),
]


def test_envelope_must_be_identical_in_every_event(write_schema: WriteSchema) -> None:
    write_schema("events/A.v1.avsc", record("A", *ENVELOPE, namespace="runstate.events"))
    plain_long = [*ENVELOPE[:2], field("occurred_at", "long"), ENVELOPE[3]]
    write_schema("events/B.v1.avsc", record("B", *plain_long, namespace="runstate.events"))
    root = write_schema("events/C.v1.avsc", record("C", *ENVELOPE[:3], namespace="runstate.events"))
    # Outside the events namespace nothing is required.
    write_schema("state/S.v1.avsc", record("S", namespace="runstate.state"))
    report = check_catalog(SchemaCatalog.from_directory(root))
    assert [str(p.incompatibility) for p in report.problems] == [
        "B.occurred_at: envelope field type long/None differs from long/timestamp-millis in"
        " runstate.events.A v1",
        "C.producer: envelope field missing; every event must carry it",
    ]
    with pytest.raises(CompatibilityError, match="2 schema incompatibilities"):
        report.raise_if_incompatible()
