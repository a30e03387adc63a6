"""``python -m benchmarks.restore``: how fast a partition store fills and restores.

Three figures, each over a few rounds (the median is printed; the machine may be noisy):

* **apply**: records/s into a fresh RocksDB partition store through
  ``PartitionStore.apply`` in batches (the store's own ceiling, no Kafka);
* **restore**: records/s of a full restore from a real changelog topic (written by a
  transactional producer, one aborted transaction per ten) into a fresh RocksDB store,
  end to end: consumer start, fetch, decode, apply;
* **reopen**: seconds until a kept store is open and caught up (nothing to read);
* **wal** (``--wal-only`` runs just this, no broker): apply's records/s with RocksDB's
  write-ahead log on (not synced) against off, rounds interleaved, at a checkpoint's batch
  size and at a restore's; the ratio is what keeping a kill -9's writes costs.

Starts its own broker in a temp directory (as the tests do) unless ``--bootstrap`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import Producer

from runstate.runtime.recovery import ChangelogRestorer, changelog_consumer
from runstate.runtime.rocksdb_store import RocksDBOptions, RocksDBStore
from runstate.runtime.store import Write
from runstate.streams.broker import KAFKA_VERSION, BrokerConfig, LocalBroker, free_port
from runstate.streams.topics import TopicSpec, admin_client, ensure_topics

ROOT = Path(__file__).resolve().parents[1]


def _values(value_bytes: int) -> list[bytes]:
    """A pool of JSON-like values: field names repeat, ids and numbers do not (run state
    compresses about as well: some 2-3x, not the 10x a repeated string would)."""
    rng = random.Random(7)
    pool = []
    for _ in range(4096):
        fields = {
            "status": rng.choice(["running", "waiting_approval", "succeeded", "failed"]),
            "step": rng.randrange(10**6),
            "attempt": rng.randrange(5),
            "last_event_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "updated_ms": 1_790_000_000_000 + rng.randrange(10**9),
            "note": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(value_bytes)),
        }
        pool.append(json.dumps(fields).encode()[: value_bytes - 2] + b'"}')
    return pool


def _writes(count: int, value_bytes: int, *, seed: int) -> Iterator[Write]:
    """Keys of a realistic shape (several keys per run, runs in random order)."""
    pool = _values(value_bytes)
    rng = random.Random(seed)
    for i in range(count):
        run = uuid.UUID(int=rng.getrandbits(128)).hex
        yield f"run/{run}/{i % 4}".encode(), pool[i % len(pool)]


def bench_apply(
    work: Path, *, records: int, value_bytes: int, batch: int, wal: bool = True
) -> tuple[float, float]:
    """(records/s of apply, seconds to reopen the filled store and read its offset)."""
    store = RocksDBStore(work / "apply", options=RocksDBOptions(wal=wal))
    part = store.open(0)
    writes = list(_writes(records, value_bytes, seed=1))
    started = time.perf_counter()
    for at in range(0, records, batch):
        part.apply(writes[at : at + batch], changelog_offset=at + batch - 1)
    part.close()  # flushes the memtables: part of the cost
    seconds = time.perf_counter() - started
    store.close()
    started = time.perf_counter()
    reopened = RocksDBStore(work / "apply")
    assert reopened.open(0).changelog_offset() is not None
    reopen_s = time.perf_counter() - started
    reopened.close()
    shutil.rmtree(work / "apply")
    return records / seconds, reopen_s


def fill_changelog(
    bootstrap: str, *, records: int, value_bytes: int, compression: str, partitions: int
) -> tuple[str, int]:
    topic = f"bench-restore-{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(topic, partitions, {"cleanup.policy": "compact"})
    ensure_topics(admin_client(bootstrap), [spec])
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": topic,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": compression,
        }
    )
    producer.init_transactions(30)
    per_tx = 10_000
    committed = 0
    writes = _writes(records, value_bytes, seed=2)
    for tx in range(0, records, per_tx):
        producer.begin_transaction()
        for i in range(min(per_tx, records - tx)):
            key, value = next(writes)
            while True:
                try:
                    producer.produce(topic, key=key, value=value, partition=i % partitions)
                    break
                except BufferError:
                    producer.poll(0.05)
        if (tx // per_tx) % 10 == 9:
            producer.flush(60)
            producer.abort_transaction(60)
        else:
            producer.commit_transaction(60)
            committed += min(per_tx, records - tx)
    return topic, committed


def bench_restore(
    work: Path, bootstrap: str, topic: str, *, batch: int, partitions: int
) -> tuple[float, int]:
    """Every partition restored by one restorer (one consumer), as a starting worker does."""
    store = RocksDBStore(work / "restore")
    started = time.perf_counter()
    restorer = ChangelogRestorer(changelog_consumer(bootstrap), topic, batch_records=batch)
    reports = restorer.catch_up({p: store.open(p) for p in range(partitions)})
    restorer.close()
    store.close()  # flushes: a restored store is on disk
    seconds = time.perf_counter() - started
    records = sum(r.records for r in reports.values())
    return records / seconds, records


def bench_reopen(work: Path, bootstrap: str, topic: str, *, partitions: int) -> float:
    started = time.perf_counter()
    store = RocksDBStore(work / "restore")
    restorer = ChangelogRestorer(changelog_consumer(bootstrap), topic)
    reports = restorer.catch_up({p: store.open(p) for p in range(partitions)})
    assert sum(r.records for r in reports.values()) == 0, reports
    seconds = time.perf_counter() - started
    restorer.close()
    store.close()
    return seconds


def bench_wal(work: Path, *, records: int, value_bytes: int, batch: int, rounds: int) -> None:
    """Print apply's records/s with the WAL on and off (interleaved) and their ratio."""
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):
        on.append(bench_apply(work, records=records, value_bytes=value_bytes, batch=batch)[0])
        off.append(
            bench_apply(work, records=records, value_bytes=value_bytes, batch=batch, wal=False)[0]
        )
    ratio = statistics.median(on) / statistics.median(off)
    print(
        f"wal:     batch {batch:>6,}: on {statistics.median(on):>10,.0f} records/s, off "
        f"{statistics.median(off):>10,.0f} records/s (medians of {rounds}); on/off {ratio:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apply-records", type=int, default=1_000_000)
    parser.add_argument("--restore-records", type=int, default=300_000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20_000, help="records per store write")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=1, help="changelog partitions")
    parser.add_argument("--compression", default="lz4", help="the changelog producer's codec")
    parser.add_argument("--bootstrap", help="use this cluster instead of starting a broker")
    parser.add_argument("--wal-only", action="store_true", help="only the WAL on/off ratio")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="runstate-bench-restore-"))
    if args.wal_only:
        try:
            # a checkpoint's batch (one interval's writes) and a restore's
            for batch in (100, 5_000):
                bench_wal(
                    work,
                    records=min(args.apply_records, 50 * batch),
                    value_bytes=args.value_bytes,
                    batch=batch,
                    rounds=args.rounds,
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    broker: LocalBroker | None = None
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            broker = LocalBroker(
                BrokerConfig(
                    data_dir=work / "kafka",
                    jars_dir=ROOT / ".runstate" / "jars" / f"kafka-{KAFKA_VERSION}",
                    port=free_port(),
                    controller_port=free_port(),
                )
            )
            broker.start()
            bootstrap = broker.config.bootstrap
        print(
            f"cpus={os.cpu_count()} batch={args.batch} value={args.value_bytes}B "
            f"partitions={args.partitions} compression={args.compression}"
        )

        rounds = [
            bench_apply(
                work, records=args.apply_records, value_bytes=args.value_bytes, batch=args.batch
            )
            for _ in range(args.rounds)
        ]
        applied = [rate for rate, _ in rounds]
        print(
            f"apply:   {statistics.median(applied):>10,.0f} records/s (median; rounds "
            f"{', '.join(f'{r:,.0f}' for r in applied)}) over {args.apply_records:,} records"
        )
        print(
            f"open:    {statistics.median(s for _, s in rounds):>10.3f} s to reopen that store "
            f"({args.apply_records:,} records) and read its offset"
        )

        started = time.perf_counter()
        topic, committed = fill_changelog(
            bootstrap,
            records=args.restore_records,
            value_bytes=args.value_bytes,
            compression=args.compression,
            partitions=args.partitions,
        )
        print(
            f"filled {topic}: {args.restore_records:,} records ({committed:,} committed) in "
            f"{time.perf_counter() - started:.1f}s"
        )
        restored: list[float] = []
        for _ in range(args.rounds):
            shutil.rmtree(work / "restore", ignore_errors=True)
            rate, count = bench_restore(
                work, bootstrap, topic, batch=args.batch, partitions=args.partitions
            )
            assert count == committed, (count, committed)
            restored.append(rate)
        print(
            f"restore: {statistics.median(restored):>10,.0f} records/s (median; rounds "
            f"{', '.join(f'{r:,.0f}' for r in restored)}), end to end"
        )
        reopened = [
            bench_reopen(work, bootstrap, topic, partitions=args.partitions)
            for _ in range(args.rounds)
        ]
        print(
            f"reopen:  {statistics.median(reopened):>10.3f} s until a kept store is open "
            f"and caught up ({count:,} records kept)"
        )
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
