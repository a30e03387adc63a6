"""Can one schema read data written with another? The Avro specification's resolution rules.

Written out here rather than delegated to fastavro: fastavro resolves while it reads, so it
only fails on the data it happens to see, and its messages do not name the field. These rules
are checked over the schemas themselves, so an incompatible contract fails ``runstate schemas
check`` before any record is written with it.

A reader reads a writer's data when (the "Schema Resolution" section of the specification):

* both are the same primitive, or the writer's type promotes to the reader's
  (int -> long, float, double; long -> float, double; float -> double; string <-> bytes);
* both are records, enums or fixed types of the same unqualified name, or the reader lists
  the writer's full name among its aliases;
* record fields match by name (or a reader field alias); a writer field the reader lacks is
  skipped, a reader field the writer lacks needs a default in the reader;
* every symbol the writer's enum can write is in the reader's enum, or the reader's enum has
  a default symbol;
* fixed types have the same size; array items and map values resolve recursively;
* a writer union: every branch it may write must resolve against the reader; a reader union:
  the first branch that matches the writer (exactly, else by promotion) is used.

Every failure says where (a path from the reader's record), which rule, and what to change.
What to change depends on which side is the newer version: an older version is already
deployed and its data written, so the fix belongs in the newer one (see :class:`Direction`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runstate.errors import InvalidSchema
from runstate.schemas.catalog import SchemaVersion

__all__ = ["PROMOTIONS", "Direction", "Incompatibility", "check_pair", "expand", "label"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
#: (writer type, reader type) pairs the specification lets a reader promote.
PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)
_TYPE_FIX = (
    "keep the earlier type and carry the new one in a new field with a default (Avro only"
    " widens int->long/float/double, long->float/double, float->double and swaps"
    " string<->bytes, and an old reader never reads a widened type)"
)

Node = dict[str, Any]


class Direction(enum.StrEnum):
    """Which way a pair of versions is read, so a failure can say which version to change."""

    #: The newer version reads data the older one wrote (a consumer replaying history).
    BACKWARD = "backward"
    #: The older version reads data the newer one writes (a consumer not yet redeployed).
    FORWARD = "forward"


@dataclass(frozen=True)
class Incompatibility:
    """One broken resolution rule at one place in the reader schema.

    Attributes:
        path: Where, from the reader's record name (``RunStarted.tenant``); ``[]`` marks array
            items, ``{}`` map values and ``<type>`` a branch of the writer's union.
        rule: The rule broken, in words, naming the reader and the writer.
        fix: What to change so the pair becomes compatible.
    """

    path: str
    rule: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}" + (f"; {self.fix}" if self.fix else "")


def _qualify(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def expand(schema: Any, namespace: str | None, names: dict[str, Node]) -> Node:
    """Turn Avro JSON into nodes with full names, aliases qualified and references resolved.

    Named types are registered before their fields are expanded, so recursive records
    resolve to the same node (the resolver stops on pairs it has already seen).

    Raises:
        InvalidSchema: the schema refers to a type it never declares, or is not Avro JSON.
    """
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return {"type": schema}
        for candidate in (_qualify(schema, namespace), schema):
            if candidate in names:
                return names[candidate]
        raise InvalidSchema(f"unknown type {schema!r}: declare it before referring to it")
    if isinstance(schema, list):
        return {"type": "union", "branches": [expand(b, namespace, names) for b in schema]}
    if not isinstance(schema, Mapping) or "type" not in schema:
        raise InvalidSchema(f"not an Avro schema: {schema!r}")
    kind = schema["type"]
    if not isinstance(kind, str) or (kind not in _NAMED and kind not in ("array", "map")):
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return {"type": kind, "logicalType": schema.get("logicalType")}
        return expand(kind, namespace, names)
    if kind == "array":
        return {"type": "array", "items": expand(schema["items"], namespace, names)}
    if kind == "map":
        return {"type": "map", "values": expand(schema["values"], namespace, names)}
    full = _qualify(schema["name"], schema.get("namespace", namespace))
    inner = full.rsplit(".", 1)[0] if "." in full else None
    node: Node = {
        "type": "record" if kind == "error" else kind,
        "name": full,
        "aliases": [_qualify(a, inner) for a in schema.get("aliases", [])],
    }
    names[full] = node
    if kind == "enum":
        node["symbols"] = list(schema["symbols"])
        node["has_default"] = "default" in schema
    elif kind == "fixed":
        node["size"] = schema["size"]
    else:
        node["fields"] = [
            {
                "name": f["name"],
                "aliases": list(f.get("aliases", [])),
                "has_default": "default" in f,
                "type": expand(f["type"], inner, names),
            }
            for f in schema["fields"]
        ]
    return node


def label(node: Node) -> str:
    """A short human spelling of a type (``[null, string]``, ``array<long>``)."""
    if node["type"] == "union":
        return "[" + ", ".join(label(b) for b in node["branches"]) + "]"
    if node["type"] in _NAMED:
        return f"{node['type']} {node['name']}"
    if node["type"] == "array":
        return f"array<{label(node['items'])}>"
    if node["type"] == "map":
        return f"map<{label(node['values'])}>"
    return str(node["type"])


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _names_match(reader: Node, writer: Node) -> bool:
    return _short(reader["name"]) == _short(writer["name"]) or writer["name"] in reader["aliases"]


def _shallow_match(reader: Node, writer: Node, *, promote: bool) -> bool:
    if reader["type"] != writer["type"]:
        return promote and (writer["type"], reader["type"]) in PROMOTIONS
    return reader["type"] not in _NAMED or _names_match(reader, writer)


class _Resolver:
    """Walks a reader and a writer schema together, collecting every rule they break."""

    def __init__(self, reader_label: str, writer_label: str, direction: Direction | None) -> None:
        self.found: list[Incompatibility] = []
        self._seen: set[tuple[int, int]] = set()
        self._r = reader_label
        self._w = writer_label
        self._direction = direction

    def _fail(
        self,
        path: str,
        rule: str,
        *,
        reader_fix: str,
        writer_fix: str,
        retrofit: str | None = None,
    ) -> None:
        """Record a failure with the fix that belongs in the newer version.

        Args:
            reader_fix: The change to the reader that would make it read the writer.
            writer_fix: The change to the writer that would make it readable.
            retrofit: A change to an already deployed (older) reader that leaves its wire
                form and fingerprint alone (a default, an alias); offered as a second choice
                because it only helps readers redeployed with the edited file.
        """
        if self._direction is Direction.BACKWARD:
            fix = reader_fix
        elif self._direction is Direction.FORWARD:
            fix = writer_fix
            if retrofit:
                fix += (
                    f", or {retrofit} (which helps only readers redeployed with the edited"
                    f" {self._r})"
                )
        else:
            fix = reader_fix if reader_fix == writer_fix else f"{reader_fix}, or {writer_fix}"
        self.found.append(Incompatibility(path, rule, fix))

    def resolve(self, reader: Node, writer: Node, path: str) -> None:
        if writer["type"] == "union":
            for branch in writer["branches"]:
                self._writer_branch(reader, branch, writer, f"{path}<{label(branch)}>")
            return
        if reader["type"] == "union":
            self._reader_union(reader, writer, path)
            return
        if reader["type"] != writer["type"]:
            if (writer["type"], reader["type"]) not in PROMOTIONS:
                self._fail(
                    path,
                    f"{self._w} writes {label(writer)} and {self._r} reads {label(reader)},"
                    " which is not a permitted promotion",
                    reader_fix=_TYPE_FIX,
                    writer_fix=_TYPE_FIX,
                )
            return
        kind = reader["type"]
        if kind in _NAMED:
            if not _names_match(reader, writer):
                self._fail(
                    path,
                    f"{kind} name {writer['name']} in {self._w} matches neither the name nor an"
                    f" alias of {reader['name']} in {self._r}",
                    reader_fix=f"add the alias {writer['name']} to {reader['name']} in {self._r}",
                    writer_fix=f"keep the name {_short(reader['name'])} in {self._w}",
                    retrofit=f"add the alias {writer['name']} to {reader['name']} in {self._r}",
                )
                return
            if (id(reader), id(writer)) in self._seen:
                return
            self._seen.add((id(reader), id(writer)))
        if kind == "record":
            self._record(reader, writer, path)
        elif kind == "enum":
            self._enum(reader, writer, path)
        elif kind == "fixed" and reader["size"] != writer["size"]:
            fix = "the size of a fixed type cannot change; add a new field with a new fixed type"
            self._fail(
                path,
                f"fixed {_short(reader['name'])} is {writer['size']} bytes in {self._w} and"
                f" {reader['size']} bytes in {self._r}",
                reader_fix=fix,
                writer_fix=fix,
            )
        elif kind == "array":
            self.resolve(reader["items"], writer["items"], f"{path}[]")
        elif kind == "map":
            self.resolve(reader["values"], writer["values"], f"{path}{{}}")

    def _writer_branch(self, reader: Node, branch: Node, union: Node, path: str) -> None:
        """Each type a writer's union may write must be readable; say which one is not."""
        if reader["type"] in ("union", branch["type"]) or (
            (branch["type"], reader["type"]) in PROMOTIONS
        ):
            self.resolve(reader, branch, path)
            return
        self._fail(
            path,
            f"{self._w} may write {label(branch)} (a branch of its union {label(union)}) and"
            f" {self._r} reads only {label(reader)}",
            reader_fix=f"make the type a union with a {label(branch)} branch in {self._r}",
            writer_fix=f"drop the {label(branch)} branch from the union in {self._w}",
        )

    def _reader_union(self, reader: Node, writer: Node, path: str) -> None:
        branches = reader["branches"]
        chosen = next((b for b in branches if _shallow_match(b, writer, promote=False)), None)
        chosen = chosen or next(
            (b for b in branches if _shallow_match(b, writer, promote=True)), None
        )
        if chosen is not None:
            self.resolve(chosen, writer, path)
            return
        self._fail(
            path,
            f"{self._w} writes {label(writer)}, which matches no branch of the union"
            f" {label(reader)} that {self._r} reads",
            reader_fix=f"add a {label(writer)} branch to the union in {self._r}",
            writer_fix=f"write one of {label(reader)} in {self._w}",
        )

    def _enum(self, reader: Node, writer: Node, path: str) -> None:
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if not missing or reader["has_default"]:
            return
        symbols = ", ".join(missing)
        name = _short(reader["name"])
        self._fail(
            path,
            f"{self._w} may write enum {name} symbol(s) {symbols}, which {self._r} lacks, and"
            f" {self._r} gives the enum no default symbol",
            reader_fix=f"add {symbols} to {name} in {self._r}, or give it a default symbol",
            writer_fix=f"do not add {symbols} to {name} in {self._w}",
            retrofit=f"give {name} a default symbol in {self._r}",
        )

    def _record(self, reader: Node, writer: Node, path: str) -> None:
        by_name = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            field_path = f"{path}.{name}"
            match = by_name.get(name)
            if match is None:
                match = next((by_name[a] for a in field["aliases"] if a in by_name), None)
            if match is not None:
                self.resolve(field["type"], match["type"], field_path)
            elif not field["has_default"]:
                self._fail(
                    field_path,
                    f"field {name} has no default in {self._r} and {self._w} does not write it",
                    reader_fix=f"give {name} a default in {self._r}",
                    writer_fix=f"keep writing {name} in {self._w}",
                    retrofit=f"give {name} a default in {self._r}",
                )


