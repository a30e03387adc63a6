"""The Avro specification's resolution rules, each checked in both directions.

Every case is a change from an old schema (v1) to a new one (v2). "Backward" is v2 reading
data v1 wrote (replaying history); "forward" is v1 reading data v2 writes (a consumer not yet
redeployed). Where the check says a direction works, fastavro must actually read a record
written the other side; where it says it fails, fastavro must fail on a record that exercises
the broken rule (a second opinion from an independent implementation).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from runstate.errors import InvalidSchema
from runstate.schemas.resolution import Direction, check_pair
from tests.schemas.conftest import record


def field(name: str, avro_type: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": avro_type, **extra}


def fastavro_reads(writer: Any, reader: Any, datum: Any) -> Any:
    """Second opinion: actually write with ``writer`` and read with ``reader``."""
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(writer), datum)
    buffer.seek(0)
    return schemaless_reader(buffer, parse_schema(writer), parse_schema(reader))


def backward(change: Change) -> list[str]:
    """What keeps v2 from reading v1's data, as ``runstate schemas check`` words it."""
    found = check_pair(
        change.new,
        change.old,
        reader_label="v2",
        writer_label="v1",
        direction=Direction.BACKWARD,
    )
    return [str(problem) for problem in found]


def forward(change: Change) -> list[str]:
    """What keeps v1 from reading v2's data."""
    found = check_pair(
        change.old,
        change.new,
        reader_label="v1",
        writer_label="v2",
        direction=Direction.FORWARD,
    )
    return [str(problem) for problem in found]


@dataclass(frozen=True)
class Change:
    """A v1 -> v2 change, a record written with each, and the problems expected each way.

    ``backward`` / ``forward`` hold one expected prefix per problem, in order; empty means
    the direction must resolve.
    """

    old: dict[str, Any]
    new: dict[str, Any]
    old_datum: dict[str, Any]
    new_datum: dict[str, Any]
    backward: tuple[str, ...] = ()
    forward: tuple[str, ...] = ()


def one_field(old_type: Any, new_type: Any, old_value: Any, new_value: Any, **new: Any) -> Change:
    """A change of the type of field ``a`` in record ``R`` (``new`` adds e.g. a default)."""
    return Change(
        record("R", field("a", old_type)),
        record("R", field("a", new_type, **new)),
        {"a": old_value},
        {"a": new_value},
    )


def expect(
    change: Change, *, backward: tuple[str, ...] = (), forward: tuple[str, ...] = ()
) -> Change:
    return Change(change.old, change.new, change.old_datum, change.new_datum, backward, forward)


COLOR = {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}
INNER = {"type": "record", "name": "Inner", "fields": [field("x", "int")]}
NOT_PROMOTABLE = "which is not a permitted promotion; keep the earlier type"
LONG_VALUE = 2**40

