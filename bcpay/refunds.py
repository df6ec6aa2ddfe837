"""Refunds through CeleryPay: never more than paid minus refunded (and pending).

The amount check and the refund row are written under the order's lock before
CeleryPay is called, so two operators refunding at once cannot over-refund.
The order's status follows the refund through the same outbox path as payments.

A request whose answer was lost stays ``requested`` (its amount held) and is
sent again, identical. CeleryPay replays the first answer only "within 24
hours" (contract, "Idempotency"); past that a refusal no longer says the
refund was not made, since the first request may have made it (the number is
then used, or the amount more than is left), and the contract does not say
what a reused ``merchant_refund_no`` answers. So a request older than
:data:`REPLAY_WINDOW` is sent by :func:`_send_late`, which never fails it: one
it cannot settle is put ``in_doubt`` (amount still held, never sent again by
itself, a ``refund_in_doubt`` anomaly) until CeleryPay's answer for it
arrives or a person settles it with :func:`resolve_doubt`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select, update

from bcpay import outbox, payflow, rules
from bcpay.clients.celerypay import Refund
from bcpay.errors import BcpayError, ConflictError, InvalidInputError, NotFoundError, UpstreamRejected
from bcpay.money import format_amount
from bcpay.notifications import record_refund_event_for
from bcpay.runtime import Runtime
from bcpay.storage import queries as q
from bcpay.storage.db import Conn
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import REFUND_IN_DOUBT, REFUND_IN_DOUBT_ANOMALY, payments, refunds

STALE_REQUEST = timedelta(minutes=2)  # longer than one CeleryPay call with its retries
OPEN_REFUND_CHECK = timedelta(minutes=10)  # a refund still open this long is asked about (sweep)
# CeleryPay replays a POST repeated with the same key and body "within 24 hours" (contract, "Idempotency").
# Counted from the row's created_at, never later than its first send, less an hour for the two clocks
# (CeleryPay refuses a request 300 s off its own) and the calls' own time.
REPLAY_WINDOW = timedelta(hours=23)
AUTO_REFUND_KEY = "job-"  # the key prefix of refunds the worker makes (effects.refund: "job-<job id>")
IN_FLIGHT = ("requested", "pending", REFUND_IN_DOUBT)  # statuses whose amount may still leave the payment
log = logging.getLogger("bcpay.refunds")


@dataclass(frozen=True)
class RefundResult:
    """A refund as bcpay recorded it."""

    merchant_refund_no: str
    celerypay_id: str | None
    amount: int
    currency: str
    status: str


def ledger_id(row: dict[str, Any]) -> int | str | None:
    """BigCommerce's refund id of a refund row as operators see it: the id, "refused" (BigCommerce would not
    record it) or None (not in BigCommerce's refund ledger)."""
    value = row.get("bc_refund_id")
    if value is None:
        return None
    return int(value) if value else "refused"


def describe(row: dict[str, Any]) -> str:
    """One line of a refund with both ids: bcpay's number, CeleryPay's refund, BigCommerce's refund."""
    bc_id = ledger_id(row)
    if bc_id is None:
        bc_text = "not in BigCommerce's refund ledger"
    elif bc_id == "refused":
        bc_text = "BigCommerce refused to record it"
    else:
        bc_text = f"BigCommerce refund {bc_id}"
    return (f"{row['merchant_refund_no']}: {format_amount(int(row['amount']), str(row['currency']))} "
            f"{row['status']}, CeleryPay refund {row['celerypay_id'] or '-'}, {bc_text}")


async def refundable(conn: Conn, payment: PaymentRecord) -> int:
    """Paid minus refunded minus refunds still in flight, in minor units."""
    in_flight: int = (
        await conn.execute(
            select(func.coalesce(func.sum(refunds.c.amount), 0)).where(
                refunds.c.payment_id == payment.id, refunds.c.status.in_(IN_FLIGHT)
            )
        )
    ).scalar_one()
    return (payment.paid_amount or 0) - payment.refunded_amount - int(in_flight)


async def paid_attempt(rt: Runtime, store: StoreRecord, order_id: int) -> PaymentRecord:
    """The attempt that paid an order (the one applied to it), for refunds by order id."""
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order_id)
    paid = [a for a in attempts if a.status in rules.PAID]
    applied = [a for a in paid if a.outcome == "applied"] or paid
    if not applied:
        raise NotFoundError(f"order {order_id} has no OKCloud Pay payment to refund", code="nothing_to_refund")
    return applied[-1]


