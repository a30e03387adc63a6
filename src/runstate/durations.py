"""Durations as people write them: ``90s``, ``15m``, ``2h``, ``1d12h``.

One grammar for every place an operator types a length of time - retention policy files
(``hot: 7d``) and "which runs have not moved for ``2h``?" queries - so what works in one
works in the other. It sits below every layer (like :mod:`runstate.errors`) so the
processors and the retention code can both use it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

__all__ = ["format_duration", "parse_duration"]

_UNITS: Final = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION: Final = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration(text: object) -> timedelta:
    """A positive duration from ``"7d"``, ``"12h"``, ``"1d12h"``, ``"90m"``, ``"500ms"``.

    Bare numbers are refused: whether ``7`` meant days or seconds is exactly the ambiguity
    that deletes data early.

    Raises:
        ValueError: not such a duration (pydantic turns it into an error naming the key).
    """
    if isinstance(text, timedelta):
        value = text
    elif (
        isinstance(text, str)
        and (compact := text.replace(" ", ""))
        and re.fullmatch(r"(?:\d+(?:ms|s|m|h|d|w))+", compact)
    ):
        value = sum((int(n) * _UNITS[unit] for n, unit in _DURATION.findall(compact)), timedelta())
    else:
        raise ValueError(
            f"{text!r} is not a duration; write a number with a unit (ms, s, m, h, d, w),"
            " e.g. '7d' or '12h'"
        )
    if value <= timedelta():
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return value


def format_duration(value: timedelta) -> str:
    """The compact spelling :func:`parse_duration` reads: ``7d``, ``1d12h``, ``500ms``."""
    ms = value // timedelta(milliseconds=1)
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS[unit] // timedelta(milliseconds=1)
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