CHANGES: dict[str, Change] = {
    # Records: fields added and removed.
    "added field with default": Change(
        record("R", field("a", "string")),
        record("R", field("a", "string"), field("b", ["null", "string"], default=None)),
        {"a": "x"},
        {"a": "x", "b": "y"},
    ),
    "added field without default": expect(
        Change(
            record("R", field("a", "string")),
            record("R", field("a", "string"), field("b", "int")),
            {"a": "x"},
            {"a": "x", "b": 1},
        ),
        backward=(
            "R.b: field b has no default in v2 and v1 does not write it; give b a default in v2",
        ),
    ),
    "removed field with default": Change(
        record("R", field("a", "string"), field("b", "int", default=0)),
        record("R", field("a", "string")),
        {"a": "x", "b": 1},
        {"a": "x"},
    ),
    "removed field without default": expect(
        Change(
            record("R", field("a", "string"), field("b", "int")),
            record("R", field("a", "string")),
            {"a": "x", "b": 1},
            {"a": "x"},
        ),
        forward=(
            "R.b: field b has no default in v1 and v2 does not write it; keep writing b in v2,"
            " or give b a default in v1 (which helps only readers redeployed with the edited v1)",
        ),
    ),
    "fields reordered": Change(
        record("R", field("a", "string"), field("b", "int")),
        record("R", field("b", "int"), field("a", "string")),
        {"a": "x", "b": 1},
        {"a": "x", "b": 1},
    ),
    "field renamed with an alias": expect(
        Change(
            record("R", field("old", "string")),
            record("R", field("new", "string", aliases=["old"])),
            {"old": "x"},
            {"new": "x"},
        ),
        forward=("R.old: field old has no default in v1 and v2 does not write it",),
    ),
    # Promotions: allowed from writer to reader only, so one direction fails.
    "int to long": expect(
        one_field("int", "long", 1, LONG_VALUE),
        forward=(f"R.a: v2 writes long and v1 reads int, {NOT_PROMOTABLE}",),
    ),
    "int to float": expect(
        one_field("int", "float", 1, 1.5),
        forward=(f"R.a: v2 writes float and v1 reads int, {NOT_PROMOTABLE}",),
    ),
    "int to double": expect(
        one_field("int", "double", 1, 1.5),
        forward=(f"R.a: v2 writes double and v1 reads int, {NOT_PROMOTABLE}",),
    ),
    "long to float": expect(
        one_field("long", "float", LONG_VALUE, 1.5),
        forward=(f"R.a: v2 writes float and v1 reads long, {NOT_PROMOTABLE}",),
    ),
    "long to double": expect(
        one_field("long", "double", LONG_VALUE, 1.5),
        forward=(f"R.a: v2 writes double and v1 reads long, {NOT_PROMOTABLE}",),
    ),
    "float to double": expect(
        one_field("float", "double", 1.5, 1e300),
        forward=(f"R.a: v2 writes double and v1 reads float, {NOT_PROMOTABLE}",),
    ),
    "long to int (a narrowing)": expect(
        one_field("long", "int", LONG_VALUE, 1),
        backward=(f"R.a: v1 writes long and v2 reads int, {NOT_PROMOTABLE}",),
    ),
    # string and bytes convert into each other, so both directions work.
    "string to bytes": one_field("string", "bytes", "x", b"y"),
    "bytes to string": one_field("bytes", "string", b"x", "y"),
    "string to int (no promotion either way)": expect(
        one_field("string", "int", "x", 1),
        backward=(f"R.a: v1 writes string and v2 reads int, {NOT_PROMOTABLE}",),
        forward=(f"R.a: v2 writes int and v1 reads string, {NOT_PROMOTABLE}",),
    ),
    "boolean to int": expect(
        one_field("boolean", "int", True, 1),
        backward=(f"R.a: v1 writes boolean and v2 reads int, {NOT_PROMOTABLE}",),
        forward=(f"R.a: v2 writes int and v1 reads boolean, {NOT_PROMOTABLE}",),
    ),
    # Enums.
    "enum symbol added, no default": expect(
        one_field(COLOR, {**COLOR, "symbols": ["RED", "GREEN", "BLUE"]}, "GREEN", "BLUE"),
        forward=(
            "R.a: v2 may write enum Color symbol(s) BLUE, which v1 lacks, and v1 gives the enum"
            " no default symbol; do not add BLUE to Color in v2, or give Color a default symbol"
            " in v1",
        ),
    ),
    "enum symbol added, old reader has a default": one_field(
        {**COLOR, "default": "RED"},
        {**COLOR, "symbols": ["RED", "GREEN", "BLUE"], "default": "RED"},
        "GREEN",
        "BLUE",
    ),
    "enum symbol removed, no default": expect(
        one_field(COLOR, {**COLOR, "symbols": ["RED"]}, "GREEN", "RED"),
        backward=(
            "R.a: v1 may write enum Color symbol(s) GREEN, which v2 lacks, and v2 gives the enum"
            " no default symbol; add GREEN to Color in v2, or give it a default symbol",
        ),
    ),
    "enum symbol removed, new reader has a default": one_field(
        COLOR, {**COLOR, "symbols": ["RED"], "default": "RED"}, "GREEN", "RED"
    ),
    "enum renamed": expect(
        one_field(COLOR, {**COLOR, "name": "Colour"}, "RED", "RED"),
        backward=(
            "R.a: enum name t.Color in v1 matches neither the name nor an alias of t.Colour",
        ),
        forward=("R.a: enum name t.Colour in v2 matches neither the name nor an alias of t.Color",),
    ),
    # Unions.
    "became optional (reader union, writer not)": expect(
        one_field("string", ["null", "string"], "x", None, default=None),
        forward=(
            "R.a<null>: v2 may write null (a branch of its union [null, string]) and v1 reads"
            " only string; drop the null branch from the union in v2",
        ),
    ),
    "became required (writer union, reader not)": expect(
        Change(
            record("R", field("a", ["null", "string"], default=None)),
            record("R", field("a", "string")),
            {"a": None},
            {"a": "x"},
        ),
        backward=(
            "R.a<null>: v1 may write null (a branch of its union [null, string]) and v2 reads"
            " only string; make the type a union with a null branch in v2",
        ),
    ),
    "union branch added": expect(
        one_field(["null", "string"], ["null", "string", "int"], None, 3),
        forward=(
            "R.a<int>: v2 writes int, which matches no branch of the union [null, string] that"
            " v1 reads; write one of [null, string] in v2",
        ),
    ),
    "union branch removed": expect(
        one_field(["null", "string", "int"], ["null", "string"], 3, None),
        backward=("R.a<int>: v1 writes int, which matches no branch of the union",),
    ),
    "union branches reordered": one_field(["null", "string"], ["string", "null"], None, "x"),
    "reader union branch found by promotion": expect(
        one_field("int", ["null", "long"], 1, LONG_VALUE, default=None),
        forward=(
            "R.a<null>: v2 may write null (a branch of its union [null, long]) and v1 reads"
            " only int",
            "R.a<long>: v2 may write long (a branch of its union [null, long]) and v1 reads"
            " only int; drop the long branch from the union in v2",
        ),
    ),
    "union branch of a record matched by name": expect(
        one_field(
            ["null", INNER],
            ["null", {**INNER, "fields": [field("x", "long")]}],
            {"x": 1},
            {"x": LONG_VALUE},
        ),
        forward=(f"R.a<record t.Inner>.x: v2 writes long and v1 reads int, {NOT_PROMOTABLE}",),
    ),
    # Record names and aliases.
    "record renamed without an alias": expect(
        Change(record("R", field("a", "int")), record("S", field("a", "int")), {"a": 1}, {"a": 1}),
        backward=(
            "S: record name t.R in v1 matches neither the name nor an alias of t.S in v2;"
            " add the alias t.R to t.S in v2",
        ),
        forward=(
            "R: record name t.S in v2 matches neither the name nor an alias of t.R in v1;"
            " keep the name R in v2, or add the alias t.S to t.R in v1",
        ),
    ),
    "record renamed with an alias": expect(
        Change(
            record("R", field("a", "int")),
            {**record("S", field("a", "int")), "aliases": ["R"]},
            {"a": 1},
            {"a": 1},
        ),
        forward=("R: record name t.S in v2 matches neither the name nor an alias of t.R",),
    ),
    # Nested records, arrays and maps resolve recursively.
    "nested record gains a required field": expect(
        one_field(
            INNER,
            {**INNER, "fields": [field("x", "int"), field("y", "string")]},
            {"x": 1},
            {"x": 1, "y": "z"},
        ),
        backward=("R.a.y: field y has no default in v2 and v1 does not write it",),
    ),
    "nested record loses a required field": expect(
        one_field(
            {**INNER, "fields": [field("x", "int"), field("y", "string")]},
            INNER,
            {"x": 1, "y": "z"},
            {"x": 1},
        ),
        forward=("R.a.y: field y has no default in v1 and v2 does not write it",),
    ),
    "array items promoted": expect(
        one_field(
            {"type": "array", "items": "int"}, {"type": "array", "items": "long"}, [1], [LONG_VALUE]
        ),
        forward=(f"R.a[]: v2 writes long and v1 reads int, {NOT_PROMOTABLE}",),
    ),
    "map values changed": expect(
        one_field(
            {"type": "map", "values": "string"},
            {"type": "map", "values": "int"},
            {"k": "x"},
            {"k": 1},
        ),
        backward=(f"R.a{{}}: v1 writes string and v2 reads int, {NOT_PROMOTABLE}",),
        forward=(f"R.a{{}}: v2 writes int and v1 reads string, {NOT_PROMOTABLE}",),
    ),
    "map of arrays of records, item field promoted": expect(
        one_field(
            {"type": "map", "values": {"type": "array", "items": INNER}},
            {
                "type": "map",
                "values": {"type": "array", "items": {**INNER, "fields": [field("x", "double")]}},
            },
            {"k": [{"x": 1}]},
            {"k": [{"x": 0.5}]},
        ),
        forward=(f"R.a{{}}[].x: v2 writes double and v1 reads int, {NOT_PROMOTABLE}",),
    ),
    "array became a map": expect(
        one_field(
            {"type": "array", "items": "int"}, {"type": "map", "values": "int"}, [1], {"k": 1}
        ),
        backward=(f"R.a: v1 writes array<int> and v2 reads map<int>, {NOT_PROMOTABLE}",),
        forward=(f"R.a: v2 writes map<int> and v1 reads array<int>, {NOT_PROMOTABLE}",),
    ),
    # Fixed.
    "fixed size changed": expect(
        one_field(
            {"type": "fixed", "name": "F", "size": 4},
            {"type": "fixed", "name": "F", "size": 8},
            b"abcd",
            b"abcdefgh",
        ),
        backward=("R.a: fixed F is 4 bytes in v1 and 8 bytes in v2; the size of a fixed type",),
        forward=("R.a: fixed F is 8 bytes in v2 and 4 bytes in v1; the size of a fixed type",),
    ),
    "fixed renamed": expect(
        one_field(
            {"type": "fixed", "name": "F", "size": 4},
            {"type": "fixed", "name": "G", "size": 4},
            b"abcd",
            b"abcd",
        ),
        backward=("R.a: fixed name t.F in v1 matches neither the name nor an alias of t.G",),
        forward=("R.a: fixed name t.G in v2 matches neither the name nor an alias of t.F",),
    ),
    "recursive record": Change(
        record("Node", field("next", ["null", "t.Node"], default=None)),
        record("Node", field("next", ["null", "Node"], default=None)),
        {"next": {"next": None}},
        {"next": None},
    ),
}

