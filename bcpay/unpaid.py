"""Unpaid orders: cancel what the shopper never paid once the store's hold has passed.

An order for the method that is still Awaiting Payment (7), paid by no
attempt, ``unpaid_hold`` minutes after it was placed is cancelled (5) with a
staff note, so its stock can come back and the order list stays clean
(WooCommerce's "Hold stock"; reference section 13). Orders whose snippet never
ran have no attempt in bcpay, so the worker's sweep lists the store's
Awaiting Payment orders from BigCommerce (:func:`queue_due`, at the store's
quota) and queues one ``cancel_unpaid`` job per order.

The job (:func:`cancel_unpaid`) names the order as its subject, so it never
runs beside another job of that order (``mark_paid`` above all), in one
process or several: that is the order's lock here, held without keeping a
database transaction open across the calls below. Under it, the job:

1. re-reads the order from BigCommerce (still 7, the method, past the hold);
2. asks CeleryPay about every attempt whose state bcpay has not heard from
   it (an attempt paid there but not yet notified is applied, never
   cancelled); an attempt still pending is cancelled at CeleryPay first;
3. cancels the order only when no attempt is paid or open, and records an
   audit row (``cancel_unpaid``), which ``bcpay reconcile``, the settings page
   and the ``bcpay_unpaid_cancelled_total`` counter report.

A payment that lands after all (a cashier opened in the last moment) takes
the late-payment path: an anomaly, as for any order cancelled before it was paid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from bcpay import channels, order_reads, outbox, payflow, rules
from bcpay.clients.bigcommerce import Order
from bcpay.effects import append_note
from bcpay.errors import BcpayError, UpstreamNotFound
from bcpay.runtime import Runtime, StorePolicy
from bcpay.storage import queries as q
from bcpay.storage.records import JobRecord, PaymentRecord, StoreRecord
from bcpay.storage.schema import audit_log

log = logging.getLogger("bcpay.unpaid")

KIND = payflow.UNPAID_ACTION  # the job, and the audit action of an order cancelled this way
# Orders placed longer ago than this are not looked at: a hold switched on must not sweep away a store's
# years of orders left in Awaiting Payment by other means (bank transfers, manual orders).
LOOKBACK = timedelta(days=30)
PAGE = 250  # BigCommerce's largest v2 page


def hold_of(policy: StorePolicy) -> timedelta | None:
    """The store's hold, or None when unpaid orders are kept (``unpaid_hold = 0``)."""
    return timedelta(minutes=policy.unpaid_hold) if policy.unpaid_hold > 0 else None


def is_due(order: Order, policy: StorePolicy, now: datetime) -> bool:
    """Whether an order is one the hold cancels: Awaiting Payment, the method, placed more than the hold ago."""
    hold = hold_of(policy)
    return (
        hold is not None
        and order.status_id == rules.STATUS_AWAITING_PAYMENT
        and order.payment_method in policy.accepted_methods
        and order.date_created <= now - hold
    )


async def queue_due(rt: Runtime) -> int:
    """Queue a ``cancel_unpaid`` job for every order past its store's hold (the worker's sweep); how many."""
    async with rt.db.read() as conn:
        every = await q.list_stores(conn, installed_only=True)
    queued = 0
    for store in every:
        if not store.has_credentials or not store.access_token_enc or hold_of(rt.policy(store)) is None:
            continue
        try:
            queued += await _queue_store(rt, store)
        except BcpayError as exc:
            log.warning("unpaid orders of %s not listed: %r", store.store_hash, exc)
    return queued


async def _queue_store(rt: Runtime, store: StoreRecord) -> int:
    policy = rt.policy(store)
    hold = hold_of(policy)
    assert hold is not None
    known = await channels.known(rt, store)
    now = rt.now()
    queued = 0
    # Listed oldest first at the store's quota (the client's limiter); the job re-reads each order.
    async for order in rt.bigcommerce(store).iter_orders(
        status_id=rules.STATUS_AWAITING_PAYMENT, min_date_created=now - hold - LOOKBACK,
        max_date_created=now - hold, page_size=PAGE,
    ):
        if not is_due(order, channels.policy(rt, store, channels.find(known, order.channel_id)), now):
            continue
        async with rt.db.transaction() as conn:
            # One queued at a time per order (the key is let go when the job is done: an order it left alone,
            # because a payment was still being created, is looked at again by a later sweep).
            queued += await outbox.enqueue(conn, KIND, {"order_id": order.id}, now=now, store_id=store.id,
                                           dedupe_key=f"{KIND}:{store.id}:{order.id}")
    return queued


