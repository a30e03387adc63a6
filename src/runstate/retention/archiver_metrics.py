"""The archiver's ``/metrics`` in the Prometheus text format (docs/metrics.md lists them).

``runstate archive run --metrics-port N`` serves them on ``127.0.0.1:N`` from a thread of
its own. The archiver's loop only adds to the counts it keeps anyway
(:class:`~runstate.retention.archiver.ArchiverStats`) and notes its partitions' ends twice a
second from the consumer's cache; the watermarks and lags are worked out when Prometheus
scrapes. A registry per archiver, not the process-wide one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runstate.errors import ArchiveError
from runstate.retention.archiver import Archiver

__all__ = ["ARCHIVER_METRICS", "ArchiverMetrics"]

#: Every metric family the archiver exports (name -> type).
ARCHIVER_METRICS: Final = {
    "runstate_archiver_records": "counter",
    "runstate_archiver_segments": "counter",
    "runstate_archiver_bytes": "counter",
    "runstate_archiver_failed_puts": "counter",
    "runstate_archive_watermark": "gauge",
    "runstate_archive_lag": "gauge",
}


class ArchiverMetrics(Collector):
    """The collector of one :class:`Archiver`, in a registry of its own."""

    def __init__(self, archiver: Archiver) -> None:
        self._archiver = archiver
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, *, host: str = "127.0.0.1") -> None:
        """Serve ``GET /metrics`` on ``host:port`` in a daemon thread until :meth:`stop`.

        Raises:
            ArchiveError: the port cannot be bound (in use?).
        """
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise ArchiveError(
                f"cannot serve metrics on {host}:{port}: {exc}; choose another --metrics-port"
            ) from exc

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def collect(self) -> Iterable[Metric]:
        a = self._archiver
        stats = a.stats
        topic = a.config.topic
        for name, doc, value in (
            (
                "runstate_archiver_records",
                "Records archived (in published segments).",
                stats.records,
            ),
            ("runstate_archiver_segments", "Segments published.", stats.segments),
            ("runstate_archiver_bytes", "Bytes of segments published.", stats.segment_bytes),
            (
                "runstate_archiver_failed_puts",
                "Segments that could not be published (retried from the store).",
                stats.failed_puts,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=["topic"])
            family.add_metric([topic], value)
            yield family
        marks = a.watermarks()
        ends = a.ends
        watermark = GaugeMetricFamily(
            "runstate_archive_watermark",
            "First offset of the partition not in the archive yet (all below it are).",
            labels=["topic", "partition"],
        )
        lag = GaugeMetricFamily(
            "runstate_archive_lag",
            "Offsets of the partition not archived yet: its end minus the watermark.",
            labels=["topic", "partition"],
        )
        for p, mark in sorted(marks.items()):
            watermark.add_metric([topic, str(p)], mark)
            end = ends.get(p)
            if end is not None:
                lag.add_metric([topic, str(p)], max(0, end - mark))
        yield watermark
        yield lag
