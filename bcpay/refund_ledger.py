"""Refunds through BigCommerce's own refund ledger, both ways (reference section 12).

**BigCommerce -> CeleryPay.** A merchant refunds an order with the control
panel's Refund action; ``store/order/refund/created`` queues
:func:`refund_created`, which reads the refund (the payload is a hint) and,
for an order bcpay took an OKCloud Pay payment for, refunds what the refund's
offline payments add up to at CeleryPay through :func:`bcpay.refunds.request_refund`
(its requested / in doubt / failed rules hold). One bcpay refund per
BigCommerce refund id: the refund row carries it and its Idempotency-Key is
``bc-refund-<id>``, so a webhook delivered twice, a retried job or a job run
again after CeleryPay was down resumes the one request instead of making a
second. A refund for more than is left at CeleryPay is not made at all (a
person decides what is owed); a refusal or a failure is an anomaly and a staff
note saying that the money did NOT go back.

**CeleryPay -> BigCommerce.** A refund bcpay makes from the CLI or the
settings page is written to the ledger once CeleryPay says it succeeded
(:func:`write`, from the ``refund_status`` job): a refund quote, then an offline
refund of that amount at the order level whose reason names bcpay's refund
number, and BigCommerce's refund id kept on the row. The automatic refund of
a double or late payment is never written: that money was never the order's.
The webhook this write fires is recognised (:func:`_ours`) and ignored. A write
that was made but whose answer was lost is found again by its reason before
anything is sent a second time. If BigCommerce refuses (no offline option in
the quote, an order not in a refundable state), the caller sets the status as
before and an anomaly says that the ledger could not be written.

Both are per store: ``payments.refund_from_bigcommerce``.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from bcpay import outbox, refunds
from bcpay.clients.bigcommerce import LedgerRefund, Order
from bcpay.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UpstreamConflict,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from bcpay.money import format_amount, from_minor, to_minor
from bcpay.runtime import Runtime
from bcpay.storage import queries as q
from bcpay.storage.db import Conn
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import anomalies, payments
from bcpay.storage.schema import refunds as refund_rows

FROM_BC_KEY = "bc-refund-"  # the Idempotency-Key prefix of a refund made for a BigCommerce refund
# The refunds bcpay writes to the ledger: made by a person through the CLI ("refund-...") or the settings
# page ("settings-..."). Not the worker's own ("job-...": double payments), not refund_on_status's.
LEDGER_KEYS = ("refund-", "settings-")
REASON = "OKCloud Pay refund {number}"
_REASON = re.compile(r"OKCloud Pay refund (\S{1,64})")
NOT_MADE = "bc_refund_not_made"  # anomaly: a BigCommerce refund was not made at CeleryPay
NOT_WRITTEN = "ledger_not_written"  # anomaly: a refund of bcpay's is not in BigCommerce's ledger
JOB = "bc_refund_created"
REFUSED = 0  # bc_refund_id of a refund BigCommerce refused to record (no real refund id is 0)
log = logging.getLogger("bcpay.refund_ledger")


def key_for(bc_refund_id: int) -> str:
    """The Idempotency-Key (and refund key) of the one refund made for BigCommerce refund ``bc_refund_id``."""
    return f"{FROM_BC_KEY}{bc_refund_id}"


def writes_ledger(row: dict[str, Any]) -> bool:
    """True for a refund of bcpay's that belongs in BigCommerce's ledger and is not there yet."""
    return row["bc_refund_id"] is None and str(row["idempotency_key"]).startswith(LEDGER_KEYS)


async def queue(conn: Conn, rt: Runtime, store: StoreRecord, order_id: int, bc_refund_id: int) -> bool:
    """Queue the job for a ``store/order/refund/created`` webhook, once per BigCommerce refund."""
    return await outbox.enqueue(conn, JOB, {"order_id": order_id, "refund_id": bc_refund_id}, now=rt.now(),
                                store_id=store.id, dedupe_key=f"{JOB}:{store.id}:{bc_refund_id}")


async def refund_created(rt: Runtime, store_id: int, order_id: int, bc_refund_id: int) -> str:
    """Make BigCommerce refund ``bc_refund_id`` at CeleryPay, once; returns what happened."""
    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, store_id)
    if not rt.policy(store).refund_from_bigcommerce:
        return "disabled"
    bc = rt.bigcommerce(store)
    try:
        refund = await bc.get_refund(bc_refund_id)
    except UpstreamNotFound:
        return "refund gone"
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, refund.order_id)
    if not attempts:
        return "not ours"
    if await _ours(rt, store, refund):
        return "ours"  # bcpay's own refund, written to the ledger: nothing to do at CeleryPay
    if refund.offline_amount == 0:
        return "not at celerypay"  # store credit and other online refunds: BigCommerce moved that money
    try:
        payment = await refunds.paid_attempt(rt, store, refund.order_id)
    except NotFoundError:
        return await _not_made(rt, store, attempts[-1], refund.id, refund.order_id, refund.offline_amount,
                               "the order has no captured OKCloud Pay payment")
    try:
        amount = to_minor(refund.offline_amount, payment.currency)
        result = await refunds.request_refund(
            rt, store, payment, amount=amount, key=key_for(refund.id), bc_refund_id=refund.id,
            reason=f"BigCommerce refund {refund.id}" + (f": {refund.reason}" if refund.reason else ""),
        )
    except InvalidInputError as exc:  # more than is left, an amount CeleryPay cannot take
        return await _not_made(rt, store, payment, refund.id, refund.order_id, refund.offline_amount, exc.message)
    except ConflictError as exc:
        if exc.code == "refund_in_doubt":
            return "in doubt"  # its own anomaly says what to look for
        return await _not_made(rt, store, payment, refund.id, refund.order_id, refund.offline_amount, exc.message)
    return result.status


async def _ours(rt: Runtime, store: StoreRecord, refund: LedgerRefund) -> bool:
    """True when ``refund`` is one bcpay wrote: its id is on a row of bcpay's, or its reason names one.

    The reason covers the webhook that arrives before bcpay kept the id (the write's answer still on
    its way, or lost): the row gets the id now.
    """
    found = await _by_bc_id(rt, store, refund.id)
    if found is not None:
        return not str(found["idempotency_key"]).startswith(FROM_BC_KEY)
    # The reason names a refund number; it is bcpay's write only if that refund is one bcpay writes, of
    # this amount, with no other BigCommerce refund yet (a merchant may copy a number into a reason).
    number = _number_in(refund.reason)
    if number is None:
        return False
    async with rt.db.transaction() as conn:
        row = (await conn.execute(
            select(refund_rows.c.id, refund_rows.c.bc_refund_id, refund_rows.c.idempotency_key,
                   refund_rows.c.amount, refund_rows.c.currency)
            .join(payments, payments.c.id == refund_rows.c.payment_id)
            .where(payments.c.store_id == store.id, payments.c.order_id == refund.order_id,
                   refund_rows.c.merchant_refund_no == number)
        )).mappings().first()
        if row is None or not str(row["idempotency_key"]).startswith(LEDGER_KEYS):
            return False
        if row["bc_refund_id"] not in (None, REFUSED) or refund.offline_amount != from_minor(
                int(row["amount"]), str(row["currency"])):
            return False
        if row["bc_refund_id"] != refund.id:
            await conn.execute(update(refund_rows).where(refund_rows.c.id == row["id"])
                               .values(bc_refund_id=refund.id, updated_at=rt.now()))
    return True


def _number_in(reason: str) -> str | None:
    """bcpay's refund number in a ledger refund's reason (:data:`REASON`), if it names one."""
    match = _REASON.search(reason)
    return match.group(1) if match else None


async def _by_bc_id(rt: Runtime, store: StoreRecord, bc_refund_id: int) -> dict[str, Any] | None:
    async with rt.db.read() as conn:
        row = (await conn.execute(
            select(refund_rows).join(payments, payments.c.id == refund_rows.c.payment_id)
            .where(payments.c.store_id == store.id, refund_rows.c.bc_refund_id == bc_refund_id)
        )).mappings().first()
    return dict(row) if row else None


async def refund_failed(rt: Runtime, payment_id: int, row_id: int) -> str:
    """CeleryPay reported the refund made for a BigCommerce refund failed: say that the money did NOT go back."""
    async with rt.db.read() as conn:
        payment = await q.get_payment(conn, payment_id)
        store = await q.get_store_by_id(conn, payment.store_id)
        row = dict((await conn.execute(select(refund_rows).where(refund_rows.c.id == row_id))).mappings().one())
    if row["status"] != "failed" or row["bc_refund_id"] is None:
        return "skipped"
    return await _not_made(rt, store, payment, int(row["bc_refund_id"]), payment.order_id,
                           from_minor(int(row["amount"]), payment.currency), "CeleryPay reported the refund failed")


async def _not_made(
    rt: Runtime, store: StoreRecord, payment: PaymentRecord, bc_refund_id: int, order_id: int, amount: Decimal,
    why: str,
) -> str:
    """A BigCommerce refund bcpay could not make at CeleryPay: an anomaly, and a staff note on the order."""
    shown = f"{amount:.2f}"
    detail = (f"BigCommerce refund {bc_refund_id} of {shown} on order {order_id} was NOT made at CeleryPay: "
              f"{why}. The money did not go back to the shopper: refund it at CeleryPay (bcpay refund "
              f"{order_id} --store {store.store_hash}) or tell the shopper")
    try:
        minor = to_minor(amount, payment.currency)
    except InvalidInputError:
        minor = 0
    async with rt.db.transaction() as conn:
        if not await q.record_anomaly(conn, store_id=store.id, order_id=order_id, payment_id=payment.id,
                                      kind=NOT_MADE, amount=minor, currency=payment.currency, detail=detail,
                                      now=rt.now()):
            known: str = (await conn.execute(select(anomalies.c.detail).where(
                anomalies.c.payment_id == payment.id, anomalies.c.kind == NOT_MADE))).scalar_one()
            if detail not in known:  # a job run again adds nothing; another refund of the order does
                await q.reopen_anomaly(conn, payment_id=payment.id, kind=NOT_MADE, amount=minor, detail=detail)
    note = (f"OKCloud Pay: BigCommerce refund {bc_refund_id} of {shown} {payment.currency} was NOT refunded at "
            f"CeleryPay ({why}). The money did NOT go back to the shopper.")
    await add_note(rt, store, order_id, note)
    log.warning("BigCommerce refund %s of store %s not made at CeleryPay: %s", bc_refund_id, store.store_hash, why)
    return "refused"


async def add_note(rt: Runtime, store: StoreRecord, order_id: int, note: str) -> Order:
    """Add a line to the order's staff notes, once (a job run again does not repeat it)."""
    from bcpay.effects import append_note

    bc = rt.bigcommerce(store)
    order = await bc.get_order(order_id)
    if note in (order.staff_notes or ""):
        return order
    return await bc.update_order(order_id, staff_notes=append_note(order.staff_notes, note))


