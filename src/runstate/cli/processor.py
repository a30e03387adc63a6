"""``runstate processor run``: run a worker of the run-state processor (:mod:`runstate.runtime`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runstate.settings import load_settings

app = typer.Typer(
    help="Run the run-state processor (events -> run state, queries).", no_args_is_help=True
)

_LOG_LEVELS = {"crit": 50, "error": 40, "warn": 30, "info": 20, "debug": 10}


@app.command()
def run(
    worker_id: Annotated[
        str | None, typer.Option(help="this worker's name (DLQ, metrics, transactional.id)")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="RocksDB folder of this worker")] = None,
    web_port: Annotated[int | None, typer.Option(help="port of the HTTP query API")] = None,
    web_host: Annotated[str | None, typer.Option(help="interface of the HTTP query API")] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            help="port of /health served by a process of its own, for probes (default:"
            " --web-port + 1; 0: none)"
        ),
    ] = None,
    advertised_url: Annotated[
        str | None,
        typer.Option(
            help="where other workers reach this one's query API (default: from --web-host"
            " and --web-port, the host name if the host is 0.0.0.0)"
        ),
    ] = None,
    partitions: Annotated[int | None, typer.Option(help="partitions of the events topic")] = None,
    standby_replicas: Annotated[
        int | None, typer.Option(help="warm copies of each partition kept by other workers")
    ] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    topic_prefix: Annotated[str | None, typer.Option(help="prefix of every topic name")] = None,
    deadline_interval: Annotated[
        float | None, typer.Option(help="seconds between approval deadline scans")
    ] = None,
    log_level: Annotated[str, typer.Option(help="crit|error|warn|info|debug")] = "info",
) -> None:
    """Start one worker; several with the same topic prefix share the partitions.

    Exactly-once on confluent-kafka: one Kafka transaction per commit interval holds the
    outputs and the consumed offsets (RUNSTATE_RUNTIME_EXACTLY_ONCE=false: at-least-once).
    Settings come from RUNSTATE_* and RUNSTATE_RUNTIME_* variables (docs/runtime.md); these
    options override them. Exits 3 at once if no bootstrap server accepts a connection
    (start Kafka first); 0 after a clean stop (SIGTERM), 75 when fenced by a newer instance
    (restart it), 1 when outputs could not be delivered (restart it), 2 for bad settings.
    """
    if log_level not in _LOG_LEVELS:
        raise typer.BadParameter(
            f"{log_level!r}: one of {', '.join(_LOG_LEVELS)}", param_hint="--log-level"
        )
    _run_worker(
        log_level=_LOG_LEVELS[log_level],
        worker_id=worker_id,
        data_dir=data_dir,
        web_port=web_port,
        web_host=web_host,
        health_port=health_port,
        advertised_url=advertised_url,
        partitions=partitions,
        standby_replicas=standby_replicas,
        bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        deadline_interval_s=deadline_interval,
    )


def _run_worker(*, log_level: int, **overrides: object) -> None:
    import logging

    from runstate.runtime.config import load_runtime_config
    from runstate.runtime.runner import run_worker
    from runstate.streams.clients import require_reachable

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_runtime_config(load_settings(), **overrides)
    require_reachable(config.bootstrap_servers)
    code = run_worker(config)
    if code:
        raise typer.Exit(code)