async def request_refund(
    rt: Runtime,
    store: StoreRecord,
    payment: PaymentRecord,
    *,
    amount: int | None = None,
    reason: str = "",
    key: str | None = None,
    again: bool = True,
    bc_refund_id: int | None = None,
) -> RefundResult:
    """Refund ``amount`` (default: everything left) of a paid attempt.

    ``key`` makes the request repeatable: the same key again (a retried job, a
    form sent twice) finds the refund it started. One still ``requested`` (its
    CeleryPay call failed without an answer) is sent again with the same
    Idempotency-Key and body, so CeleryPay either does it once or replays it;
    one with an answer is returned as it is. Without a key, requests left
    ``requested`` for a while are settled the same way before the amount left
    is computed, so a failed call never holds money back for good (short of a
    request past CeleryPay's replay window that cannot be settled: held in
    doubt until CeleryPay's answer or a person settles it, see :func:`_send_late`).

    ``again=False`` (the CLI without ``--again``) refuses a refund of the same
    amount as one asked for this payment in the last :data:`REPEAT_WINDOW`: an
    operator running the command again after a dropped session would
    otherwise refund twice.

    ``bc_refund_id``: the BigCommerce refund this one is made for (kept on the row; bcpay.refund_ledger).
    """
    if payment.status not in rules.PAID or not payment.celerypay_id:
        raise ConflictError("this payment was not captured; nothing to refund", code="not_refundable")
    await _send_stale(rt, store, payment)
    async with rt.db.transaction() as conn:
        await payflow.lock_order(conn, rt, store.id, payment.order_id)
        payment = await q.get_payment(conn, payment.id)
        row = await _by_key(conn, payment.id, key[:64]) if key else None
        if row is None:
            if not again:
                await _refuse_repeat(conn, rt, payment, amount)
            row = await _open(conn, rt, payment, amount, reason, key, bc_refund_id)
        elif amount is not None and amount != row["amount"]:
            raise InvalidInputError("this refund key was used for another amount", code="refund_key_reused")
    if row["status"] == "failed":
        raise ConflictError("CeleryPay refused this refund", code="refund_rejected")
    if row["status"] == REFUND_IN_DOUBT:
        raise _in_doubt(row)
    if row["status"] != "requested":
        return RefundResult(row["merchant_refund_no"], row["celerypay_id"], row["amount"], row["currency"],
                            row["status"])
    return await _send(rt, store, payment, row)


REPEAT_WINDOW = timedelta(minutes=15)