async def cancel_unpaid(rt: Runtime, job: JobRecord) -> str:
    """Cancel one order past its hold, if it is still unpaid after asking CeleryPay (see the module docstring)."""
    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, int(job.store_id or 0))
    if not store.installed or not store.has_credentials or not store.access_token_enc:
        return "skipped"
    order_id = int(job.payload["order_id"])
    bc = rt.bigcommerce(store)
    try:
        order = await bc.get_order(order_id)
    except UpstreamNotFound:
        return "skipped"  # deleted meanwhile
    policy = await payflow.channel_policy(rt, store, order)
    if not is_due(order, policy, rt.now()):
        return "skipped"  # paid, cancelled or changed meanwhile, or the hold was lengthened
    found = await _settle(rt, store, order_id)
    if found != UNPAID:
        return "skipped" if found == PAID else "waiting"  # paid: its mark_paid runs next; open: a later sweep
    order = await bc.get_order(order_id)  # after CeleryPay's answers: the notes and status as they are now
    if not is_due(order, policy, rt.now()):
        return "skipped"
    minutes = policy.unpaid_hold
    note = f"OKCloud Pay: not paid within {minutes} minute{'s' if minutes != 1 else ''}; order cancelled"
    await bc.update_order(order.id, status_id=rules.STATUS_CANCELLED, staff_notes=append_note(order.staff_notes, note))
    async with rt.db.transaction() as conn:
        await order_reads.forget(conn, store.id, order.id)
        await q.audit(conn, store_id=store.id, order_id=order.id, action=KIND, from_status_id=order.status_id,
                      to_status_id=rules.STATUS_CANCELLED, detail=note, now=rt.now())
    rt.metrics.inc("bcpay_unpaid_cancelled_total")
    log.info("order %s/%s cancelled unpaid after %d minutes", store.store_hash, order.id, minutes)
    return "apply"


PAID, OPEN, UNPAID = "paid", "open", "unpaid"  # what _settle found


async def _settle(rt: Runtime, store: StoreRecord, order_id: int) -> str:
    """Close the order's attempts by CeleryPay's word where bcpay lacks it: :data:`UNPAID` when every one is
    unpaid and closed, :data:`PAID` when one is paid, :data:`OPEN` when one is still being created.

    A capture CeleryPay reports is applied (``mark_paid`` follows, after this job); a pending payment is
    cancelled there.
    """
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order_id)
    if any(a.status in rules.PAID for a in attempts):
        return PAID
    for attempt in attempts:
        if not _ask_celerypay(attempt):
            continue
        seen = await _ask(rt, store, attempt)
        if seen.status in rules.PAID:
            return PAID
        if seen.status == rules.PENDING:
            closed = await payflow.cancel_attempt(rt, store, seen, reason="not paid within the store's hold")
            if closed.status in rules.PAID:
                return PAID  # paid in the last moment: CeleryPay refused the cancel, its capture is applied
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order_id)
    if any(a.status in rules.PAID for a in attempts):
        return PAID
    return OPEN if any(a.status in rules.OPEN for a in attempts) else UNPAID


def _ask_celerypay(attempt: PaymentRecord) -> bool:
    """Open attempts, and unpaid ones bcpay marked without CeleryPay's word (a creation thought lost)."""
    return attempt.status in rules.OPEN or (attempt.status in rules.UNPAID_FINAL and attempt.celerypay_id is None)


async def _ask(rt: Runtime, store: StoreRecord, attempt: PaymentRecord) -> PaymentRecord:
    """The attempt after CeleryPay's answer about it is applied."""
    if attempt.status in rules.OPEN:
        return await payflow.refresh(rt, store, attempt, force=True)
    remote = await rt.celerypay(store).find_payment(attempt.merchant_order_no)
    if remote is None:
        return attempt
    result = await payflow.apply_remote(rt, store, remote, source="unpaid hold")
    return result.payment or attempt


@dataclass(frozen=True)
class Cancelled:
    """One order the hold cancelled, as the settings page lists it."""

    order_id: int
    at: datetime
    detail: str


async def recent(rt: Runtime, store: StoreRecord, *, limit: int = 10) -> list[Cancelled]:
    """The store's last orders cancelled for non-payment, newest first."""
    query = (
        select(audit_log.c.order_id, audit_log.c.created_at, audit_log.c.detail)
        .where(audit_log.c.store_id == store.id, audit_log.c.action == KIND)
        .order_by(audit_log.c.id.desc())
        .limit(limit)
    )
    async with rt.db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [Cancelled(int(r[0]), r[1], str(r[2])) for r in rows]


async def count_since(rt: Runtime, store: StoreRecord, since: datetime) -> int:
    """How many of the store's orders the hold cancelled since ``since`` (``bcpay reconcile``)."""
    query = select(func.count()).select_from(audit_log).where(
        audit_log.c.store_id == store.id, audit_log.c.action == KIND, audit_log.c.created_at >= since
    )
    async with rt.db.read() as conn:
        return int((await conn.execute(query)).scalar_one())

