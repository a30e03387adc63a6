"""Every confluent-kafka client runstate creates, made in one place.

Three things every client needs and none should repeat:

* librdkafka's own log lines go through Python :mod:`logging` (logger ``runstate.kafka``)
  instead of straight to file descriptor 2, and each distinct line at most once per
  :data:`LOG_REPEAT_S` seconds: with the broker down librdkafka repeats "Connect ... failed"
  several times a second, which buried a command's one error line under hundreds.
* A transport failure (broker down, unknown host, request timed out) becomes a
  :class:`~runstate.errors.BrokerError` that says which servers and what to do
  (:func:`broker_errors`), so no caller has to know confluent-kafka's error codes.
* :func:`require_reachable` answers "is anything listening?" in well under a second, where
  a librdkafka request would wait out its whole timeout before saying the broker is down.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from runstate.errors import BrokerError
from runstate.settings import load_settings

__all__ = [
    "KAFKA_LOGGER",
    "LOG_REPEAT_S",
    "admin_client",
    "broker_errors",
    "client_config",
    "consumer",
    "is_transport_error",
    "producer",
    "require_reachable",
    "unreachable",
]

#: Name of the Python logger librdkafka's lines go to.
KAFKA_LOGGER = "runstate.kafka"

#: The same librdkafka line is logged at most once per this many seconds.
LOG_REPEAT_S = 60.0

_TRANSPORT_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
    }
)

# durations and counts that change between two repeats of one line ("after 12ms",
# "3 request(s)"); addresses and ports stay, so two brokers down are two lines
_VARYING = re.compile(r"\d+(?:\.\d+)?\s*(?:ms|s|request\(s\)|requests?)\b")


class _RepeatFilter(logging.Filter):
    """Drops a librdkafka line seen in the last ``every_s`` seconds.

    Lines are compared with durations and counts blanked out ("after 0ms", "1 request(s)"),
    so a line that differs only by those counts as a repeat.
    """

    def __init__(self, every_s: float) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        # confluent-kafka logs ("%s [%s] %s", facility, client name, text); the client name
        # is left out so one failure seen by a producer and a consumer is logged once
        args = record.args
        text = f"{args[0]} {args[2]}" if isinstance(args, tuple) and len(args) == 3 else None
        key = _VARYING.sub("#", text if text is not None else record.getMessage())
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                return False
            if len(self._last) > 1000:  # bounded memory for a long-running process
                self._last.clear()
            self._last[key] = now
        return True


def _kafka_logger() -> logging.Logger:
    log = logging.getLogger(KAFKA_LOGGER)
    if not any(isinstance(f, _RepeatFilter) for f in log.filters):
        log.addFilter(_RepeatFilter(LOG_REPEAT_S))
    return log


def client_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` plus the ``logger`` that routes librdkafka's lines through logging, on top
    of the Kafka security settings (``RUNSTATE_KAFKA_*``: SASL and TLS), so every client
    runstate makes authenticates the same way. Keys in ``config`` win.

    Raises:
        ConfigError: the security settings are incomplete (e.g. SASL without a password).
    """
    return {**load_settings().kafka_security(), **config, "logger": _kafka_logger()}


def producer(config: Mapping[str, Any]) -> Producer:
    """A confluent-kafka Producer whose librdkafka lines go through logging."""
    return Producer(client_config(config))


def consumer(config: Mapping[str, Any]) -> Consumer:
    """A confluent-kafka Consumer whose librdkafka lines go through logging."""
    return Consumer(client_config(config))


def admin_client(bootstrap_servers: str, **config: Any) -> AdminClient:
    """An AdminClient whose librdkafka lines go through logging."""
    return AdminClient(client_config({"bootstrap.servers": bootstrap_servers, **config}))


def is_transport_error(exc: BaseException | KafkaError | None) -> bool:
    """True if ``exc`` (an exception, or a consumer's error event) says the broker could not
    be reached or did not answer in time."""
    if isinstance(exc, KafkaException) and exc.args:
        exc = exc.args[0]
    return isinstance(exc, KafkaError) and exc.code() in _TRANSPORT_CODES


def unreachable(bootstrap_servers: str, detail: object) -> BrokerError:
    """The one BrokerError every "cannot reach Kafka" failure becomes."""
    return BrokerError(
        f"cannot reach Kafka at {bootstrap_servers} ({detail}); start the broker"
        " (`runstate broker start`) or point RUNSTATE_BOOTSTRAP_SERVERS (or --bootstrap)"
        " at a running one"
    )


@contextmanager
def broker_errors(bootstrap_servers: str) -> Iterator[None]:
    """Turn confluent-kafka transport failures inside the block into :class:`BrokerError`.

    Other Kafka errors (an unknown topic, an authorization failure) pass unchanged: they are
    not about reaching the broker and their callers decide what they mean.
    """
    try:
        yield
    except KafkaException as exc:
        if not is_transport_error(exc):
            raise
        error = exc.args[0]
        raise unreachable(bootstrap_servers, error.str()) from exc


def _addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    found = []
    for server in bootstrap_servers.split(","):
        server = server.strip()
        if "://" in server:
            server = server.split("://", 1)[1]
        host, sep, port = server.rpartition(":")
        if not sep or not port.isdigit():
            continue  # let librdkafka judge what we cannot parse
        found.append((host.strip("[]") or "localhost", int(port)))
    return found


def require_reachable(bootstrap_servers: str, *, timeout_s: float = 3.0) -> None:
    """Fail fast unless at least one bootstrap server accepts a TCP connection.

    Only the TCP connection is tried (no Kafka request), so a broker that is up but slow
    still gets the caller's own, longer timeout.

    Raises:
        BrokerError: no bootstrap server accepted a connection within ``timeout_s``.
    """
    addresses = _addresses(bootstrap_servers)
    if not addresses:
        return
    reasons = []
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or exc}")
    raise unreachable(bootstrap_servers, "; ".join(reasons))
