"""Personal-data tags in the contracts: which fields may hold data about a person.

A field that may hold personal data - a name, an e-mail address, a free-form input, output,
comment or tag - carries the custom schema property ``"personal": true`` in its contract
file. Avro ignores custom properties when it resolves or fingerprints a schema (the Parsing
Canonical Form leaves them out), so tagging a field changes no fingerprint and no record.

The tags are what everything that must treat such data differently reads: masking in the
archive, the personal-data launch check, and encryption at the producer. So a tag must never
disappear by accident: :func:`tag_problems` reports a field tagged in one version of a
contract and present but untagged in a later one (``schemas check`` fails on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from runstate.schemas.catalog import SchemaVersion

__all__ = ["PERSONAL", "field_paths", "personal_fields", "tag_problems"]

#: The custom property that tags a field.
PERSONAL: Final = "personal"


def _walk(definition: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, bool]]:
    """``(path, tagged)`` of every field of a record, into records defined inline."""
    for f in definition.get("fields", []):
        path = f"{prefix}{f['name']}"
        yield path, f.get(PERSONAL) is True
        for nested in _records(f["type"]):
            yield from _walk(nested, path + ".")


def _records(node: Any) -> list[Mapping[str, Any]]:
    """Records defined inline in a type (directly, in a union, an array or a map)."""
    if isinstance(node, list):
        return [r for branch in node for r in _records(branch)]
    if not isinstance(node, Mapping):
        return []
    kind = node.get("type")
    if kind == "record":
        return [node]
    if kind == "array":
        return _records(node.get("items"))
    if kind == "map":
        return _records(node.get("values"))
    return []


def field_paths(definition: Mapping[str, Any]) -> frozenset[str]:
    """Every field of a record schema, nested ones as ``approval.subject``."""
    return frozenset(path for path, _ in _walk(definition, ""))


def personal_fields(definition: Mapping[str, Any]) -> frozenset[str]:
    """The fields of a record schema tagged as personal data (dotted paths)."""
    return frozenset(path for path, tagged in _walk(definition, "") if tagged)


def tag_problems(versions: Sequence[SchemaVersion]) -> list[tuple[SchemaVersion, str]]:
    """Tags dropped between versions of one record: ``(version, message)`` pairs.

    A field tagged in any earlier version that a later version still has must stay tagged
    there. Adding a tag is always allowed; removing a field is the resolution rules' concern.
    """
    problems: list[tuple[SchemaVersion, str]] = []
    tagged_in: dict[str, int] = {}
    for sv in sorted(versions, key=lambda v: v.version):
        present = field_paths(sv.definition)
        mine = personal_fields(sv.definition)
        for path, version in sorted(tagged_in.items()):
            if path in present and path not in mine:
                problems.append(
                    (
                        sv,
                        f"field {path} was tagged as personal data in v{version} and is not"
                        f' here: add "{PERSONAL}": true to it (a tag must not be dropped'
                        " silently: masking, checks and encryption rely on it)",
                    )
                )
        for path in mine:
            tagged_in.setdefault(path, sv.version)
    return problems
