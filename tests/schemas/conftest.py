"""Fixtures for the schemas tests: the shipped catalog and a factory for scratch catalogs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from runstate.schemas.catalog import SchemaCatalog, default_catalog

WriteSchema = Callable[[str, Mapping[str, Any]], Path]


@pytest.fixture
def catalog() -> SchemaCatalog:
    return default_catalog()


@pytest.fixture
def write_schema(tmp_path: Path) -> WriteSchema:
    """Factory: write ``schema`` as ``tmp_path/<relative>`` and return the catalog root."""

    def write(relative: str, schema: Mapping[str, Any]) -> Path:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(schema))
        return tmp_path

    return write


def record(name: str, *fields: Mapping[str, Any], namespace: str = "t") -> dict[str, Any]:
    """A record schema in namespace ``t`` (short to write in tests)."""
    return {"type": "record", "name": name, "namespace": namespace, "fields": list(fields)}
