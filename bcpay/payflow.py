"""The payment flow: start a payment, and apply CeleryPay's word about it.

Every source of payment state (notification, the snippet's status poll, the
reconcile command, the expiry sweep) goes through :func:`apply_remote` inside
one transaction that holds the order's lock; the effects on BigCommerce are
outbox jobs written in that same transaction (see ``bcpay.effects``).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from bcpay import channels, order_reads, outbox, rules
from bcpay.clients.bigcommerce import Order
from bcpay.clients.celerypay import Payment
from bcpay.errors import (
    BcpayError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RateLimited,
    UpstreamConflict,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from bcpay.money import format_amount, to_minor
from bcpay.runtime import Runtime, StorePolicy
from bcpay.storage import queries as q
from bcpay.storage.db import Conn
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import payments

log = logging.getLogger("bcpay.payments")

# A pending attempt this close to expiry is not handed out again.
REUSE_MARGIN = timedelta(seconds=60)
# A "creating" attempt untouched this long whose payment CeleryPay does not know was never created: far
# longer than one creation call with its retries, so a creation still on the way is never given up.
CREATION_GRACE = timedelta(minutes=10)
# A creation that starts on a row this much older (a pay link's row, opened without calling CeleryPay)
# first stamps the row's updated_at, from which CREATION_GRACE counts.
RESTAMP_AFTER = timedelta(minutes=1)
NOT_CREATED = "not_created"  # failure_code of an attempt given up that way
# A poll asks CeleryPay once the last look-up is payments.status_poll_interval times 1 to 1.5 old
# (drawn on each poll): never more often than the interval, and payments opened together drift apart.
LOOKUP_SPREAD = 0.5


class AlreadyPaid(ConflictError):
    """The order is paid; carries the paid attempt's public view."""

    code = "already_paid"

    def __init__(self, view: PaymentView) -> None:
        super().__init__("this order is already paid")
        self.view = view


class Refused(BcpayError):
    """The order may not start a payment (code says why)."""

    http_status = 422


