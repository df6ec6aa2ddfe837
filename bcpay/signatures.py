"""Every signature bcpay makes or checks, as pure functions over bytes.

- CeleryPay request signing (merchant -> CeleryPay) and notification checks
  (CeleryPay -> merchant): contract "Request signing" and "Notifications".
- BigCommerce ``signed_payload_jwt`` (app callbacks), the legacy
  ``signed_payload``, and Standard Webhooks signatures (reference sections 1, 8).

Rules kept throughout (stripe-python ``_webhook.py``): verify the raw bytes
before parsing anything, compare with :func:`hmac.compare_digest`, accept any
of several signatures (secret rotation), fail closed when a secret or header
is missing, and raise :class:`~bcpay.errors.SignatureError` with a distinct
message per failure. Messages never contain a secret or a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from bcpay.errors import SignatureError

TOLERANCE = 300  # seconds; the contract's clock-skew window, both directions
MAX_HEADER_LENGTH = 2048  # a real header with two entries is ~140 characters
MAX_ENTRIES = 8  # rotation needs two; more is noise or an attack
MAX_JWT_LENGTH = 8192  # a BigCommerce callback JWT is well under 1 KB

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_STORE_SUB = re.compile(r"stores/([a-z0-9]{1,32})")


def _hmac_hex(secret: str | bytes, message: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# --- CeleryPay -----------------------------------------------------------------


def sign_request(
    secret: str, timestamp: int, method: str, path_with_query: str, body: bytes
) -> str:
    """The ``CeleryPay-Signature`` value of one request: ``v1=<hex>``.

    The message is ``{timestamp}.{METHOD}.{path_with_query}.`` followed by the
    exact body bytes (contract, "Request signing").
    """
    prefix = f"{timestamp}.{method.upper()}.{path_with_query}.".encode()
    return "v1=" + _hmac_hex(secret, prefix + body)


def sign_notification(secret: str, timestamp: int, body: bytes) -> str:
    """The ``CeleryPay-Signature`` value CeleryPay puts on a notification."""
    return "v1=" + _hmac_hex(secret, f"{timestamp}.".encode() + body)


def parse_signature_header(header: str) -> list[str]:
    """The lowercase hex values of every ``v1=`` entry of a signature header.

    Entries are comma separated and may carry spaces; entries of unknown
    schemes are ignored (a future ``v2`` must not break us). Hostile input is
    bounded: an over-long header, too many entries, or no usable ``v1`` entry
    raise :class:`SignatureError`.
    """
    if not isinstance(header, str) or len(header) > MAX_HEADER_LENGTH:
        raise SignatureError("malformed signature header: too long")
    entries = header.split(",")
    if len(entries) > MAX_ENTRIES:
        raise SignatureError("malformed signature header: too many entries")
    found: list[str] = []
    for entry in entries:
        scheme, sep, value = entry.strip().partition("=")
        if not sep or scheme.strip() != "v1":
            continue
        value = value.strip()
        # A v1 value that is not 64 hex digits can never match; dropping it also
        # keeps non-ASCII text away from compare_digest (which refuses it).
        if _HEX64.fullmatch(value):
            found.append(value.lower())
    if not found:
        raise SignatureError("malformed signature header: no v1 signature")
    return found


def _check_timestamp(timestamp: str | None, now: float, tolerance: int, header: str) -> int:
    if timestamp is None or timestamp == "":
        raise SignatureError(f"missing {header} header")
    if not _TIMESTAMP.fullmatch(timestamp.strip()):
        raise SignatureError(f"malformed {header} header")
    value = int(timestamp.strip())
    if abs(now - value) > tolerance:
        raise SignatureError("timestamp outside the tolerance window")
    return value


def _match_any(expected: list[str], candidates: list[str]) -> bool:
    # Compare every pair without early exit so timing says nothing about which
    # secret or entry matched.
    matched = False
    for want in expected:
        for got in candidates:
            matched |= hmac.compare_digest(want, got)
    return matched


def verify_notification(
    body: bytes,
    *,
    signature: str | None,
    timestamp: str | None,
    secrets: Sequence[str],
    now: float,
    tolerance: int = TOLERANCE,
) -> None:
    """Accept a CeleryPay notification or raise :class:`SignatureError`.

    ``body`` is the raw request body exactly as received; ``signature`` and
    ``timestamp`` are the ``CeleryPay-Signature``/``CeleryPay-Timestamp``
    headers; ``secrets`` are the store's current (and, during rotation, old)
    api_secret. Any ``v1`` entry matching any secret is enough.
    """
    keys = [s for s in secrets if s]
    if not keys:
        raise SignatureError("no notification secret configured", code="secret_missing")
    if signature is None or signature.strip() == "":
        raise SignatureError("missing CeleryPay-Signature header")
    ts = _check_timestamp(timestamp, now, tolerance, "CeleryPay-Timestamp")
    candidates = parse_signature_header(signature)
    expected = [sign_notification(k, ts, body)[3:] for k in keys]
    if not _match_any(expected, candidates):
        raise SignatureError("no signature matches")


# --- BigCommerce app callbacks -------------------------------------------------


@dataclass(frozen=True)
class BcClaims:
    """What a verified ``signed_payload_jwt`` says (reference section 1)."""

    store_hash: str
    user_id: int
    user_email: str
    owner_id: int
    owner_email: str
    url: str
    channel_id: int | None
    locale: str | None
    jti: str | None = None  # the JWT's unique id: /bc/load accepts each one once
    expires: float = 0.0  # exp, Unix seconds


def _int_field(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise SignatureError(f"malformed JWT: {name} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    raise SignatureError(f"malformed JWT: {name} is not an integer")


def _person(claims: dict[str, Any], name: str) -> tuple[int, str]:
    person = claims.get(name)
    if not isinstance(person, dict):
        raise SignatureError(f"malformed JWT: no {name}")
    email = person.get("email")
    if not isinstance(email, str):
        raise SignatureError(f"malformed JWT: no {name}.email")
    return _int_field(person.get("id"), f"{name}.id"), email


def _number_claim(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SignatureError(f"malformed JWT: {name} is not a number")
    return float(value)


JWT_LEEWAY = 30  # seconds of clock difference allowed around a BigCommerce JWT's exp, nbf and iat


def verify_bc_jwt(
    token: str,
    *,
    client_id: str,
    client_secret: str,
    now: float | None = None,
    leeway: int = JWT_LEEWAY,
) -> BcClaims:
    """Verify a BigCommerce ``signed_payload_jwt`` and return its claims.

    HS256 only (``alg: none`` and HS512 are refused), ``aud`` must be our
    client_id, ``iss`` must be ``bc``, ``exp``/``nbf``/``iat`` are checked
    against ``now`` with ``leeway`` seconds, ``sub`` must be ``stores/{hash}``.
    """
    if not client_secret or not client_id:
        raise SignatureError("no app client secret configured", code="secret_missing")
    if not isinstance(token, str) or not token or len(token) > MAX_JWT_LENGTH:
        raise SignatureError("malformed JWT")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            client_secret,
            algorithms=["HS256"],
            audience=client_id,
            issuer="bc",
            # Time claims are checked below against the injected clock.
            options={
                "require": ["aud", "iss", "exp", "nbf", "iat", "sub"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise SignatureError("JWT has a bad signature") from None
    except jwt.InvalidAlgorithmError:
        raise SignatureError("JWT algorithm not allowed") from None
    except jwt.InvalidAudienceError:
        raise SignatureError("JWT has the wrong audience") from None
    except jwt.InvalidIssuerError:
        raise SignatureError("JWT has the wrong issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        raise SignatureError(f"malformed JWT: missing {exc.claim}") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise SignatureError("malformed JWT") from None

    current = now if now is not None else time.time()
    if current > _number_claim(claims, "exp") + leeway:
        raise SignatureError("JWT has expired")
    if current < _number_claim(claims, "nbf") - leeway:
        raise SignatureError("JWT is not valid yet")
    if current < _number_claim(claims, "iat") - leeway:
        raise SignatureError("JWT is not valid yet")

    sub = claims.get("sub")
    match = _STORE_SUB.fullmatch(sub) if isinstance(sub, str) else None
    if match is None:
        raise SignatureError("JWT has a bad subject")
    user_id, user_email = _person(claims, "user")
    owner_id, owner_email = _person(claims, "owner")
    user = claims["user"]
    locale = user.get("locale")
    url = claims.get("url", "/")
    channel_id = claims.get("channel_id")
    if not isinstance(url, str):
        raise SignatureError("malformed JWT: url is not a string")
    if locale is not None and not isinstance(locale, str):
        raise SignatureError("malformed JWT: user.locale is not a string")
    jti = claims.get("jti")
    if jti is not None and (not isinstance(jti, str) or not 0 < len(jti) <= 64):
        raise SignatureError("malformed JWT: jti is not a short string")
    return BcClaims(
        store_hash=match.group(1),
        user_id=user_id,
        user_email=user_email,
        owner_id=owner_id,
        owner_email=owner_email,
        url=url,
        channel_id=None if channel_id is None else _int_field(channel_id, "channel_id"),
        locale=locale,
        jti=jti,
        expires=_number_claim(claims, "exp"),
    )


def verify_bc_signed_payload(signed_payload: str, *, client_secret: str) -> dict[str, Any]:
    """Verify the legacy ``signed_payload`` (``b64(json).b64(hex sig)``) and return its JSON."""
    if not client_secret:
        raise SignatureError("no app client secret configured", code="secret_missing")
    if not isinstance(signed_payload, str) or len(signed_payload) > MAX_JWT_LENGTH:
        raise SignatureError("malformed signed_payload")
    data_b64, sep, sig_b64 = signed_payload.partition(".")
    if not sep:
        raise SignatureError("malformed signed_payload")
    try:
        data = base64.b64decode(data_b64, validate=True)
        signature = base64.b64decode(sig_b64, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        raise SignatureError("malformed signed_payload") from None
    if not hmac.compare_digest(_hmac_hex(client_secret, data), signature.lower()):
        raise SignatureError("signed_payload has a bad signature")
    try:
        payload = json.loads(data)
    except ValueError:
        raise SignatureError("malformed signed_payload") from None
    if not isinstance(payload, dict):
        raise SignatureError("malformed signed_payload")
    return payload


# --- Standard Webhooks (BigCommerce webhook callbacks) ---------------------------


def sign_standard_webhook(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """A ``webhook-signature`` entry: ``v1,<base64 HMAC-SHA256>``."""
    digest = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_standard_webhook(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: bytes,
    now: float,
    tolerance: int = TOLERANCE,
) -> None:
    """Verify a Standard Webhooks delivery or raise :class:`SignatureError`.

    ``webhook-signature`` holds space-separated ``v1,<base64>`` entries; any
    one matching ``HMAC-SHA256(secret, "{id}.{timestamp}." + body)`` is enough.
    """
    if not secret:
        raise SignatureError("no webhook secret configured", code="secret_missing")
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    signature = lower.get("webhook-signature")
    if not msg_id:
        raise SignatureError("missing webhook-id header")
    if not signature:
        raise SignatureError("missing webhook-signature header")
    if len(signature) > MAX_HEADER_LENGTH or len(msg_id) > 256:
        raise SignatureError("malformed webhook headers")
    ts = _check_timestamp(lower.get("webhook-timestamp"), now, tolerance, "webhook-timestamp")
    candidates = []
    for entry in signature.split()[:MAX_ENTRIES]:
        version, sep, value = entry.partition(",")
        if sep and version == "v1" and value.isascii():
            candidates.append(value)
    if not candidates:
        raise SignatureError("malformed webhook-signature header: no v1 signature")
    expected = sign_standard_webhook(secret, msg_id, ts, body)[3:]
    if not _match_any([expected], candidates):
        raise SignatureError("no signature matches")
