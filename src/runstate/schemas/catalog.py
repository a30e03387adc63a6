"""The catalog of Avro contract files shipped with runstate (``avsc/**/<Name>.v<N>.avsc``).

Every version of every record is kept, not only the newest: a consumer must be able to read
records written by older producers, and the compatibility check compares each version with
every earlier one. Each version is identified on the wire by its CRC-64-AVRO fingerprint
(the Avro specification's Rabin fingerprint of the schema's Parsing Canonical Form), written
as 8 little-endian bytes after the single-object marker.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, cast

from fastavro.schema import parse_schema, to_parsing_canonical_form

from runstate.errors import InvalidSchema

__all__ = [
    "SchemaCatalog",
    "SchemaVersion",
    "crc64_avro",
    "default_catalog",
    "fingerprint_of",
    "load_schema_text",
]

_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_.]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")
_EMPTY64 = 0xC15D213AA4D7A795


def _rabin_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return tuple(table)


_RABIN_TABLE = _rabin_table()


def crc64_avro(data: bytes) -> int:
    """The Avro specification's 64-bit Rabin fingerprint (CRC-64-AVRO) of ``data``.

    Written out here rather than taken from fastavro because the byte order of fastavro's
    hex digest is an undocumented detail; the tests pin this against the Avro project's
    published vectors.

    Returns:
        The fingerprint as an unsigned 64-bit integer. On the wire it is written
        little-endian (``fp.to_bytes(8, "little")``), as the Java implementation does.
    """
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _RABIN_TABLE[(fp ^ byte) & 0xFF]
    return fp


def fingerprint_of(canonical_form: str) -> bytes:
    """The 8 little-endian fingerprint bytes that follow ``C3 01`` in single-object encoding."""
    return crc64_avro(canonical_form.encode("utf-8")).to_bytes(8, "little")


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one record schema, parsed once and reused for every record.

    Attributes:
        name: Full name of the record (``runstate.events.RunStarted``).
        version: The ``N`` of ``<Name>.vN.avsc``; ``0`` for a writer schema that came from
            outside the catalog (the schemas topic) and so has no local version number.
        fingerprint: CRC-64-AVRO of the canonical form, 8 bytes little-endian (wire order).
        canonical_form: The Avro Parsing Canonical Form; what the fingerprint covers.
        definition: The schema JSON as written (with docs, defaults, aliases, logical types).
        parsed: fastavro's parsed form, passed straight to fastavro's reader and writer.
        source: Where the schema came from, for error messages.
    """

    name: str
    version: int
    fingerprint: bytes
    canonical_form: str = field(compare=False, repr=False)
    definition: Mapping[str, Any] = field(compare=False, repr=False)
    parsed: dict[str, Any] = field(compare=False, repr=False)
    source: str = field(default="", compare=False)

    @property
    def short_name(self) -> str:
        """The record name without its namespace (``RunStarted``)."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint bytes in wire order, as hex (what a hexdump shows after ``c301``)."""
        return self.fingerprint.hex()

    @property
    def header(self) -> bytes:
        """The 10-byte single-object header for records written with this schema."""
        return b"\xc3\x01" + self.fingerprint


def load_schema_text(text: str, *, version: int = 0, source: str = "") -> SchemaVersion:
    """Parse one self-contained record schema from JSON text.

    Used for contract files and for writer schemas fetched from elsewhere, so both are
    fingerprinted the same way.

    Raises:
        InvalidSchema: the text is not JSON, not a valid Avro schema, or not a record.
    """
    try:
        definition = json.loads(text)
    except ValueError as exc:
        raise InvalidSchema(f"{source or 'schema'}: not valid JSON ({exc}); fix the file") from exc
    if not isinstance(definition, dict) or definition.get("type") not in ("record", "error"):
        raise InvalidSchema(f"{source or 'schema'}: the top level must be a record")
    try:
        parsed = cast("dict[str, Any]", parse_schema(definition))
        canonical: str = to_parsing_canonical_form(parsed)
    except Exception as exc:  # fastavro raises several unrelated types for bad schemas
        raise InvalidSchema(f"{source or 'schema'}: not a valid Avro schema: {exc}") from exc
    return SchemaVersion(
        name=str(parsed["name"]),
        version=version,
        fingerprint=fingerprint_of(canonical),
        canonical_form=canonical,
        definition=definition,
        parsed=parsed,
        source=source,
    )


def _walk(directory: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".avsc"):
            yield f"{prefix}{entry.name}", entry