IDS = list(CHANGES)


def _assert_problems(found: list[str], expected: tuple[str, ...]) -> None:
    assert len(found) == len(expected), found
    for problem, prefix in zip(found, expected, strict=True):
        assert problem.startswith(prefix), (problem, prefix)


@pytest.mark.parametrize("change", CHANGES.values(), ids=IDS)
def test_backward_new_version_reads_old_data(change: Change) -> None:
    _assert_problems(backward(change), change.backward)
    if change.backward:
        with pytest.raises(Exception):  # noqa: B017 - any fastavro failure is a second opinion
            fastavro_reads(change.old, change.new, change.old_datum)
    else:
        fastavro_reads(change.old, change.new, change.old_datum)


@pytest.mark.parametrize("change", CHANGES.values(), ids=IDS)
def test_forward_old_version_reads_new_data(change: Change) -> None:
    _assert_problems(forward(change), change.forward)
    if change.forward:
        with pytest.raises(Exception):  # noqa: B017 - any fastavro failure is a second opinion
            fastavro_reads(change.new, change.old, change.new_datum)
    else:
        fastavro_reads(change.new, change.old, change.new_datum)


def test_without_a_direction_both_fixes_are_offered() -> None:
    change = CHANGES["removed field without default"]
    assert [str(p) for p in check_pair(change.old, change.new)] == [
        "R.b: field b has no default in the reader and the writer does not write it;"
        " give b a default in the reader, or keep writing b in the writer"
    ]


