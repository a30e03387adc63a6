"""Typed settings, read from ``RUNSTATE_*`` environment variables (and ``.env``)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from runstate.errors import ConfigError

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything runstate can be configured with; validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="RUNSTATE_", env_file=".env", extra="ignore")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    state_dir: Path = Field(Path(".runstate"), description="where local state lives")
    topic_prefix: str = Field("runstate", description="prefix of every topic name")
    partitions: int = Field(6, ge=1, le=1000, description="partitions of the events topic")
    replication_factor: int = Field(1, ge=1, description="replication of created topics")
    max_event_bytes: int = Field(
        256 * 1024, ge=1024, description="largest encoded event the SDK will send"
    )
    producer_name: str = Field("runstate-sdk", description="producer identity in events")
    query_url: str = Field(
        "http://127.0.0.1:6066", description="a processor worker's HTTP query API"
    )
    mask_keys: SecretStr | None = Field(
        None,
        description="personal-data mask keys, newest first: id1:<base64 secret>[,id2:...]",
    )
    mask_keys_file: Path | None = Field(
        None, description="file holding the mask keys (same form), instead of mask_keys"
    )
    master_key: SecretStr | None = Field(
        None,
        description="master key wrapping the per-subject data keys: base64 of 32 bytes"
        " (personal fields are encrypted when set; docs/security.md)",
    )
    master_key_file: Path | None = Field(
        None, description="file holding the master key (same form), instead of master_key"
    )
    master_key_accepted: SecretStr | None = Field(
        None,
        description="more master keys (base64, comma-separated) that unwrap data keys but never"
        " wrap new ones: the previous and next keys of a rotation (`runstate keys rotate`)",
    )
    key_store: str = Field(
        "kafka",
        description="where wrapped data keys live: 'kafka' (the compacted data-keys topic)"
        " or a folder path (local use)",
    )
    key_cache_dir: Path | None = Field(
        None,
        description="folder for the local mirror of the data-keys topic (RocksDB) that"
        " `runstate replay` and `erase` keep between runs [default: <state_dir>/key-cache];"
        " set for an agent process, it opens keys from a mirror there instead of asking the"
        " query API",
    )
    auth_file: Path | None = Field(
        None,
        description="identity file (TOML) of principals, roles, groups and token hashes; set:"
        " the query API and the CLI's decisions and operator commands require a token",
    )
    auth_dev: bool = Field(
        False,
        description="run the query API without authentication on a non-loopback interface"
        " (local development only; logged loudly)",
    )
    token: SecretStr | None = Field(
        None, description="bearer token the CLI and SDK clients send to the query API"
    )
    console_secret: SecretStr | None = Field(
        None,
        description="signs the operator console's session cookies (at least 32 characters);"
        " unset: a random one per console process, so a restart signs everyone out",
    )
    console_session_hours: float = Field(
        8.0, gt=0, le=24 * 7, description="how long a console sign-in lasts"
    )

    # Kafka client security, applied to every client runstate makes (docs/security.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="how clients talk to Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (with a SASL_* protocol)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user: the role's principal")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_sasl_password_file: Path | None = Field(
        None, description="file holding the SASL password, instead of kafka_sasl_password"
    )
    kafka_ssl_ca_location: Path | None = Field(
        None, description="CA certificate(s) that signed the brokers' certificates (PEM)"
    )
    kafka_ssl_certificate_location: Path | None = Field(
        None, description="client certificate for mTLS (PEM)"
    )
    kafka_ssl_key_location: Path | None = Field(None, description="client key for mTLS (PEM)")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of the client key, if it has one"
    )

    def kafka_security(self) -> dict[str, str]:
        """The librdkafka settings for the configured security; empty for PLAINTEXT.

        Raises:
            ConfigError: a SASL protocol without a user or password, or an unreadable
                password file.
        """
        config: dict[str, str] = {}
        if self.kafka_security_protocol == "PLAINTEXT":
            return config
        config["security.protocol"] = self.kafka_security_protocol.lower()
        if self.kafka_security_protocol.startswith("SASL_"):
            password = self._sasl_password()
            if not self.kafka_sasl_username or password is None:
                raise ConfigError(
                    f"RUNSTATE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs"
                    " RUNSTATE_KAFKA_SASL_USERNAME and RUNSTATE_KAFKA_SASL_PASSWORD (or"
                    " RUNSTATE_KAFKA_SASL_PASSWORD_FILE)"
                )
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = password
        tls = {
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
        }
        config.update({k: str(v) for k, v in tls.items() if v is not None})
        if self.kafka_ssl_key_password is not None:
            config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        return config

    def _sasl_password(self) -> str | None:
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        if self.kafka_sasl_password_file is None:
            return None
        try:
            return self.kafka_sasl_password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"RUNSTATE_KAFKA_SASL_PASSWORD_FILE: cannot read {self.kafka_sasl_password_file}:"
                f" {exc.strerror}"
            ) from exc


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Settings from the environment, cached.

    Raises:
        ConfigError: a ``RUNSTATE_*`` variable has a bad value; the message names it.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"RUNSTATE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


_Worker = TypeVar("_Worker", bound=BaseSettings)


def load_worker_config(
    model: type[_Worker],
    settings: Settings | None,
    *,
    data_dir: str,
    what: str,
    overrides: Mapping[str, Any],
) -> _Worker:
    """A worker's settings: the shared ones, then its own ``RUNSTATE_<KIND>_*`` variables
    (``model``'s prefix), then ``overrides`` (None-valued ones ignored, so CLI options pass
    straight through). ``data_dir`` names the worker's folder under the state dir.

    Raises:
        ConfigError: a value is invalid; the message names the setting.
    """
    s = settings or load_settings()
    shared = {
        "bootstrap_servers": s.bootstrap_servers,
        "topic_prefix": s.topic_prefix,
        "partitions": s.partitions,
        "replication_factor": s.replication_factor,
        "max_event_bytes": s.max_event_bytes,
        "data_dir": s.state_dir / data_dir,
    }
    try:
        from_env = model()
        values = {**shared, **from_env.model_dump(exclude_unset=True)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return model(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid {what} settings: {problems}") from exc
