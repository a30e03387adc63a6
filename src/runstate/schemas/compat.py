"""Schema compatibility, by the Avro specification's schema-resolution rules.

Written out here rather than delegated to fastavro: fastavro resolves while it reads, so it
only fails on the data it happens to see, and its messages do not name the field. These rules
are checked over the schemas themselves, so an incompatible contract fails ``runstate schemas
check`` before any record is written with it.

Two modes matter to runstate. Each event record is ``BACKWARD_TRANSITIVE``: the newest
version can read records of every earlier one, so a consumer can always replay history. The
envelope (the fields every event shares) must be identical in every version of every event,
which is stricter than ``FULL_TRANSITIVE``: anything can route and deduplicate any event.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runstate.errors import CompatibilityError, InvalidSchema
from runstate.schemas.catalog import SchemaCatalog, SchemaVersion

__all__ = [
    "ENVELOPE_FIELDS",
    "EVENTS_NAMESPACE",
    "CatalogProblem",
    "CompatibilityMode",
    "CompatibilityReport",
    "Incompatibility",
    "check_catalog",
    "check_pair",
    "check_versions",
]

#: Fields every event carries, in this order, with the same types in every version.
ENVELOPE_FIELDS = ("event_id", "run_id", "occurred_at", "producer")
EVENTS_NAMESPACE = "runstate.events"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
#: (writer type, reader type) pairs the specification lets a reader promote.
_PROMOTIONS = frozenset(
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

Node = dict[str, Any]


class CompatibilityMode(enum.StrEnum):
    """Which directions a sequence of versions must be readable in."""

    #: Each version can read records written with every earlier version.
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    #: As backward, and every earlier version can also read every later one.
    FULL_TRANSITIVE = "FULL_TRANSITIVE"


@dataclass(frozen=True)
class Incompatibility:
    """One broken resolution rule at one place in the reader schema.

    Attributes:
        path: Where, from the reader's record name (``RunStarted.tenant``); ``[]`` marks array
            items, ``{}`` map values and ``<type>`` a branch of the writer's union.
        rule: The rule broken, in words.
    """

    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


@dataclass(frozen=True)
class CatalogProblem:
    """An incompatibility found in a catalog, with the versions or contract it concerns."""

    subject: str
    mode: str
    incompatibility: Incompatibility

    def __str__(self) -> str:
        return f"{self.subject} [{self.mode}]: {self.incompatibility}"


@dataclass(frozen=True)
class CompatibilityReport:
    """Outcome of :func:`check_catalog`."""

    records: int
    versions: int
    pairs_checked: int
    problems: tuple[CatalogProblem, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is incompatible."""
        return not self.problems

    def raise_if_incompatible(self) -> None:
        """Raise when there is any problem, naming every one.

        Raises:
            CompatibilityError: at least one problem was found.
        """
        if self.problems:
            lines = "\n".join(f"  {p}" for p in self.problems)
            raise CompatibilityError(
                f"{len(self.problems)} schema incompatibilities; fix the contract files:\n{lines}"
            )


def _qualify(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _expand(schema: Any, namespace: str | None, names: dict[str, Node]) -> Node:
    """Turn Avro JSON into nodes with full names, aliases qualified and references resolved.

    Named types are registered before their fields are expanded, so recursive records
    resolve to the same node (the check below stops on pairs it has already seen).
    """
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return {"type": schema}
        for candidate in (_qualify(schema, namespace), schema):
            if candidate in names:
                return names[candidate]
        raise InvalidSchema(f"unknown type {schema!r}: declare it before referring to it")
    if isinstance(schema, list):
        return {"type": "union", "branches": [_expand(b, namespace, names) for b in schema]}
    if not isinstance(schema, Mapping) or "type" not in schema:
        raise InvalidSchema(f"not an Avro schema: {schema!r}")
    kind = schema["type"]
    if not isinstance(kind, str) or (kind not in _NAMED and kind not in ("array", "map")):
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return {"type": kind, "logicalType": schema.get("logicalType")}
        return _expand(kind, namespace, names)
    if kind == "array":
        return {"type": "array", "items": _expand(schema["items"], namespace, names)}
    if kind == "map":
        return {"type": "map", "values": _expand(schema["values"], namespace, names)}
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
                "type": _expand(f["type"], inner, names),
            }
            for f in schema["fields"]
        ]
    return node


