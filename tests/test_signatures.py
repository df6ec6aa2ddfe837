"""Signature checks: CeleryPay notifications and requests, BigCommerce JWTs and webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from builders import (
    CLIENT_ID,
    CLIENT_SECRET,
    NOW,
    OLD_SECRET,
    REMOVE,
    SECRET,
    STORE_HASH,
    bc_jwt,
    event_json,
    signed_notification,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from bcpay.errors import SignatureError
from bcpay.signatures import (
    BcClaims,
    parse_signature_header,
    sign_notification,
    sign_request,
    sign_standard_webhook,
    verify_bc_jwt,
    verify_bc_signed_payload,
    verify_notification,
    verify_standard_webhook,
)


def check(
    body: bytes, headers: dict[str, str], *, secrets: tuple[str, ...] = (SECRET,), now: float = NOW
) -> None:
    verify_notification(
        body,
        signature=headers.get("CeleryPay-Signature"),
        timestamp=headers.get("CeleryPay-Timestamp"),
        secrets=secrets,
        now=now,
    )


# --- signing ---------------------------------------------------------------------


def test_sign_request_is_hmac_over_timestamp_method_target_and_body() -> None:
    """The request signature is HMAC-SHA256 over ts.METHOD.target. + body, lowercase hex."""
    body = b'{"amount":1999}'
    expected = hmac.new(
        SECRET.encode(), b"1700000000.POST./pfx/v1/payments?x=a%3Ab." + body, hashlib.sha256
    ).hexdigest()
    assert (
        sign_request(SECRET, 1700000000, "post", "/pfx/v1/payments?x=a%3Ab", body)
        == "v1=" + expected
    )


def test_sign_notification_is_hmac_over_timestamp_and_raw_body() -> None:
    """The notification signature covers ``{timestamp}.`` + the raw body bytes."""
    expected = hmac.new(SECRET.encode(), b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign_notification(SECRET, 1700000000, b"{}") == "v1=" + expected


# --- notifications -----------------------------------------------------------------


def test_a_correctly_signed_notification_is_accepted() -> None:
    """A notification signed with the store's secret passes."""
    check(*signed_notification())


@pytest.mark.parametrize(
    "signing", [(SECRET,), (OLD_SECRET,), (SECRET, OLD_SECRET), (OLD_SECRET, SECRET)]
)
@pytest.mark.parametrize("known", [(SECRET, OLD_SECRET), (OLD_SECRET, SECRET)])
def test_rotation_accepts_either_secret_in_either_entry(
    signing: tuple[str, ...], known: tuple[str, ...]
) -> None:
    """During rotation any v1 entry matching any known secret is enough."""
    check(*signed_notification(secrets=signing), secrets=known)


def test_a_notification_signed_with_an_unknown_secret_is_rejected() -> None:
    """Two entries, neither made with our secret: rejected."""
    body, headers = signed_notification(secrets=("x" * 40, "y" * 40))
    with pytest.raises(SignatureError, match="^no signature matches$"):
        check(body, headers)


def test_an_old_secret_no_longer_known_is_rejected() -> None:
    """After rotation ends, a notification signed only with the old secret fails."""
    body, headers = signed_notification(secrets=(OLD_SECRET,))
    with pytest.raises(SignatureError, match="^no signature matches$"):
        check(body, headers, secrets=(SECRET,))


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamps_within_300_seconds_either_way_are_accepted(skew: int) -> None:
    """Exactly 300 s of skew in either direction is still accepted."""
    check(*signed_notification(timestamp=NOW + skew))


@pytest.mark.parametrize("skew", [-301, 301, 10**6])
def test_timestamps_beyond_300_seconds_either_way_are_rejected(skew: int) -> None:
    """301 s old or 301 s in the future is outside the window."""
    with pytest.raises(SignatureError, match="^timestamp outside the tolerance window$"):
        check(*signed_notification(timestamp=NOW + skew))


def test_a_tampered_body_is_rejected() -> None:
    """Changing one byte of the body breaks the signature."""
    body, headers = signed_notification()
    with pytest.raises(SignatureError, match="^no signature matches$"):
        check(body.replace(b"1999", b"1", 1), headers)


def test_a_reserialised_body_with_the_same_json_is_rejected() -> None:
    """Verification is over raw bytes: the same JSON with other whitespace fails."""
    body, headers = signed_notification()
    reserialised = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert json.loads(reserialised) == json.loads(body) and reserialised != body
    with pytest.raises(SignatureError, match="^no signature matches$"):
        check(reserialised, headers)


