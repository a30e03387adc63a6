"""The run-state processor's settings: one typed, validated object per worker.

Shared settings (bootstrap servers, topic prefix, partitions, size limit) come from
:class:`runstate.settings.Settings`; what only a processor worker needs is read from
``RUNSTATE_PROCESSOR_*`` variables and can be overridden by command-line options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from runstate.settings import Settings, load_worker_config
from runstate.streams.topics import TopicNames

__all__ = ["ProcessorConfig", "load_processor_config"]

_MIB = 1024 * 1024


class ProcessorConfig(BaseSettings):
    """Everything one processor worker is configured with; validated at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="RUNSTATE_PROCESSOR_", env_file=".env", extra="ignore", frozen=True
    )

    worker_id: str = Field("worker-1", min_length=1, description="names this worker in DLQ")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("runstate", description="prefix of every topic name")
    partitions: int = Field(6, ge=1, le=1000, description="partitions of the events topic")
    replication_factor: int = Field(1, ge=1, description="replication of changelog topics")
    standby_replicas: int = Field(0, ge=0, description="standby copies of each table partition")
    data_dir: Path = Field(Path(".runstate/processor"), description="RocksDB and faust state")
    web_host: str = Field("127.0.0.1", description="interface of the HTTP query API")
    web_port: int = Field(6066, ge=1, le=65535, description="port of the HTTP query API")
    max_event_bytes: int = Field(256 * 1024, ge=1024, description="larger records are DLQ'd")
    deadline_interval_s: float = Field(5.0, gt=0, description="approval deadline scan period")
    expiry_resend_s: float = Field(30.0, gt=0, description="re-send a lost expiry after this")
    block_cache_bytes: int = Field(16 * _MIB, ge=_MIB, description="RocksDB block cache/DB")
    write_buffer_bytes: int = Field(8 * _MIB, ge=_MIB, description="RocksDB memtable size")
    session_timeout_s: float = Field(10.0, ge=6.0, description="consumer group session")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="consumer group heartbeat")
    commit_interval_s: float = Field(1.0, gt=0, description="offset commit period")
    stall_fence_share: float = Field(
        0.5, gt=0, lt=1, description="a stall this share of the session timeout fences"
    )
    restart_when_fenced: bool = Field(
        True, description="fenced/offset gap: re-execute in place (else exit 75/76)"
    )
    batch_max: int = Field(500, ge=1, description="most events applied per output round trip")
    batch_within_s: float = Field(0.01, gt=0, description="longest wait to fill a batch")
    query_timeout_s: float = Field(5.0, gt=0, description="default read-your-writes wait")
    log_level: str = Field("warn", description="faust log level: crit|error|warn|info|debug")

    @property
    def app_id(self) -> str:
        """faust app id; also the consumer group and the changelog topic's prefix."""
        return f"{self.topic_prefix}-processor"

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def url(self) -> str:
        """Where other workers reach this one (faust's ``canonical_url``)."""
        return f"http://{self.web_host}:{self.web_port}"

    @property
    def rocksdb_options(self) -> dict[str, int]:
        """Per-partition RocksDB sizing; faust's defaults (2 GiB cache, 64 MiB memtables x3)
        would reserve gigabytes for a handful of partitions."""
        return {
            "block_cache_size": self.block_cache_bytes,
            "block_cache_compressed_size": self.block_cache_bytes // 4,
            "write_buffer_size": self.write_buffer_bytes,
            "max_write_buffer_number": 2,
            "target_file_size_base": 16 * _MIB,
            "max_open_files": 256,
        }


def load_processor_config(settings: Settings | None = None, **overrides: Any) -> ProcessorConfig:
    """The worker's config: shared settings, then ``RUNSTATE_PROCESSOR_*``, then overrides.

    Overrides whose value is None are ignored, so CLI options can be passed straight through.

    Raises:
        ConfigError: a value is invalid; the message names the setting.
    """
    return load_worker_config(
        ProcessorConfig, settings, data_dir="processor", what="processor", overrides=overrides
    )
