"""Compatibility of a catalog's contract versions with each other, in a chosen mode.

The resolution rules themselves (can this reader read that writer?) are in
:mod:`runstate.schemas.resolution`; this module decides which pairs of versions must resolve.

runstate's default is ``FULL_TRANSITIVE``: every version reads every earlier one (a consumer
can replay all history) and every earlier version reads every later one (processors, reactors
and outside consumers still running old code keep working through a rolling deploy, while new
producers already write the new version). Every pair, not only neighbours: a deploy can skip
versions, and a topic keeps records of all of them. The envelope (the fields every event
shares) must be identical in every version of every event, which is stricter still: anything
can route and deduplicate any event.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from runstate.errors import CompatibilityError
from runstate.schemas.catalog import SchemaCatalog, SchemaVersion
from runstate.schemas.personal import tag_problems
from runstate.schemas.resolution import Direction, Incompatibility, Node, check_pair, expand, label

__all__ = [
    "ENVELOPE_FIELDS",
    "EVENTS_NAMESPACE",
    "CatalogProblem",
    "CompatibilityMode",
    "CompatibilityReport",
    "Direction",
    "Incompatibility",
    "check_catalog",
    "check_pair",
    "check_versions",
]

#: Fields every event carries, in this order, with the same types in every version.
ENVELOPE_FIELDS = ("event_id", "run_id", "occurred_at", "producer")
EVENTS_NAMESPACE = "runstate.events"


class CompatibilityMode(enum.StrEnum):
    """Which pairs of a record's versions must resolve, and in which direction.

    The names are those of the Confluent Schema Registry, so they mean what people expect:
    a ``_TRANSITIVE`` mode checks every pair of versions, the others only neighbours.
    """

    #: Each version reads the one before it.
    BACKWARD = "BACKWARD"
    #: Each version reads every earlier one.
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    #: Each version is read by the one before it.
    FORWARD = "FORWARD"
    #: Each version is read by every earlier one.
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    #: Backward and forward, between neighbours.
    FULL = "FULL"
    #: Backward and forward, between every pair: runstate's default.
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @property
    def directions(self) -> tuple[Direction, ...]:
        """The directions each checked pair must resolve in."""
        kind = self.value.removesuffix("_TRANSITIVE")
        if kind == "FULL":
            return (Direction.BACKWARD, Direction.FORWARD)
        return (Direction(kind.lower()),)

    @property
    def transitive(self) -> bool:
        """True when every pair of versions is checked, not only neighbours."""
        return self.value.endswith("_TRANSITIVE")


@dataclass(frozen=True)
class CatalogProblem:
    """An incompatibility found in a catalog, with the versions or contract it concerns.

    Attributes:
        subject: Which versions, in words (``StepStarted v1 (reader) cannot read v2
            (writer)``), or which contract for an envelope problem.
        mode: The direction and mode that required the pair to resolve (``forward,
            FULL_TRANSITIVE``), or ``envelope``.
        incompatibility: Where, which rule and what to change.
        record: Full name of the record.
        reader_version: The version that failed to read; None for an envelope problem.
        writer_version: The version whose data it failed to read; None for an envelope problem.
        direction: Backward when the reader is the newer version, forward when it is the older.
    """

    subject: str
    mode: str
    incompatibility: Incompatibility
    record: str = ""
    reader_version: int | None = None
    writer_version: int | None = None
    direction: Direction | None = None

    def __str__(self) -> str:
        return f"{self.subject} [{self.mode}]: {self.incompatibility}"


@dataclass(frozen=True)
class CompatibilityReport:
    """Outcome of :func:`check_catalog`."""

    records: int
    versions: int
    pairs_checked: int
    problems: tuple[CatalogProblem, ...]
    mode: CompatibilityMode = CompatibilityMode.FULL_TRANSITIVE

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


def _pair_problems(
    reader: SchemaVersion, writer: SchemaVersion, direction: Direction, mode: CompatibilityMode
) -> list[CatalogProblem]:
    found = check_pair(
        reader,
        writer,
        reader_label=f"v{reader.version}",
        writer_label=f"v{writer.version}",
        direction=direction,
    )
    subject = (
        f"{reader.short_name} v{reader.version} (reader) cannot read v{writer.version} (writer)"
    )
    return [
        CatalogProblem(
            subject,
            f"{direction.value}, {mode.value}",
            incompatibility,
            record=reader.name,
            reader_version=reader.version,
            writer_version=writer.version,
            direction=direction,
        )
        for incompatibility in found
    ]


def check_versions(
    versions: Sequence[SchemaVersion], mode: CompatibilityMode
) -> tuple[int, list[CatalogProblem]]:
    """Check a record's versions (oldest first) against each other in ``mode``.

    Returns:
        How many (reader, writer) pairs were checked, and the problems found, backward
        before forward for each pair of versions.

    Raises:
        InvalidSchema: a schema refers to a type it never declares.
    """
    ordered = sorted(versions, key=lambda sv: sv.version)
    pairs_of_versions = (
        itertools.combinations(ordered, 2) if mode.transitive else itertools.pairwise(ordered)
    )
    checked = 0
    problems: list[CatalogProblem] = []
    for older, newer in pairs_of_versions:
        for direction in mode.directions:
            reader, writer = (newer, older) if direction is Direction.BACKWARD else (older, newer)
            checked += 1
            problems.extend(_pair_problems(reader, writer, direction, mode))
    return checked, problems


def _type_key(node: Node) -> str:
    """A comparable spelling of a type, logical type included (identity, not compatibility)."""
    if "name" in node:
        return f"{node['type']} {node['name']}"
    if node["type"] in ("array", "map", "union"):
        return label(node)
    return f"{node['type']}/{node.get('logicalType')}"


def _envelope_problems(versions: Iterable[SchemaVersion]) -> list[CatalogProblem]:
    problems: list[CatalogProblem] = []
    first_seen: dict[str, tuple[str, str]] = {}
    mode = "envelope, identical in every event"
    for sv in versions:
        subject = f"{sv.name} v{sv.version}"
        fields = {f["name"]: f for f in expand(sv.definition, None, {}).get("fields", [])}
        for name in ENVELOPE_FIELDS:
            path = f"{sv.short_name}.{name}"
            if name not in fields:
                rule = "envelope field missing; every event must carry it"
                problems.append(
                    CatalogProblem(subject, mode, Incompatibility(path, rule), record=sv.name)
                )
                continue
            key = _type_key(fields[name]["type"])
            where, expected = first_seen.setdefault(name, (subject, key))
            if expected != key:
                rule = f"envelope field type {key} differs from {expected} in {where}"
                problems.append(
                    CatalogProblem(subject, mode, Incompatibility(path, rule), record=sv.name)
                )
    return problems


def check_catalog(
    catalog: SchemaCatalog,
    *,
    mode: CompatibilityMode = CompatibilityMode.FULL_TRANSITIVE,
) -> CompatibilityReport:
    """Check every record's versions in ``mode``, and the envelope of every event version.

    Args:
        catalog: The contract files to check.
        mode: Applied to the versions of each record; the envelope is always held identical.
            ``FULL_TRANSITIVE`` unless a caller knows no older reader is still running.

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
    for name in names:
        for sv, message in tag_problems(catalog.versions(name)):
            problems.append(
                CatalogProblem(
                    f"{sv.name} v{sv.version}",
                    "personal-data tags kept",
                    Incompatibility(sv.short_name, message),
                    record=sv.name,
                )
            )
    return CompatibilityReport(
        records=len(names),
        versions=len(catalog),
        pairs_checked=pairs,
        problems=tuple(problems),
        mode=mode,
    )
