"""The runtime worker's settings: one typed, validated object per worker.

Shared settings (bootstrap servers, topic prefix, partitions, size limit) come from
:class:`runstate.settings.Settings`; what only a runtime worker needs is read from
``RUNSTATE_RUNTIME_*`` variables and can be overridden by keyword (tests, the CLI).
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runstate.settings import Settings, load_worker_config
from runstate.streams.topics import TopicNames

__all__ = ["RuntimeConfig", "load_runtime_config", "retired_settings"]

log = logging.getLogger(__name__)

#: Bind addresses that mean "every interface": no other machine can reach a worker there.
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})

#: Settings of the retired faust processor whose runtime setting changed its unit or name.
_RENAMED = {"RUNSTATE_PROCESSOR_SESSION_TIMEOUT_S": "RUNSTATE_RUNTIME_SESSION_TIMEOUT_MS"}


class RuntimeConfig(BaseSettings):
    """Everything one runtime worker is configured with; validated at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="RUNSTATE_RUNTIME_", env_file=".env", extra="ignore", frozen=True
    )

    worker_id: str = Field(
        "worker-1", min_length=1, description="names the worker; fixes its transactional.id"
    )
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("runstate", description="prefix of every topic name")
    partitions: int = Field(6, ge=1, le=1000, description="partitions of the events topic")
    replication_factor: int = Field(1, ge=1, description="replication of created topics")
    data_dir: Path = Field(Path(".runstate/runtime"), description="local state stores")
    max_event_bytes: int = Field(256 * 1024, ge=1024, description="larger records are DLQ'd")
    commit_interval_s: float = Field(0.1, gt=0, description="one checkpoint per interval")
    read_commit_gap_s: float = Field(
        0.01,
        ge=0,
        description="while a query waits for a write the worker has processed, checkpoint"
        " this long after the last one instead of at the interval",
    )
    batch_size: int = Field(500, ge=1, description="most records taken per consume()")
    checkpoint_max_records: int = Field(
        2_000,
        ge=1,
        description="a checkpoint commits once this many records are handled, even before"
        " commit_interval_s: bounds its store write, which holds the GIL (a backlog never"
        " makes one larger)",
    )
    switch_interval_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="how long the poll loop may hold the GIL while another thread (the"
        " query API, /health) waits for it; Python's default is 5",
    )
    exactly_once: bool = Field(
        True, description="Kafka transactions; False: at-least-once, idempotent reducer"
    )
    static_membership: bool = Field(
        True, description="rejoin as the same group member after a restart (keeps partitions)"
    )
    session_timeout_ms: int = Field(10_000, ge=1000, description="consumer group session")
    heartbeat_interval_ms: int = Field(1_000, ge=100, description="consumer group heartbeat")
    transaction_timeout_ms: int = Field(
        60_000, ge=1000, description="the broker aborts a transaction left open this long"
    )
    decoded_state_cache: int = Field(10_000, ge=0, description="decoded states kept (LRU)")
    broker_timeout_s: float = Field(60.0, gt=0, description="longest wait on one broker call")
    broker_outage_s: float = Field(
        600.0, gt=0, description="longest broker outage waited out in-process; then exit 75"
    )
    deadline_interval_s: float = Field(5.0, gt=0, description="approval deadline check period")
    expiry_resend_s: float = Field(30.0, gt=0, description="re-send a lost expiry after this")
    finished_hot_s: float = Field(
        30 * 86_400.0, ge=0, description="finished runs leave the store after this; 0: never"
    )
    eviction_interval_s: float = Field(60.0, gt=0, description="finished-run eviction period")
    journal: bool = Field(
        True, description="keep each run's event journal (GET /runs/{id}/events, the timeline)"
    )
    store: Literal["rocksdb", "memory"] = Field(
        "rocksdb", description="local stores: rocksdb (kept across restarts) or memory"
    )
    standby_replicas: int = Field(
        0, ge=0, le=10, description="warm copies of each partition kept by other workers"
    )
    standby_interval_s: float = Field(0.5, gt=0, description="standby tailing period")
    standby_tick_records: int = Field(
        5_000, ge=1, description="changelog records one standby tick reads at most"
    )
    store_wal: bool = Field(
        True, description="RocksDB write-ahead log (not synced): a kill -9 keeps the store"
    )
    store_min_free_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="free space the store's device must keep; a write finding less stops with"
        " a clear error instead of stalling inside RocksDB (0: no check)",
    )
    block_cache_bytes: int = Field(64 * 1024 * 1024, ge=1 << 20, description="RocksDB cache")
    web_host: str = Field("127.0.0.1", description="interface of the HTTP query API")
    web_port: int = Field(6066, ge=0, le=65535, description="port of the query API; 0: none")
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of /health answered by a process of its own (point probes here);"
        " unset: web_port + 1 (none with web_port 0); 0: none",
    )
    health_stall_s: float = Field(
        5.0,
        gt=0,
        description="/health says degraded once the loop has not polled for this long, and"
        " the health port answers 503 (stalled) if the worker gives no reason it waits",
    )
    advertised_url: str = Field(
        "",
        description="where other workers reach this one's query API, e.g."
        " http://runstate-0.runstate:6066; empty: http://<web_host>:<web_port> (the host"
        " name when web_host binds every interface)",
    )
    query_timeout_s: float = Field(5.0, gt=0, description="default read-your-writes wait")
    crash_at: str = Field(
        "", description="tests only: 'point:n[,point:n]' exits 137 at the n-th pass of point"
    )

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @field_validator("advertised_url")
    @classmethod
    def _reachable_url(cls, value: str) -> str:
        """An ``http(s)://host[:port]`` others can dial; the bind address has its own setting."""
        if not value:
            return value
        parts = urllib.parse.urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path.strip("/")
            or parts.query
            or any(c.isspace() for c in value)
        ):
            raise ValueError(f"{value!r} is not a URL like http://runstate-0.runstate:6066")
        if parts.hostname in _WILDCARDS or parts.hostname == "::":
            raise ValueError(
                f"{value!r}: {parts.hostname} is where to listen (web_host), not an address"
                " other workers can reach; advertise this worker's host name or IP address"
            )
        if parts.port == 0:  # (.port itself raises ValueError when out of range)
            raise ValueError(f"{value!r}: port 0 cannot be dialled; name the port it listens on")
        return value.rstrip("/")

    @property
    def url(self) -> str:
        """Where other workers reach this one's query API (carried in its ``client.id``).

        The advertised URL if set; else the bind address, with this machine's host name in
        place of a wildcard (0.0.0.0, ::), which no other worker could dial.
        """
        if self.advertised_url:
            return self.advertised_url
        host = socket.gethostname() if self.web_host in _WILDCARDS else self.web_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.web_port}"

    @property
    def health_listen_port(self) -> int:
        """Where the health process listens: ``health_port``, else the query API's port + 1
        (0: no health process)."""
        if self.health_port is not None:
            return self.health_port
        return self.web_port + 1 if 0 < self.web_port < 65535 else 0

    @property
    def group_id(self) -> str:
        return self.names.runtime_group

    @property
    def transactional_id(self) -> str:
        """Stable per worker id, so a restarted worker fences its own older instance."""
        return f"{self.group_id}-{self.worker_id}"


def load_runtime_config(settings: Settings | None = None, **overrides: Any) -> RuntimeConfig:
    """The worker's config: shared settings, then ``RUNSTATE_RUNTIME_*``, then overrides.

    Overrides whose value is None are ignored, so CLI options can be passed straight through.

    Raises:
        ConfigError: a value is invalid; the message names the setting.
    """
    for warning in retired_settings(os.environ):
        log.warning("%s", warning)
    return load_worker_config(
        RuntimeConfig, settings, data_dir="runtime", what="runtime", overrides=overrides
    )


def retired_settings(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``RUNSTATE_PROCESSOR_*`` variable set: the faust processor read them,
    the runtime does not (a deployment switching over would otherwise lose them silently)."""
    out = []
    for name in sorted(n for n in environ if n.startswith("RUNSTATE_PROCESSOR_")):
        new = _RENAMED.get(name) or name.replace("RUNSTATE_PROCESSOR_", "RUNSTATE_RUNTIME_", 1)
        field = new.removeprefix("RUNSTATE_RUNTIME_").lower()
        hint = f"use {new}" if field in RuntimeConfig.model_fields else "it has no equivalent"
        out.append(f"{name} is not read any more (the faust processor's setting); {hint}")
    return out
