"""Progress bars for CLI operations that can take long (rich, on stderr).

Shown only when stderr is a terminal and the command was not asked for ``--json``: piped
output, logs and JSON never carry a bar. Every bar is transient (gone once the operation
ends), so what the command prints afterwards reads as it did without one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["Bar", "progress_bar", "progress_console", "watched"]


def progress_console(*, as_json: bool = False, console: Console | None = None) -> Console | None:
    """The stderr console to draw a bar on, or None when no bar may be shown."""
    if as_json:
        return None
    err = console or Console(stderr=True)
    return err if err.is_terminal else None


class Bar:
    """One task of a rich Progress; a no-op without a console (no terminal, or ``--json``)."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        advance: float | None = None,
        description: str | None = None,
    ) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(
            self._task,
            completed=completed,
            total=total,
            advance=advance,
            description=description,
        )


@contextmanager
def progress_bar(
    description: str, *, total: float | None = None, console: Console | None
) -> Iterator[Bar]:
    """A transient bar (a spinner and the elapsed time while ``total`` is unknown)."""
    if console is None:
        yield Bar(None, None)
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield Bar(progress, progress.add_task(description, total=total))


@contextmanager
def watched(bar: Bar, refresh: Callable[[Bar], None], *, every_s: float = 0.25) -> Iterator[None]:
    """Call ``refresh(bar)`` from a thread of its own every ``every_s`` while the block runs,
    for operations that report no progress themselves but expose counters to read."""
    if not bar.shown:
        yield
        return
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every_s):
            refresh(bar)

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)
