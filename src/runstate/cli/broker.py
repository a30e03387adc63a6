"""``runstate broker``: a real local Kafka broker for trying runstate without Docker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runstate.cli.progress import progress_bar, progress_console
from runstate.errors import Error
from runstate.settings import load_settings
from runstate.streams.broker import KAFKA_VERSION, BrokerConfig, LocalBroker, ensure_jars
from runstate.streams.topics import TopicNames

app = typer.Typer(
    help=f"Run a single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) on 127.0.0.1.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="broker state folder [default: <state_dir>/broker]"),
]
Port = Annotated[int, typer.Option("--port", help="client (PLAINTEXT) port on 127.0.0.1")]
ControllerPort = Annotated[int, typer.Option("--controller-port", help="KRaft controller port")]


def _broker(
    data_dir: Path | None, port: int = 9092, controller_port: int = 9093, *, secure: bool = False
) -> LocalBroker:
    state_dir = load_settings().state_dir
    return LocalBroker(
        BrokerConfig(
            data_dir=(data_dir or state_dir / "broker").resolve(),
            jars_dir=(state_dir / "jars" / f"kafka-{KAFKA_VERSION}").resolve(),
            port=port,
            controller_port=controller_port,
            secure=secure,
        )
    )


@app.command()
def start(
    data_dir: DataDir = None,
    port: Port = 9092,
    controller_port: ControllerPort = 9093,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="SASL/SCRAM and ACLs on, one user per role (first start of a data folder"
            " decides; docs/security.md)",
        ),
    ] = False,
) -> None:
    """Start the broker (fetching its jars with Maven the first time); no-op if running."""
    broker = _broker(data_dir, port, controller_port, secure=secure)
    if secure and not broker.config.secure:
        typer.echo(
            f"error: the broker of {broker.config.data_dir} was first started without"
            " --secure; use a new --data-dir for a secure one",
            err=True,
        )
        raise typer.Exit(1)
    try:
        already = broker.status()
        if already:
            status = already
        else:
            with progress_bar("starting the Kafka broker", console=progress_console()):
                status = broker.start()
        acls = broker.grant_role_acls(_names()) if broker.config.secure else 0
    except Error as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    word = "already running" if already else "started"
    typer.echo(f"broker {word}: pid {status.pid}, data {status.data_dir}, log {status.log_file}")
    if broker.config.secure:
        typer.echo(
            f"secure: SASL_PLAINTEXT with SCRAM-SHA-512, {acls} ACLs for the roles; passwords"
            f" in {broker.credentials_dir} (admin for topics ensure; set"
            " RUNSTATE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT, RUNSTATE_KAFKA_SASL_USERNAME=<role>,"
            " RUNSTATE_KAFKA_SASL_PASSWORD_FILE=<its file>)",
            err=True,
        )
    typer.echo(status.bootstrap)


def _names() -> TopicNames:
    return TopicNames(load_settings().topic_prefix)


@app.command()
def fetch() -> None:
    """Resolve the broker's jars from Maven Central into the cache folder (once)."""
    broker = _broker(None)
    try:
        path = ensure_jars(broker.config.jars_dir, quiet=False)
    except Error as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Kafka {KAFKA_VERSION} jars in {path}")


@app.command()
def stop(data_dir: DataDir = None) -> None:
    """Stop the broker cleanly (SIGTERM); its data stays for the next start."""
    was_running = _broker(data_dir).stop()
    typer.echo("broker stopped" if was_running else "no broker was running")


@app.command()
def status(data_dir: DataDir = None) -> None:
    """Say whether the broker runs, and where; exit 1 if it does not."""
    running = _broker(data_dir).status()
    if running is None:
        typer.echo("no broker running")
        raise typer.Exit(1)
    typer.echo(
        f"running: pid {running.pid}, bootstrap {running.bootstrap}, data {running.data_dir}"
    )