def _label(node: Node) -> str:
    if node["type"] == "union":
        return "[" + ", ".join(_label(b) for b in node["branches"]) + "]"
    if node["type"] in _NAMED:
        return f"{node['type']} {node['name']}"
    if node["type"] == "array":
        return f"array<{_label(node['items'])}>"
    if node["type"] == "map":
        return f"map<{_label(node['values'])}>"
    return str(node["type"])


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _names_match(reader: Node, writer: Node) -> bool:
    return _short(reader["name"]) == _short(writer["name"]) or writer["name"] in reader["aliases"]


def _shallow_match(reader: Node, writer: Node, *, promote: bool) -> bool:
    if reader["type"] != writer["type"]:
        return promote and (writer["type"], reader["type"]) in _PROMOTIONS
    return reader["type"] not in _NAMED or _names_match(reader, writer)


class _Resolver:
    """Walks a reader and a writer schema together, collecting every rule they break."""

    def __init__(self) -> None:
        self.found: list[Incompatibility] = []
        self._seen: set[tuple[int, int]] = set()

    def _fail(self, path: str, rule: str) -> None:
        self.found.append(Incompatibility(path, rule))

    def resolve(self, reader: Node, writer: Node, path: str) -> None:
        if writer["type"] == "union":
            for branch in writer["branches"]:
                self.resolve(reader, branch, f"{path}<{_label(branch)}>")
            return
        if reader["type"] == "union":
            branches = reader["branches"]
            chosen = next((b for b in branches if _shallow_match(b, writer, promote=False)), None)
            chosen = chosen or next(
                (b for b in branches if _shallow_match(b, writer, promote=True)), None
            )
            if chosen is None:
                self._fail(
                    path,
                    f"writer type {_label(writer)} matches no branch of reader union "
                    f"{_label(reader)}",
                )
            else:
                self.resolve(chosen, writer, path)
            return
        if reader["type"] != writer["type"]:
            if (writer["type"], reader["type"]) not in _PROMOTIONS:
                self._fail(
                    path,
                    f"type changed from {_label(writer)} (writer) to {_label(reader)} (reader),"
                    " which is not a permitted promotion",
                )
            return
        kind = reader["type"]
        if kind in _NAMED:
            if not _names_match(reader, writer):
                self._fail(
                    path,
                    f"{kind} name {writer['name']} (writer) matches neither the name nor an alias"
                    f" of {reader['name']} (reader)",
                )
                return
            if (id(reader), id(writer)) in self._seen:
                return
            self._seen.add((id(reader), id(writer)))
        if kind == "record":
            self._record(reader, writer, path)
        elif kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and not reader["has_default"]:
                self._fail(
                    path,
                    f"writer enum symbol(s) {', '.join(missing)} missing in reader enum "
                    f"{_short(reader['name'])}, which has no default symbol",
                )
        elif kind == "fixed" and reader["size"] != writer["size"]:
            self._fail(
                path, f"fixed size changed from {writer['size']} (writer) to {reader['size']}"
            )
        elif kind == "array":
            self.resolve(reader["items"], writer["items"], f"{path}[]")
        elif kind == "map":
            self.resolve(reader["values"], writer["values"], f"{path}{{}}")

    def _record(self, reader: Node, writer: Node, path: str) -> None:
        by_name = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            field_path = f"{path}.{field['name']}"
            match = by_name.get(field["name"])
            if match is None:
                match = next((by_name[a] for a in field["aliases"] if a in by_name), None)
            if match is not None:
                self.resolve(field["type"], match["type"], field_path)
            elif not field["has_default"]:
                self._fail(field_path, "field missing in writer has no default in reader")


def _as_node(schema: SchemaVersion | Mapping[str, Any] | list[Any] | str) -> Node:
    definition = schema.definition if isinstance(schema, SchemaVersion) else schema
    return _expand(definition, None, {})


