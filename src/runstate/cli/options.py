"""Options several commands share, declared once so their names and checks stay alike."""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["policy_option"]


def policy_option(help_text: str) -> Any:
    """``--policy FILE`` (or ``RUNSTATE_RETENTION_POLICY``): an existing retention policy file."""
    return typer.Option(
        "--policy",
        envvar="RUNSTATE_RETENTION_POLICY",
        help=help_text,
        exists=True,
        dir_okay=False,
    )
