"""``runstate console``'s start-up failures: one line, the documented exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from runstate.cli import app as cli
from runstate.cli.failures import EXIT_FAILED, EXIT_USAGE
from runstate.settings import load_settings

IDENTITIES = Path(__file__).resolve().parents[2] / "examples" / "identities.toml"


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNSTATE_AUTH_FILE", raising=False)
    monkeypatch.delenv("RUNSTATE_CONSOLE_SECRET", raising=False)
    load_settings.cache_clear()


@pytest.mark.parametrize(
    ("env", "args", "code", "says"),
    [
        ({}, [], EXIT_FAILED, "the console needs RUNSTATE_AUTH_FILE"),
        (
            {"RUNSTATE_AUTH_FILE": str(IDENTITIES), "RUNSTATE_CONSOLE_SECRET": "short"},
            [],
            EXIT_FAILED,
            "RUNSTATE_CONSOLE_SECRET must be at least 32 characters",
        ),
        ({"RUNSTATE_AUTH_FILE": str(IDENTITIES)}, ["--listen", "nope"], EXIT_USAGE, "HOST:PORT"),
        ({"RUNSTATE_AUTH_FILE": "/no/such/file.toml"}, [], EXIT_FAILED, "does not exist"),
    ],
)
def test_the_console_refuses_to_start_with_one_line(
    env: dict[str, str], args: list[str], code: int, says: str
) -> None:
    result = CliRunner().invoke(cli, ["console", *args], env=env)
    load_settings.cache_clear()
    assert result.exit_code == code, result.output
    assert says in result.output
    assert "Traceback" not in result.output
