"""``runstate schemas``: list the Avro contracts and check that they stay compatible."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runstate.errors import InvalidSchema
from runstate.schemas.catalog import SchemaCatalog
from runstate.schemas.compat import check_catalog

app = typer.Typer(
    help="List the Avro event contracts and check their compatibility.", no_args_is_help=True
)

_PathOption = Annotated[
    Path | None,
    typer.Option(
        "--path",
        help="directory of <Name>.v<N>.avsc files to use instead of the shipped contracts",
        file_okay=False,
    ),
]


def _load(path: Path | None) -> SchemaCatalog:
    try:
        return SchemaCatalog.from_directory(path) if path else SchemaCatalog.from_package()
    except InvalidSchema as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def check(path: _PathOption = None) -> None:
    """Check every version can read all earlier ones and every event keeps the envelope.

    Exits 0 with a one-line summary when all is compatible, 1 naming each field and the rule
    it breaks, 2 when a contract file cannot be loaded.
    """
    catalog = _load(path)
    try:
        report = check_catalog(catalog)
    except InvalidSchema as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not report.ok:
        for problem in report.problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"{len(report.problems)} incompatibilities; fix the contracts above", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"ok: {report.records} records, {report.versions} versions, "
        f"{report.pairs_checked} version pairs compatible, envelope identical in every event"
    )


@app.command("list")
def list_schemas(path: _PathOption = None) -> None:
    """List every contract: record name, version and CRC-64-AVRO fingerprint.

    The fingerprint is shown in wire order: the 8 bytes that follow c301 in each record.
    """
    catalog = _load(path)
    for sv in catalog:
        typer.echo(f"{sv.name}\tv{sv.version}\t{sv.fingerprint_hex}")
