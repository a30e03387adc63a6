"""Where commands print tables: a rich Console that never cuts a value when piped.

In a terminal rich wraps tables to the terminal's width. Piped or redirected, it would
assume 80 columns and squeeze the cells, so a run id in a log or a ``grep`` came out cut in
pieces; there the console is as wide as the widest table needs instead.
"""

from __future__ import annotations

from rich.console import Console

__all__ = ["PIPED_WIDTH", "stdout_console"]

#: Width of a piped console: wider than any table runstate prints, so none is squeezed.
PIPED_WIDTH = 1000


def stdout_console() -> Console:
    """A Console on stdout: the terminal's width in a terminal, :data:`PIPED_WIDTH` if not."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=PIPED_WIDTH)