def _as_node(schema: SchemaVersion | Mapping[str, Any] | list[Any] | str) -> Node:
    definition = schema.definition if isinstance(schema, SchemaVersion) else schema
    return expand(definition, None, {})


def check_pair(
    reader: SchemaVersion | Mapping[str, Any] | list[Any] | str,
    writer: SchemaVersion | Mapping[str, Any] | list[Any] | str,
    *,
    reader_label: str = "the reader",
    writer_label: str = "the writer",
    direction: Direction | None = None,
) -> list[Incompatibility]:
    """Every reason ``reader`` cannot read data written with ``writer``; empty if it can.

    Args:
        reader: The schema a consumer decodes into (a catalog entry or Avro JSON value).
        writer: The schema the data was written with.
        reader_label: How messages name the reader (``v1``).
        writer_label: How messages name the writer (``v2``).
        direction: Whether the reader is the newer version (backward) or the older (forward),
            so each fix names the version that can still change; None offers both.

    Raises:
        InvalidSchema: either schema refers to a type it never declares.
    """
    reader_node, writer_node = _as_node(reader), _as_node(writer)
    root = _short(reader_node["name"]) if "name" in reader_node else label(reader_node)
    resolver = _Resolver(reader_label, writer_label, direction)
    resolver.resolve(reader_node, writer_node, root)
    return resolver.found
