"""A complete local fake of the CeleryPay gateway, for ``bcpay sandbox`` and for tests.

It implements /work/shared/reference/celerypay-api.md on its own (it never
imports bcpay's client or signature code), so bcpay's client can be checked
against a second reading of the contract. Pieces, by seam::

    celerypay.py          FakeOptions, FakeCeleryPay: state, the state machine, control methods
    celerypay_records.py  the stored merchant, payment and refund, and their contract JSON
    celerypay_rules.py    pure rules: validation, currencies, ids, timestamps, HMACs
    celerypay_api.py      the contract endpoints /v1/...: signing, idempotency, rate limit
    celerypay_cashier.py  the hosted cashier page /cashier/{id} and the return redirect
    celerypay_admin.py    the control API /_fake/... for the sandbox and cross-process tests
    celerypay_notify.py   the notification outbox: signing, retries, duplicates, reordering

Time comes from the injected ``clock``; notifications go out only when
:meth:`FakeCeleryPay.deliver_due` runs (tests) or :meth:`FakeCeleryPay.run_background`
loops (sandbox).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from bcpay.errors import ConflictError, InvalidInputError, NotFoundError
from bcpay.sandbox import celerypay_admin, celerypay_api, celerypay_cashier
from bcpay.sandbox.celerypay_notify import Delivery, Outbox
from bcpay.sandbox.celerypay_records import Merchant, PaymentRecord, RefundRecord
from bcpay.sandbox.celerypay_rules import (
    MERCHANT_ID,
    ROTATION_WINDOW,
    ApiError,
    PaymentRequest,
    RefundRequest,
    invalid,
    new_id,
    notification_signature,
    rfc3339,
    scaled_expiry,
)

logger = logging.getLogger(__name__)

# The state machine of the contract ("Payment object"); nothing else ever happens.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"succeeded", "failed", "expired", "cancelled"}),
    "succeeded": frozenset({"partially_refunded", "refunded"}),
    "partially_refunded": frozenset({"partially_refunded", "refunded"}),
}
REFUNDABLE = frozenset({"succeeded", "partially_refunded"})
FAILURE_MESSAGES = {
    "card_declined": "The card was declined.",
    "insufficient_funds": "The card has insufficient funds.",
    "risk_rejected": "The payment was rejected by risk control.",
}


@dataclass
class FakeOptions:
    """How the fake bends time and misbehaves (always within what the contract allows)."""

    time_scale: float = 1.0  # divides the notification retry schedule and expiry waits
    notify_delay: float = 0.0  # seconds before the first delivery attempt
    duplicates: int = 0  # deliver each event 1 + duplicates times
    reorder: bool = False  # deliver a payment's due events shuffled (seeded RNG)
    seed: int = 0
    rate_limit_per_second: int = 100  # per merchant; 429 + Retry-After past it
    sandbox: bool = True  # allow http notify_url/return_url on loopback addresses
    refund_auto: bool = True  # refunds succeed right after creation; else wait for settle_refunds

    def __post_init__(self) -> None:
        if self.time_scale <= 0 or self.notify_delay < 0 or self.duplicates < 0:
            raise InvalidInputError("time_scale must be > 0; notify_delay and duplicates >= 0")
        if self.rate_limit_per_second < 1:
            raise InvalidInputError("rate_limit_per_second must be at least 1")


class FakeCeleryPay:
    """The fake gateway: merchants, payments, refunds, events, and the ASGI ``app`` serving them."""

    def __init__(
        self,
        options: FakeOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.options = options or FakeOptions()
        self.clock = clock
        self._http = http
        self._owns_http = http is None
        self.merchants: dict[str, Merchant] = {}
        self._payments: dict[str, PaymentRecord] = {}
        self._refunds: dict[str, RefundRecord] = {}
        self.events: list[dict[str, Any]] = []
        self.outbox = Outbox(
            clock=clock,
            signer=self._sign_notification,
            time_scale=self.options.time_scale,
            notify_delay=self.options.notify_delay,
            duplicates=self.options.duplicates,
            reorder=self.options.reorder,
            seed=self.options.seed,
        )
        self.gate = celerypay_api.Gate(self)
        self._app: Starlette | None = None

    # --- wiring ------------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        """The ASGI app: contract endpoints, cashier page and ``/_fake`` control API."""
        if self._app is None:
            routes = [
                *celerypay_api.routes(self),
                *celerypay_cashier.routes(self),
                *celerypay_admin.routes(self),
            ]
            self._app = Starlette(
                routes=routes, exception_handlers=celerypay_api.EXCEPTION_HANDLERS
            )
        return self._app

    @property
    def http(self) -> httpx.AsyncClient:
        """The client notifications are sent with (made on first use unless injected)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        return self._http

    async def aclose(self) -> None:
        """Close the notification client if the fake made it."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def now(self) -> int:
        """The clock in whole seconds (every contract timestamp is whole seconds)."""
        return int(self.clock())

    def add_merchant(
        self, merchant_id: str, api_secret: str, *, old_secret: str | None = None
    ) -> None:
        """Register (or re-key) a merchant; ``old_secret`` starts a 24 h rotation window."""
        if not MERCHANT_ID.fullmatch(merchant_id):
            raise InvalidInputError("merchant_id must be mch_ + 16 to 32 [A-Za-z0-9]")
        for secret in (api_secret, old_secret):
            if secret is not None and (
                len(secret) < 32 or not secret.isascii() or not secret.isprintable()
            ):
                raise InvalidInputError("an api_secret is at least 32 printable ASCII characters")
        self.merchants[merchant_id] = Merchant(merchant_id, api_secret, old_secret, self.clock())

    def _sign_notification(self, merchant_id: str, timestamp: int, body: bytes) -> str:
        # New secret first, then the old one while the rotation window lasts.
        merchant = self.merchants[merchant_id]
        keys = [merchant.api_secret]
        if merchant.old_secret and self.clock() - merchant.rotated_at < ROTATION_WINDOW:
            keys.append(merchant.old_secret)
        return ",".join(f"v1={notification_signature(key, timestamp, body)}" for key in keys)

    # --- accessors ---------------------------------------------------------------------------

    @property
    def payments(self) -> dict[str, dict[str, Any]]:
        """Every payment object by id (snapshots)."""
        return {pid: p.as_json() for pid, p in self._payments.items()}

    @property
    def refunds(self) -> dict[str, dict[str, Any]]:
        """Every refund object by id (snapshots)."""
        return {rid: r.as_json() for rid, r in self._refunds.items()}

    @property
    def deliveries(self) -> list[Delivery]:
        """Every notification attempt so far, oldest first."""
        return self.outbox.deliveries

    def payment_record(self, payment_id: str, merchant_id: str | None = None) -> PaymentRecord:
        """The stored payment; NotFoundError also when it belongs to another merchant."""
        payment = self._payments.get(payment_id)
        if payment is None or (merchant_id is not None and payment.merchant_id != merchant_id):
            raise NotFoundError(f"no such payment: {payment_id}")
        return payment

    def find_by_order_no(self, merchant_id: str, order_no: str) -> PaymentRecord | None:
        """The merchant's payment with this merchant_order_no, if any."""
        for payment in self._payments.values():
            if payment.merchant_id == merchant_id and payment.merchant_order_no == order_no:
                return payment
        return None

    def refund_record(self, merchant_id: str, payment_id: str, refund_id: str) -> RefundRecord:
        """The stored refund of that payment; NotFoundError otherwise."""
        refund = self._refunds.get(refund_id)
        if refund is None or refund.merchant_id != merchant_id or refund.payment_id != payment_id:
            raise NotFoundError(f"no such refund: {refund_id}")
        return refund

    # --- the state machine -------------------------------------------------------------------

    def _move(self, payment: PaymentRecord, status: str) -> None:
        if status not in TRANSITIONS.get(payment.status, frozenset()):
            raise ConflictError(f"payment {payment.id} is {payment.status}", code="invalid_state")
        payment.status = status
        payment.updated_at = self.now()

    def _emit(
        self, event_type: str, payment: PaymentRecord, data: dict[str, Any]
    ) -> dict[str, Any]:
        event = {
            "id": new_id("evt_"),
            "object": "event",
            "type": event_type,
            "created_at": rfc3339(self.now()),
            "data": data,
        }
        self.events.append(event)
        self.outbox.enqueue(
            event, url=payment.notify_url, merchant_id=payment.merchant_id, payment_id=payment.id
        )
        return event

    def create_payment(
        self, merchant_id: str, request: PaymentRequest, cashier_base: str
    ) -> PaymentRecord:
        """Store a new pending payment; 409 duplicate_order_no carries the existing id."""
        existing = self.find_by_order_no(merchant_id, request.merchant_order_no)
        if existing is not None:
            raise ApiError(
                409,
                "duplicate_order_no",
                f"merchant_order_no {request.merchant_order_no} is already used",
                param="merchant_order_no",
                extra={"payment_id": existing.id},
            )
        now = self.now()
        payment_id = new_id("pay_")
        payment = PaymentRecord(
            id=payment_id,
            merchant_id=merchant_id,
            merchant_order_no=request.merchant_order_no,
            amount=request.amount,
            currency=request.currency,
            cashier_url=f"{cashier_base}/cashier/{payment_id}",
            return_url=request.return_url,
            notify_url=request.notify_url,
            description=request.description,
            metadata=request.metadata,
            customer=request.customer,
            created_at=now,
            # expires_at tells the truth about when the (time-scaled) expiry happens.
            expires_at=now + scaled_expiry(request.expires_in, self.options.time_scale),
            updated_at=now,
        )
        self._payments[payment_id] = payment
        return payment

    def cancel(self, merchant_id: str, payment_id: str) -> PaymentRecord:
        """pending -> cancelled (409 invalid_state otherwise), emitting payment.cancelled."""
        payment = self.payment_record(payment_id, merchant_id)
        self._move(payment, "cancelled")
        self._emit("payment.cancelled", payment, payment.as_json())
        return payment

    def create_refund(
        self, merchant_id: str, payment_id: str, request: RefundRequest, *, refund_id: str | None = None
    ) -> RefundRecord:
        """A pending refund; refused when not refundable, too large, or its number is reused.

        ``refund_id`` chooses its id (tests of the longest id the contract allows); else a new one.
        """
        payment = self.payment_record(payment_id, merchant_id)
        for other in self._refunds.values():
            if (
                other.merchant_id == merchant_id
                and other.merchant_refund_no == request.merchant_refund_no
            ):
                raise ApiError(
                    409,
                    "duplicate_refund_no",
                    f"merchant_refund_no {request.merchant_refund_no} is already used",
                    param="merchant_refund_no",
                    extra={"refund_id": other.id, "payment_id": other.payment_id},
                )
        if payment.status not in REFUNDABLE:
            raise ApiError(409, "invalid_state", f"payment {payment.id} is {payment.status}")
        # Pending refunds hold their amount too, or two quick refunds could overdraw.
        held = sum(
            r.amount
            for r in self._refunds.values()
            if r.payment_id == payment.id and r.status == "pending"
        )
        refundable = (payment.paid_amount or 0) - payment.refunded_amount - held
        if request.amount > refundable:
            raise invalid("amount", f"amount exceeds the refundable {refundable}")
        now = self.now()
        refund = RefundRecord(
            id=refund_id or new_id("ref_"),
            merchant_id=merchant_id,
            payment_id=payment.id,
            merchant_refund_no=request.merchant_refund_no,
            amount=request.amount,
            currency=payment.currency,
            reason=request.reason,
            created_at=now,
            updated_at=now,
        )
        self._refunds[refund.id] = refund
        return refund

    def settle_refund(self, refund: RefundRecord, *, succeed: bool = True) -> None:
        """pending -> succeeded (moving the payment) or failed; emits refund.succeeded/failed."""
        if refund.status != "pending":
            raise ConflictError(f"refund {refund.id} is {refund.status}", code="invalid_state")
        payment = self._payments[refund.payment_id]
        refund.status = "succeeded" if succeed else "failed"
        refund.updated_at = self.now()
        if succeed:
            payment.refunded_amount += refund.amount
            self._move(
                payment,
                "refunded"
                if payment.refunded_amount >= (payment.paid_amount or 0)
                else "partially_refunded",
            )
        self._emit(
            f"refund.{refund.status}", payment, {**refund.as_json(), "payment": payment.as_json()}
        )

    def payable_payment(self, payment_id: str) -> PaymentRecord:
        """The payment, still payable: expired on the spot when its expires_at has passed."""
        payment = self.payment_record(payment_id)
        if payment.status == "pending" and self.clock() >= payment.expires_at:
            self._expire(payment)
        if payment.status != "pending":
            raise ConflictError(f"payment {payment_id} is {payment.status}", code="invalid_state")
        return payment

    def _expire(self, payment: PaymentRecord) -> None:
        self._move(payment, "expired")
        self._emit("payment.expired", payment, payment.as_json())

    # --- control (tests, cashier page, sandbox) ----------------------------------------------

    async def pay(self, payment_id: str, *, amount: int | None = None) -> dict[str, Any]:
        """The shopper pays: succeeded with paid_amount = ``amount`` or the requested amount."""
        if amount is not None and (
            isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0
        ):
            raise InvalidInputError("amount must be a positive integer")
        payment = self.payable_payment(payment_id)
        self._move(payment, "succeeded")
        payment.paid_amount = payment.amount if amount is None else amount
        payment.paid_at = payment.updated_at
        self._emit("payment.succeeded", payment, payment.as_json())
        return payment.as_json()

    async def decline(self, payment_id: str, code: str = "card_declined") -> dict[str, Any]:
        """The payment fails with ``code`` (card_declined, insufficient_funds, risk_rejected...)."""
        payment = self.payable_payment(payment_id)
        self._move(payment, "failed")
        payment.failure_code = code
        payment.failure_message = FAILURE_MESSAGES.get(code, "The payment failed.")
        self._emit("payment.failed", payment, payment.as_json())
        return payment.as_json()

    async def abandon(self, payment_id: str) -> dict[str, Any]:
        """The shopper leaves the cashier: nothing changes, the payment expires later."""
        return self.payable_payment(payment_id).as_json()

    async def expire_due(self) -> list[str]:
        """Expire every pending payment whose expires_at has passed; their ids."""
        now = self.clock()
        due = [p for p in self._payments.values() if p.status == "pending" and now >= p.expires_at]
        for payment in due:
            self._expire(payment)
        return [p.id for p in due]

    async def settle_refunds(
        self, refund_ids: Iterable[str] | None = None, *, succeed: bool = True
    ) -> list[dict[str, Any]]:
        """Settle the given pending refunds (default: all) as succeeded, or failed."""
        if refund_ids is None:
            chosen = [r for r in self._refunds.values() if r.status == "pending"]
        else:
            chosen = []
            for refund_id in refund_ids:
                if refund_id not in self._refunds:
                    raise NotFoundError(f"no such refund: {refund_id}")
                chosen.append(self._refunds[refund_id])
        # Check them all first, so a bad id cannot leave the batch half settled.
        for refund in chosen:
            if refund.status != "pending":
                raise ConflictError(f"refund {refund.id} is {refund.status}", code="invalid_state")
        for refund in chosen:
            self.settle_refund(refund, succeed=succeed)
        return [r.as_json() for r in chosen]

    async def deliver_due(self) -> int:
        """Attempt every notification whose time has come; the number of attempts."""
        return await self.outbox.deliver_due(self.http)

    async def run_background(
        self, *, interval: float = 0.5, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """Deliver and expire forever, every ``interval`` seconds, until cancelled (sandbox)."""
        while True:
            try:
                await self.expire_due()
                await self.deliver_due()
            except Exception:
                # One bad turn must not silently stop the sandbox's deliveries for good.
                logger.exception("fake CeleryPay background turn failed")
            await sleep(interval)

    def fail_next(self, count: int = 1, *, status: int = 503, after_work: bool = False) -> None:
        """Answer the next ``count`` contract requests with ``status`` (a CeleryPay fault).

        ``after_work`` does the work (and records the idempotent response) before
        failing, as when the answer is lost on the way: a retry with the same
        Idempotency-Key must then get the first response, not a second payment.
        """
        self.gate.fail_next(count, status=status, after_work=after_work)
