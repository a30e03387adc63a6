"""Who runs a command: the principal of ``RUNSTATE_TOKEN`` in ``RUNSTATE_AUTH_FILE``.

With an identity file configured, decisions and operator commands act as the token's
principal, and ``--by`` may only repeat its name. Without one the CLI is in local
development mode: ``--by NAME`` names the actor, unchecked (a warning says so), as before.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runstate.identity import FileDirectory, NotAuthenticated, NotAuthorized, Principal, Role
from runstate.settings import load_settings

__all__ = ["By", "acting_principal"]

By = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="who acts: with RUNSTATE_AUTH_FILE set, the principal of RUNSTATE_TOKEN (--by may"
        " only repeat its name); without it (local development) this name, unchecked",
    ),
]


def acting_principal(by: str | None) -> Principal:
    """The principal the command acts as.

    Raises:
        NotAuthenticated: auth is on and RUNSTATE_TOKEN is missing or unknown.
        NotAuthorized: ``--by`` names someone else than the token's principal.
        typer.BadParameter: local development mode without ``--by``.
    """
    s = load_settings()
    if s.auth_file is None:
        if not by:
            raise typer.BadParameter(
                "give --by NAME (no RUNSTATE_AUTH_FILE: local development mode, unchecked)",
                param_hint="--by",
            )
        typer.echo(
            f"warning: no RUNSTATE_AUTH_FILE: acting as {by!r} unauthenticated (local"
            " development mode)",
            err=True,
        )
        return Principal(by, roles=frozenset({Role.OPERATOR, Role.APPROVER}))
    if s.token is None:
        raise NotAuthenticated(
            f"authentication is on ({s.auth_file}): set RUNSTATE_TOKEN to your token"
        )
    principal = FileDirectory.load(s.auth_file).authenticate(s.token.get_secret_value())
    if principal is None:
        raise NotAuthenticated(
            f"RUNSTATE_TOKEN is not the token of any principal in {s.auth_file}; check it, or"
            " ask an admin for one (`runstate auth new-token`)"
        )
    if by and by != principal.name:
        raise NotAuthorized(
            f"--by {by!r}, but your token is {principal.name!r}'s; drop --by (decisions are"
            " made as the token's principal)"
        )
    return principal
