"""Progress bars: drawn on a terminal's stderr only, never for --json or a pipe; and the
operations report the steps a bar counts (retention: tests/retention/test_apply_progress.py)."""

from __future__ import annotations

import io

from rich.console import Console

from runstate.cli.progress import Bar, progress_bar, progress_console, watched
from tests.polling import assert_eventually


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100), out


def test_a_bar_is_for_a_terminal_and_never_for_json_or_a_pipe() -> None:
    terminal, _ = _terminal()
    assert progress_console(console=terminal) is terminal
    assert progress_console(console=terminal, as_json=True) is None
    piped = Console(file=io.StringIO(), force_terminal=False)
    assert progress_console(console=piped) is None


def test_a_bar_draws_on_its_console_and_a_missing_one_draws_nothing() -> None:
    terminal, out = _terminal()
    with progress_bar("archiving events", total=4, console=terminal) as bar:
        assert bar.shown
        bar.update(advance=3)
    assert "archiving events" in out.getvalue()
    with progress_bar("archiving events", total=4, console=None) as quiet:
        assert not quiet.shown
        quiet.update(advance=1)  # a no-op, not an error


def test_a_watched_operation_is_refreshed_until_it_ends() -> None:
    terminal, _ = _terminal()
    seen: list[Bar] = []
    with progress_bar("waiting", console=terminal) as bar, watched(bar, seen.append, every_s=0.01):
        assert_eventually(lambda: len(seen) >= 2, timeout_s=30, interval_s=0.01, what="refreshed")
    after = len(seen)
    with progress_bar("waiting", console=None) as quiet, watched(quiet, seen.append, every_s=0.01):
        pass
    assert len(seen) in (after, after + 1)  # nothing once ended; nothing without a console
