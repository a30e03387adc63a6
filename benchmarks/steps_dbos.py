"""DBOS anchor of ``benchmarks.steps``: DBOS Transact (PyPI ``dbos``, from the bench extra) with
its system database on the PostgreSQL server the benchmark starts; one ``@DBOS.step`` whose
body returns at once, timed inside the workflow (the step as an agent's code sees it), as the
Restate anchor times ``ctx.run``.

DBOS runs in a child process of its own (``python -m benchmarks.steps_dbos``): it keeps a
process-wide instance with threads and a logger, which the benchmark process should not carry.
The child prints one JSON line: the step latencies (ms) and DBOS's version.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from benchmarks.harness import ROOT

#: Steps per workflow; the first few of each are a warm-up and dropped (as for Restate).
PER_CALL, WARMUP = 100, 5


def measure(port: int, samples: int) -> dict[str, Any]:
    """The figures of ``samples`` DBOS steps against PostgreSQL on ``port``."""
    from benchmarks.steps import percentiles
    from benchmarks.steps_anchors import Unavailable

    try:
        from importlib.metadata import version

        dbos_version = version("dbos")
    except Exception as exc:
        raise Unavailable("dbos is not installed (make bench-deps)") from exc
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.steps_dbos", "--port", str(port),
         "--samples", str(samples)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise Unavailable(f"the DBOS child failed: {done.stderr.strip()[-400:]}")
    ms = json.loads(done.stdout.strip().splitlines()[-1])
    return {**percentiles(ms[:samples]), "version": f"dbos {dbos_version}"}


def _run(port: int, samples: int) -> list[float]:
    from dbos import DBOS, DBOSConfig

    @DBOS.step()
    def noop() -> str:
        return "ok"

    @DBOS.workflow()
    def steps(n: int) -> list[float]:
        took: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            noop()
            took.append((time.perf_counter() - t0) * 1000)
        return took

    config: DBOSConfig = {
        "name": "runstate-bench",
        "system_database_url": f"postgresql://bench@127.0.0.1:{port}/dbos_bench",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        steps(3)
        ms: list[float] = []
        while len(ms) < samples:
            ms += steps(PER_CALL + WARMUP)[WARMUP:]
        return ms
    finally:
        DBOS.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(_run(args.port, args.samples)))


if __name__ == "__main__":
    main()