def test_record_names_compare_unqualified() -> None:
    assert check_pair(record("R", namespace="a"), record("R", namespace="b")) == []


def test_every_problem_is_reported_not_only_the_first() -> None:
    writer = record("R", field("a", "string"), field("b", "string"))
    reader = record("R", field("a", "int"), field("b", "int"), field("c", "int"))
    assert [p.path for p in check_pair(reader, writer)] == ["R.a", "R.b", "R.c"]


def test_undeclared_type_is_invalid_schema() -> None:
    with pytest.raises(InvalidSchema, match="unknown type 'Nope'"):
        check_pair(record("R", field("a", "Nope")), record("R"))


PRIMITIVE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    # Valid UTF-8 only: bytes promote to string by the rules, but a reader can only decode
    # text, and which bytes a producer writes is a matter of data, not of the schemas.
    "bytes": st.text(max_size=8).map(str.encode),
    "string": st.text(max_size=8),
}


@given(
    writer_type=st.sampled_from(sorted(PRIMITIVE_VALUES)),
    reader_type=st.sampled_from(sorted(PRIMITIVE_VALUES)),
    data=st.data(),
)
def test_primitive_verdict_agrees_with_fastavro(
    writer_type: str, reader_type: str, data: st.DataObject
) -> None:
    """For every pair of primitives, the check passes exactly when fastavro can read."""
    value = data.draw(PRIMITIVE_VALUES[writer_type])
    writer = record("R", field("a", writer_type))
    reader = record("R", field("a", reader_type))
    compatible = check_pair(reader, writer) == []
    try:
        fastavro_reads(writer, reader, {"a": value})
    except Exception:  # any failure to read counts as "cannot read"
        readable = False
    else:
        readable = True
    assert compatible == readable, (writer_type, reader_type, value)


