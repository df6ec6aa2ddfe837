"""Payment rules as pure functions over plain data: no HTTP, no database.

The CeleryPay state machine (contract, "Payment object")::

    pending -> succeeded | failed | expired | cancelled
    succeeded -> partially_refunded -> refunded   (or succeeded -> refunded)

``failed``, ``expired`` and ``cancelled`` are final. bcpay adds one local
state before CeleryPay has answered the creation call: ``creating``.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

CREATING = "creating"
PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"
EXPIRED = "expired"
CANCELLED = "cancelled"
PARTIALLY_REFUNDED = "partially_refunded"
REFUNDED = "refunded"

OPEN = frozenset({CREATING, PENDING})
UNPAID_FINAL = frozenset({FAILED, EXPIRED, CANCELLED})
PAID = frozenset({SUCCEEDED, PARTIALLY_REFUNDED, REFUNDED})

# The BigCommerce statuses bcpay may set. A paid order moves on to fulfilment: Shipped, Partially
# Shipped, Awaiting Pickup, Awaiting Shipment, Completed, Awaiting Fulfillment (the default, 11). A
# capture that does not match stops for a person: Manual Verification Required (the default, 12) or
# Disputed. Anything else would hide a payment: Cancelled or Declined for a paid order, Awaiting
# Payment (reconcile would then offer a paid order a pay link), Refunded with the money kept.
PAID_STATUSES = frozenset({2, 3, 8, 9, 10, 11})
MISMATCH_STATUSES = frozenset({12, 13})


def status_choice_error(paid_status_id: int, mismatch_status_id: int) -> str | None:
    """Why a pair of configured statuses would hide a payment, or None when they are fine."""
    if paid_status_id not in PAID_STATUSES:
        return (f"paid_status_id: {paid_status_id} is not a status for a paid order; choose one of "
                f"{', '.join(map(str, sorted(PAID_STATUSES)))}")
    if mismatch_status_id not in MISMATCH_STATUSES:
        return (f"mismatch_status_id: {mismatch_status_id} does not stop the order for a person; choose one of "
                f"{', '.join(map(str, sorted(MISMATCH_STATUSES)))}")
    return None
REMOTE_STATUSES = frozenset({PENDING, SUCCEEDED, FAILED, EXPIRED, CANCELLED, PARTIALLY_REFUNDED, REFUNDED})

_FORWARD: dict[str, frozenset[str]] = {
    CREATING: frozenset(REMOTE_STATUSES),
    PENDING: frozenset({SUCCEEDED, FAILED, EXPIRED, CANCELLED, PARTIALLY_REFUNDED, REFUNDED}),
    SUCCEEDED: frozenset({PARTIALLY_REFUNDED, REFUNDED}),
    PARTIALLY_REFUNDED: frozenset({PARTIALLY_REFUNDED, REFUNDED}),
    REFUNDED: frozenset(),
    # CeleryPay never captures after a final unpaid state, so a signed capture
    # for an attempt we hold as failed/expired/cancelled means our state was
    # inferred locally (e.g. a creation we thought lost): the capture wins.
    FAILED: PAID,
    EXPIRED: PAID,
    CANCELLED: PAID,
}


def transitions() -> list[tuple[str, str]]:
    """Every step the state machine allows, as (from, to) pairs (the handbook draws them)."""
    return sorted((current, new) for current, targets in _FORWARD.items() for new in targets)


# Every BigCommerce order status by id (reference section 3), for pickers and merchant steps.
STATUS_NAMES = {
    0: "Incomplete", 1: "Pending", 2: "Shipped", 3: "Partially Shipped", 4: "Refunded", 5: "Cancelled",
    6: "Declined", 7: "Awaiting Payment", 8: "Awaiting Pickup", 9: "Awaiting Shipment", 10: "Completed",
    11: "Awaiting Fulfillment", 12: "Manual Verification Required", 13: "Disputed", 14: "Partially Refunded",
}

# BigCommerce order statuses bcpay cares about (reference section 3).
STATUS_PENDING = 1
STATUS_REFUNDED = 4
STATUS_CANCELLED = 5
STATUS_AWAITING_PAYMENT = 7
STATUS_PARTIALLY_REFUNDED = 14


def is_forward(current: str, new: str, *, current_refunded: int = 0, new_refunded: int = 0) -> bool:
    """True when moving ``current`` -> ``new`` is a step forward in the state machine.

    A pending -> succeeded step may be seen as pending -> refunded when events
    were lost: the contract's machine is acyclic, so any reachable later state
    is "newer". ``partially_refunded`` -> ``partially_refunded`` is forward only
    when more has been refunded.
    """
    if new not in _FORWARD.get(current, frozenset()):
        return False
    if current == PARTIALLY_REFUNDED and new == PARTIALLY_REFUNDED:
        return new_refunded > current_refunded
    return True


def merchant_order_no(store_hash: str, order_id: int, attempt_no: int) -> str:
    """``{store_hash}-{order_id}-{n}``: unique per merchant, contract charset."""
    return f"{store_hash}-{order_id}-{attempt_no}"


_MON = re.compile(r"([a-z0-9]{1,32})-(\d{1,19})-(\d{1,6})")


def parse_merchant_order_no(value: str) -> tuple[str, int, int] | None:
    """Split a merchant order number made by :func:`merchant_order_no`."""
    match = _MON.fullmatch(value)
    if not match:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3))


class RemotePayment(Protocol):
    """The fields of a CeleryPay payment the rules read."""

    @property
    def merchant_order_no(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def paid_amount(self) -> int | None: ...

    @property
    def currency(self) -> str: ...

    @property
    def metadata(self) -> dict[str, str]: ...


class Attempt(Protocol):
    """The fields of a stored attempt the rules read."""

    @property
    def merchant_order_no(self) -> str: ...

    @property
    def amount(self) -> int: ...

    @property
    def currency(self) -> str: ...

    @property
    def order_id(self) -> int: ...

    @property
    def token(self) -> str: ...


@dataclass(frozen=True)
class CaptureCheck:
    """Whether a succeeded payment really pays the attempt, and why not."""

    ok: bool
    reason: str = ""


def check_capture(attempt: Attempt, remote: RemotePayment, store_hash: str) -> CaptureCheck:
    """A success counts only if order number, metadata, amount and currency match.

    The contract: "a notification is a hint with a proof, not the whole truth".
    """
    if remote.merchant_order_no != attempt.merchant_order_no:
        return CaptureCheck(False, f"merchant_order_no {remote.merchant_order_no!r} is not this attempt's")
    meta = remote.metadata or {}
    if meta.get("store_hash") != store_hash or meta.get("order_id") != str(attempt.order_id):
        return CaptureCheck(False, "payment metadata does not name this store and order")
    if remote.currency != attempt.currency:
        return CaptureCheck(False, f"currency {remote.currency} differs from the order's {attempt.currency}")
    if remote.paid_amount != attempt.amount:
        return CaptureCheck(
            False, f"paid amount {remote.paid_amount} differs from the order total {attempt.amount} (minor units)"
        )
    return CaptureCheck(True)


class OrderFacts(Protocol):
    """The fields of a BigCommerce order the eligibility check reads."""

    @property
    def status_id(self) -> int: ...

    @property
    def payment_method(self) -> str: ...

    @property
    def cart_id(self) -> str | None: ...

    @property
    def date_created(self) -> datetime: ...


@dataclass(frozen=True)
class Refusal:
    """Why an order may not start a payment; ``code`` is the API error code."""

    code: str
    message: str


def cart_matches(order: OrderFacts, cart_id: str) -> bool:
    """True when the browser's cart id is the order's (constant-time compare).

    A wrong cart id must answer exactly like an unknown order, so that order
    ids cannot be probed.
    """
    if not order.cart_id:
        return False
    return hmac.compare_digest(order.cart_id.encode("utf-8"), cart_id.encode("utf-8"))


def check_order_eligible(
    order: OrderFacts,
    *,
    accepted_methods: tuple[str, ...],
    max_age: timedelta,
    now: datetime,
) -> Refusal | None:
    """None when a payment may start for ``order`` (cart already matched), else why not."""
    if order.payment_method not in accepted_methods:
        return Refusal(code="wrong_payment_method", message="this order is not paid with OKCloud Pay")
    if order.status_id != STATUS_AWAITING_PAYMENT:
        return Refusal(code="order_not_awaiting_payment", message="this order is not awaiting payment")
    if now - order.date_created > max_age:
        return Refusal(code="order_too_old", message="this order is too old to be paid online; contact the store")
    return None


def paid_effect(order_status_id: int, *, paid_status_id: int) -> str:
    """What the mark-paid job does given the order's current status.

    ``apply``: set the paid status; ``done``: already paid (a repeat run after
    a crash); ``cancelled``: the merchant cancelled it meanwhile (anomaly);
    ``other``: someone moved the order on by hand; record and leave it.
    """
    if order_status_id in (STATUS_AWAITING_PAYMENT, STATUS_PENDING):
        return "apply"
    if order_status_id == paid_status_id:
        return "done"
    if order_status_id == STATUS_CANCELLED:
        return "cancelled"
    return "other"


def refund_status_id(refunded_amount: int, paid_amount: int) -> int:
    """Refunded (4) when everything was returned, else Partially Refunded (14)."""
    return STATUS_REFUNDED if refunded_amount >= paid_amount else STATUS_PARTIALLY_REFUNDED


def backoff_seconds(attempts: int, *, base: float, cap: float) -> float:
    """Exponential backoff for outbox retries (no jitter: the lease spreads work)."""
    return float(min(cap, base * (2 ** max(0, attempts - 1))))