def test_a_signature_moved_to_another_timestamp_is_rejected() -> None:
    """The timestamp is signed: swapping it (inside the window) breaks the match."""
    body, headers = signed_notification()
    headers["CeleryPay-Timestamp"] = str(NOW + 1)
    with pytest.raises(SignatureError, match="^no signature matches$"):
        check(body, headers)


@pytest.mark.parametrize("secrets", [(), ("",), ("", "")])
def test_no_configured_secret_fails_closed(secrets: tuple[str, ...]) -> None:
    """Without a secret nothing is accepted, not even a 'signed' notification."""
    with pytest.raises(SignatureError, match="^no notification secret configured$"):
        check(*signed_notification(), secrets=secrets)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_signature_header_is_rejected(value: str | None) -> None:
    """No CeleryPay-Signature header: its own message."""
    with pytest.raises(SignatureError, match="^missing CeleryPay-Signature header$"):
        check(*signed_notification(headers={"CeleryPay-Signature": value}))


def test_a_missing_timestamp_header_is_rejected() -> None:
    """No CeleryPay-Timestamp header: its own message."""
    with pytest.raises(SignatureError, match="^missing CeleryPay-Timestamp header$"):
        check(*signed_notification(headers={"CeleryPay-Timestamp": None}))


@pytest.mark.parametrize("value", ["abc", "-5", "1.5e9", "1795000000.0", "١٧٩٥٠٠٠٠٠٠", "9" * 40])
def test_a_malformed_timestamp_is_rejected(value: str) -> None:
    """Only plain decimal digits are a timestamp (no signs, floats or other scripts)."""
    with pytest.raises(SignatureError, match="^malformed CeleryPay-Timestamp header$"):
        check(*signed_notification(headers={"CeleryPay-Timestamp": value}))


@pytest.mark.parametrize(
    "value, message",
    [
        ("garbage", "no v1 signature"),
        ("v1=zz", "no v1 signature"),
        ("v2=" + "a" * 64, "no v1 signature"),
        ("v1=" + "a" * 63, "no v1 signature"),
        ("v1=" + "a" * 64 + ",", None),
        (",".join(["v1=" + "a" * 64] * 9), "too many entries"),
        ("v1=" + "a" * 3000, "too long"),
    ],
)
def test_garbled_signature_headers_are_rejected(value: str, message: str | None) -> None:
    """Garbage, foreign schemes, short hex, too many entries, huge headers: each rejected."""
    body, headers = signed_notification(headers={"CeleryPay-Signature": value})
    expected = f"^malformed signature header: {message}$" if message else "^no signature matches$"
    with pytest.raises(SignatureError, match=expected):
        check(body, headers)


def test_parse_signature_header_keeps_only_v1_entries_and_tolerates_spaces() -> None:
    """Unknown schemes are skipped, spaces ignored, hex lower-cased."""
    a, b = "a" * 64, "B" * 64
    assert parse_signature_header(f" v1={a} , v0=xyz,  v1 = {b} ") == [a, b.lower()]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_parse_signature_header_only_ever_raises_signature_error(text: str) -> None:
    """Arbitrary text (unicode, NUL, huge) never raises anything but SignatureError."""
    try:
        values = parse_signature_header(text)
    except SignatureError:
        return
    assert values and all(len(v) == 64 for v in values)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.one_of(st.none(), st.text(max_size=30)))
def test_verify_notification_only_ever_raises_signature_error(
    signature: str, timestamp: str | None
) -> None:
    """Hostile header values end in SignatureError, never another exception."""
    with pytest.raises(SignatureError):
        verify_notification(
            b"{}", signature=signature, timestamp=timestamp, secrets=[SECRET], now=NOW
        )


def test_event_builder_and_default_payload_agree() -> None:
    """The default signed body is the default event JSON (so overrides are meaningful)."""
    body, _ = signed_notification()
    assert json.loads(body) == event_json()


# --- BigCommerce JWT ------------------------------------------------------------------


def verify(token: str, now: float = NOW + 60) -> BcClaims:
    return verify_bc_jwt(token, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, now=now)


def test_a_valid_jwt_gives_its_claims() -> None:
    """A good signed_payload_jwt yields store hash, user, owner, url, channel and locale."""
    claims = verify(bc_jwt(channel_id=2, url="/orders", jti="6f1d2a3b-0000-4000-8000-000000000001"))
    assert claims == BcClaims(
        store_hash=STORE_HASH,
        user_id=42,
        user_email="clerk@example.com",
        owner_id=1,
        owner_email="owner@example.com",
        url="/orders",
        channel_id=2,
        locale="en-US",
        jti="6f1d2a3b-0000-4000-8000-000000000001",
        expires=NOW + 86400,
    )


