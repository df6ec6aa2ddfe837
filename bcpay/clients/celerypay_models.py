"""CeleryPay objects (payment, refund, event) parsed strictly from JSON.

Every field is checked against the contract ("Payment object", "Endpoints",
"Notifications"); anything else raises :class:`~bcpay.errors.InvalidInputError`
so a malformed object never reaches the payment rules. The client turns that
error into ``UpstreamUnavailable(code="bad_upstream_response")`` for answers
to its own calls; the notification receiver answers 400.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bcpay.errors import InvalidInputError

PAYMENT_ID = re.compile(r"pay_[A-Za-z0-9]{24}")
REFUND_ID = re.compile(r"ref_[A-Za-z0-9]{1,64}")
EVENT_ID = re.compile(r"evt_[A-Za-z0-9]{1,64}")
ORDER_NO = re.compile(r"[A-Za-z0-9_:.-]{1,64}")
CURRENCY = re.compile(r"[A-Z]{3}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")

PAYMENT_STATUSES = frozenset(
    {"pending", "succeeded", "failed", "expired", "cancelled", "partially_refunded", "refunded"}
)
REFUND_STATUSES = frozenset({"pending", "succeeded", "failed"})
EVENT_TYPES = frozenset(
    {
        "payment.succeeded",
        "payment.failed",
        "payment.expired",
        "payment.cancelled",
        "refund.succeeded",
        "refund.failed",
    }
)


def _bad(what: str) -> InvalidInputError:
    return InvalidInputError(f"malformed CeleryPay object: {what}", code="invalid_celerypay_object")


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{what} is not an object")
    return value


def _str(obj: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _bad(f"{key} is not a string")
    return value


def _match(obj: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = _str(obj, key)
    if not pattern.fullmatch(value):
        raise _bad(f"{key} has an invalid format")
    return str(value)


def _int(obj: dict[str, Any], key: str, *, optional: bool = False, minimum: int = 0) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(f"{key} is not an integer >= {minimum}")
    return value


def _enum(obj: dict[str, Any], key: str, allowed: frozenset[str]) -> str:
    value = _str(obj, key)
    if value not in allowed:
        raise _bad(f"{key} {value!r} is not one of the contract's values")
    return str(value)


def _object_kind(obj: dict[str, Any], kind: str) -> None:
    if obj.get("object") != kind:
        raise _bad(f"object is not {kind!r}")


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp (``2026-11-25T19:08:55Z``) as an aware UTC datetime."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise _bad(f"{value!r} is not an RFC 3339 timestamp")
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        raise _bad(f"{value!r} is not an RFC 3339 timestamp") from None


def _time(obj: dict[str, Any], key: str, *, optional: bool = True) -> datetime | None:
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise _bad(f"{key} is missing")
    return parse_timestamp(value)


@dataclass(frozen=True)
class Payment:
    """A CeleryPay payment (contract, "Payment object")."""

    id: str
    merchant_order_no: str
    amount: int
    currency: str
    status: str
    paid_amount: int | None
    refunded_amount: int
    cashier_url: str
    return_url: str
    notify_url: str
    description: str | None
    metadata: dict[str, str]
    failure_code: str | None
    failure_message: str | None
    created_at: datetime | None
    expires_at: datetime | None
    paid_at: datetime | None
    updated_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> Payment:
        """Parse and check a payment object; raise InvalidInputError when malformed."""
        p = _obj(obj, "payment")
        _object_kind(p, "payment")
        metadata = p.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise _bad("metadata is not a string map")
        return cls(
            id=_match(p, "id", PAYMENT_ID),
            merchant_order_no=_match(p, "merchant_order_no", ORDER_NO),
            amount=_int(p, "amount", minimum=1),
            currency=_match(p, "currency", CURRENCY),
            status=_enum(p, "status", PAYMENT_STATUSES),
            paid_amount=_int(p, "paid_amount", optional=True),
            refunded_amount=_int(p, "refunded_amount"),
            cashier_url=_str(p, "cashier_url"),
            return_url=_str(p, "return_url"),
            notify_url=_str(p, "notify_url"),
            description=_str(p, "description", optional=True),
            metadata=dict(metadata),
            failure_code=_str(p, "failure_code", optional=True),
            failure_message=_str(p, "failure_message", optional=True),
            created_at=_time(p, "created_at"),
            expires_at=_time(p, "expires_at"),
            paid_at=_time(p, "paid_at"),
            updated_at=_time(p, "updated_at"),
            raw=p,
        )


@dataclass(frozen=True)
class Refund:
    """A CeleryPay refund (contract, "POST /v1/payments/{id}/refunds")."""

    id: str
    payment_id: str
    merchant_refund_no: str
    amount: int
    currency: str
    status: str
    created_at: datetime | None
    updated_at: datetime | None
    payment: Payment | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> Refund:
        """Parse and check a refund object (with ``payment`` when an event carries it)."""
        r = _obj(obj, "refund")
        _object_kind(r, "refund")
        payment = r.get("payment")
        return cls(
            id=_match(r, "id", REFUND_ID),
            payment_id=_match(r, "payment_id", PAYMENT_ID),
            merchant_refund_no=_match(r, "merchant_refund_no", ORDER_NO),
            amount=_int(r, "amount", minimum=1),
            currency=_match(r, "currency", CURRENCY),
            status=_enum(r, "status", REFUND_STATUSES),
            created_at=_time(r, "created_at"),
            updated_at=_time(r, "updated_at"),
            payment=None if payment is None else Payment.from_json(payment),
            raw=r,
        )


@dataclass(frozen=True)
class Event:
    """A CeleryPay notification (contract, "Notifications")."""

    id: str
    type: str
    created_at: datetime
    payment: Payment
    refund: Refund | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> Event:
        """Parse and check an event; for refund events ``data.payment`` is required."""
        e = _obj(obj, "event")
        _object_kind(e, "event")
        kind = _enum(e, "type", EVENT_TYPES)
        created = _time(e, "created_at", optional=False)
        assert created is not None  # _time raised otherwise
        data = e.get("data")
        if kind.startswith("refund."):
            refund = Refund.from_json(data)
            if refund.payment is None:
                raise _bad("refund event without data.payment")
            if refund.payment.id != refund.payment_id:
                raise _bad("refund event whose payment does not match payment_id")
            payment = refund.payment
        else:
            refund = None
            payment = Payment.from_json(data)
        return cls(
            id=_match(e, "id", EVENT_ID),
            type=kind,
            created_at=created,
            payment=payment,
            refund=refund,
            raw=e,
        )


def parse_event(body: bytes) -> Event:
    """Parse a notification body (already signature-checked) into an :class:`Event`."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad("event body is not JSON") from None
    return Event.from_json(obj)
