"""Signed, short-lived sessions for the settings page, and CSRF tokens bound to them.

The settings page is rendered inside the BigCommerce control panel's iframe,
so its cookie must be ``SameSite=None; Secure`` (a cross-site frame) and is
``Partitioned`` (CHIPS): it only ever lives inside the control panel, and
browsers that block third-party cookies still keep partitioned ones.

A session cookie is ``b64url(json claims) "." b64url(HMAC-SHA256)`` where the
claims are the store hash, the BigCommerce user id, a random session id and
the expiry (Unix seconds). A CSRF token is ``nonce "." HMAC(sid, nonce)``:
bound to one session, fresh on every render, useless after the session ends.
Both keys are derived from ``app.secret_key`` with HMAC and distinct labels,
so a session MAC can never pass as a CSRF token or as anything else.
Pure functions over bytes and an injected clock; no Starlette here except the
cookie header text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from bcpay.errors import SignatureError

COOKIE_NAME = "__Host-bcpay_session"  # __Host-: Secure, Path=/, no Domain, enforced by browsers
LIFETIME = 3600  # seconds; the control panel re-opens the app through /bc/load after that
MAX_COOKIE_LENGTH = 1024
_SID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_STORE_HASH = re.compile(r"[a-z0-9]{1,32}")


def derive_key(master: str, purpose: str) -> bytes:
    """A key for one purpose, derived from ``app.secret_key`` (HMAC-SHA256 as a KDF)."""
    if not master:
        raise SignatureError("no secret key to sign sessions with", code="secret_missing")
    return hmac.new(
        master.encode("utf-8"), b"bcpay/" + purpose.encode("ascii"), hashlib.sha256
    ).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """Who is looking at the settings page, for which store, until when."""

    store_hash: str
    user_id: int
    sid: str
    expires: int


class SessionSigner:
    """Issues and verifies session cookies and their CSRF tokens."""

    def __init__(
        self, master_key: str, *, lifetime: int = LIFETIME, clock: Callable[[], float] = time.time
    ) -> None:
        self._session_key = derive_key(master_key, "settings-session")
        self._csrf_key = derive_key(master_key, "settings-csrf")
        self.lifetime = lifetime
        self.clock = clock

    def __repr__(self) -> str:
        return f"SessionSigner(lifetime={self.lifetime}, keys=<hidden>)"

    def issue(self, store_hash: str, user_id: int) -> tuple[str, Session]:
        """A new session and its cookie value."""
        if (
            not _STORE_HASH.fullmatch(store_hash)
            or isinstance(user_id, bool)
            or not isinstance(user_id, int)
        ):
            raise ValueError("a session needs a store hash and an integer user id")
        session = Session(
            store_hash, user_id, secrets.token_urlsafe(18), int(self.clock()) + self.lifetime
        )
        claims = {
            "s": session.store_hash,
            "u": session.user_id,
            "i": session.sid,
            "e": session.expires,
        }
        payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{payload}.{self._mac(self._session_key, payload)}", session

    def read(self, value: str | None) -> Session:
        """Verify a cookie value; raise :class:`SignatureError` with a distinct message."""
        if not value:
            raise SignatureError("no session cookie")
        if len(value) > MAX_COOKIE_LENGTH or value.count(".") != 1 or not value.isascii():
            raise SignatureError("malformed session cookie")
        payload, mac = value.split(".")
        if not hmac.compare_digest(self._mac(self._session_key, payload), mac):
            raise SignatureError("session cookie has a bad signature")
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            raise SignatureError("malformed session cookie") from None
        store_hash, user_id, sid, expires = (
            claims.get(k) if isinstance(claims, dict) else None for k in ("s", "u", "i", "e")
        )
        if not (
            isinstance(store_hash, str)
            and _STORE_HASH.fullmatch(store_hash)
            and isinstance(user_id, int)
            and not isinstance(user_id, bool)
            and isinstance(sid, str)
            and _SID.fullmatch(sid)
            and isinstance(expires, int)
            and not isinstance(expires, bool)
        ):
            raise SignatureError("malformed session cookie")
        if self.clock() >= expires:
            raise SignatureError("session has expired")
        return Session(store_hash, user_id, sid, expires)

    def csrf_token(self, session: Session) -> str:
        """A fresh CSRF token for one form of this session."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._mac(self._csrf_key, session.sid + '.' + nonce)}"

    def check_csrf(self, session: Session, token: str | None) -> None:
        """Accept a CSRF token made for this session, or raise :class:`SignatureError`."""
        if not token:
            raise SignatureError("missing CSRF token", code="csrf_failed")
        if len(token) > 128 or token.count(".") != 1 or not token.isascii():
            raise SignatureError("malformed CSRF token", code="csrf_failed")
        nonce, mac = token.split(".")
        if not hmac.compare_digest(self._mac(self._csrf_key, session.sid + "." + nonce), mac):
            raise SignatureError("CSRF token does not match this session", code="csrf_failed")

    @staticmethod
    def _mac(key: bytes, message: str) -> str:
        return _b64(hmac.new(key, message.encode("ascii"), hashlib.sha256).digest())


def cookie_header(value: str, *, max_age: int = LIFETIME) -> str:
    """The ``Set-Cookie`` value for a session (``max_age=0`` clears it).

    Written by hand: Starlette's ``set_cookie`` supports ``Partitioned`` only
    on Python 3.14+.
    """
    return f"{COOKIE_NAME}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=None; Partitioned"
