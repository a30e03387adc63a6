"""How every ``runstate`` command fails: one ``error: ...`` line on stderr and an exit code.

Exit codes (the same for every command; README.md lists them):

* 0: done, and all is well.
* 1: failed, or the answer is "not ok" (a check failed, a mismatch, an unknown run, the
  extra the command needs not installed). The line on stderr says why and what to do.
* 2: usage: a bad option or argument value, a missing file (click's own usage errors).
* 3: a service runstate needs is unreachable: the Kafka broker, or the processor's query
  API. Nothing was changed; start it (or point the command at it) and run it again.

Commands raise :class:`~runstate.errors.Error` for expected failures; the root command group
turns it into that line here, so no expected failure prints a traceback and no command has
its own copy of the handler.
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from confluent_kafka import KafkaException
from typer.core import TyperGroup

from runstate.errors import BrokerError, Error, MissingExtra, QueryUnreachable
from runstate.streams.clients import KAFKA_LOGGER, is_transport_error, unreachable

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "GuardedGroup",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code of an expected failure."""
    if isinstance(exc, BrokerError | QueryUnreachable):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def _as_error(exc: Exception) -> Error | None:
    """``exc`` as a runstate Error if it is an expected failure, else None (a bug)."""
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, KafkaException):
        if is_transport_error(exc):
            return unreachable("the configured bootstrap servers", exc.args[0].str())
        return Error(f"Kafka refused the request: {exc}; check the broker's log")
    if isinstance(exc, TimeoutError):
        return Error(f"timed out: {exc}; check that the broker is up and run the command again")
    if isinstance(exc, ModuleNotFoundError):  # a command of a role whose extra is missing
        return MissingExtra.from_import(exc)
    return None


def _quiet_kafka_logs() -> None:
    """librdkafka's lines at WARNING and above only, unless the user configured logging."""
    log = logging.getLogger(KAFKA_LOGGER)
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)


class GuardedGroup(TyperGroup):
    """The root command group: an expected failure of any command becomes one line.

    ``typer.Exit`` and click's usage errors pass through untouched; an exception that is
    neither runstate's nor Kafka's nor a timeout is a bug and keeps its traceback.
    """

    def invoke(self, ctx: Any) -> Any:
        _quiet_kafka_logs()
        try:
            return super().invoke(ctx)
        except Exception as exc:
            error = _as_error(exc)
            if error is None:
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(exit_code_for(error)) from exc
