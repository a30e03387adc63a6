"""The console's sessions and CSRF tokens: signed cookies, no server-side table.

A session is a signed cookie (HMAC-SHA256 with the console secret): a random ``nonce``, an
expiry, and once signed in the user's bearer token, which the console forwards to the query
API so that every read and decision is the user's own. The principal is never taken from the
cookie: it comes from the token, through the identity directory, on every request, so a token
removed from the identity file stops working. The cookie is HttpOnly (no script reads it) and
SameSite=Strict (no other site's page sends it).

The CSRF token of a form is the HMAC of the session's nonce under the secret (with its own
label): a page of another site cannot read it, and it changes with every sign-in (a new
nonce), so one taken before sign-in is worthless after it.

What can go wrong: a cookie with a bad signature, a malformed one or an expired one decodes to
None (the caller starts an anonymous session); a secret shorter than :data:`MIN_SECRET_CHARS`
is refused at start-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from runstate.errors import ConfigError

__all__ = ["COOKIE", "MIN_SECRET_CHARS", "Session", "SessionCodec", "console_secret"]

#: The session cookie's name.
COOKIE = "runstate_console"
#: The shortest secret accepted from the settings.
MIN_SECRET_CHARS = 32


@dataclass(frozen=True, slots=True)
class Session:
    """One browser's session; ``token`` is None until it signs in."""

    nonce: str
    expires: int
    token: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.token is not None


def console_secret(configured: str | None) -> tuple[bytes, bool]:
    """The signing secret, and whether it was made up for this process.

    Raises:
        ConfigError: a configured secret shorter than :data:`MIN_SECRET_CHARS`.
    """
    if configured is None:
        return secrets.token_bytes(32), True
    if len(configured) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"RUNSTATE_CONSOLE_SECRET must be at least {MIN_SECRET_CHARS} characters; make one"
            " with `runstate auth new-token`"
        )
    return configured.encode("utf-8"), False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Makes, signs and checks sessions and their CSRF tokens.

    Args:
        secret: the signing secret (:func:`console_secret`).
        ttl_s: how long a session lasts from its sign-in (or creation).
        clock: seconds since the epoch (tests pass their own).
    """

    def __init__(
        self, secret: bytes, *, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._clock = clock

    def anonymous(self) -> Session:
        """A new session, not signed in."""
        return Session(secrets.token_urlsafe(16), int(self._clock() + self._ttl_s))

    def signed_in(self, token: str) -> Session:
        """A new session (new nonce, so new CSRF tokens) for a user who gave ``token``."""
        return replace(self.anonymous(), token=token)

    def encode(self, session: Session) -> str:
        """The cookie value: payload and signature."""
        payload = _b64(
            json.dumps(
                {"n": session.nonce, "e": session.expires, "t": session.token},
                separators=(",", ":"),
            ).encode()
        )
        return f"{payload}.{self._sign(b'session:' + payload.encode())}"

    def decode(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None when it is missing, forged, malformed or expired."""
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature, self._sign(b"session:" + payload.encode())):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(str(body["n"]), int(body["e"]), body["t"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if session.token is not None and not isinstance(session.token, str):
            return None
        if session.expires <= self._clock():
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries."""
        return self._sign(b"csrf:" + session.nonce.encode())

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        """Whether a form's ``given`` token is this session's (constant time)."""
        return given is not None and hmac.compare_digest(given, self.csrf_token(session))

    def _sign(self, data: bytes) -> str:
        return _b64(hmac.new(self._secret, data, hashlib.sha256).digest())