async def write(
    rt: Runtime, store: StoreRecord, payment: PaymentRecord, order: Order, row: dict[str, Any]
) -> LedgerRefund | None:
    """Record refund ``row`` (succeeded at CeleryPay) in BigCommerce's ledger; None when BigCommerce refused.

    A refusal is an anomaly (:data:`NOT_WRITTEN`); another refund of the order being made right now
    (409: refunds of one order are made one after another) is tried again later.
    """
    number = str(row["merchant_refund_no"])
    reason = REASON.format(number=number)
    bc = rt.bigcommerce(store)
    try:
        for existing in await bc.order_refunds(order.id):
            if _number_in(existing.reason) == number:
                await _keep_id(rt, row, existing.id)  # written before, its answer lost
                return existing
        amount = float(from_minor(int(row["amount"]), str(row["currency"])))
        items = [{"item_type": "ORDER", "item_id": order.id, "amount": amount, "reason": reason}]
        quote = await bc.refund_quote(order.id, items)
        option = quote.offline_option()
        if option is None:
            await _not_written(rt, store, payment, row, "BigCommerce's refund quote offers no offline refund method")
            return None
        created = await bc.create_refund(order.id, items, [{"provider_id": option.provider_id, "amount": amount,
                                                            "offline": True}])
    except UpstreamConflict as exc:
        raise UpstreamUnavailable(f"another refund of order {order.id} is being made in BigCommerce; later",
                                  service="bigcommerce", status=exc.status) from exc
    except UpstreamRejected as exc:
        await _not_written(rt, store, payment, row, f"BigCommerce refused it: {exc.message}")
        return None
    await _keep_id(rt, row, created.id)
    return created


