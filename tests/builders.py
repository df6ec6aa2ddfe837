"""Builders for test data: valid by default, any field overridable.

``signed_notification(**overrides)`` signs like CeleryPay does, so a test
states only what differs from a good notification (stripe-python
``tests/test_webhook.py`` style).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import jwt

from bcpay.signatures import sign_notification

SECRET = "sk_test_0123456789abcdef0123456789abcdef"
OLD_SECRET = "sk_test_fedcba9876543210fedcba9876543210"
MERCHANT_ID = "mch_0123456789abcdef"
NOW = 1_795_000_000  # 2026-11-18, a fixed "now" for every signed thing
PAYMENT_ID = "pay_" + "A1b2C3d4E5f6G7h8I9j0K1l2"
REFUND_ID = "ref_9z8y7x6w5v4u3t2s1r0q"
CLIENT_ID = "bc-client-id-1234567890"
CLIENT_SECRET = "bc-client-secret-0123456789abcdef0123456789"
STORE_HASH = "abc123xyz"

REMOVE: Any = object()  # as an override value: drop the key


def payment_json(**overrides: Any) -> dict[str, Any]:
    """A pending CeleryPay payment object as the contract shows it."""
    obj: dict[str, Any] = {
        "id": PAYMENT_ID,
        "object": "payment",
        "merchant_order_no": f"{STORE_HASH}-100-1",
        "amount": 1999,
        "currency": "USD",
        "status": "pending",
        "paid_amount": None,
        "refunded_amount": 0,
        "cashier_url": f"https://pay.celerypay.test/c/{PAYMENT_ID}",
        "return_url": "https://shop.example/return",
        "notify_url": "https://bcpay.example/notify/abc123xyz",
        "description": "Order #100",
        "metadata": {"store_hash": STORE_HASH, "order_id": "100"},
        "failure_code": None,
        "failure_message": None,
        "created_at": "2026-11-25T19:08:55Z",
        "expires_at": "2026-11-25T19:38:55Z",
        "paid_at": None,
        "updated_at": "2026-11-25T19:08:55Z",
    }
    return _apply(obj, overrides)


def refund_json(**overrides: Any) -> dict[str, Any]:
    """A pending CeleryPay refund object."""
    obj: dict[str, Any] = {
        "id": REFUND_ID,
        "object": "refund",
        "payment_id": PAYMENT_ID,
        "merchant_refund_no": f"{STORE_HASH}-100-r1",
        "amount": 500,
        "currency": "USD",
        "status": "pending",
        "created_at": "2026-11-25T20:00:00Z",
        "updated_at": "2026-11-25T20:00:00Z",
    }
    return _apply(obj, overrides)


def event_json(**overrides: Any) -> dict[str, Any]:
    """A ``payment.succeeded`` event around a paid payment."""
    obj: dict[str, Any] = {
        "id": "evt_0001",
        "object": "event",
        "type": "payment.succeeded",
        "created_at": "2026-11-25T19:10:02Z",
        "data": payment_json(status="succeeded", paid_amount=1999, paid_at="2026-11-25T19:10:00Z"),
    }
    return _apply(obj, overrides)


def signed_notification(
    *,
    body: bytes | None = None,
    secrets: tuple[str, ...] = (SECRET,),
    timestamp: int = NOW,
    headers: dict[str, Any] | None = None,
    **event_overrides: Any,
) -> tuple[bytes, dict[str, str]]:
    """A notification body and its headers, signed with every one of ``secrets``.

    ``headers`` entries override (or, with value ``None``, remove) headers.
    """
    raw = body if body is not None else json.dumps(event_json(**event_overrides)).encode()
    signature = ",".join(sign_notification(s, timestamp, raw) for s in secrets)
    out: dict[str, str] = {
        "CeleryPay-Merchant": MERCHANT_ID,
        "CeleryPay-Timestamp": str(timestamp),
        "CeleryPay-Signature": signature,
    }
    for key, value in (headers or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return raw, out


def order_json(**overrides: Any) -> dict[str, Any]:
    """A BigCommerce v2 order awaiting payment by the offline method."""
    obj: dict[str, Any] = {
        "id": 100,
        "customer_id": 7,
        "date_created": "Tue, 24 Nov 2026 18:00:00 +0000",
        "date_modified": "Tue, 24 Nov 2026 18:05:00 +0000",
        "status_id": 7,
        "status": "Awaiting Payment",
        "subtotal_inc_tax": "19.9900",
        "total_ex_tax": "19.9900",
        "total_inc_tax": "19.9900",
        "payment_method": "OKCloud Pay",
        "payment_provider_id": "",
        "payment_status": "",
        "currency_code": "EUR",
        "default_currency_code": "USD",
        "currency_exchange_rate": "0.9000000000",
        "cart_id": "d4e978c2-bdcf-41a0-a62e-7d9d8e8ef0d8",
        "channel_id": 1,
        "staff_notes": "",
        "customer_message": "",
        "billing_address": {"first_name": "Ada", "last_name": "L", "email": "ada@example.com"},
    }
    return _apply(obj, overrides)


def bc_jwt(
    *,
    secret: str = CLIENT_SECRET,
    algorithm: str = "HS256",
    now: int = NOW,
    **overrides: Any,
) -> str:
    """A BigCommerce ``signed_payload_jwt`` issued at ``now``; claims overridable."""
    claims: dict[str, Any] = {
        "aud": CLIENT_ID,
        "iss": "bc",
        "iat": now,
        "nbf": now,
        "exp": now + 86400,
        "jti": str(uuid.uuid4()),  # BigCommerce signs every link anew; /bc/load takes each once
        "sub": f"stores/{STORE_HASH}",
        "user": {"id": 42, "email": "clerk@example.com", "locale": "en-US"},
        "owner": {"id": 1, "email": "owner@example.com"},
        "url": "/",
        "channel_id": None,
    }
    claims = _apply(claims, overrides)
    return jwt.encode(claims, secret, algorithm=algorithm)


def _apply(obj: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Override keys; the value ``REMOVE`` deletes the key."""
    for key, value in overrides.items():
        if value is REMOVE:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj
