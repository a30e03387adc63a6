"""``runstate archive run`` with a policy that masks and no mask key: one clear line, exit 1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runstate.cli import app
from runstate.settings import load_settings


@pytest.fixture
def no_mask_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("RUNSTATE_MASK_KEYS", raising=False)
    monkeypatch.delenv("RUNSTATE_MASK_KEYS_FILE", raising=False)
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def test_the_archiver_refuses_to_mask_without_a_key(no_mask_keys: None, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "topics:\n  runstate.events:\n    hot: 7d\n"
        f"    archive: {{target: 'local:{tmp_path / 'archive'}'}}\n"
        "    personal_data: {RunStarted: {owner: mask}}\n"
    )

    result = CliRunner().invoke(
        app, ["archive", "run", "--policy", str(policy), "--once", "--bootstrap", "127.0.0.1:9"]
    )

    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "RunStarted.owner" in lines[0] and "RUNSTATE_MASK_KEYS=k1:" in lines[0]
    assert not (tmp_path / "archive").exists()
