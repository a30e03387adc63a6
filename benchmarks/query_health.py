"""``python -m benchmarks.query_health [--before PATH]``: /health while list queries run.

One query API (:class:`runstate.runtime.query_api.QueryServer`) over in-memory partition
stores holding ``--runs`` runs waiting for approval; one thread lists them, ``limit=1000``
pages one after another, while another asks ``/health`` every ``--poll-ms`` and times each
answer.
With ``--before`` (the path of an older ``query_api.py``) that version runs in alternating
rounds in the same process, and the ratio of the slowest ``/health`` answer (this version /
the older) is printed per round pair. No broker and no poll loop: what is measured is the
API's own event loop.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from runstate.runs.keyspace import KeyValueReader
from runstate.runs.layout import run_writes
from runstate.runs.state import RunState, RunStatus
from runstate.runtime import query_api
from runstate.runtime.memory_store import MemoryPartitionStore
from runstate.runtime.owners import GroupOwners, client_id
from runstate.streams.broker import free_port
from runstate.streams.partitioning import partition_for

__all__ = ["main"]

PARTITIONS = 2


class _Source:
    def __init__(self, runs: int) -> None:
        self.worker_id = "w1"
        self.partitions = PARTITIONS
        self.stores = {p: MemoryPartitionStore(p) for p in range(PARTITIONS)}
        at = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(runs):
            run_id = f"run-{i:07d}"
            state = RunState(
                run_id=run_id,
                status=RunStatus.WAITING_APPROVAL,
                agent="bench",
                owner="team",
                input="x" * 200,
                prompt_version="v1",
                source="bench",
                created_at=at,
                updated_at=at,
                version=1,
            )
            p = partition_for(run_id.encode(), PARTITIONS)
            self.stores[p].apply(run_writes(None, state), changelog_offset=i)

    @contextmanager
    def reading(self, partition: int) -> Iterator[KeyValueReader | None]:
        yield self.stores.get(partition)

    def processed_through(self, partition: int) -> int | None:
        return None

    def owned_partitions(self) -> list[int]:
        return list(range(PARTITIONS))

    def freshness(self, partition: int) -> dict[str, Any]:
        return {"partition": partition}

    def health(self) -> dict[str, Any]:
        return {"ready": True}

    def metrics(self) -> dict[str, Any]:
        return {}


def _round(module: ModuleType, source: _Source, *, lists: int, poll_s: float) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    members = [(client_id(source.worker_id, url), list(range(PARTITIONS)))]
    server = module.QueryServer(
        source, GroupOwners(lambda: members), host="127.0.0.1", port=port, url=url
    )
    server.start()
    answers: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{url}/health", timeout=30) as resp:
                resp.read()
            answers.append((time.perf_counter() - t0) * 1000)
            time.sleep(poll_s)

    poller = threading.Thread(target=poll)
    try:
        poller.start()
        list_ms = []
        for _ in range(lists):
            t0 = time.perf_counter()
            query = f"{url}/runs?status=waiting_approval&limit=1000"
            with urllib.request.urlopen(query, timeout=60) as resp:
                resp.read()
            list_ms.append((time.perf_counter() - t0) * 1000)
        done.set()
        poller.join()
    finally:
        server.stop()
    answers.sort()
    return {
        "health_max_ms": answers[-1],
        "health_p99_ms": answers[int(0.99 * (len(answers) - 1))],
        "list_p50_ms": statistics.median(list_ms),
    }


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("runstate_query_api_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.query_health")
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--lists", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--poll-ms", type=float, default=50.0, help="between /health asks")
    parser.add_argument("--before", type=Path, help="an older query_api.py to compare with")
    args = parser.parse_args(argv)
    source = _Source(args.runs)
    versions = {"this": query_api}
    if args.before is not None:
        versions["before"] = _load(args.before)
    ratios = []
    for r in range(args.rounds):
        got = {}
        for name in sorted(versions, reverse=r % 2 == 1):
            got[name] = _round(versions[name], source, lists=args.lists, poll_s=args.poll_ms / 1000)
            print(
                f"round {r + 1} {name:6}: "
                + ", ".join(f"{k} {v:.1f}" for k, v in got[name].items())
            )
        if "before" in got:
            ratios.append(
                (
                    got["this"]["health_max_ms"] / got["before"]["health_max_ms"],
                    got["this"]["list_p50_ms"] / got["before"]["list_p50_ms"],
                )
            )
    for i, what in enumerate(("slowest /health", "list p50")):
        if ratios:
            values = [pair[i] for pair in ratios]
            print(
                f"{what}, this / before: median {statistics.median(values):.2f}"
                f" ({min(values):.2f}-{max(values):.2f}) over {len(values)} round pairs"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