class SchemaCatalog:
    """All versions of all record schemas, looked up by name, version or fingerprint.

    Names may be given in full (``runstate.events.RunStarted``) or short (``RunStarted``) as
    long as the short name is unambiguous across namespaces.

    Two versions may share a fingerprint when they differ only in docs or defaults (which the
    canonical form leaves out); their binary layout is then identical, and
    :meth:`by_fingerprint` answers with the newer one.
    """

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        """Index ``versions``.

        Raises:
            InvalidSchema: two entries claim the same name and version.
        """
        self._by_name: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for sv in versions:
            same = self._by_name.setdefault(sv.name, [])
            if any(other.version == sv.version for other in same):
                raise InvalidSchema(
                    f"{sv.source}: {sv.name} v{sv.version} is defined twice; remove one"
                )
            same.append(sv)
            known = self._by_fingerprint.get(sv.fingerprint)
            if known is None or known.version < sv.version:
                self._by_fingerprint[sv.fingerprint] = sv
        for same in self._by_name.values():
            same.sort(key=lambda sv: sv.version)
        self._short: dict[str, list[str]] = {}
        for full in self._by_name:
            self._short.setdefault(full.rsplit(".", 1)[-1], []).append(full)

    @classmethod
    def from_package(cls) -> SchemaCatalog:
        """The contract files shipped inside the installed ``runstate`` package.

        Raises:
            InvalidSchema: a shipped file is malformed or misnamed (a packaging bug).
        """
        return cls.from_traversable(resources.files("runstate.schemas").joinpath("avsc"))

    @classmethod
    def from_directory(cls, path: Path | str) -> SchemaCatalog:
        """The contract files under ``path`` (any depth), e.g. a working copy being edited.

        Raises:
            InvalidSchema: ``path`` is not a directory, or a file is malformed or misnamed.
        """
        path = Path(path)
        if not path.is_dir():
            raise InvalidSchema(f"{path}: not a directory of .avsc files")
        return cls.from_traversable(path)

    @classmethod
    def from_traversable(cls, root: Traversable) -> SchemaCatalog:
        """Load every ``<Name>.v<N>.avsc`` below ``root``; subfolders are only for grouping.

        Raises:
            InvalidSchema: a file is malformed, or its name does not match the record inside.
        """
        loaded = []
        for relative, entry in _walk(root, ""):
            match = _FILE_NAME.match(entry.name)
            if match is None:
                raise InvalidSchema(
                    f"{relative}: contract files must be named <RecordName>.v<N>.avsc"
                )
            try:
                text = entry.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidSchema(
                    f"{relative}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset"
                    f" {exc.start}); save it as UTF-8"
                ) from exc
            except OSError as exc:
                raise InvalidSchema(
                    f"{relative}: cannot read it ({exc.strerror or exc}); check that you may"
                ) from exc
            sv = load_schema_text(text, version=int(match["version"]), source=relative)
            if match["name"] not in (sv.name, sv.short_name):
                raise InvalidSchema(
                    f"{relative}: file is named for {match['name']!r} but defines {sv.name!r};"
                    " rename the file or the record"
                )
            loaded.append(sv)
        return cls(loaded)

    def _full_name(self, name: str) -> str:
        if name in self._by_name:
            return name
        candidates = self._short.get(name, [])
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise KeyError(f"{name!r} is ambiguous ({', '.join(candidates)}); use the full name")
        raise KeyError(f"no schema named {name!r} in the catalog")

    def versions(self, name: str) -> list[SchemaVersion]:
        """Every version of ``name``, oldest first; empty when the name is unknown."""
        try:
            return list(self._by_name[self._full_name(name)])
        except KeyError:
            return []

    def latest(self, name: str) -> SchemaVersion:
        """The newest version of ``name``: what this code writes and reads into.

        Raises:
            KeyError: no schema of that name, or a short name matching several namespaces.
        """
        return self._by_name[self._full_name(name)][-1]

    def get(self, name: str, version: int) -> SchemaVersion:
        """One exact version.

        Raises:
            KeyError: no such name or version.
        """
        for sv in self._by_name[self._full_name(name)]:
            if sv.version == version:
                return sv
        raise KeyError(f"{name} has no version {version}")

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The version with this 8-byte (wire order) fingerprint, or None if not local."""
        return self._by_fingerprint.get(fingerprint)

    def names(self) -> list[str]:
        """Full names of all records in the catalog, sorted."""
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[SchemaVersion]:
        """Every version of every record, by name then version."""
        for name in self.names():
            yield from self._by_name[name]

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_name.values())


@functools.cache
def default_catalog() -> SchemaCatalog:
    """The shipped catalog, loaded once per process.

    Raises:
        InvalidSchema: a shipped contract file is broken (a packaging bug).
    """
    return SchemaCatalog.from_package()