@dataclass(frozen=True)
class PaymentView:
    """What the snippet and the pay page may know about one attempt."""

    token: str
    store_hash: str
    order_id: int
    state: str  # awaiting_payment | paid | under_review | failed | expired | cancelled | refunded
    status: str
    amount: int
    amount_display: str
    currency: str
    cashier_url: str | None
    expires_at: datetime | None
    pay_url: str
    failure_message: str | None

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of the public payments API."""
        return {
            "token": self.token,
            "store_hash": self.store_hash,
            "order_id": self.order_id,
            "state": self.state,
            "status": self.status,
            "amount": self.amount,
            "amount_display": self.amount_display,
            "currency": self.currency,
            "cashier_url": self.cashier_url,
            "expires_at": self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if self.expires_at else None,
            "pay_url": self.pay_url,
            "failure_message": self.failure_message,
        }


def public_state(p: PaymentRecord) -> str:
    """The shopper-facing state of an attempt."""
    if p.status in (rules.REFUNDED, rules.PARTIALLY_REFUNDED):
        return "refunded" if p.status == rules.REFUNDED else "paid"
    if p.status == rules.SUCCEEDED:
        return "under_review" if p.outcome == "mismatch" else "paid"
    if p.status in rules.OPEN or never_created(p):
        # Given up as never created: nothing failed for the shopper, who never reached a cashier (a pay
        # link opened hours after ops made it). "Pay now" opens a new attempt at today's amount.
        return "awaiting_payment"
    return p.status


def view(rt: Runtime, store: StoreRecord, p: PaymentRecord) -> PaymentView:
    """The public view of an attempt; the cashier URL only while it can be paid."""
    payable = p.status == rules.PENDING and p.expires_at is not None and p.expires_at > rt.now()
    return PaymentView(
        token=p.token,
        store_hash=store.store_hash,
        order_id=p.order_id,
        state=public_state(p),
        status=p.status,
        amount=p.amount,
        amount_display=format_amount(p.amount, p.currency),
        currency=p.currency,
        cashier_url=p.cashier_url if payable else None,
        expires_at=p.expires_at,
        pay_url=rt.public_url(f"/pay/{p.token}"),
        failure_message=p.failure_message,
    )


# --- starting a payment ------------------------------------------------------


async def _load_store(rt: Runtime, store_hash: str) -> StoreRecord:
    async with rt.db.read() as conn:
        store = await q.get_store(conn, store_hash)
    if store is None or not store.installed:
        raise NotFoundError("unknown store", code="unknown_store")
    if not store.has_credentials:
        raise ConflictError("this store is not configured for OKCloud Pay yet", code="store_not_configured")
    return store


async def _read_order(
    rt: Runtime, store: StoreRecord, order_id: int, admit: Callable[[], float] | None = None, *, fresh: bool = False
) -> Order:
    # One BigCommerce read per order every few seconds, shared by every process (bcpay.order_reads).
    return await order_reads.read_order(rt, store, order_id, admit=admit, fresh=fresh)


async def knows_order(rt: Runtime, store_hash: str, order_id: int) -> bool:
    """Whether bcpay has an attempt for this order of this store (one read, no BigCommerce call)."""
    async with rt.db.read() as conn:
        store = await q.get_store(conn, store_hash)
        return store is not None and bool(await q.order_attempts(conn, store.id, order_id))


async def start_payment(
    rt: Runtime, store_hash: str, order_id: int, cart_id: str, *, admit: Callable[[], float] | None = None
) -> PaymentView:
    """Start or resume the CeleryPay payment of an order; never trusts the browser.

    Returns the attempt whose cashier URL the shopper should visit. Raises
    :class:`AlreadyPaid`, :class:`Refused`, NotFoundError (also for a wrong
    cart id) or an upstream error. ``admit()`` is asked before the order is
    read from BigCommerce (a wait refuses it: ``order_reads.StartsLimited``).
    """
    store = await _load_store(rt, store_hash)
    if await order_reads.wrong_cart(rt, store, order_id, cart_id):
        raise NotFoundError("no such order", code="order_not_found")  # known order, other cart: no call
    order = await _read_order(rt, store, order_id, admit)
    if not rules.cart_matches(order, cart_id):
        raise NotFoundError("no such order", code="order_not_found")
    policy = await channel_policy(rt, store, order)
    await _raise_if_paid(rt, store, order_id)
    refusal = rules.check_order_eligible(
        order, accepted_methods=policy.accepted_methods, max_age=policy.max_order_age, now=rt.now()
    )
    if refusal is not None:
        raise Refused(refusal.message, code=refusal.code)
    amount = to_minor(order.total_inc_tax, order.currency)
    if amount <= 0:
        raise Refused("this order has nothing to pay", code="nothing_to_pay")

    for _ in range(3):
        attempt = await _open_attempt(rt, store, order, amount, policy.expires_in)
        if attempt.status == rules.PENDING:
            # Paid already, its notification still on the way? Then the cashier must not be offered
            # again (the check is throttled per payment, like the status poll's).
            attempt = await _refresh_quietly(rt, store, attempt)
            if attempt.status != rules.PENDING:
                await _raise_if_paid(rt, store, order_id)
                continue
            fresh = attempt.expires_at is not None and attempt.expires_at > rt.now() + REUSE_MARGIN
            if fresh and attempt.amount == amount and attempt.currency == order.currency:
                return view(rt, store, attempt)
            reason = "order total changed" if fresh else "about to expire"
            await cancel_attempt(rt, store, attempt, reason=reason)
        else:
            created = await _create_remote(rt, store, attempt, order, policy.expires_in)
            if created.status == rules.PENDING:
                return view(rt, store, created)
        await _raise_if_paid(rt, store, order_id)
    raise ConflictError("could not open a payment for this order; try again", code="try_again")


async def channel_policy(rt: Runtime, store: StoreRecord, order: Order) -> StorePolicy:
    """The rules for this order: the store's, with its storefront channel's method names (multi-storefront)."""
    return channels.policy(rt, store, channels.find(await channels.known(rt, store), order.channel_id))


async def _raise_if_paid(rt: Runtime, store: StoreRecord, order_id: int) -> None:
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order_id)
    paid = [a for a in attempts if a.status in rules.PAID]
    if paid:
        raise AlreadyPaid(view(rt, store, paid[-1]))


async def _open_attempt(
    rt: Runtime, store: StoreRecord, order: Order, amount: int, expires_in: int
) -> PaymentRecord:
    """The order's open attempt, creating a ``creating`` row when there is none.

    The partial unique index allows one open attempt per order, so concurrent
    requests (double clicks, two tabs, several processes) end up sharing one.
    """
    for _ in range(5):
        async with rt.db.transaction() as conn:
            attempts = await q.order_attempts(conn, store.id, order.id)
            open_ = [a for a in attempts if a.status in rules.OPEN]
            if open_:
                return open_[0]
            n = max((a.attempt_no for a in attempts), default=0) + 1
            now = rt.now()
            row = await q.insert_payment(
                conn,
                token=secrets.token_urlsafe(24),
                store_id=store.id,
                order_id=order.id,
                attempt_no=n,
                merchant_order_no=rules.merchant_order_no(store.store_hash, order.id, n),
                idempotency_key="create-" + secrets.token_urlsafe(24),
                amount=amount,
                currency=order.currency,
                status=rules.CREATING,
                expires_at=now + timedelta(seconds=expires_in),
                created_at=now,
                updated_at=now,
                channel_id=order.channel_id,
            )
            if row is not None:
                return row
    raise ConflictError("could not open a payment for this order; try again", code="try_again")


def _create_fields(rt: Runtime, store: StoreRecord, attempt: PaymentRecord, expires_in: int) -> dict[str, Any]:
    """The creation request, derived only from the stored attempt.

    Deterministic, so that a retried creation (same Idempotency-Key) sends the
    same body and CeleryPay answers with the first payment instead of a conflict.
    """
    return {
        "merchant_order_no": attempt.merchant_order_no,
        "amount": attempt.amount,
        "currency": attempt.currency,
        "notify_url": rt.public_url(f"/notify/celerypay/{store.store_hash}"),
        "return_url": rt.public_url(f"/pay/{attempt.token}/return"),
        "description": f"Order #{attempt.order_id} at {store.name or store.store_hash}"[:255],
        "expires_in": expires_in,
        "metadata": {
            "store_hash": store.store_hash,
            "order_id": str(attempt.order_id),
            "attempt": str(attempt.attempt_no),
        },
        "idempotency_key": attempt.idempotency_key,
    }


async def _create_remote(
    rt: Runtime, store: StoreRecord, attempt: PaymentRecord, order: Order, expires_in: int
) -> PaymentRecord:
    now = rt.now()
    if attempt.updated_at < now - RESTAMP_AFTER:
        # A row opened long ago (a pay link's) whose creation starts only now: without the stamp the
        # never-created sweep, finding no payment at CeleryPay yet, could give it up mid-creation.
        async with rt.db.transaction() as conn:
            if not await q.restamp_creating(conn, attempt.id, now=now):
                return await q.get_payment(conn, attempt.id)  # given up meanwhile: the caller opens another
        attempt = replace(attempt, updated_at=now)
    cp = rt.celerypay(store)
    fields = _create_fields(rt, store, attempt, expires_in)
    if order.email:
        fields["customer"] = {"email": order.email}
    try:
        remote = await cp.create_payment(**fields)
    except UpstreamConflict as exc:
        # Created earlier and the answer was lost: by order number it is ours.
        # idempotency_conflict means the retried body differs (public URL or
        # store name changed meanwhile); the payment is found the same way.
        if exc.code not in ("duplicate_order_no", "idempotency_conflict"):
            raise
        found = await cp.get_payment(exc.payment_id) if exc.payment_id else await cp.find_payment(
            attempt.merchant_order_no
        )
        if found is None:
            raise
        remote = found
    except UpstreamRejected as exc:
        async with rt.db.transaction() as conn:
            await q.update_payment(
                conn, attempt.id, status=rules.FAILED, failure_code=exc.code,
                failure_message=f"CeleryPay refused the payment: {exc.code}", updated_at=rt.now(),
            )
        raise Refused("the payment could not be created: " + exc.code,
                      code="currency_not_supported" if exc.code == "currency_not_supported" else "gateway_rejected",
                      ) from exc
    rt.metrics.inc("bcpay_payments_started_total", result="created")
    await apply_remote(rt, store, remote, source="create")
    async with rt.db.read() as conn:
        return await q.get_payment(conn, attempt.id)


# --- applying CeleryPay's word ---------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """What applying one piece of payment state did."""

    outcome: str  # applied | mismatch | duplicate_payment | stale | unknown | updated
    payment: PaymentRecord | None


async def lock_order(conn: Conn, rt: Runtime, store_id: int, order_id: int) -> None:
    """Serialise every change to one order's attempts (SQLite: BEGIN IMMEDIATE does)."""
    if not rt.db.is_sqlite:
        await conn.execute(
            select(payments.c.id)
            .where(payments.c.store_id == store_id, payments.c.order_id == order_id)
            .with_for_update()
        )