def check_pair(
    reader: SchemaVersion | Mapping[str, Any] | list[Any] | str,
    writer: SchemaVersion | Mapping[str, Any] | list[Any] | str,
) -> list[Incompatibility]:
    """Every reason ``reader`` cannot read data written with ``writer``; empty if it can.

    Args:
        reader: The schema a consumer decodes into (a catalog entry or Avro JSON value).
        writer: The schema the data was written with.

    Raises:
        InvalidSchema: either schema refers to a type it never declares.
    """
    reader_node, writer_node = _as_node(reader), _as_node(writer)
    root = _short(reader_node["name"]) if "name" in reader_node else _label(reader_node)
    resolver = _Resolver()
    resolver.resolve(reader_node, writer_node, root)
    return resolver.found


def check_versions(
    versions: Sequence[SchemaVersion], mode: CompatibilityMode
) -> tuple[int, list[CatalogProblem]]:
    """Check a record's versions (oldest first) against each other in ``mode``.

    Returns:
        How many (reader, writer) pairs were checked, and the problems found.
    """
    pairs = 0
    problems: list[CatalogProblem] = []
    for older, newer in itertools.combinations(versions, 2):
        directions = [(newer, older)]
        if mode is CompatibilityMode.FULL_TRANSITIVE:
            directions.append((older, newer))
        for reader, writer in directions:
            pairs += 1
            subject = f"{reader.name} v{reader.version} reading v{writer.version}"
            problems.extend(
                CatalogProblem(subject, mode.value, found) for found in check_pair(reader, writer)
            )
    return pairs, problems


def _type_key(node: Node) -> str:
    """A comparable spelling of a type, logical type included (identity, not compatibility)."""
    if node["type"] in _PRIMITIVES:
        return f"{node['type']}/{node.get('logicalType')}"
    if node["type"] in _NAMED:
        return f"{node['type']} {node['name']}"
    return _label(node)


def _envelope_problems(versions: Iterable[SchemaVersion]) -> list[CatalogProblem]:
    problems: list[CatalogProblem] = []
    first_seen: dict[str, tuple[str, str]] = {}
    mode = f"{CompatibilityMode.FULL_TRANSITIVE.value}, envelope"
    for sv in versions:
        subject = f"{sv.name} v{sv.version}"
        fields = {f["name"]: f for f in _as_node(sv).get("fields", [])}
        for name in ENVELOPE_FIELDS:
            path = f"{sv.short_name}.{name}"
            if name not in fields:
                rule = "envelope field missing; every event must carry it"
                problems.append(CatalogProblem(subject, mode, Incompatibility(path, rule)))
                continue
            key = _type_key(fields[name]["type"])
            where, expected = first_seen.setdefault(name, (subject, key))
            if expected != key:
                rule = f"envelope field type {key} differs from {expected} in {where}"
                problems.append(CatalogProblem(subject, mode, Incompatibility(path, rule)))
    return problems


def check_catalog(
    catalog: SchemaCatalog,
    *,
    mode: CompatibilityMode = CompatibilityMode.BACKWARD_TRANSITIVE,
) -> CompatibilityReport:
    """Check every record's versions in ``mode``, and the envelope of every event version.

    Args:
        catalog: The contract files to check.
        mode: Applied to the versions of each record; the envelope is always held identical.

    Returns:
        A report; call :meth:`CompatibilityReport.raise_if_incompatible` to fail on problems.

    Raises:
        InvalidSchema: a schema refers to a type it never declares.
    """
    pairs = 0
    problems: list[CatalogProblem] = []
    names = catalog.names()
    for name in names:
        checked, found = check_versions(catalog.versions(name), mode)
        pairs += checked
        problems.extend(found)
    events = [sv for sv in catalog if sv.name.startswith(EVENTS_NAMESPACE + ".")]
    problems.extend(_envelope_problems(events))
    return CompatibilityReport(
        records=len(names), versions=len(catalog), pairs_checked=pairs, problems=tuple(problems)
    )
