"""``runstate schemas``: run through the real top-level app, as a user would."""

from __future__ import annotations

from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from runstate.cli import app
from runstate.schemas.catalog import SchemaCatalog
from tests.schemas.conftest import WriteSchema, record

runner = CliRunner()


def test_check_passes_on_the_shipped_catalog() -> None:
    result = runner.invoke(app, ["schemas", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")


def test_check_names_each_field_and_rule_that_breaks(write_schema: WriteSchema) -> None:
    write_schema("Foo.v1.avsc", record("Foo", {"name": "a", "type": "string"}))
    root = write_schema(
        "Foo.v2.avsc",
        record("Foo", {"name": "a", "type": "int"}, {"name": "b", "type": "string"}),
    )
    result = runner.invoke(app, ["schemas", "check", "--path", str(root)])
    assert result.exit_code == 1
    assert "Foo.a: type changed from string (writer) to int" in result.output
    assert "Foo.b: field missing in writer has no default in reader" in result.output
    assert "2 incompatibilities" in result.output


def test_check_reports_an_unloadable_file(write_schema: WriteSchema) -> None:
    root = write_schema("Foo.avsc", record("Foo"))
    result = runner.invoke(app, ["schemas", "check", "--path", str(root)])
    assert result.exit_code == 2
    assert "Foo.avsc: contract files must be named" in result.output


def test_list_shows_name_version_and_fingerprint(catalog: SchemaCatalog) -> None:
    result = runner.invoke(app, ["schemas", "list"])
    assert result.exit_code == 0, result.output
    v2 = catalog.latest("RunStarted")
    assert f"runstate.events.RunStarted\tv2\t{v2.fingerprint_hex}" in result.output.splitlines()
    assert len(result.output.splitlines()) == len(catalog)


def _commands(command: Any, path: str) -> list[tuple[str, Any]]:
    """Every command under ``command`` (typer may vendor click, so duck-type groups)."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found.extend(_commands(sub, f"{path} {name}"))
    return found


SCHEMAS_COMMANDS = _commands(get_command(app).commands["schemas"], "schemas")  # type: ignore[attr-defined]


def test_schemas_group_has_check_and_list() -> None:
    assert [path for path, _ in SCHEMAS_COMMANDS] == ["schemas", "schemas check", "schemas list"]


@pytest.mark.parametrize(
    ("path", "command"), SCHEMAS_COMMANDS, ids=[p for p, _ in SCHEMAS_COMMANDS]
)
def test_every_schemas_command_has_help(path: str, command: Any) -> None:
    assert command.help and command.help.strip(), path
    result = runner.invoke(app, [*path.split(), "--help"])
    assert result.exit_code == 0
