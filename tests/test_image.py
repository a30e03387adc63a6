"""The Dockerfile and docker-compose.yml, read as files (no Docker engine on these machines):
a non-root user, the query API's port exposed, a health check on /health that works, and
workers that advertise a URL the others can dial while they listen on every interface."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from runstate.runtime.config import RuntimeConfig, load_runtime_config
from runstate.settings import Settings
from runstate.streams.broker import free_port
from tests.stand_in_api import stand_in_api

ROOT = Path(__file__).resolve().parents[1]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order; comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _env(args: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(args))


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def image_env(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in dockerfile:
        if word == "ENV":
            env.update(_env(args))
    return env


def _last(dockerfile: list[tuple[str, str]], word: str) -> tuple[int, str]:
    found = [(i, args) for i, (w, args) in enumerate(dockerfile) if w == word]
    assert found, f"the Dockerfile has no {word}"
    return found[-1]


def test_the_image_runs_as_a_user_it_creates_not_root(dockerfile: list[tuple[str, str]]) -> None:
    at, user = _last(dockerfile, "USER")
    uid, _, gid = user.partition(":")
    assert uid not in ("root", "0") and gid not in ("root", "0"), user
    created = " ".join(args for word, args in dockerfile[:at] if word == "RUN")
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b", created), "USER names a user never created"
    assert "chown" in created  # the state volume is the user's
    cmd_at, _ = _last(dockerfile, "CMD")
    assert at < cmd_at


def test_the_image_exposes_the_query_port_and_listens_on_every_interface(
    dockerfile: list[tuple[str, str]], image_env: dict[str, str]
) -> None:
    _, exposed = _last(dockerfile, "EXPOSE")
    port = image_env["RUNSTATE_RUNTIME_WEB_PORT"]
    health_port = image_env["RUNSTATE_RUNTIME_HEALTH_PORT"]
    assert exposed.split() == [port, health_port]
    assert port == str(RuntimeConfig.model_fields["web_port"].default)
    # the port a worker without the variable would take: the query port + 1
    assert int(health_port) == RuntimeConfig(web_port=int(port)).health_listen_port
    assert image_env["RUNSTATE_RUNTIME_WEB_HOST"] == "0.0.0.0"
    assert image_env["RUNSTATE_STATE_DIR"] == "/data"
    _, volume = _last(dockerfile, "VOLUME")
    assert "/data" in volume
    _, cmd = _last(dockerfile, "CMD")
    assert json.loads(cmd)[:3] == ["runstate", "processor", "run"]
    installed = " ".join(args for word, args in dockerfile if word == "RUN")
    assert "-c constraints.txt" in installed and "processor" in installed


def _health_command(dockerfile: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    _, check = _last(dockerfile, "HEALTHCHECK")
    options, _, cmd = check.partition("CMD ")
    flags = dict(o.removeprefix("--").split("=", 1) for o in options.split())
    return flags, json.loads(cmd)


def test_the_health_check_asks_health_with_a_timeout(dockerfile: list[tuple[str, str]]) -> None:
    flags, cmd = _health_command(dockerfile)
    assert {"interval", "timeout", "retries", "start-period"} <= set(flags)
    assert "/health" in " ".join(cmd)


def test_the_health_check_passes_on_a_live_api_and_fails_on_none(
    dockerfile: list[tuple[str, str]],
) -> None:
    """The image's command itself, run here against a stand-in API on 127.0.0.1."""
    _, cmd = _health_command(dockerfile)
    assert cmd[0] == "python"
    run = [sys.executable, *cmd[1:]]
    with stand_in_api({"ready": True}) as api:
        port = str(api.server_address[1])
        ok = subprocess.run(
            run,
            env={**os.environ, "RUNSTATE_RUNTIME_HEALTH_PORT": port},
            timeout=60,
            check=False,
        )
    assert ok.returncode == 0
    assert api.queries == [{}]  # asked once, plain /health
    dead = subprocess.run(
        run,
        env={**os.environ, "RUNSTATE_RUNTIME_HEALTH_PORT": str(free_port())},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert dead.returncode != 0


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [])[:3] == ["runstate", "processor", "run"]
    }


def test_compose_runs_several_workers_each_with_its_own_identity_and_volume(
    compose: dict[str, Any],
) -> None:
    workers = _workers(compose)
    assert len(workers) >= 2  # else forwarding between workers is never needed
    ids = [w["environment"]["RUNSTATE_RUNTIME_WORKER_ID"] for w in workers.values()]
    volumes = [v.split(":")[0] for w in workers.values() for v in w["volumes"]]
    assert len(set(ids)) == len(ids) == len(volumes) == len(set(volumes))
    assert all(w.get("user") in (None, "10001:10001") for w in workers.values())


def test_compose_workers_advertise_a_url_the_others_can_dial(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in _workers(compose).items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert env["RUNSTATE_RUNTIME_WEB_HOST"] == "0.0.0.0", name
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        config = load_runtime_config(Settings())
        advertised = urllib.parse.urlsplit(config.url)
        # the service name: what the compose network resolves for the other workers
        assert advertised.hostname == name
        assert advertised.port == config.web_port
        for mapping in service.get("ports", []):
            host_ip, _host_port, container_port = str(mapping).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {mapping} beyond loopback"
            assert int(container_port) == config.web_port
        grace = service["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) * 1000 > config.session_timeout_ms
