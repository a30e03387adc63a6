"""What the data-keys topic costs a process as it grows: N keys against 10 N (issue 14).

``python -m benchmarks.key_store [--keys N] [--rounds R]`` starts its own broker, fills one
data-keys topic with N wrapped keys (as many runs, each its own subject) and another with
10 N, and measures in fresh child processes (one per figure and round, so memory is the
process's own):

* **agent, first sealed value**: an agent process's key store made, its first value sealed
  for a new subject (the SDK's path: ``PersonalDataCipher.seal_value``); the records of the
  topic it read, the time, the process's peak RSS;
* **kept mirror, start**: a worker's mirror folder, caught up to the topic before, opened
  again after 100 more keys were written, and a key looked up: records read, time, RSS;
* **lookup**: the median of 2,000 point reads of random keys in that mirror;
* **mirror, first build**: a new mirror reading the whole topic (once per folder);
* **old store** (the in-memory ``KafkaKeyStore`` this replaced, loaded from git at
  :data:`OLD_STORE_COMMIT`): the same first sealed value, for contrast.

Prints a table and writes ``benchmarks/results/<stamp>-key-store.json``. Timings are medians
over rounds; only the 10 N / N ratios mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from runstate.crypto import KafkaKeyStore, LocalKeyManager, PersonalDataCipher, WrappedKey
from runstate.streams import clients

__all__ = ["main"]

#: The last commit with the in-memory Kafka key store (the contrast).
OLD_STORE_COMMIT = "addc05b"
MASTER = LocalKeyManager(bytes(range(32)))
ADDED = 100
LOOKUPS = 2_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fill(bootstrap: str, topic: str, first: int, count: int) -> None:
    """``count`` keys of subjects ``run-<first>...``: what agents made, one per run."""
    producer = clients.producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"}
    )
    wrapped = MASTER.wrap(os.urandom(32))
    for i in range(first, first + count):
        key = WrappedKey(f"run-{i:09d}", "0a0b0c0d", wrapped, MASTER.key_id, 1_764_000_000_000)
        while True:
            try:
                producer.produce(topic, key=key.record_key, value=key.to_json())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _old_store_class() -> type[Any] | None:
    try:
        source = subprocess.run(
            ["git", "show", f"{OLD_STORE_COMMIT}:src/runstate/crypto/_kafka_store.py"],
            cwd=h.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("old_kafka_store")
    exec(compile(source, "old_kafka_store.py", "exec"), module.__dict__)
    cls: type[Any] = module.KafkaKeyStore
    return cls


# -- the child processes -----------------------------------------------------------------
def _probe(kind: str, bootstrap: str, topic: str, folder: str, keys: int) -> dict[str, Any]:
    """One figure, measured in this (fresh) process."""
    if kind in ("agent", "old-agent"):
        started = time.perf_counter()
        if kind == "agent":
            store: Any = KafkaKeyStore(bootstrap, topic)
        else:
            cls = _old_store_class()
            assert cls is not None, "git is needed for the old store"
            store = cls(bootstrap, topic)
        cipher = PersonalDataCipher(MASTER, store)
        cipher.seal_value("ada@example.com", subject="new-run", run_id="new-run", field="input")
        seconds = time.perf_counter() - started
        read = store.records_read if kind == "agent" else store._next
        store.close()
        return {"seconds": seconds, "records_read": read, "rss_mb": _rss_mb()}
    if kind == "mirror":  # a new mirror (first build) or a kept one (start)
        started = time.perf_counter()
        store = KafkaKeyStore(bootstrap, topic, mirror=Path(folder))
        wanted = f"run-{keys + ADDED - 1:09d}"
        assert store.get(wanted, "0a0b0c0d") is not None
        seconds = time.perf_counter() - started
        rng = random.Random(7)
        times = []
        for _ in range(LOOKUPS):
            subject = f"run-{rng.randrange(keys):09d}"
            t0 = time.perf_counter()
            found = store.get(subject, "0a0b0c0d")
            times.append(time.perf_counter() - t0)
            assert found is not None
        figure = {
            "seconds": seconds,
            "records_read": store.records_read,
            "lookup_us": statistics.median(times) * 1e6,
            "rss_mb": _rss_mb(),
        }
        store.close()
        return figure
    raise ValueError(kind)


def _child(kind: str, bootstrap: str, topic: str, folder: str, keys: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "nice",
            sys.executable,
            "-m",
            "benchmarks.key_store",
            "--probe",
            kind,
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--folder",
            folder,
            "--keys",
            str(keys),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=h.ROOT,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the run -----------------------------------------------------------------------------
def measure(n: int, rounds: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="runstate-keys-bench-"))
    sizes = {"N": n, "10N": n * 10}
    figures: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in sizes}
    with h.bench_broker(base) as bootstrap:
        topics = {}
        for label, keys in sizes.items():
            names = h.create_topics(bootstrap, h.new_prefix(f"keys-{label}", 0), partitions=1)
            _fill(bootstrap, names.data_keys, 0, keys)
            topics[label] = names.data_keys
            print(f"{label}: {keys:,} keys written", flush=True)
        for label, keys in sizes.items():
            folder = str(base / f"mirror-{label}")
            build = _child("mirror-build", bootstrap, topics[label], folder, keys - ADDED)
            figures[label]["first_build"] = [build]
        for round_no in range(rounds):
            for label, keys in sizes.items():
                topic = topics[label]
                folder = str(base / f"mirror-{label}")
                _fill(bootstrap, topic, keys + round_no * ADDED, ADDED)
                kept = _child("mirror", bootstrap, topic, folder, keys + round_no * ADDED)
                agent = _child("agent", bootstrap, topic, folder, keys)
                old = _child("old-agent", bootstrap, topic, folder, keys)
                for name, figure in (("kept_start", kept), ("agent", agent), ("old", old)):
                    figures[label].setdefault(name, []).append(figure)
                print(
                    f"round {round_no} {label}: agent {agent['records_read']} records"
                    f" {agent['seconds'] * 1000:.0f} ms; kept mirror {kept['records_read']}"
                    f" records {kept['seconds'] * 1000:.0f} ms, lookup"
                    f" {kept['lookup_us']:.1f} us; old {old['records_read']} records"
                    f" {old['seconds'] * 1000:.0f} ms {old['rss_mb']:.0f} MB",
                    flush=True,
                )
    return {"keys": sizes, "rounds": rounds, "figures": figures}


def _median(runs: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(r[field] for r in runs))


def table(result: dict[str, Any]) -> str:
    f = result["figures"]
    rows = [
        ("Agent, first sealed value: records read", "agent", "records_read", "{:,.0f}"),
        ("Agent, first sealed value: time (ms)", "agent", "seconds", "ms"),
        ("Agent process peak RSS (MB)", "agent", "rss_mb", "{:,.0f}"),
        ("Kept mirror start (+100 keys): records read", "kept_start", "records_read", "{:,.0f}"),
        ("Kept mirror start: time to first key (ms)", "kept_start", "seconds", "ms"),
        ("Key lookup in the mirror, median (us)", "kept_start", "lookup_us", "{:,.1f}"),
        ("Process with a mirror, peak RSS (MB)", "kept_start", "rss_mb", "{:,.0f}"),
        ("Mirror first build: records read", "first_build", "records_read", "{:,.0f}"),
        ("Mirror first build: time (s)", "first_build", "seconds", "{:,.2f}"),
        ("Old store, first sealed value: records read", "old", "records_read", "{:,.0f}"),
        ("Old store, first sealed value: time (ms)", "old", "seconds", "ms"),
        ("Old store, process peak RSS (MB)", "old", "rss_mb", "{:,.0f}"),
    ]
    n, big = result["keys"]["N"], result["keys"]["10N"]
    lines = [
        f"| Figure | {n:,} keys | {big:,} keys | 10N / N |",
        "|---|---|---|---|",
    ]
    for title, group, field, fmt in rows:
        a, b = _median(f["N"][group], field), _median(f["10N"][group], field)
        shown = [f"{v * 1000:,.0f}" if fmt == "ms" else fmt.format(v) for v in (a, b)]
        ratio = f"{b / a:.2f}x" if a else ("1x" if b == a else "-")
        lines.append(f"| {title} | {shown[0]} | {shown[1]} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000, help="N (10 N is measured too)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        kind = "mirror" if args.probe == "mirror-build" else args.probe
        print(json.dumps(_probe(kind, args.bootstrap, args.topic, args.folder, args.keys)))
        return
    started = time.time()
    result = measure(args.keys, args.rounds)
    result["seconds"] = time.time() - started
    result["load_average"] = os.getloadavg()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = h.ROOT / "benchmarks" / "results" / f"{stamp}-key-store.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {out.relative_to(h.ROOT)}")


if __name__ == "__main__":
    main()
