"""``runstate schemas``: run through the real top-level app, as a user would."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from typer.main import get_command
from typer.testing import CliRunner

from runstate.cli import app
from runstate.schemas.catalog import SchemaCatalog, default_catalog
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
    assert (
        "Foo v2 (reader) cannot read v1 (writer) [backward, FULL_TRANSITIVE]: Foo.a: v1 writes"
        " string and v2 reads int, which is not a permitted promotion" in result.output
    )
    assert (
        "Foo v2 (reader) cannot read v1 (writer) [backward, FULL_TRANSITIVE]: Foo.b: field b has"
        " no default in v2 and v1 does not write it; give b a default in v2" in result.output
    )
    assert (
        "Foo v1 (reader) cannot read v2 (writer) [forward, FULL_TRANSITIVE]: Foo.a: v2 writes"
        " int and v1 reads string" in result.output
    )
    assert "3 incompatibilities" in result.output


def _step_started_v1_and_a_v2_without_step_index() -> tuple[dict[str, Any], dict[str, Any]]:
    v1 = dict(default_catalog().get("StepStarted", 1).definition)
    v2 = {**v1, "fields": [f for f in v1["fields"] if f["name"] != "step_index"]}
    return v1, v2


def test_regression_dropping_a_required_field_breaks_old_readers(
    write_schema: WriteSchema,
) -> None:
    """The reported bug: a v2 without the required ``step_index`` was called compatible."""
    v1, v2 = _step_started_v1_and_a_v2_without_step_index()
    write_schema("events/StepStarted.v1.avsc", v1)
    root = write_schema("events/StepStarted.v2.avsc", v2)
    result = runner.invoke(app, ["schemas", "check", "--path", str(root)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "StepStarted v1 (reader) cannot read v2 (writer) [forward, FULL_TRANSITIVE]:"
        " StepStarted.step_index: field step_index has no default in v1 and v2 does not write"
        " it; keep writing step_index in v2, or give step_index a default in v1 (which helps"
        " only readers redeployed with the edited v1)",
        "1 incompatibility; fix the contracts above",
    ]


def test_regression_an_old_reader_really_fails_on_such_data() -> None:
    v1, v2 = _step_started_v1_and_a_v2_without_step_index()
    datum = {
        "event_id": "e",
        "run_id": "r",
        "occurred_at": 0,
        "producer": "p",
        "step": "s",
        "attempt": 1,
        "input_ref": None,
    }
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(v2), datum)
    buffer.seek(0)
    with pytest.raises(Exception, match="No default value for field step_index"):
        schemaless_reader(buffer, parse_schema(v2), parse_schema(v1))


@pytest.mark.parametrize("mode", ["backward_transitive", "BACKWARD", "backward"])
def test_backward_only_is_an_explicit_choice(write_schema: WriteSchema, mode: str) -> None:
    v1, v2 = _step_started_v1_and_a_v2_without_step_index()
    write_schema("events/StepStarted.v1.avsc", v1)
    root = write_schema("events/StepStarted.v2.avsc", v2)
    result = runner.invoke(app, ["schemas", "check", "--path", str(root), "--mode", mode])
    assert result.exit_code == 0, result.output
    assert "1 reader/writer pairs compatible (BACKWARD" in result.output


@pytest.mark.parametrize("mode", ["forward", "full", "forward_transitive", "full_transitive"])
def test_every_mode_with_forward_catches_it(write_schema: WriteSchema, mode: str) -> None:
    v1, v2 = _step_started_v1_and_a_v2_without_step_index()
    write_schema("events/StepStarted.v1.avsc", v1)
    root = write_schema("events/StepStarted.v2.avsc", v2)
    result = runner.invoke(app, ["schemas", "check", "--path", str(root), "--mode", mode])
    assert result.exit_code == 1, result.output
    assert f"[forward, {mode.upper()}]: StepStarted.step_index" in result.output


def test_check_rejects_an_unknown_mode() -> None:
    result = runner.invoke(app, ["schemas", "check", "--mode", "sideways"])
    assert result.exit_code == 2
    assert "full_transitive" in result.output


def test_check_help_documents_the_modes() -> None:
    result = runner.invoke(app, ["schemas", "check", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for mode in ("full_transitive", "backward_transitive", "forward", "full"):
        assert mode in result.output


def test_check_reports_an_unloadable_file(write_schema: WriteSchema) -> None:
    root = write_schema("Foo.avsc", record("Foo"))
    result = runner.invoke(app, ["schemas", "check", "--path", str(root)])
    assert result.exit_code == 2
    assert "Foo.avsc: contract files must be named" in result.output


def test_check_reports_a_file_that_is_not_utf8_in_one_line(write_schema: WriteSchema) -> None:
    root = write_schema("Foo.v1.avsc", record("Foo", {"name": "note", "type": "string"}))
    (root / "Foo.v1.avsc").write_bytes(
        (root / "Foo.v1.avsc").read_bytes().replace(b"note", "noté".encode("latin-1"))
    )
    result = runner.invoke(app, ["schemas", "check", "--path", str(root)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: Foo.v1.avsc: not UTF-8 text (byte 0xe9 at offset 76); save it as UTF-8"
    ]


def test_list_shows_name_version_and_fingerprint(catalog: SchemaCatalog) -> None:
    result = runner.invoke(app, ["schemas", "list"])
    assert result.exit_code == 0, result.output
    v3 = catalog.latest("RunStarted")
    assert f"runstate.events.RunStarted\tv3\t{v3.fingerprint_hex}" in result.output.splitlines()
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
