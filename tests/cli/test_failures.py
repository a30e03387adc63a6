"""Every expected failure of a command is one `error: ...` line and a documented exit code.

The broker-down cases run the real console script in a subprocess: librdkafka writes its
own log lines straight to file descriptor 2, which an in-process CliRunner would not see.
Each points the command at a closed port on 127.0.0.1, so nothing answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runstate.cli import app as cli
from runstate.cli.failures import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE
from runstate.streams.broker import free_port
from tests.stand_in_api import stand_in_api

SRC = Path(__file__).resolve().parents[2] / "src"


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\n"
        "topics:\n"
        "  runstate.events:\n"
        "    hot: 7d\n"
        f"    archive: {{enabled: true, target: 'local:{tmp_path / 'archive'}'}}\n"
        "    archive_retention: 400d\n",
        encoding="utf-8",
    )
    return path


# Every command that talks to Kafka or the query API. Not here: `demo` (starts its own
# broker), `broker *` (manages the local broker itself) and `schemas *` (files only).
BROKER_DOWN = [
    ["runs", "list"],
    ["runs", "show", "run-1"],
    ["approve", "run-1", "--by", "ana"],
    ["reject", "run-1", "--by", "ana", "--reason", "no"],
    ["topics", "ensure"],
    ["replay", "--policy", "{policy}", "--all"],
    ["replay", "--policy", "{policy}", "--run", "run-1"],
    ["archive", "run", "--policy", "{policy}", "--once"],
    ["archive", "verify", "--policy", "{policy}"],
    ["retention", "plan", "--policy", "{policy}"],
    ["retention", "apply", "--policy", "{policy}", "--yes"],
    [
        "estimate",
        "--policy",
        "{policy}",
        "--runs-per-day",
        "10",
        "--events-per-run",
        "5",
        "--bootstrap",
        "{bootstrap}",
    ],
    ["check", "--policy", "{policy}"],
    ["check", "--policy", "{policy}", "--query-url", "{query_url}"],  # only Kafka is down
    ["processor", "run", "--data-dir", "{tmp}/worker", "--web-port", "{web_port}"],
]


@pytest.mark.parametrize("args", BROKER_DOWN, ids=lambda a: " ".join(a[:2] + a[-2:-1]))
def test_with_nothing_listening_a_command_prints_one_line_and_exits_3(
    tmp_path: Path, args: list[str]
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    values = {
        "policy": str(_policy(tmp_path)),
        "bootstrap": closed,
        "tmp": str(tmp_path),
        "web_port": str(free_port()),
    }
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "RUNSTATE_BOOTSTRAP_SERVERS": closed,
        "RUNSTATE_QUERY_URL": f"http://{closed}",
        "RUNSTATE_STATE_DIR": str(tmp_path / "state"),
    }
    with stand_in_api({"status": "ok"}) as api:
        values["query_url"] = api.url
        done = subprocess.run(
            [sys.executable, "-c", "from runstate.cli import main; main()"]
            + [a.format(**values) for a in args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,  # a command that retries instead of failing fails the test here
            check=False,
        )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot reach"), lines[0]
    if "--query-url" in args:
        assert lines[0].startswith("error: cannot reach Kafka"), lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert "%3|" not in done.stderr


POLICY_COMMANDS = [
    ["replay", "--all"],
    ["archive", "run", "--once"],
    ["archive", "verify"],
    ["retention", "plan"],
    ["retention", "apply", "--yes"],
    ["estimate", "--runs-per-day", "10", "--events-per-run", "5"],
    ["check"],
]


@pytest.mark.parametrize("args", POLICY_COMMANDS, ids=" ".join)
def test_a_policy_file_that_is_not_utf8_is_one_line_naming_the_fix(
    tmp_path: Path, args: list[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_bytes("version: 1\n# propriété\ntopics: {}\n".encode("latin-1"))
    result = CliRunner().invoke(cli, [*args, "--policy", str(policy)])
    assert result.exit_code == EXIT_FAILED, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.strip().splitlines() == [
        f"error: {policy}: the retention policy is not UTF-8 text (byte 0xe9 at offset 19);"
        " save it as UTF-8"
    ]


def test_a_missing_policy_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["retention", "plan", "--policy", str(tmp_path / "no.yaml")])
    assert result.exit_code == EXIT_USAGE
    assert "does not exist" in " ".join(result.stderr.replace("│", " ").split())
    assert "Traceback" not in result.output


def test_a_missing_log_file_for_check_is_a_usage_error_before_any_check(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", "--log", str(tmp_path / "worker.log")])
    assert result.exit_code == EXIT_USAGE
    assert "does not exist" in " ".join(result.stderr.replace("│", " ").split())


def test_a_piped_table_shows_a_36_character_run_id_whole() -> None:
    run_id = "0193a4f2-6c1e-7b3a-9d42-5e8f1a2b3c4d"
    run = {
        "run_id": run_id,
        "status": "waiting_approval",
        "owner": "team-credit-limits-emea",
        "agent": "credit-limit-increase",
        "current_step": "ask_for_approval",
        "step_phase": "running",
        "approval": {"approver": "risk-officers", "due_at": "2025-03-01T13:00:00+00:00"},
        "updated_at": "2025-03-01T09:00:00+00:00",
    }
    with stand_in_api({"runs": [run], "count": 1, "complete": True}) as api:
        result = CliRunner().invoke(cli, ["runs", "list", "--url", api.url], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert run_id in result.stdout
    assert "…" not in result.stdout


@pytest.mark.parametrize(
    ("missing", "args", "extra"),
    [
        ("rocksdict", ["processor", "run", "--web-port", "0"], "processor"),
        ("aiohttp", ["processor", "run", "--web-port", "0"], "processor"),
        ("yaml", ["retention", "plan", "--policy", "{policy}"], "archive"),
    ],
)
def test_a_command_whose_extra_is_not_installed_names_the_extra_and_exits_1(
    tmp_path: Path, missing: str, args: list[str], extra: str
) -> None:
    """As in a core-only install (the wheel test installs one for real): the import of the
    missing library fails, and the command says which extra to install."""
    closed = f"127.0.0.1:{free_port()}"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.modules[{missing!r}] = None; from runstate.cli import main; main()",
            *(a.format(policy=_policy(tmp_path)) for a in args),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC), "RUNSTATE_BOOTSTRAP_SERVERS": closed},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_FAILED, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: this needs runstate's {extra!r} extra ({missing} is not installed):"
        f" pip install 'runstate[{extra}]'"
    ]