@pytest.mark.parametrize("jti", [17, "", "x" * 65, ["a"]])
def test_a_jti_that_is_not_a_short_string_is_refused(jti: object) -> None:
    with pytest.raises(SignatureError, match="^malformed JWT"):  # PyJWT refuses non-strings itself
        verify(bc_jwt(jti=jti))


def test_an_expired_jwt_is_rejected() -> None:
    """Past exp plus leeway: expired."""
    token = bc_jwt(exp=NOW + 100)
    verify(token, now=NOW + 130)  # within the 30 s leeway
    with pytest.raises(SignatureError, match="^JWT has expired$"):
        verify(token, now=NOW + 131)


def test_a_jwt_not_valid_yet_is_rejected() -> None:
    """nbf in the future beyond the leeway: not valid yet."""
    with pytest.raises(SignatureError, match="^JWT is not valid yet$"):
        verify(bc_jwt(nbf=NOW + 1000), now=NOW)


def test_a_jwt_for_another_app_is_rejected() -> None:
    """aud must be our client_id."""
    with pytest.raises(SignatureError, match="^JWT has the wrong audience$"):
        verify(bc_jwt(aud="someone-else"))


def test_a_jwt_from_another_issuer_is_rejected() -> None:
    """iss must be 'bc'."""
    with pytest.raises(SignatureError, match="^JWT has the wrong issuer$"):
        verify(bc_jwt(iss="evil"))


def test_a_jwt_signed_with_another_secret_is_rejected() -> None:
    """Wrong HMAC key: bad signature."""
    with pytest.raises(SignatureError, match="^JWT has a bad signature$"):
        verify(bc_jwt(secret="another-secret-0123456789abcdef0123456789"))


def test_a_jwt_with_tampered_claims_is_rejected() -> None:
    """Swapping the claims segment of a good token breaks the signature."""
    header, _, sig = bc_jwt().split(".")
    forged = jwt.encode({"sub": "stores/victim"}, "x" * 40, algorithm="HS256").split(".")[1]
    with pytest.raises(SignatureError, match="^JWT has a bad signature$"):
        verify(f"{header}.{forged}.{sig}")


def test_alg_none_is_rejected() -> None:
    """An unsigned token (alg none) never passes."""
    token = jwt.encode({"aud": CLIENT_ID, "iss": "bc"}, None, algorithm="none")
    with pytest.raises(SignatureError, match="^JWT algorithm not allowed$"):
        verify(token)


def test_hs512_is_rejected() -> None:
    """Only HS256 is accepted, even with the right secret."""
    with pytest.warns(jwt.InsecureKeyLengthWarning):  # PyJWT wants 64-byte keys for HS512
        token = bc_jwt(algorithm="HS512")
    with pytest.raises(SignatureError, match="^JWT algorithm not allowed$"):
        verify(token)


@pytest.mark.parametrize(
    "sub", ["stores/", "stores/ABC", "stores/a/b", "store/abc", "x" * 10, "stores/" + "a" * 33]
)
def test_a_jwt_with_a_bad_subject_is_rejected(sub: str) -> None:
    """sub must be stores/{hash} with a sane hash."""
    with pytest.raises(SignatureError, match="^JWT has a bad subject$"):
        verify(bc_jwt(sub=sub))


def test_a_jwt_missing_a_required_claim_is_malformed() -> None:
    """No exp at all: malformed, naming the claim."""
    with pytest.raises(SignatureError, match="^malformed JWT: missing exp$"):
        verify(bc_jwt(exp=REMOVE))


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "." * 3, "x" * 9000])
def test_garbage_tokens_are_malformed(token: str) -> None:
    """Not a JWT at all: malformed."""
    with pytest.raises(SignatureError, match="^malformed JWT$"):
        verify(token)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_verify_bc_jwt_only_ever_raises_signature_error(text: str) -> None:
    """Arbitrary text as a token only ever raises SignatureError."""
    with pytest.raises(SignatureError):
        verify(text)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["user", "owner", "url", "channel_id", "sub", "exp"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=10),
            st.booleans(),
            st.dictionaries(st.text(max_size=5), st.integers()),
        ),
    )
)
def test_verify_bc_jwt_with_odd_signed_claims_only_raises_signature_error(
    overrides: dict[str, object],
) -> None:
    """Even correctly signed tokens with odd claim types end in SignatureError or valid claims."""
    try:
        claims = verify(bc_jwt(**overrides))
    except SignatureError:
        return
    assert isinstance(claims, BcClaims) and isinstance(claims.user_id, int)