async def _refuse_repeat(conn: Conn, rt: Runtime, payment: PaymentRecord, amount: int | None) -> None:
    """A refund of this amount (the rest: any amount) asked for this payment within the window: refuse."""
    since = rt.now() - REPEAT_WINDOW
    query = select(refunds.c.amount, refunds.c.created_at).where(
        refunds.c.payment_id == payment.id, refunds.c.status != "failed", refunds.c.created_at >= since)
    for row in (await conn.execute(query)).mappings():
        if amount is None or row["amount"] == amount:
            minutes = max(1, int((rt.now() - row["created_at"]).total_seconds() // 60))
            raise ConflictError(
                f"a refund of {format_amount(row['amount'], payment.currency)} was asked for this payment "
                f"{minutes} min ago; to refund once more, run again with --again", code="refund_repeated")


async def _open(
    conn: Conn, rt: Runtime, payment: PaymentRecord, amount: int | None, reason: str, key: str | None,
    bc_refund_id: int | None = None,
) -> dict[str, Any]:
    """Check the amount and write the ``requested`` row, under the order's lock."""
    if amount is not None and amount <= 0:
        raise InvalidInputError("a refund amount must be greater than 0", code="invalid_amount")
    left = await refundable(conn, payment)
    amount = left if amount is None else amount
    if left <= 0:
        raise InvalidInputError("nothing is left to refund on this payment", code="over_refund")
    if amount <= 0 or amount > left:
        raise InvalidInputError(
            f"a refund of {format_amount(amount, payment.currency)} is more than what is left to refund "
            f"({format_amount(left, payment.currency)})", code="over_refund"
        )
    n = int((await conn.execute(
        select(func.count()).select_from(refunds).where(refunds.c.payment_id == payment.id)
    )).scalar_one()) + 1
    now = rt.now()
    values = {
        "payment_id": payment.id, "merchant_refund_no": f"{payment.merchant_order_no}-r{n}",
        "idempotency_key": (key or "refund-" + secrets.token_urlsafe(24))[:64], "celerypay_id": None,
        "amount": amount, "currency": payment.currency, "status": "requested", "reason": reason[:500],
        "created_at": now, "updated_at": now, "bc_refund_id": bc_refund_id,
    }
    values["id"] = (await conn.execute(insert(refunds).values(**values).returning(refunds.c.id))).scalar_one()
    return values


async def _by_key(conn: Conn, payment_id: int, key: str) -> dict[str, Any] | None:
    query = select(refunds).where(refunds.c.payment_id == payment_id, refunds.c.idempotency_key == key)
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def _send(rt: Runtime, store: StoreRecord, payment: PaymentRecord, row: dict[str, Any]) -> RefundResult:
    """Ask CeleryPay for the refund a ``requested`` row describes (the same request every time).

    Within :data:`REPLAY_WINDOW` a refusal is CeleryPay's answer to this very
    request (first or replayed): the row is failed and its amount free. Not a
    401: that refuses bcpay's signature (contract, "Request signing"), says
    nothing of the refund, and leaves the row ``requested``. Later,
    :func:`_send_late`.
    """
    assert payment.celerypay_id is not None
    if rt.now() - row["created_at"] >= REPLAY_WINDOW:
        return await _send_late(rt, store, payment, row)
    try:
        refund = await _post(rt, store, payment, row)
    except UpstreamRejected as exc:
        if exc.status == 401:
            raise  # refused bcpay's signature (a rotated secret, a clock off), not this refund: still requested
        async with rt.db.transaction() as conn:
            await conn.execute(
                update(refunds).where(refunds.c.id == row["id"]).values(status="failed", updated_at=rt.now())
            )
        raise ConflictError(f"CeleryPay refused the refund: {exc.code}", code="refund_rejected") from exc
    await settle(rt, store, payment, refund)
    return RefundResult(row["merchant_refund_no"], refund.id, row["amount"], row["currency"], refund.status)


async def _post(rt: Runtime, store: StoreRecord, payment: PaymentRecord, row: dict[str, Any]) -> Refund:
    return await rt.celerypay(store).create_refund(
        payment.celerypay_id or "", amount=row["amount"], merchant_refund_no=row["merchant_refund_no"],
        idempotency_key=row["idempotency_key"], reason=row["reason"] or None,
    )


async def _send_late(rt: Runtime, store: StoreRecord, payment: PaymentRecord, row: dict[str, Any]) -> RefundResult:
    """Send a request again when CeleryPay may no longer replay its first answer; refused, it is in doubt.

    First the payment (``GET /v1/payments/{id}``): ``refunded_amount`` that
    bcpay's succeeded refunds do not account for may be this refund (or one
    made elsewhere meanwhile, which a resend taken as new would double), so it
    is not sent: in doubt. Otherwise it is sent again with the same key and
    body. A 201 is the one refund with this number, whether replayed or made
    now (``merchant_refund_no`` is unique per merchant: no second one can
    exist); any refusal may mean "already made", so: in doubt, never failed.
    A transport error leaves it ``requested``, to be tried again.
    """
    unknown = await _unexplained_refunds(rt, store, payment)
    if unknown:
        raise await _doubt(rt, store, payment, row, f"CeleryPay shows {format_amount(unknown, payment.currency)} "
                                                    "refunded that no settled refund of bcpay accounts for, so it "
                                                    "was not sent again")
    try:
        refund = await _post(rt, store, payment, row)
    except UpstreamRejected as exc:
        if exc.status == 401:
            raise  # bcpay's signature refused, not the refund: still requested, sent again later
        raise await _doubt(rt, store, payment, row, "sent again after CeleryPay's 24-hour idempotency window, "
                                                    f"it was refused ({exc.code})") from exc
    await settle(rt, store, payment, refund)
    return RefundResult(row["merchant_refund_no"], refund.id, row["amount"], row["currency"], refund.status)


async def _unexplained_refunds(rt: Runtime, store: StoreRecord, payment: PaymentRecord) -> int:
    """What CeleryPay shows refunded (``GET /v1/payments/{id}``) beyond bcpay's succeeded refunds, in minor units."""
    remote = await rt.celerypay(store).get_payment(payment.celerypay_id or "")
    async with rt.db.read() as conn:
        settled = int((await conn.execute(select(func.coalesce(func.sum(refunds.c.amount), 0)).where(
            refunds.c.payment_id == payment.id, refunds.c.status == "succeeded"))).scalar_one())
    return max(0, remote.refunded_amount - settled)


async def _doubt(
    rt: Runtime, store: StoreRecord, payment: PaymentRecord, row: dict[str, Any], why: str
) -> ConflictError:
    """Put a ``requested`` row in doubt and record (or reopen) the payment's anomaly; the error to raise."""
    now = rt.now()
    number, amount = row["merchant_refund_no"], format_amount(row["amount"], row["currency"])
    detail = (f"refund {number} of {amount} may or may not have been made: {why}. Its amount stays held. Look "
              f"for refund number {number} at CeleryPay, then run `bcpay refund-resolve {number} --store "
              f"{store.store_hash} --made ref_...` (found) or `--not-made` (not there)")
    async with rt.db.transaction() as conn:
        await payflow.lock_order(conn, rt, store.id, payment.order_id)
        moved = await conn.execute(update(refunds).where(refunds.c.id == row["id"], refunds.c.status == "requested")
                                   .values(status=REFUND_IN_DOUBT, updated_at=now))
        if moved.rowcount:  # else CeleryPay's answer for it was recorded meanwhile
            held = int((await conn.execute(select(func.sum(refunds.c.amount)).where(
                refunds.c.payment_id == payment.id, refunds.c.status == REFUND_IN_DOUBT))).scalar_one())
            if not await q.record_anomaly(conn, store_id=store.id, order_id=payment.order_id, payment_id=payment.id,
                                          kind=REFUND_IN_DOUBT_ANOMALY, amount=held, currency=payment.currency,
                                          detail=detail, now=now):
                await q.reopen_anomaly(conn, payment_id=payment.id, kind=REFUND_IN_DOUBT_ANOMALY, amount=held,
                                       detail=detail)
            log.warning("refund %s of payment %s is in doubt: %s", number, payment.id, why)
    return _in_doubt(row)


def _in_doubt(row: dict[str, Any]) -> ConflictError:
    return ConflictError(
        f"refund {row['merchant_refund_no']} may or may not have been made at CeleryPay; its amount stays held "
        "until it is settled (see `bcpay anomalies list`)", code="refund_in_doubt")


async def resolve_doubt(
    rt: Runtime, store: StoreRecord, merchant_refund_no: str, *, celerypay_id: str | None
) -> RefundResult:
    """Settle a refund in doubt with what a person found at CeleryPay.

    ``celerypay_id``: CeleryPay has a refund with this number, this ``ref_...``.
    bcpay reads it (``GET /v1/payments/{id}/refunds/{refund_id}``), checks it
    is this payment's refund with this number and amount, and records its
    state as a notification would (a succeeded one updates the order). None:
    CeleryPay has no refund with this number; the row is failed and its amount
    can be refunded again, unless CeleryPay shows more refunded than bcpay's
    settled refunds explain (then it may be this one: refused).
    """
    query = (select(refunds).join(payments, payments.c.id == refunds.c.payment_id)
             .where(payments.c.store_id == store.id, refunds.c.merchant_refund_no == merchant_refund_no,
                    refunds.c.status == REFUND_IN_DOUBT))
    async with rt.db.read() as conn:
        found = (await conn.execute(query)).mappings().first()
        if found is None:
            raise NotFoundError(f"store {store.store_hash} has no refund in doubt numbered {merchant_refund_no!r}",
                                code="refund_not_in_doubt")
        row = dict(found)
        payment = await q.get_payment(conn, row["payment_id"])
    amount = format_amount(row["amount"], row["currency"])
    if celerypay_id is not None:
        refund = await rt.celerypay(store).get_refund(payment.celerypay_id or "", celerypay_id)
        if (refund.merchant_refund_no, refund.amount) != (merchant_refund_no, row["amount"]):
            raise InvalidInputError(
                f"{celerypay_id} is refund {refund.merchant_refund_no} of "
                f"{format_amount(refund.amount, refund.currency)}, not {merchant_refund_no} of {amount}",
                code="refund_mismatch")
        await settle(rt, store, payment, refund)
        return RefundResult(merchant_refund_no, refund.id, row["amount"], row["currency"], refund.status)
    unknown = await _unexplained_refunds(rt, store, payment)
    if unknown:
        # Freeing the amount would let the same money be refunded twice.
        raise ConflictError(
            f"CeleryPay shows {format_amount(unknown, payment.currency)} refunded that no settled refund of bcpay "
            f"accounts for: find that refund at CeleryPay; if it is {merchant_refund_no}, give its id with --made",
            code="refund_maybe_made")
    async with rt.db.transaction() as conn:
        await payflow.lock_order(conn, rt, store.id, payment.order_id)
        moved = await conn.execute(update(refunds).where(refunds.c.id == row["id"], refunds.c.status == REFUND_IN_DOUBT)
                                   .values(status="failed", updated_at=rt.now()))
        if not moved.rowcount:
            raise ConflictError(f"refund {merchant_refund_no} was settled meanwhile; see `bcpay payments show`",
                                code="refund_not_in_doubt")
        await q.clear_refund_doubt(conn, payment.id, rt.now(),
                                   f"refund {merchant_refund_no} of {amount} not made at CeleryPay (operator)")
        if row["idempotency_key"].startswith(AUTO_REFUND_KEY):
            # bcpay's own refund of money it must return (a double or late payment): `bcpay refund ORDER`
            # would take it from the payment that paid the order, so the refund is queued again here.
            await outbox.enqueue(
                conn, "refund", {"payment_id": payment.id, "order_id": payment.order_id, "amount": row["amount"],
                                 "reason": row["reason"] or "refund_again"},
                now=rt.now(), store_id=store.id, dedupe_key=f"refund_again:{row['id']}",
            )
            return RefundResult(merchant_refund_no, None, row["amount"], row["currency"], "queued_again")
    return RefundResult(merchant_refund_no, None, row["amount"], row["currency"], "failed")


async def _send_stale(rt: Runtime, store: StoreRecord, payment: PaymentRecord) -> None:
    """Send again the requests of this payment left ``requested`` for longer than a call can take."""
    before = rt.now() - STALE_REQUEST
    query = select(refunds).where(
        refunds.c.payment_id == payment.id, refunds.c.status == "requested", refunds.c.updated_at < before
    )
    async with rt.db.read() as conn:
        stale = [dict(r) for r in (await conn.execute(query)).mappings()]
    for row in stale:
        with contextlib.suppress(ConflictError):  # refused: failed (amount free) or in doubt (amount held)
            await _send(rt, store, payment, row)


async def settle(rt: Runtime, store: StoreRecord, payment: PaymentRecord, refund: Refund) -> None:
    """Record CeleryPay's answer; a refund that already succeeded updates the order now."""
    remote = await rt.celerypay(store).get_payment(payment.celerypay_id or "") if refund.status == "succeeded" else None
    async with rt.db.transaction() as conn:
        await payflow.lock_order(conn, rt, store.id, payment.order_id)
        if remote is not None:
            await payflow.apply_remote(rt, store, remote, source=f"refund {refund.id}", conn=conn)
        await record_refund_event_for(rt, conn, payment, refund)


async def sweep_open(rt: Runtime, *, limit: int = 100) -> int:
    """Settle refunds still open long after they were asked for (a lost ``refund.*`` notification).

    A ``requested`` one is sent again (same key and body; past CeleryPay's
    replay window through :func:`_send_late`); a ``pending`` one is looked up
    at CeleryPay, at most once per ``OPEN_REFUND_CHECK``. One in doubt is left
    alone: only CeleryPay's answer or a person settles it. Returns how many
    were looked at.
    """
    now = rt.now()
    query = (
        select(refunds)
        .where(refunds.c.status.in_(("requested", "pending")), refunds.c.updated_at < now - OPEN_REFUND_CHECK)
        .order_by(refunds.c.updated_at)
        .limit(limit)
    )
    async with rt.db.read() as conn:
        due = [dict(r) for r in (await conn.execute(query)).mappings()]
    for row in due:
        async with rt.db.read() as conn:
            payment = await q.get_payment(conn, row["payment_id"])
            store = await q.get_store_by_id(conn, payment.store_id)
        if not store.has_credentials or not payment.celerypay_id:
            continue
        try:
            if row["status"] == "requested":
                with contextlib.suppress(ConflictError):  # refused: failed, or in doubt (see _send)
                    await _send(rt, store, payment, row)
                continue
            async with rt.db.transaction() as conn:  # asked now: not again before OPEN_REFUND_CHECK
                await conn.execute(update(refunds).where(refunds.c.id == row["id"], refunds.c.status == "pending")
                                   .values(updated_at=now))
            refund = await rt.celerypay(store).get_refund(payment.celerypay_id, row["celerypay_id"])
            if refund.status != "pending":
                await settle(rt, store, payment, refund)
        except BcpayError as exc:
            log.warning("refund check of payment %s failed: %r", payment.id, exc)
    return len(due)
