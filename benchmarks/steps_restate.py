"""Restate anchor of ``benchmarks.steps``: the server from npm (``@restatedev/restate-server``,
installed under ``.runstate/restate`` by ``make bench-deps``) and the Python SDK
(``restate-sdk``, served by hypercorn), both on loopback; one ``ctx.run`` step timed inside the
handler (:mod:`benchmarks.restate_service`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT
from runstate.streams.broker import free_port

SERVER = (
    ROOT / ".runstate" / "restate" / "node_modules" / "@restatedev" / "restate-server-linux-x64"
    / "bin" / "restate-server"
)  # fmt: skip
#: Steps per invocation; the first few of each are a warm-up and dropped.
PER_CALL, WARMUP = 100, 5


def _http(url: str, body: Any = None, timeout_s: float = 60) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def _until(check: Any, what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
        if time.monotonic() > deadline:
            raise TimeoutError(what)


def measure(base: Path, samples: int, timed: Any) -> dict[str, Any]:
    from benchmarks.steps import percentiles
    from benchmarks.steps_anchors import Unavailable, _process

    if not SERVER.exists():
        raise Unavailable(f"no Restate server at {SERVER} (make bench-deps)")
    try:
        from importlib.metadata import version

        sdk = version("restate-sdk")
        version("hypercorn")
    except Exception as exc:
        raise Unavailable("restate-sdk or hypercorn is not installed") from exc
    folder = base / "restate"
    folder.mkdir()
    admin, ingress, fabric, service = free_port(), free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RESTATE_BASE_DIR": str(folder),
        "RESTATE_LISTEN_MODE": "tcp",
        "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
        "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
        "RESTATE_BIND_ADDRESS": f"127.0.0.1:{fabric}",
        "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{fabric}/",
        "RESTATE_DISABLE_TELEMETRY": "true",
        "RESTATE_ADMIN__DISABLE_WEB_UI": "true",
    }
    server_cmd = [str(SERVER), "--node-name", "bench", "--no-logo"]
    svc_cmd = [sys.executable, "-m", "hypercorn", "benchmarks.restate_service:app",
               "--bind", f"127.0.0.1:{service}"]  # fmt: skip
    with (
        _process(server_cmd, folder / "server.log", env=env, cwd=folder) as server,
        _process(svc_cmd, folder / "service.log", cwd=ROOT) as svc,
    ):
        try:
            _until(lambda: _http(f"http://127.0.0.1:{admin}/health"), "restate admin")
            _until(
                lambda: _http(
                    f"http://127.0.0.1:{admin}/deployments",
                    {"uri": f"http://127.0.0.1:{service}", "force": True},
                ),
                "registering the service",
            )
            ms: list[float] = []
            url = f"http://127.0.0.1:{ingress}/BenchSteps/run"
            _until(lambda: _http(url, 3), "first invocation")
            while len(ms) < samples:
                ms += list(_http(url, PER_CALL + WARMUP))[WARMUP:]
        except (OSError, TimeoutError) as exc:
            tails = [
                f"{p.name}: {p.read_text(errors='replace')[-400:]}"
                for p in (folder / "server.log", folder / "service.log")
                if p.exists()
            ]
            alive = server.poll() is None and svc.poll() is None
            raise Unavailable(f"{exc} (processes alive: {alive}); {' | '.join(tails)}") from exc
        server_version = subprocess.run(
            [str(SERVER), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {**percentiles(ms[:samples]), "version": server_version, "sdk": f"restate-sdk {sdk}"}
