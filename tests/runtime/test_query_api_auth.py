"""The query API with authentication on: bearer tokens, /health open, forwarding keeps them."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from runstate.errors import ConfigError
from runstate.identity import FileDirectory, Principal, Role, hash_token
from runstate.runtime.operator_api import auth_mode
from tests.runs.conftest import RunStateFactory
from tests.runtime.test_query_api import Group, _group, _owner

TOKEN = "t-auditor-0123456789"
DIRECTORY = FileDirectory([(Principal("eve", frozenset({Role.AUDITOR})), hash_token(TOKEN))])


def _get(url: str, token: str | None = None, scheme: str = "Bearer") -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            body = r.read()
            # /metrics answers Prometheus text, everything else JSON
            is_json = r.headers.get_content_type() == "application/json"
            return r.status, json.loads(body) if is_json else body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def group() -> Iterator[Group]:
    with _group("127.0.0.1", directory=DIRECTORY) as g:
        yield g


@pytest.mark.parametrize("path", ["/runs", "/runs/run-1", "/partitions/0/runs", "/metrics"])
def test_a_request_without_a_known_token_is_refused(group: Group, path: str) -> None:
    url = group.url(0) + path
    for token, scheme in ((None, "Bearer"), ("wrong", "Bearer"), (TOKEN, "Basic"), ("", "Bearer")):
        status, body = _get(url, token, scheme)
        assert (status, body["error"]) == (401, "unauthenticated"), (token, scheme)
    assert _get(url, TOKEN)[0] in (200, 404)


def test_health_stays_open(group: Group) -> None:
    status, body = _get(group.url(0) + "/health")
    assert (status, body["ready"]) == (200, True)


def test_a_forwarded_request_carries_the_callers_token(
    group: Group, run_state_factory: RunStateFactory
) -> None:
    states = [run_state_factory(run_id=f"run-{i}") for i in range(8)]
    for i, state in enumerate(states):
        _owner(group, state.run_id).put(state, offset=i)
    for state in states:
        # Ask the worker that does not own it: it forwards, with the caller's header.
        asked = 0 if _owner(group, state.run_id) is group.sources[1] else 1
        status, body = _get(f"{group.url(asked)}/runs/{state.run_id}", TOKEN)
        assert (status, body["run_id"]) == (200, state.run_id)
    status, body = _get(group.url(0) + "/runs?limit=100", TOKEN)
    assert (status, body["complete"], body["count"]) == (200, True, 8)


def test_development_mode_is_loud_and_stays_on_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert auth_mode(None, host="127.0.0.1", dev=False) == "dev"
    assert "AUTHENTICATION OFF" in caplog.text
    with pytest.raises(ConfigError, match="RUNSTATE_AUTH_FILE"):
        auth_mode(None, host="0.0.0.0", dev=False)
    assert auth_mode(None, host="0.0.0.0", dev=True) == "dev"
    assert auth_mode(DIRECTORY, host="0.0.0.0", dev=False) == "tokens"
