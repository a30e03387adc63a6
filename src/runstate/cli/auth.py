"""``runstate auth``: make tokens and the hashes the identity file stores."""

from __future__ import annotations

import sys

import typer

from runstate.identity import hash_token, new_token

app = typer.Typer(help="Tokens for the identity file (RUNSTATE_AUTH_FILE).", no_args_is_help=True)


@app.command(name="new-token")
def new_token_command() -> None:
    """Print a new random token and its hash: give the token to its owner, put the hash in
    the identity file (token_sha256)."""
    token = new_token()
    typer.echo(f"token:        {token}")
    typer.echo(f"token_sha256: {hash_token(token)}")


@app.command(name="hash-token")
def hash_token_command() -> None:
    """Read a token from stdin (not the command line, which shell history keeps) and print
    its token_sha256 for the identity file."""
    token = sys.stdin.readline().strip()
    if not token:
        typer.echo(
            "error: no token on stdin; e.g. `runstate auth hash-token < token.txt`", err=True
        )
        raise typer.Exit(2)
    typer.echo(hash_token(token))