async def apply_remote(
    rt: Runtime, store: StoreRecord, remote: Payment, *, source: str, conn: Conn | None = None
) -> Applied:
    """Apply CeleryPay's view of a payment (own transaction unless ``conn`` is given)."""
    if conn is not None:
        return await _apply(conn, rt, store, remote, source)
    async with rt.db.transaction() as own:
        return await _apply(own, rt, store, remote, source)


async def _apply(
    conn: Conn, rt: Runtime, store: StoreRecord, remote: Payment, source: str
) -> Applied:
    found = await q.find_payment(conn, celerypay_id=remote.id) or await q.find_payment(
        conn, merchant_order_no=remote.merchant_order_no
    )
    if found is None or found.store_id != store.id:
        return Applied("unknown", None)
    if found.celerypay_id not in (None, remote.id):
        return Applied("unknown", found)
    # The order's attempts, locked on PostgreSQL (SQLite's BEGIN IMMEDIATE already
    # serialises writers): our attempt re-read under the lock, and its siblings
    # for the double-payment check, in one statement.
    siblings = await q.order_attempts(conn, store.id, found.order_id, lock=not rt.db.is_sqlite)
    attempt = next(a for a in siblings if a.id == found.id)
    now = rt.now()

    base: dict[str, Any] = {"last_checked_at": now, "updated_at": now}
    if attempt.celerypay_id is None:
        base.update(celerypay_id=remote.id, cashier_url=remote.cashier_url, expires_at=remote.expires_at)
    if not rules.is_forward(
        attempt.status, remote.status,
        current_refunded=attempt.refunded_amount, new_refunded=remote.refunded_amount,
    ):
        if remote.status == attempt.status == rules.PENDING or attempt.celerypay_id is None:
            attempt = await q.update_payment(conn, attempt.id, **base)
        return Applied("stale", attempt)

    outcome = "updated"
    if remote.status in rules.PAID and attempt.status not in rules.PAID:
        outcome = await _on_paid(conn, rt, store, attempt, remote, siblings)
    elif remote.status == rules.EXPIRED and rt.policy(store).on_expired == "cancel":
        await outbox.enqueue(
            conn, "cancel_order", {"payment_id": attempt.id, "order_id": attempt.order_id}, now=now, store_id=store.id,
            dedupe_key=f"cancel_order:{attempt.id}",
        )
    if outcome != "updated":
        base["outcome"] = outcome
    attempt = await q.update_payment(
        conn,
        attempt.id,
        status=remote.status,
        paid_amount=remote.paid_amount,
        refunded_amount=remote.refunded_amount,
        failure_code=remote.failure_code,
        failure_message=remote.failure_message,
        celerypay_updated_at=remote.updated_at,
        **base,
    )
    await q.audit(
        conn, store_id=store.id, order_id=attempt.order_id, payment_id=attempt.id, action=f"payment_{remote.status}",
        detail=f"{source}: {remote.id} is {remote.status}", now=now,
    )
    log.info(
        "payment %s of order %s/%s: %s -> %s (%s)", remote.id, store.store_hash, attempt.order_id,
        found.status, remote.status, outcome,
        extra={"fields": {"source": source.split(" ")[0], "outcome": outcome}},
    )
    return Applied(outcome, attempt)


