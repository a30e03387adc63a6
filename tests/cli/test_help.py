"""Every command of the `runstate` CLI has help text, and `--help` works for each."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from runstate.cli import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # typer may bring its own click; walk by shape rather than by class
    found = [path]
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            found += _commands(sub, (*path, name))
    return found


ROOT = typer.main.get_command(app)
ALL = _commands(ROOT)


def test_the_cli_has_the_documented_groups() -> None:
    top = {p[0] for p in ALL if p}
    assert {"broker", "topics", "schemas", "demo"} <= top


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "runstate")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    command: Any = ROOT
    for name in path:
        command = command.commands[name]
    text = (command.help or command.short_help or "").strip()
    assert text, f"`runstate {' '.join(path)}` has no help text"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
