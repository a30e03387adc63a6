"""``runstate schemas``: list the Avro contracts and check that they stay compatible."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from runstate.errors import InvalidSchema
from runstate.schemas.catalog import SchemaCatalog
from runstate.schemas.compat import CompatibilityMode, check_catalog

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


_MODE_HELP = (
    "which versions must read which. full_transitive (the default): every version reads every"
    " earlier one and every earlier one reads every later one, as a rolling deploy needs."
    " backward_transitive: only newer reads older (safe only once no old reader runs)."
    " forward_transitive: only older reads newer. backward, forward, full: the same, between"
    " neighbouring versions only. Case does not matter."
)


@app.command()
def check(
    path: _PathOption = None,
    mode: Annotated[
        CompatibilityMode, typer.Option("--mode", case_sensitive=False, help=_MODE_HELP)
    ] = CompatibilityMode.FULL_TRANSITIVE,
) -> None:
    """Check that every schema version stays readable both ways and events keep the envelope.

    By default (FULL_TRANSITIVE) every version must read the records of every earlier version,
    and every earlier version must read the records of every later one: old processors,
    reactors and outside consumers keep running through a rolling deploy while new producers
    already write the new version. Each problem names the record, the reader and writer
    versions, the direction, the field, the rule and what to change.

    Exits 0 with a one-line summary when all is compatible, 1 naming each problem, 2 when a
    contract file cannot be loaded.
    """
    catalog = _load(path)
    try:
        report = check_catalog(catalog, mode=mode)
    except InvalidSchema as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not report.ok:
        for problem in report.problems:
            typer.echo(str(problem), err=True)
        count = len(report.problems)
        noun = "incompatibility" if count == 1 else "incompatibilities"
        typer.echo(f"{count} {noun}; fix the contracts above", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"ok: {report.records} records, {report.versions} versions, "
        f"{report.pairs_checked} reader/writer pairs compatible ({report.mode.value}), "
        "envelope identical in every event"
    )


@app.command("list")
def list_schemas(path: _PathOption = None) -> None:
    """List every contract: record name, version and CRC-64-AVRO fingerprint.

    The fingerprint is shown in wire order: the 8 bytes that follow c301 in each record.
    """
    catalog = _load(path)
    for sv in catalog:
        typer.echo(f"{sv.name}\tv{sv.version}\t{sv.fingerprint_hex}")
