"""The archiver's ``/metrics``: its watermark and lag per partition while a segment is open
(the archive behind), and both caught up once the segment is published."""

from __future__ import annotations

import threading
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runstate.retention import LocalArchive
from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.archiver_metrics import ARCHIVER_METRICS, ArchiverMetrics
from runstate.streams.broker import free_port
from tests.polling import assert_eventually

from .kafka_support import create_topics, generate_runs, in_time_order, produce

pytestmark = pytest.mark.integration


def _scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError as exc:
        raise AssertionError(f"/metrics did not answer: {exc}") from exc
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _per_partition(samples: dict[tuple[tuple[str, str], ...], float]) -> dict[int, float]:
    return {int(dict(labels)["partition"]): v for labels, v in samples.items()}


def test_archive_lag_shows_the_open_segment_and_falls_to_zero_once_published(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("archm")
    names = create_topics(kafka_bootstrap, prefix)
    deliveries = produce(kafka_bootstrap, prefix, in_time_order(generate_runs(20)))
    per_partition = Counter(d.partition for d in deliveries)
    ends = {p: max(d.offset for d in deliveries if d.partition == p) + 1 for p in per_partition}
    config = ArchiverConfig(
        kafka_bootstrap, names.events, f"{prefix}-g", roll_records=1_000_000, roll_seconds=8.0
    )
    archiver = Archiver(config, LocalArchive(tmp_path / "archive"))
    metrics = ArchiverMetrics(archiver)
    port = free_port()
    metrics.serve(port)
    stop = threading.Event()
    thread = threading.Thread(target=archiver.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:

        def behind() -> bool:
            samples = _scrape(port)
            lag = _per_partition(samples.get("runstate_archive_lag", {}))
            assert lag == {p: float(ends[p]) for p in ends}, lag
            marks = _per_partition(samples["runstate_archive_watermark"])
            assert marks == {p: 0.0 for p in ends}, marks
            return True

        assert_eventually(behind, timeout_s=60, what="lag = the unpublished records")

        def caught_up() -> bool:
            samples = _scrape(port)
            assert _per_partition(samples["runstate_archive_lag"]) == {p: 0.0 for p in ends}
            marks = _per_partition(samples["runstate_archive_watermark"])
            assert marks == {p: float(e) for p, e in ends.items()}, marks
            records = samples["runstate_archiver_records_total"]
            assert records == {(("topic", names.events),): float(len(deliveries))}
            return True

        assert_eventually(caught_up, timeout_s=60, what="segments published, lag zero")
        exported = {n.removesuffix("_total") for n in _scrape(port)}
        assert set(ARCHIVER_METRICS) <= exported
    finally:
        stop.set()
        thread.join(60)
        metrics.stop()
