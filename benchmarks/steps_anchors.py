"""The anchors beside the SDK's step figures (``benchmarks.steps``): each started on loopback
in a temp folder by the benchmark, measured with the same timer, stopped after.

Each anchor is ``measure(base, samples, timed) -> figures``; it raises :class:`Unavailable`
(with what to install) when its server or client is missing, and the report says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runstate.streams.broker import free_port

Timed = Callable[..., dict[str, float]]

#: About what a run's state weighs as the processor stores it (a few steps, a lease).
STATE = json.dumps({"run_id": "r", "status": "in_progress", "steps": ["x" * 40] * 20}).encode()


class Unavailable(Exception):
    """The anchor's server or client is not installed here."""


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{what} exited with {proc.returncode} at start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise Unavailable(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def redis_get_set(base: Path, samples: int, timed: Timed) -> dict[str, Any]:
    """GET then SET of a run's state in Redis (no persistence: the "hot state" use)."""
    server = shutil.which("redis-server")
    if server is None:
        raise Unavailable("redis-server is not installed (apt-get install -y redis-server)")
    try:
        import redis
    except ImportError as exc:
        raise Unavailable("the redis client is not installed (pip install redis)") from exc
    port = free_port()
    folder = base / "redis"
    folder.mkdir()
    cmd = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
           "no", "--dir", str(folder)]  # fmt: skip
    with _process(cmd, folder / "redis.log") as proc:
        _wait_port(port, proc, "redis-server")
        client = redis.Redis(host="127.0.0.1", port=port)
        client.set("run:r", STATE)

        def get_set() -> None:
            state = client.get("run:r")
            assert state is not None
            client.set("run:r", state)

        figures = timed(get_set, samples)
        version = client.info()["redis_version"]
        client.close()
    return {**figures, "version": str(version), "persistence": "none"}


def postgres_transaction(base: Path, samples: int, timed: Timed) -> dict[str, Any]:
    """One transaction: UPDATE the run's row, INSERT a history row, COMMIT (fsync on)."""
    psycopg = _psycopg()
    with postgres_server() as port:
        conn = _connect(psycopg, port)
        with conn.transaction():
            conn.execute("CREATE TABLE runs (run_id text PRIMARY KEY, state bytea, version int)")
            conn.execute(
                "CREATE TABLE history (id bigserial PRIMARY KEY, run_id text, event bytea)"
            )
            conn.execute("INSERT INTO runs VALUES ('r', %s, 0)", (STATE,))

        def transaction() -> None:
            with conn.transaction():
                conn.execute(
                    "UPDATE runs SET state = %s, version = version + 1 WHERE run_id = 'r'",
                    (STATE,),
                )
                conn.execute("INSERT INTO history (run_id, event) VALUES ('r', %s)", (STATE[:200],))

        figures = timed(transaction, samples)
        version = conn.execute("SHOW server_version").fetchone()
        conn.close()
    return {**figures, "version": str(version[0] if version else "?"), "fsync": "on"}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable("psycopg is not installed (pip install 'psycopg[binary]')") from exc
    return psycopg


@contextlib.contextmanager
def postgres_server() -> Iterator[int]:
    """A PostgreSQL server of its own (initdb in a temp folder, fsync on, user ``bench``
    trusted) on a loopback port, yielded; stopped and removed after."""
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb is None or postgres is None:
        raise Unavailable("PostgreSQL is not installed (apt-get install -y postgresql)")
    # Its own temp folder: the benchmark's is private to root, and the server may not be root.
    folder = Path(tempfile.mkdtemp(prefix="runstate-bench-pg-"))
    try:
        data = folder / "data"
        # PostgreSQL refuses to run as root: run it as the postgres user when we are root.
        demote: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise Unavailable("running as root and there is no postgres user") from exc
            os.chown(folder, pw.pw_uid, pw.pw_gid)
            demote = {"user": pw.pw_uid, "group": pw.pw_gid}
        done = subprocess.run(
            [initdb, "-D", str(data), "-U", "bench", "--auth=trust", "-E", "UTF8"],
            check=False,
            capture_output=True,
            text=True,
            **demote,
        )
        if done.returncode != 0:
            raise Unavailable(f"initdb failed: {done.stderr.strip()[-300:]}")
        port = free_port()
        cmd = [postgres, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(folder)]
        with _process(cmd, folder / "postgres.log", **demote) as proc:
            _wait_port(port, proc, "postgres")
            yield port
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _connect(psycopg: Any, port: int) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            return psycopg.connect(
                host="127.0.0.1", port=port, user="bench", dbname="postgres", autocommit=True
            )
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def restate_step(base: Path, samples: int, timed: Timed) -> dict[str, Any]:
    """One ``ctx.run`` step in Restate, timed inside the handler (see benchmarks.steps_restate)."""
    from benchmarks import steps_restate

    return steps_restate.measure(base, samples, timed)


def dbos_step(base: Path, samples: int, timed: Timed) -> dict[str, Any]:
    """One ``@DBOS.step`` in a DBOS workflow on PostgreSQL, timed inside the workflow
    (see benchmarks.steps_dbos)."""
    from benchmarks import steps_dbos

    with postgres_server() as port:
        return steps_dbos.measure(port, samples)


ANCHORS: dict[str, Callable[[Path, int, Timed], dict[str, Any]]] = {
    "redis_get_set": redis_get_set,
    "postgres_transaction": postgres_transaction,
    "restate_step": restate_step,
    "dbos_step": dbos_step,
}
