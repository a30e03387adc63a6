"""The console's gate without a broker: sign-in, redirects, CSRF, cookies, /metrics, logs.

The query API is never reached here (its URL points nowhere): every request below is
answered, or refused, by the console itself; but for the run page's journal paging, where a
stand-in API answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from runstate.console.api import ConsoleApi
from runstate.console.app import Console, ConsoleConfig, _local, create_app
from runstate.console.metrics import ConsoleMetrics
from runstate.console.session import COOKIE, SessionCodec
from runstate.console.views import environment
from runstate.identity import FileDirectory, Principal, Role, hash_token

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
TOKEN = "tok-bob-0123456789abcdef"
DIRECTORY = FileDirectory(
    [(Principal("manager.bob", frozenset({Role.APPROVER}), frozenset({"m"})), hash_token(TOKEN))]
)


def _console() -> Console:
    return Console(
        api=ConsoleApi("http://127.0.0.1:9", timeout_s=2),
        directory=DIRECTORY,
        codec=SessionCodec(b"k" * 32, ttl_s=3600),
        config=ConsoleConfig(bootstrap_servers="127.0.0.1:9", dead_letter_topic="dl"),
        templates=environment(),
        metrics=ConsoleMetrics(),
    )


def run(check: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(create_app(_console()))) as client:
            await check(client)

    asyncio.run(main())


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def _sign_in(client: TestClient[Any, Any], token: str = TOKEN) -> Any:
    page = await client.get("/sign-in")
    return await client.post(
        "/sign-in",
        data={"csrf": _csrf(await page.text()), "token": token, "next": "/runs"},
        allow_redirects=False,
    )


@pytest.mark.parametrize("path", ["/", "/runs", "/runs/r-1", "/dead-letters"])
def test_an_unauthenticated_request_is_redirected_to_sign_in(path: str) -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/sign-in?next=")

    run(check)


def test_a_post_without_a_session_or_csrf_token_is_refused() -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/runs/r-1/approve", data={"comment": "x"})
        assert resp.status == 403 and "CSRF" in await resp.text()
        assert (await _sign_in(client)).status == 303
        resp = await client.post("/runs/r-1/approve", data={"csrf": "forged"})
        assert resp.status == 403 and "CSRF" in await resp.text()

    run(check)


def test_sign_in_sets_a_strict_http_only_cookie_and_a_new_csrf_token() -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        page = await client.get("/sign-in")
        before = _csrf(await page.text())
        resp = await client.post(
            "/sign-in", data={"csrf": before, "token": TOKEN, "next": "//evil.example/"},
            allow_redirects=False,
        )  # fmt: skip
        assert (resp.status, resp.headers["Location"]) == (303, "/")  # no open redirect
        for target in ("https://evil.example/", "/\\evil.example", "/runs\r\nSet-Cookie: x=1"):
            assert _local(target) == "/", target
        assert _local("/runs?status=failed") == "/runs?status=failed"
        cookie = resp.headers["Set-Cookie"]
        assert COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # The token from before sign-in is worthless now.
        stale = await client.post("/sign-out", data={"csrf": before}, allow_redirects=False)
        assert stale.status == 403

    run(check)


def test_a_wrong_token_or_a_name_that_is_not_the_tokens_is_refused() -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        assert (await _sign_in(client, "not-a-token")).status == 401
        page = await client.get("/sign-in")
        resp = await client.post(
            "/sign-in",
            data={"csrf": _csrf(await page.text()), "token": TOKEN, "name": "admin.ann"},
        )
        assert resp.status == 401 and "not &#39;admin.ann&#39;" in await resp.text()
        assert (await client.get("/runs", allow_redirects=False)).status == 303

    run(check)


def test_sign_out_ends_the_session() -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        await _sign_in(client)
        page = await client.get("/")  # the query API is not there: the page says so
        assert page.status == 200 and "manager.bob" in await page.text()
        out = await client.post(
            "/sign-out", data={"csrf": _csrf(await page.text())}, allow_redirects=False
        )
        assert out.status == 303
        assert (await client.get("/runs", allow_redirects=False)).status == 303

    run(check)


def test_metrics_parse_and_count_sign_ins_and_csrf_refusals() -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        await _sign_in(client, "wrong")
        await _sign_in(client)
        await client.post("/sign-out", data={})
        await client.get("/runs", allow_redirects=False)  # signed in: the API is not there
        client.session.cookie_jar.clear()
        await client.get("/runs", allow_redirects=False)  # no session: the gate redirects
        text = await (await client.get("/metrics")).text()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("runstate_console_sign_ins_total", (("result", "ok"),))] == 1
        assert samples[("runstate_console_sign_ins_total", (("result", "unknown_token"),))] == 1
        assert samples[("runstate_console_csrf_refused_total", ())] == 1
        redirected = ("runstate_console_requests_total", (("code", "303"), ("page", "/runs")))
        assert samples[redirected] >= 1  # the middleware's answers are counted too
        documented = DOCS.read_text()
        for family in text_string_to_metric_families(text):
            if family.type == "counter":
                assert f"`{family.name}_total`" in documented, family.name

    run(check)


def test_tokens_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        await _sign_in(client, "wrong-token-secret")
        await _sign_in(client)
        await client.get("/runs/r-1")

    with caplog.at_level(logging.DEBUG):
        run(check)
    assert "signed in" in caplog.text
    assert TOKEN not in caplog.text and "wrong-token-secret" not in caplog.text


def test_the_run_page_pages_the_runs_journal_with_who_did_what() -> None:
    from runstate.runs.journal import entry_for_event
    from runstate.runs.reducer import fold
    from runstate.runs.run_view import run_to_json
    from tests.factories import make_run
    from tests.stand_in_api import stand_in_api

    events = make_run("r-1", with_approval=True, end="open")
    state = fold(events)
    assert state is not None
    shown = json.loads(json.dumps(run_to_json(state), default=str))
    entries = [entry_for_event(e, offset=i).to_json() for i, e in enumerate(events)]
    first = {"events": entries[:4], "next": "3"}
    second = {"events": entries[4:], "next": None}
    with stand_in_api(shown, first, shown, second) as api:
        console = dataclasses.replace(_console(), api=ConsoleApi(api.url, timeout_s=5))

        async def check(client: TestClient[Any, Any]) -> None:
            await _sign_in(client)
            page = await (await client.get("/runs/r-1")).text()
            assert "run started" in page and "team-procurement" in page
            assert 'id="events-more"' in page and "after=3" in page
            assert 'id="events-first"' not in page
            page = await (await client.get("/runs/r-1?after=3")).text()
            assert "approval granted" in page and "alice" in page
            assert 'id="events-first"' in page and 'id="events-more"' not in page

        async def main() -> None:
            async with TestClient(TestServer(create_app(console))) as client:
                await check(client)

        asyncio.run(main())
    event_queries = [q for q in api.queries if "limit" in q]
    assert [q.get("after") for q in event_queries] == [None, "3"]
    assert {q["limit"] for q in event_queries} == {"50"}