async def _on_paid(
    conn: Conn, rt: Runtime, store: StoreRecord, attempt: PaymentRecord, remote: Payment,
    siblings: list[PaymentRecord],
) -> str:
    """Decide what a newly seen capture means and queue its effect (before the attempt row changes)."""
    now = rt.now()
    check = rules.check_capture(attempt, remote, store.store_hash)
    if not check.ok:
        await outbox.enqueue(
            conn, "mark_mismatch", {"payment_id": attempt.id, "order_id": attempt.order_id, "reason": check.reason},
            now=now, store_id=store.id, dedupe_key=f"mark_mismatch:{attempt.id}",
        )
        await q.record_anomaly(
            conn, store_id=store.id, order_id=attempt.order_id, payment_id=attempt.id, kind="amount_mismatch",
            amount=remote.paid_amount or 0, currency=remote.currency, detail=check.reason, now=now,
        )
        return "mismatch"
    others = [a for a in siblings if a.id != attempt.id and a.status in rules.PAID and a.outcome == "applied"]
    if others:
        await record_duplicate(
            conn, rt, store, attempt, f"order already paid by {others[0].celerypay_id}",
            amount=(remote.paid_amount or 0) - remote.refunded_amount,
        )
        return "duplicate_payment"
    await outbox.enqueue(
        conn, "mark_paid", {"payment_id": attempt.id, "order_id": attempt.order_id}, now=now, store_id=store.id,
        dedupe_key=f"mark_paid:{attempt.id}",
    )
    return "applied"


