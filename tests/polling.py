"""Waiting for something to become true, and asking a worker's HTTP API, in tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def assert_eventually(
    check: Callable[[], T], *, timeout_s: float = 30.0, interval_s: float = 0.2, what: str = ""
) -> T:
    """Call ``check`` until it returns something truthy without raising AssertionError;
    returns that. Past ``timeout_s`` the last AssertionError is raised with ``what``."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout_s:.0f}s: {what} ({last})") from last
        time.sleep(interval_s)


def http_json(
    url: str, timeout_s: float = 30.0, *, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """GET ``url`` (with a bearer ``token`` if given): (status, JSON body);
    (0, {"error": "unreachable", ...}) if nothing answers."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout_s
        ) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError) as exc:
        return 0, {"error": "unreachable", "message": str(exc)}
