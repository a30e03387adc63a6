"""``runstate processor``: run a worker of the run-state processor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runstate.settings import load_settings

app = typer.Typer(
    help="Run the run-state processor (events -> run state, queries).", no_args_is_help=True
)


@app.command()
def run(
    worker_id: Annotated[str | None, typer.Option(help="this worker's name (DLQ, metrics)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="RocksDB folder of this worker")] = None,
    web_port: Annotated[int | None, typer.Option(help="port of the HTTP query API")] = None,
    web_host: Annotated[str | None, typer.Option(help="interface of the HTTP query API")] = None,
    partitions: Annotated[int | None, typer.Option(help="partitions of the events topic")] = None,
    standby_replicas: Annotated[
        int | None, typer.Option(help="standby copies of each table partition")
    ] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    topic_prefix: Annotated[str | None, typer.Option(help="prefix of every topic name")] = None,
    deadline_interval: Annotated[
        float | None, typer.Option(help="seconds between approval deadline scans")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="crit|error|warn|info|debug")] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="faust (today's default) or runtime: the exactly-once processor on"
            " confluent-kafka with Kafka transactions and indexed queries (RUNSTATE_RUNTIME_*)"
        ),
    ] = "faust",
) -> None:
    """Start one worker; several with the same topic prefix share the partitions.

    Exits 3 at once if no bootstrap server accepts a connection (start Kafka first). With
    ``--engine runtime``: 0 after a clean stop, 75 when fenced by a newer instance, 2 for bad
    settings (see docs/runtime.md).
    """
    if engine not in {"faust", "runtime"}:
        raise typer.BadParameter(f"{engine!r}: one of faust, runtime", param_hint="--engine")
    if engine == "runtime":
        _run_runtime(
            worker_id=worker_id,
            data_dir=data_dir,
            web_port=web_port,
            web_host=web_host,
            partitions=partitions,
            standby_replicas=standby_replicas,
            bootstrap_servers=bootstrap,
            topic_prefix=topic_prefix,
            deadline_interval_s=deadline_interval,
        )
        return
    from runstate.processors.config import load_processor_config
    from runstate.processors.runner import run_worker
    from runstate.streams.clients import broker_errors, require_reachable

    settings = load_settings()
    config = load_processor_config(
        settings,
        worker_id=worker_id,
        data_dir=data_dir,
        web_port=web_port,
        web_host=web_host,
        partitions=partitions,
        standby_replicas=standby_replicas,
        bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        deadline_interval_s=deadline_interval,
        log_level=log_level,
    )
    require_reachable(config.bootstrap_servers)  # fail now, not after a 30 s timeout
    with broker_errors(config.bootstrap_servers):
        run_worker(config)


def _run_runtime(**overrides: object) -> None:
    import logging

    from runstate.runtime.config import load_runtime_config
    from runstate.runtime.runner import run_worker
    from runstate.streams.clients import require_reachable

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = load_runtime_config(load_settings(), **overrides)
    require_reachable(config.bootstrap_servers)
    code = run_worker(config)
    if code:
        raise typer.Exit(code)