async def record_duplicate(
    conn: Conn, rt: Runtime, store: StoreRecord, attempt: PaymentRecord, detail: str,
    kind: str = "double_payment", amount: int | None = None,
) -> None:
    """Record money taken for an order that must not keep it; refund if configured."""
    now = rt.now()
    if amount is None:
        amount = (attempt.paid_amount or 0) - attempt.refunded_amount
    created = await q.record_anomaly(
        conn, store_id=store.id, order_id=attempt.order_id, payment_id=attempt.id, kind=kind,
        amount=amount, currency=attempt.currency, detail=detail, now=now,
    )
    if created and rt.policy(store).refund_duplicates == "auto" and amount > 0:
        await outbox.enqueue(
            conn, "refund", {"payment_id": attempt.id, "order_id": attempt.order_id, "amount": amount, "reason": kind},
            now=now, store_id=store.id, dedupe_key=f"auto_refund:{attempt.id}",
        )


# --- status, polling, cancelling -----------------------------------------------


async def refresh(rt: Runtime, store: StoreRecord, attempt: PaymentRecord, *, force: bool = False) -> PaymentRecord:
    """Ask CeleryPay about an open attempt (throttled per payment across processes)."""
    if attempt.status not in rules.OPEN:
        return attempt
    now = rt.now()
    # Due after the interval times 1 to 1 + LOOKUP_SPREAD, drawn on each poll. With a fixed interval,
    # payments first looked up together (opened in one burst, or all due once CeleryPay is back from an
    # outage) stay in step: under steadily polling shoppers every look-up of hundreds of payments fell in
    # one poll round in five, which queued the polls of that round behind one another.
    spread = 1 + LOOKUP_SPREAD * rt.rng.random()
    threshold = now - timedelta(seconds=rt.settings.payments.status_poll_interval * spread)
    if not force:
        if attempt.last_checked_at is not None and attempt.last_checked_at >= threshold:
            return attempt  # checked recently: the claim below would fail, so skip its write transaction
        async with rt.db.transaction(durable=False) as conn:  # lost in a crash, it only means an early look-up
            if not await q.claim_check(conn, attempt.id, now=now, checked_before=threshold):
                return attempt
    cp = rt.celerypay(store)
    remote: Payment | None
    if attempt.celerypay_id:
        remote = await cp.get_payment(attempt.celerypay_id)
    else:
        remote = await cp.find_payment(attempt.merchant_order_no)
    if remote is None:
        await give_up_creation(rt, attempt)
        async with rt.db.read() as conn:
            return await q.get_payment(conn, attempt.id)
    if not force and remote.id == attempt.celerypay_id and remote.status == attempt.status == rules.PENDING:
        # Still pending: the claim above already recorded the check, apply_remote would change
        # nothing more. Most polls end here, so they skip a write transaction.
        return replace(attempt, last_checked_at=now)
    result = await apply_remote(rt, store, remote, source="poll")
    assert result.payment is not None
    return result.payment


