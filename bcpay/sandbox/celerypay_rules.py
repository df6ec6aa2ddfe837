"""Pure rules of the fake CeleryPay: ids, timestamps, currencies, request validation, HMACs.

Everything here is a plain function over plain data, so the contract
(/work/shared/reference/celerypay-api.md) can be checked without HTTP. It is an
independent implementation on purpose: it imports nothing from bcpay's own
client or signature code, so a disagreement between the two is a finding.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

# "Signature and timestamp" section: a timestamp further than this from the clock is refused.
TIMESTAMP_TOLERANCE = 300
IDEMPOTENCY_TTL = 24 * 3600
ROTATION_WINDOW = 24 * 3600  # "for at most 24 hours" (Merchants and credentials)

MERCHANT_ID = re.compile(r"mch_[A-Za-z0-9]{16,32}")
ORDER_NO = re.compile(r"[A-Za-z0-9_:.-]{1,64}")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
REQUEST_SIGNATURE = re.compile(r"v1=([0-9a-f]{64})")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_ALNUM = string.ascii_letters + string.digits

# ISO 4217 (active codes plus the funds codes) with their minor-unit exponent.
# CeleryPay supports exponents 0, 2 and 3; exponent 4 (CLF, UYW) and the codes
# without any minor unit (None: metals, XDR, XTS, XXX...) are refused, as is a
# code that is not in ISO 4217 at all.
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_NO_MINOR_UNIT = "XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN "
    "ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES "
    "KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK "
    "MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR "
    "SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD "
    "TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
)
ISO_4217: dict[str, int | None] = {
    **dict.fromkeys(_EXPONENT_2.split(), 2),
    **dict.fromkeys(_EXPONENT_0.split(), 0),
    **dict.fromkeys(_EXPONENT_3.split(), 3),
    **dict.fromkeys(_EXPONENT_4.split(), 4),
    **dict.fromkeys(_NO_MINOR_UNIT.split()),
}

CREATE_FIELDS = frozenset(
    {
        "merchant_order_no",
        "amount",
        "currency",
        "notify_url",
        "return_url",
        "description",
        "expires_in",
        "customer",
        "metadata",
    }
)
REFUND_FIELDS = frozenset({"amount", "merchant_refund_no", "reason"})


class ApiError(Exception):
    """An error answer of the contract: ``{"error": {"code", "message", "param"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The JSON body CeleryPay answers with."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "param": self.param}
        error.update(self.extra)
        return {"error": error}


def invalid(param: str | None, message: str) -> ApiError:
    """A ``400 invalid_request`` naming ``param``."""
    return ApiError(400, "invalid_request", message, param=param)


def new_id(prefix: str) -> str:
    """``pay_``/``ref_``/``evt_`` + 24 ``[A-Za-z0-9]``.

    Ids come from ``secrets`` rather than the seeded RNG: a restarted sandbox
    must not hand out ids bcpay has already stored.
    """
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(24))


def rfc3339(unix: int) -> str:
    """``2026-11-25T19:08:55Z``: UTC, whole seconds, as every contract timestamp."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def currency_exponent(currency: object) -> int:
    """The exponent CeleryPay uses for ``currency``; 400 when malformed, 422 when unsupported."""
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise invalid("currency", "currency must be a three-letter upper case ISO 4217 code")
    exponent = ISO_4217.get(currency)
    if exponent not in (0, 2, 3):
        raise ApiError(
            422, "currency_not_supported", f"currency {currency} is not supported", param="currency"
        )
    assert exponent is not None
    return exponent


# --- signatures ------------------------------------------------------------------------------


def request_signature(secret: str, timestamp: str, method: str, target: str, body: bytes) -> str:
    """Hex HMAC-SHA256 over ``{timestamp}.{METHOD}.{path_with_query}.{body}`` (Request signing)."""
    message = f"{timestamp}.{method.upper()}.{target}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def notification_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 over ``{timestamp}.{raw_body}`` (Notifications)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def check_request_signature(
    *,
    secret: str,
    timestamp: str | None,
    signature: str | None,
    method: str,
    target: str,
    body: bytes,
    now: float,
) -> None:
    """Raise the contract's 401 unless the headers sign this exact request."""
    if timestamp is None or not TIMESTAMP.fullmatch(timestamp):
        raise ApiError(401, "timestamp_out_of_range", "CeleryPay-Timestamp missing or not digits")
    if abs(int(timestamp) - now) > TIMESTAMP_TOLERANCE:
        raise ApiError(401, "timestamp_out_of_range", "CeleryPay-Timestamp is more than 300 s off")
    match = REQUEST_SIGNATURE.fullmatch(signature or "")
    if match is None:
        raise ApiError(401, "invalid_signature", "CeleryPay-Signature must be v1=<lowercase hex>")
    expected = request_signature(secret, timestamp, method, target, body)
    if not hmac.compare_digest(expected, match.group(1)):
        raise ApiError(401, "invalid_signature", "CeleryPay-Signature does not match the request")


# --- request bodies --------------------------------------------------------------------------


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else (NaN and Infinity included)."""

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        value = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError):
        raise invalid(None, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid(None, "the body must be a JSON object")
    return value


def _reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    # Strictest reading: a field the contract does not define is an error, so a
    # client typo cannot pass silently against the fake.
    for name in body:
        if name not in allowed:
            raise invalid(name, f"unknown parameter {name!r}")


def _positive_int(value: object, param: str) -> int:
    # bool is an int subclass in Python; JSON true must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise invalid(param, f"{param} must be an integer greater than 0 (minor units)")
    return value


def _text(value: object, param: str, *, max_len: int, min_len: int = 0) -> str:
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise invalid(param, f"{param} must be a string of {min_len} to {max_len} characters")
    return value


def _order_no(value: object, param: str) -> str:
    if not isinstance(value, str) or not ORDER_NO.fullmatch(value):
        raise invalid(param, f"{param} must be 1 to 64 characters [A-Za-z0-9_:.-]")
    return value


def is_loopback(host: str) -> bool:
    """True for localhost names and loopback IPs (127.0.0.0/8, ::1)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_callback_url(value: object, param: str, *, sandbox: bool) -> str:
    """``https://...``, or ``http://`` on a loopback address when ``sandbox``."""
    if not isinstance(value, str) or not 0 < len(value) <= 2048 or any(c.isspace() for c in value):
        raise invalid(param, f"{param} must be an absolute URL of at most 2048 characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        raise invalid(param, f"{param} is not a valid URL") from None
    if not host or parts.username is not None or parts.password is not None:
        raise invalid(param, f"{param} must be an absolute URL with a host and no credentials")
    if parts.scheme == "https":
        return value
    if parts.scheme == "http" and sandbox and is_loopback(host):
        return value
    rule = "https (or http on a loopback address in sandbox)" if sandbox else "https"
    raise invalid(param, f"{param} must use {rule}")


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise invalid("metadata", "metadata must be an object of strings")
    if len(value) > 20:
        raise invalid("metadata", "metadata has more than 20 keys")
    for key, item in value.items():
        if not 0 < len(key) <= 40:
            raise invalid("metadata", f"metadata key {key[:40]!r} must be 1 to 40 characters")
        if not isinstance(item, str) or len(item) > 500:
            raise invalid(
                "metadata", f"metadata[{key!r}] must be a string of at most 500 characters"
            )
    return dict(value)


def _customer(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise invalid("customer", "customer must be an object with email and name")
    for key, item in value.items():
        if key not in ("email", "name"):
            raise invalid(f"customer.{key}", f"unknown parameter customer.{key}")
        _text(item, f"customer.{key}", max_len=254 if key == "email" else 255)
    if "email" in value and "@" not in value["email"]:
        raise invalid("customer.email", "customer.email is not an email address")
    return dict(value)


@dataclass(frozen=True)
class PaymentRequest:
    """A validated ``POST /v1/payments`` body."""

    merchant_order_no: str
    amount: int
    currency: str
    notify_url: str
    return_url: str
    description: str = ""
    expires_in: int = 1800
    customer: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def parse_payment_request(body: dict[str, Any], *, sandbox: bool) -> PaymentRequest:
    """Validate a create-payment body in field order; the first problem wins."""
    _reject_unknown(body, CREATE_FIELDS)
    for name in ("merchant_order_no", "amount", "currency", "notify_url", "return_url"):
        if name not in body:
            raise invalid(name, f"{name} is required")
    order_no = _order_no(body["merchant_order_no"], "merchant_order_no")
    amount = _positive_int(body["amount"], "amount")
    currency = body["currency"]
    currency_exponent(currency)
    notify_url = check_callback_url(body["notify_url"], "notify_url", sandbox=sandbox)
    return_url = check_callback_url(body["return_url"], "return_url", sandbox=sandbox)
    description = _text(body.get("description", ""), "description", max_len=255)
    expires_in = body.get("expires_in", 1800)
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not 300 <= expires_in <= 86400
    ):
        raise invalid("expires_in", "expires_in must be an integer from 300 to 86400 seconds")
    customer = _customer(body["customer"]) if "customer" in body else {}
    metadata = _metadata(body["metadata"]) if "metadata" in body else {}
    return PaymentRequest(
        order_no,
        amount,
        currency,
        notify_url,
        return_url,
        description,
        expires_in,
        customer,
        metadata,
    )


@dataclass(frozen=True)
class RefundRequest:
    """A validated ``POST /v1/payments/{id}/refunds`` body."""

    amount: int
    merchant_refund_no: str
    reason: str = ""


def parse_refund_request(body: dict[str, Any]) -> RefundRequest:
    """Validate a refund body (the amount-vs-refundable check needs the payment: see caller)."""
    _reject_unknown(body, REFUND_FIELDS)
    for name in ("amount", "merchant_refund_no"):
        if name not in body:
            raise invalid(name, f"{name} is required")
    amount = _positive_int(body["amount"], "amount")
    # The contract gives no syntax for merchant_refund_no; the strictest reading
    # holds it to the merchant_order_no rule.
    refund_no = _order_no(body["merchant_refund_no"], "merchant_refund_no")
    reason = _text(body.get("reason", ""), "reason", max_len=255)
    return RefundRequest(amount, refund_no, reason)


def scaled_expiry(expires_in: int, time_scale: float) -> int:
    """Whole seconds until a payment expires, after time scaling (at least 1)."""
    return max(1, math.ceil(expires_in / time_scale))