# --- legacy signed_payload --------------------------------------------------------------


def legacy_payload(data: dict[str, object], secret: str = CLIENT_SECRET) -> str:
    raw = json.dumps(data).encode()
    sig = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return base64.b64encode(raw).decode() + "." + base64.b64encode(sig.encode()).decode()


def test_a_legacy_signed_payload_verifies() -> None:
    """b64(json).b64(hex sig) with our secret yields the JSON."""
    data = {"store_hash": STORE_HASH, "user": {"id": 1, "email": "a@b.c"}, "timestamp": 1.5}
    assert verify_bc_signed_payload(legacy_payload(data), client_secret=CLIENT_SECRET) == data


def test_a_legacy_signed_payload_with_another_secret_is_rejected() -> None:
    """Wrong key: bad signature."""
    with pytest.raises(SignatureError, match="^signed_payload has a bad signature$"):
        verify_bc_signed_payload(legacy_payload({"a": 1}, "z" * 40), client_secret=CLIENT_SECRET)


@pytest.mark.parametrize("value", ["", "nodot", "!!!.???", "e30=.@@@"])
def test_a_garbled_legacy_signed_payload_is_malformed(value: str) -> None:
    """Not two base64 parts: malformed."""
    with pytest.raises(SignatureError, match="^malformed signed_payload$"):
        verify_bc_signed_payload(value, client_secret=CLIENT_SECRET)


# --- Standard Webhooks --------------------------------------------------------------------


WEBHOOK_SECRET = CLIENT_SECRET.encode()


def webhook_headers(
    body: bytes, *, ts: int = NOW, msg_id: str = "msg_1", extra: str = ""
) -> dict[str, str]:
    sig = sign_standard_webhook(WEBHOOK_SECRET, msg_id, ts, body)
    return {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(ts),
        "Webhook-Signature": f"{extra}{sig}".strip(),
    }


def test_a_standard_webhook_with_one_of_several_signatures_verifies() -> None:
    """Space-separated entries: one matching v1 entry is enough; names case-insensitive."""
    body = b'{"scope":"store/order/created"}'
    other = "v1," + base64.b64encode(b"x" * 32).decode()
    verify_standard_webhook(
        body, webhook_headers(body, extra=other + " "), secret=WEBHOOK_SECRET, now=NOW
    )


def test_a_standard_webhook_signature_is_base64_hmac_of_id_timestamp_body() -> None:
    """The entry is v1,base64(HMAC-SHA256(secret, id.ts.body)) (Standard Webhooks spec)."""
    digest = hmac.new(WEBHOOK_SECRET, b"msg_1.1700000000.{}", hashlib.sha256).digest()
    assert (
        sign_standard_webhook(WEBHOOK_SECRET, "msg_1", 1700000000, b"{}")
        == "v1," + base64.b64encode(digest).decode()
    )


def test_a_tampered_standard_webhook_is_rejected() -> None:
    """Another body: no signature matches."""
    headers = webhook_headers(b"{}")
    with pytest.raises(SignatureError, match="^no signature matches$"):
        verify_standard_webhook(b"{ }", headers, secret=WEBHOOK_SECRET, now=NOW)


def test_a_stale_standard_webhook_is_rejected() -> None:
    """An old webhook-timestamp is outside the window."""
    body = b"{}"
    with pytest.raises(SignatureError, match="^timestamp outside the tolerance window$"):
        verify_standard_webhook(
            body, webhook_headers(body, ts=NOW - 301), secret=WEBHOOK_SECRET, now=NOW
        )


@pytest.mark.parametrize(
    "drop, message",
    [
        ("Webhook-Id", "missing webhook-id header"),
        ("Webhook-Signature", "missing webhook-signature header"),
        ("Webhook-Timestamp", "missing webhook-timestamp header"),
    ],
)
def test_a_standard_webhook_missing_a_header_is_rejected(drop: str, message: str) -> None:
    """Each missing header has its own message."""
    headers = webhook_headers(b"{}")
    del headers[drop]
    with pytest.raises(SignatureError, match=f"^{message}$"):
        verify_standard_webhook(b"{}", headers, secret=WEBHOOK_SECRET, now=NOW)


def test_a_standard_webhook_without_secret_fails_closed() -> None:
    """No secret configured: rejected."""
    with pytest.raises(SignatureError, match="^no webhook secret configured$"):
        verify_standard_webhook(b"{}", webhook_headers(b"{}"), secret=b"", now=NOW)