def never_created(attempt: PaymentRecord) -> bool:
    """An attempt with no CeleryPay payment id that is still ``creating`` or was given up as never created.

    Only CeleryPay's answer to a lookup by merchant order number says whether
    it really has no payment (contract, ``GET /v1/payments?merchant_order_no=``).
    """
    return attempt.celerypay_id is None and (
        attempt.status == rules.CREATING or (attempt.status == rules.FAILED and attempt.failure_code == NOT_CREATED)
    )


async def give_up_creation(rt: Runtime, attempt: PaymentRecord) -> bool:
    """Mark a ``creating`` attempt CeleryPay has no payment for as failed (``not_created``), freeing the order's slot.

    Call it only after a lookup by merchant order number found nothing, with
    the attempt as read before that lookup. An attempt touched within
    :data:`CREATION_GRACE` is left alone: its creation may still be on the way
    (a creation starting on an old row stamps it first). True when the
    attempt was given up.
    """
    now = rt.now()
    if attempt.status != rules.CREATING or attempt.updated_at >= now - CREATION_GRACE:
        return False
    async with rt.db.transaction() as conn:
        # Only if the row is as read: a creation that finished, or started, since must not be undone.
        return await q.give_up_creating(conn, attempt.id, seen=attempt.updated_at, now=now,
                                        failure_code=NOT_CREATED, failure_message="the payment was never created")


async def _refresh_quietly(rt: Runtime, store: StoreRecord, attempt: PaymentRecord) -> PaymentRecord:
    """:func:`refresh`, but if CeleryPay cannot answer now (down, rate limit, or refusing us: a rotated
    secret) the attempt as we know it; the next look asks again."""
    if attempt.status not in rules.OPEN or not store.has_credentials:
        return attempt
    try:
        return await refresh(rt, store, attempt)
    except (UpstreamUnavailable, RateLimited):
        return attempt
    except UpstreamError as exc:
        log.warning("status check of %s: CeleryPay refused the lookup (%s)", attempt.merchant_order_no, exc.code)
        return attempt


async def payment_status(rt: Runtime, token: str) -> PaymentView:
    """The real status of an attempt for the snippet's polling."""
    if not is_token(token):
        raise NotFoundError("no such payment", code="payment_not_found")
    async with rt.db.read() as conn:
        attempt = await q.get_payment_by_token(conn, token)
        if attempt is None:
            raise NotFoundError("no such payment", code="payment_not_found")
        store = await q.get_store_by_id(conn, attempt.store_id)
    return view(rt, store, await _refresh_quietly(rt, store, attempt))


async def paid_attempt_of(rt: Runtime, token: str) -> PaymentView | None:
    """The paid attempt of the order an attempt belongs to, if another one was paid."""
    async with rt.db.read() as conn:
        attempt = await q.get_payment_by_token(conn, token) if is_token(token) else None
        if attempt is None:
            return None
        store = await q.get_store_by_id(conn, attempt.store_id)
        attempts = await q.order_attempts(conn, attempt.store_id, attempt.order_id)
    paid = [a for a in attempts if a.status in rules.PAID and a.token != token]
    return view(rt, store, paid[0]) if paid and store is not None else None