async def writes_pending(rt: Runtime, payment: PaymentRecord, row: dict[str, Any]) -> bool:
    """True when a succeeded refund of the payment other than ``row`` still waits to be written to the ledger."""
    async with rt.db.read() as conn:
        others = (await conn.execute(select(refund_rows).where(
            refund_rows.c.payment_id == payment.id, refund_rows.c.status == "succeeded",
            refund_rows.c.id != row["id"]))).mappings().all()
    return any(writes_ledger(dict(other)) for other in others)


async def _keep_id(rt: Runtime, row: dict[str, Any], bc_refund_id: int) -> None:
    async with rt.db.transaction() as conn:
        await conn.execute(update(refund_rows).where(refund_rows.c.id == row["id"])
                           .values(bc_refund_id=bc_refund_id, updated_at=rt.now()))
    row["bc_refund_id"] = bc_refund_id


async def _not_written(
    rt: Runtime, store: StoreRecord, payment: PaymentRecord, row: dict[str, Any], why: str
) -> None:
    """BigCommerce refused the write: an anomaly, and the row marked so it is not waited for."""
    await _keep_id(rt, row, REFUSED)
    amount = format_amount(int(row["amount"]), str(row["currency"]))
    detail = (f"refund {row['merchant_refund_no']} of {amount} was made at CeleryPay but could not be written to "
              f"BigCommerce's refund ledger: {why}. The order's status was set instead; record the refund in the "
              "control panel (Refund, through a third-party provider) if the books need it")
    async with rt.db.transaction() as conn:
        if not await q.record_anomaly(conn, store_id=store.id, order_id=payment.order_id, payment_id=payment.id,
                                      kind=NOT_WRITTEN, amount=int(row["amount"]), currency=str(row["currency"]),
                                      detail=detail, now=rt.now()):
            await q.reopen_anomaly(conn, payment_id=payment.id, kind=NOT_WRITTEN, amount=int(row["amount"]),
                                   detail=detail)
    log.warning("refund %s not written to BigCommerce's ledger: %s", row["merchant_refund_no"], why)


async def warn_deprecated(rt: Runtime) -> None:
    """Log, at start, that ``refund_on_status`` is deprecated, when it is on globally or for a store."""
    async with rt.db.read() as conn:
        stores = await q.list_stores(conn, installed_only=False)
    on = [s.store_hash for s in stores if rt.policy(s).refund_on_status]
    if rt.settings.payments.refund_on_status or on:
        log.warning("payments.refund_on_status is deprecated and goes away in the next release: set "
                    "payments.refund_from_bigcommerce instead, which refunds at CeleryPay every refund made in "
                    "BigCommerce, partial ones too (on for %s)", ", ".join(on) or "no store")


__all__ = ["FROM_BC_KEY", "NOT_MADE", "NOT_WRITTEN", "add_note", "key_for", "queue", "refund_created", "refund_failed",
           "warn_deprecated", "write", "writes_ledger"]
