"""Templates (package data, Jinja2 with autoescaping) and the filters the pages use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jinja2
from aiohttp import web

__all__ = ["ago", "environment", "is_overdue", "render"]


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def ago(text: str | None, now: datetime | None = None) -> str:
    """``"3m ago"`` / ``"in 2h"`` for an ISO-8601 time; empty for none."""
    at = _parse(text)
    if at is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - at).total_seconds())
    span = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            amount = f"{span // size}{unit}"
            break
    else:
        amount = f"{span}s"
    return f"{amount} ago" if seconds >= 0 else f"in {amount}"


def is_overdue(approval: dict[str, Any] | None, now: datetime | None = None) -> bool:
    """Whether a pending approval is past its due time."""
    if not approval or approval.get("outcome") != "pending":
        return False
    due = _parse(approval.get("due_at"))
    return due is not None and due < (now or datetime.now(UTC))


def environment() -> jinja2.Environment:
    """The pages' templates, from the package (no file outside the wheel is read)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("runstate.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = ago
    env.tests["overdue"] = is_overdue
    return env


def render(
    env: jinja2.Environment, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """An HTML page; ``context`` goes to the template as it is."""
    html = env.get_template(template).render(**context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
