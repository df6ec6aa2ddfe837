"""Receiving CeleryPay notifications: verify, record once, queue the read-back; all in one commit.

The order of work follows the contract: the signature is checked on the raw
bytes before anything is parsed; the event id is the dedupe key (per store);
the event is stored and its read-back job queued in the same transaction,
and only after that commit does the server answer 2xx. A crash before the
commit makes CeleryPay deliver again; a crash after it loses nothing.

A notification is a hint, never the truth (contract, "Notifications": "when
in doubt, GET the payment"). Its ``data`` is not applied: whoever holds the
store's API secret (a leak, a rotated-out secret in its grace period) can sign
any event. The ``check_event`` job (:func:`check_event`, in the outbox with its
retries) reads the payment, and the refund of a refund event, from CeleryPay
and applies what CeleryPay answers through :func:`bcpay.payflow.apply_remote`.
So the answer to CeleryPay never waits for CeleryPay's own API (10 s
deadline), and an order moves only on CeleryPay's word.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update

from bcpay import outbox, payflow
from bcpay.clients.celerypay import Event, Refund, parse_event
from bcpay.errors import InvalidInputError, NotFoundError, SignatureError, UpstreamNotFound
from bcpay.runtime import Runtime
from bcpay.signatures import verify_notification
from bcpay.storage import queries as q
from bcpay.storage.db import Conn
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import REFUND_IN_DOUBT, refunds

log = logging.getLogger("bcpay.notifications")

MAX_BODY = 256 * 1024
LAST_SEEN_RESOLUTION = timedelta(seconds=60)  # "last notification received" on the settings page
CHECK_JOB = "check_event"


@dataclass(frozen=True)
class Received:
    """The result of one delivery: ``outcome`` is also the metrics label."""

    outcome: str  # queued (its read-back is in the outbox) | duplicate | unknown
    event_id: str


async def receive(
    rt: Runtime,
    store_hash: str,
    body: bytes,
    *,
    merchant: str | None,
    timestamp: str | None,
    signature: str | None,
) -> Received:
    """Verify, record and queue the read-back of one notification.

    Raises SignatureError, InvalidInputError or NotFoundError, having stored nothing.
    """
    if len(body) > MAX_BODY:
        raise InvalidInputError("notification body too large", code="body_too_large")
    async with rt.db.read() as conn:
        store = await q.get_store(conn, store_hash)
    if store is None:
        raise NotFoundError("unknown store", code="unknown_store")
    try:
        verify_notification(
            body,
            signature=signature,
            timestamp=timestamp,
            secrets=rt.notification_secrets(store),
            now=rt.wall(),
        )
        if merchant != store.merchant_id:
            raise SignatureError("CeleryPay-Merchant does not match this store's merchant id")
    except SignatureError as exc:
        # The 401 goes to the sender; this line is the operator's only trace of why (a secret rotated at
        # CeleryPay but not here, a clock off). The reasons are fixed texts: no secret, header or body in them.
        log.warning("CeleryPay notification for store %s refused: %s", store_hash, exc.message,
                    extra={"fields": {"store_hash": store_hash, "reason": exc.message}})
        raise
    event = parse_event(body)
    async with rt.db.transaction() as conn:
        fresh = await q.record_event(
            conn,
            event_id=event.id,
            store_id=store.id,
            type_=event.type,
            celerypay_payment_id=event.payment.id,
            raw_body=body.decode("utf-8"),
            outcome="received",
            now=rt.now(),
        )
        if not fresh:
            rt.metrics.inc("bcpay_notifications_total", outcome="duplicate")
            return Received("duplicate", event.id)
        outcome = await queue_check(rt, conn, store, event)
        await q.set_event_outcome(conn, event.id, outcome, store_id=store.id)
        seen = store.last_notification_at
        if seen is None or rt.now() - seen > LAST_SEEN_RESOLUTION:  # a hot row: write it rarely
            await q.update_store(conn, store.id, rt.now(), last_notification_at=rt.now())
    rt.metrics.inc("bcpay_notifications_total", outcome=outcome)
    return Received(outcome, event.id)


async def queue_check(rt: Runtime, conn: Conn, store: StoreRecord, event: Event) -> str:
    """Queue the read-back of a verified event inside the caller's transaction.

    ``unknown`` (nothing queued) when no attempt of this store has the
    event's payment id or merchant order number: such an event can change
    nothing. The job is about the attempt's order, so it never runs beside
    another job of that order (``outbox.subject_of``).
    """
    remote = event.payment
    attempt = await q.find_payment(conn, celerypay_id=remote.id) or await q.find_payment(
        conn, merchant_order_no=remote.merchant_order_no
    )
    if attempt is None or attempt.store_id != store.id or attempt.celerypay_id not in (None, remote.id):
        return "unknown"
    payload: dict[str, Any] = {"payment_id": attempt.id, "order_id": attempt.order_id, "event_id": event.id,
                               "celerypay_id": remote.id}
    if event.refund is not None:
        payload["refund_id"] = event.refund.id
    await outbox.enqueue(conn, CHECK_JOB, payload, now=rt.now(), store_id=store.id)
    return "queued"


async def check_event(
    rt: Runtime, store: StoreRecord, *, event_id: str, celerypay_id: str, refund_id: str | None = None
) -> str:
    """Read the event's payment (and refund) from CeleryPay and apply that answer; returns the outcome.

    Also what ``bcpay events replay`` runs. A payment CeleryPay does not
    know (404) was never CeleryPay's: ``unknown``, nothing changes. CeleryPay
    down or rate limiting raises, and the job retries with backoff.
    """
    cp = rt.celerypay(store)
    try:
        remote = await cp.get_payment(celerypay_id)
    except UpstreamNotFound:
        log.warning("event %s of store %s names payment %s, which CeleryPay does not know: ignored",
                    event_id, store.store_hash, celerypay_id)
        outcome = "unknown"
        async with rt.db.transaction() as conn:
            await q.set_event_outcome(conn, event_id, outcome, store_id=store.id)
        return outcome
    refund: Refund | None = None
    if refund_id is not None:
        try:
            refund = await cp.get_refund(celerypay_id, refund_id)
        except UpstreamNotFound:
            log.warning("event %s of store %s names refund %s, which CeleryPay does not know: payment only",
                        event_id, store.store_hash, refund_id)
    async with rt.db.transaction() as conn:
        result = await payflow.apply_remote(rt, store, remote, source=f"event {event_id}", conn=conn)
        if refund is not None and result.payment is not None and refund.payment_id == remote.id:
            await record_refund_event_for(rt, conn, result.payment, refund)
        await q.set_event_outcome(conn, event_id, result.outcome, store_id=store.id)
    return result.outcome


async def record_refund_event_for(rt: Runtime, conn: Conn, payment: PaymentRecord, refund: Refund) -> None:
    """Keep the refund's state and queue the order update for a succeeded refund.

    The row is the one with CeleryPay's refund id, else the one with the same
    number on this payment: ``merchant_refund_no`` is unique per merchant only
    (contract, "POST /v1/payments/{id}/refunds") and each store has its own
    merchant, so another store's "R1" is a different refund. Both lookups stay
    within the payment the event was verified for; a refund has one payment.
    A refund held in doubt (``refunds._send_late``) is settled the same way, and
    its anomaly resolved once no refund of the payment is in doubt.
    """
    now = rt.now()
    candidates = (
        await conn.execute(
            select(refunds).where(
                refunds.c.payment_id == payment.id,
                (refunds.c.celerypay_id == refund.id) | (refunds.c.merchant_refund_no == refund.merchant_refund_no),
            )
        )
    ).mappings().all()
    row = next((r for r in candidates if r["celerypay_id"] == refund.id), candidates[0] if candidates else None)
    if row is None:
        await conn.execute(
            insert(refunds).values(
                payment_id=payment.id, merchant_refund_no=refund.merchant_refund_no,
                idempotency_key="external", celerypay_id=refund.id, amount=refund.amount,
                currency=refund.currency, status=refund.status, created_at=now, updated_at=now,
            )
        )
    elif row["status"] == "failed" and refund.status == "succeeded":
        # CeleryPay never turns a failed refund into a succeeded one: "failed" was bcpay's own inference
        # (a refusal read as final, or an operator's `refund-resolve --not-made`), and the money went back.
        # Kept as what happened, and shown: the amount it freed may have been refunded a second time.
        await conn.execute(update(refunds).where(refunds.c.id == row["id"], refunds.c.status == "failed")
                           .values(status="succeeded", celerypay_id=refund.id, updated_at=now))
        await q.record_anomaly(
            conn, store_id=payment.store_id, order_id=payment.order_id, payment_id=payment.id,
            kind="refund_failed_then_made", amount=refund.amount, currency=refund.currency, now=now,
            detail=f"refund {refund.merchant_refund_no} ({refund.id}) was recorded failed, but CeleryPay made it; "
                   "check that its amount was not refunded again",
        )
    elif row["status"] not in ("succeeded", "failed"):
        # Conditional: a final state written meanwhile (the notification racing the 201's
        # "pending") is never put back; PostgreSQL re-checks this after waiting for the row.
        await conn.execute(
            update(refunds).where(refunds.c.id == row["id"], refunds.c.status.notin_(("succeeded", "failed")))
            .values(status=refund.status, celerypay_id=refund.id, updated_at=now)
        )
        if refund.status == "failed" and str(row["idempotency_key"]).startswith("bc-refund-"):
            # Made for a refund in BigCommerce's ledger (bcpay.refund_ledger): the ledger says refunded, the
            # money did not go back. A job says so on the order (an anomaly and a staff note).
            await outbox.enqueue(conn, "bc_refund_failed", {"payment_id": payment.id, "order_id": payment.order_id,
                                                             "refund_row_id": row["id"]},
                                 now=now, store_id=payment.store_id, dedupe_key=f"bc_refund_failed:{row['id']}")
        if row["status"] == REFUND_IN_DOUBT:  # CeleryPay has answered what a person was asked to find out
            await q.clear_refund_doubt(conn, payment.id, now, f"CeleryPay: refund {refund.merchant_refund_no} "
                                                              f"is {refund.status} ({refund.id})")
    if refund.status == "succeeded":
        await outbox.enqueue(
            conn, "refund_status", {"payment_id": payment.id, "order_id": payment.order_id, "refund_id": refund.id},
            now=now, store_id=payment.store_id, dedupe_key=f"refund_status:{refund.id}",
        )