async def cancel_attempt(rt: Runtime, store: StoreRecord, attempt: PaymentRecord, *, reason: str) -> PaymentRecord:
    """Cancel an open attempt at CeleryPay and apply the answer."""
    cp = rt.celerypay(store)
    if attempt.celerypay_id is None:
        refreshed = await refresh(rt, store, attempt, force=True)
        if refreshed.celerypay_id is None:
            return refreshed
        attempt = refreshed
    assert attempt.celerypay_id is not None
    try:
        remote = await cp.cancel_payment(attempt.celerypay_id, idempotency_key=f"cancel-{attempt.idempotency_key[7:]}")
    except UpstreamConflict:
        remote = await cp.get_payment(attempt.celerypay_id)  # no longer pending: take its real state
    result = await apply_remote(rt, store, remote, source=f"cancel ({reason})")
    assert result.payment is not None
    return result.payment


async def pay_link(rt: Runtime, store_hash: str, order_id: int) -> str:
    """The ``/pay/{token}`` URL for an order (ops send it to a shopper who closed the tab).

    Only for an order that can still be paid (read from BigCommerce now: a
    cancelled or paid order gets no link). Reuses the order's latest attempt;
    for an order that never reached the cashier it opens an attempt row
    (``creating``) without calling CeleryPay: the shopper's "Pay now" does
    that, after the same checks as the snippet.
    """
    store = await _load_store(rt, store_hash)
    await _raise_if_paid(rt, store, order_id)
    order = await _read_order(rt, store, order_id, fresh=True)
    policy = await channel_policy(rt, store, order)
    refusal = rules.check_order_eligible(
        order, accepted_methods=policy.accepted_methods, max_age=timedelta(days=3650), now=rt.now()
    )
    if refusal is not None:
        if order.status_id == rules.STATUS_CANCELLED and await cancelled_unpaid(rt, store, order_id):
            raise Refused(
                f"order {order_id} was cancelled because it was not paid within the store's hold: no pay link; "
                f"the shopper can place a new order at {store.store_url or store.store_hash}",
                code="cancelled_unpaid",
            )
        raise Refused(refusal.message, code=refusal.code)
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order_id)
    if attempts:
        return rt.public_url(f"/pay/{attempts[-1].token}")
    amount = to_minor(order.total_inc_tax, order.currency)
    attempt = await _open_attempt(rt, store, order, amount, policy.expires_in)
    return rt.public_url(f"/pay/{attempt.token}")


UNPAID_ACTION = "cancel_unpaid"  # the audit action (and job kind) of an order bcpay.unpaid cancelled


async def cancelled_unpaid(rt: Runtime, store: StoreRecord, order_id: int) -> bool:
    """Whether bcpay cancelled this order for non-payment (``bcpay.unpaid``'s audit row)."""
    async with rt.db.read() as conn:
        return await q.has_audit(conn, store.id, order_id, UNPAID_ACTION)


async def resume_by_token(rt: Runtime, token: str) -> PaymentView:
    """Start or resume payment for the order of an attempt (the pay page's button)."""
    async with rt.db.read() as conn:
        attempt = await q.get_payment_by_token(conn, token) if is_token(token) else None
        if attempt is None:
            raise NotFoundError("no such payment", code="payment_not_found")
        store = await q.get_store_by_id(conn, attempt.store_id)
    order = await _read_order(rt, store, attempt.order_id)
    return await start_payment(rt, store.store_hash, attempt.order_id, order.cart_id or "")


TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what secrets.token_urlsafe makes, with room


def is_token(value: str) -> bool:
    """True when ``value`` could be a payment token (checked before any database lookup)."""
    return TOKEN.fullmatch(value) is not None


def order_number(value: Any) -> int:
    """Validate an order id from outside (JSON or URL)."""
    if isinstance(value, bool):
        raise InvalidInputError("order_id must be a positive integer", code="invalid_order_id")
    # ASCII only: "²".isdigit() is true, and int() refuses it.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    if not isinstance(value, int) or not 0 < value < 10**12:
        raise InvalidInputError("order_id must be a positive integer", code="invalid_order_id")
    return value

