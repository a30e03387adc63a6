"""Signed session cookies and CSRF tokens (runstate.console.session), without a server."""

from __future__ import annotations

import pytest

from runstate.console.session import MIN_SECRET_CHARS, SessionCodec, console_secret
from runstate.errors import ConfigError

SECRET = b"s" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def codec(clock: Clock | None = None, secret: bytes = SECRET) -> SessionCodec:
    return SessionCodec(secret, ttl_s=3600, clock=clock or Clock())


def test_a_signed_in_session_round_trips_through_its_cookie() -> None:
    c = codec()
    session = c.signed_in("tok-123")
    decoded = c.decode(c.encode(session))
    assert decoded == session and decoded is not None and decoded.signed_in
    assert not c.anonymous().signed_in


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),  # the signature
        lambda v: "x" + v,  # the payload
        lambda v: v.replace(".", ""),  # no signature at all
        lambda v: "",
        lambda v: "not.base64!",
    ],
)
def test_a_tampered_cookie_is_no_session(tamper: object) -> None:
    c = codec()
    cookie = c.encode(c.signed_in("tok"))
    assert c.decode(tamper(cookie)) is None  # type: ignore[operator]


def test_a_cookie_signed_with_another_secret_is_no_session() -> None:
    other = codec(secret=b"o" * 32)
    assert codec().decode(other.encode(other.signed_in("tok"))) is None


def test_a_session_expires() -> None:
    clock = Clock()
    c = codec(clock)
    cookie = c.encode(c.signed_in("tok"))
    clock.now += 3599
    assert c.decode(cookie) is not None
    clock.now += 2
    assert c.decode(cookie) is None


def test_csrf_tokens_belong_to_one_session_and_change_at_sign_in() -> None:
    c = codec()
    before = c.anonymous()
    token = c.csrf_token(before)
    assert c.csrf_ok(before, token)
    after = c.signed_in("tok")
    assert not c.csrf_ok(after, token)  # a token from before sign-in is worthless after it
    assert not c.csrf_ok(before, None) and not c.csrf_ok(before, "")
    assert not c.csrf_ok(before, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert codec(secret=b"o" * 32).csrf_token(before) != token


def test_the_secret_is_random_when_unset_and_long_enough_when_set() -> None:
    first, generated = console_secret(None)
    assert generated and len(first) >= 32 and console_secret(None)[0] != first
    assert console_secret("x" * MIN_SECRET_CHARS) == (b"x" * MIN_SECRET_CHARS, False)
    with pytest.raises(ConfigError, match="RUNSTATE_CONSOLE_SECRET"):
        console_secret("short")