# Properties over generated records: whatever the other fields are, the rules for adding and
# removing a field hold, and every schema reads itself.
_SIMPLE_TYPES = st.sampled_from(sorted(PRIMITIVE_VALUES))


@st.composite
def _field_types(draw: st.DrawFn, index: int) -> Any:
    """A field type: a primitive, an array or map of one, an optional one, an enum or fixed."""
    kind = draw(st.sampled_from(["primitive", "array", "map", "optional", "enum", "fixed"]))
    inner = draw(_SIMPLE_TYPES)
    if kind == "array":
        return {"type": "array", "items": inner}
    if kind == "map":
        return {"type": "map", "values": inner}
    if kind == "optional":
        return ["null", inner] if inner != "null" else "null"
    if kind == "enum":
        symbols = draw(st.lists(st.sampled_from("ABCDE"), min_size=1, max_size=5, unique=True))
        return {"type": "enum", "name": f"E{index}", "symbols": symbols}
    if kind == "fixed":
        return {"type": "fixed", "name": f"F{index}", "size": draw(st.integers(1, 16))}
    return inner


@st.composite
def _records(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(0, 6))
    return record("R", *(field(f"f{i}", draw(_field_types(i))) for i in range(count)))


def _with(schema: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "fields": [*schema["fields"], extra]}


def _both_ways(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    return backward(Change(old, new, {}, {})), forward(Change(old, new, {}, {}))


@given(_records())
def test_every_schema_reads_itself(schema: dict[str, Any]) -> None:
    assert check_pair(schema, schema) == []


@given(_records(), _SIMPLE_TYPES)
def test_a_field_added_or_removed_with_a_default_is_fully_compatible(
    schema: dict[str, Any], new_type: str
) -> None:
    optional = field("extra", ["null", new_type] if new_type != "null" else "null", default=None)
    assert _both_ways(schema, _with(schema, optional)) == ([], [])
    assert _both_ways(_with(schema, optional), schema) == ([], [])


@given(_records(), _SIMPLE_TYPES)
def test_a_required_field_breaks_exactly_the_direction_that_lacks_it(
    schema: dict[str, Any], new_type: str
) -> None:
    required = field("extra", new_type)
    added_backward, added_forward = _both_ways(schema, _with(schema, required))
    assert [p.split(":")[0] for p in added_backward] == ["R.extra"]
    assert added_forward == []
    removed_backward, removed_forward = _both_ways(_with(schema, required), schema)
    assert removed_backward == []
    assert [p.split(":")[0] for p in removed_forward] == ["R.extra"]
