"""Outbox job handlers (the effects on BigCommerce and CeleryPay) and the worker.

Every handler re-reads the order before it writes, so that running a job a
second time (after a crash between the API call and marking it done) changes
nothing: that is what makes "exactly once" hold with an at-least-once queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import weakref
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from bcpay import channels, order_reads, outbox, payflow, rules, stores
from bcpay.clients.bigcommerce import BigCommerceClient, Order
from bcpay.errors import (
    BcpayError,
    ConflictError,
    InvalidInputError,
    RateLimited,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from bcpay.money import format_amount, to_minor
from bcpay.runtime import Runtime
from bcpay.storage import queries as q
from bcpay.storage.records import JobRecord, PaymentRecord, StoreRecord

log = logging.getLogger("bcpay.worker")

METAFIELD_NAMESPACE = "bcpay"
METAFIELD_KEY = "celerypay_payment_id"
MAX_NOTES = 65535

Handler = Callable[[Runtime, JobRecord], Awaitable[str]]


def append_note(existing: str | None, line: str) -> str:
    """Staff notes with one more line; the oldest text is cut if BigCommerce's limit is hit."""
    text = f"{existing.rstrip()}\n{line}" if existing and existing.strip() else line
    return text[-MAX_NOTES:]


async def _context(rt: Runtime, job: JobRecord) -> tuple[StoreRecord, PaymentRecord, BigCommerceClient, Order]:
    async with rt.db.read() as conn:
        payment = await q.get_payment(conn, int(job.payload["payment_id"]))
        store = await q.get_store_by_id(conn, payment.store_id)
    bc = rt.bigcommerce(store)
    return store, payment, bc, await bc.get_order(payment.order_id)


async def _write_order(
    rt: Runtime, store: StoreRecord, payment: PaymentRecord, order: Order, *, status_id: int,
    note: str, action: str, provider_id: str | None = None,
) -> None:
    await rt.bigcommerce(store).update_order(
        order.id, status_id=status_id, staff_notes=append_note(order.staff_notes, note),
        payment_provider_id=provider_id,
    )
    async with rt.db.transaction() as conn:
        await order_reads.forget(conn, store.id, order.id)
        await q.audit(
            conn, store_id=store.id, order_id=order.id, payment_id=payment.id, action=action,
            from_status_id=order.status_id, to_status_id=status_id, detail=note, now=rt.now(),
        )


async def _audit(
    rt: Runtime, store: StoreRecord, payment: PaymentRecord, order: Order, action: str, detail: str
) -> None:
    async with rt.db.transaction() as conn:
        await q.audit(
            conn, store_id=store.id, order_id=order.id, payment_id=payment.id, action=action,
            from_status_id=order.status_id, to_status_id=order.status_id, detail=detail, now=rt.now(),
        )


# A capture that must not pay its order (cancelled, or deleted, before the money came): its refunds
# leave the order's status alone, as a duplicate's do (refund_status).
KEPT_APART = "kept_apart"


async def mark_paid(rt: Runtime, job: JobRecord) -> str:
    """Set the paid status, provider id, staff note and metafield, once."""
    try:
        store, payment, bc, order = await _context(rt, job)
    except UpstreamNotFound:
        # The merchant deleted the order: the money was taken for nothing. An anomaly
        # (refunded at once with refund_duplicates = "auto"), not a dead job.
        async with rt.db.transaction() as conn:
            payment = await q.get_payment(conn, int(job.payload["payment_id"]))
            store = await q.get_store_by_id(conn, payment.store_id)
            await payflow.record_duplicate(conn, rt, store, payment, "paid for an order BigCommerce no longer has",
                                           kind="order_gone")
            await q.update_payment(conn, payment.id, outcome=KEPT_APART, updated_at=rt.now())
        return "anomaly"
    policy = rt.policy(store)
    effect = rules.paid_effect(order.status_id, paid_status_id=policy.paid_status_id)
    assert payment.celerypay_id is not None and payment.paid_amount is not None
    if effect == "apply":
        # The capture was checked against the total when the payment started; the merchant may
        # have edited the order since. The contract: paid only when it equals what the order owes now.
        try:
            owed: int | None = to_minor(order.total_inc_tax, order.currency)
        except InvalidInputError:  # e.g. 1500.5 JPY: no whole number of minor units can equal it
            owed = None
        if owed is None or (owed, order.currency) != (payment.paid_amount, payment.currency):
            await _order_changed(rt, store, payment, order, owed)
            return "mismatch"
        note = (
            f"OKCloud Pay: paid {format_amount(payment.paid_amount, payment.currency)}, "
            f"CeleryPay payment {payment.celerypay_id}, at {rt.now():%Y-%m-%d %H:%M:%S} UTC"
        )
        if stores.sandbox_warning(rt.settings, store):
            note = f"{stores.SANDBOX_NOTE}. {note}"
        await _write_order(
            rt, store, payment, order, status_id=policy.paid_status_id, note=note, action="mark_paid",
            provider_id=payment.celerypay_id,
        )
    elif effect == "cancelled":
        async with rt.db.transaction() as conn:
            await payflow.record_duplicate(
                conn, rt, store, payment, "paid after the order was cancelled", kind="paid_after_cancel"
            )
            await q.update_payment(conn, payment.id, outcome=KEPT_APART, updated_at=rt.now())
        await _audit(rt, store, payment, order, "paid_after_cancel", "order was cancelled; payment kept apart")
        return "anomaly"
    elif effect == "other":
        await _audit(rt, store, payment, order, "left_as_is", f"order was in status {order.status_id}; not changed")
        return "skipped"
    await bc.upsert_order_metafield(
        order.id, namespace=METAFIELD_NAMESPACE, key=METAFIELD_KEY, value=payment.celerypay_id,
        description="CeleryPay payment id (OKCloud Pay)",
    )
    return effect


async def _order_changed(
    rt: Runtime, store: StoreRecord, payment: PaymentRecord, order: Order, owed: int | None
) -> None:
    """The order now owes something else than was paid: manual verification, an anomaly, never paid."""
    assert payment.paid_amount is not None
    total = format_amount(owed, order.currency) if owed is not None else f"{order.total_inc_tax} {order.currency}"
    reason = f"paid {format_amount(payment.paid_amount, payment.currency)} but the order now totals {total}"
    async with rt.db.transaction() as conn:
        await q.update_payment(conn, payment.id, outcome="mismatch", updated_at=rt.now())
        await q.record_anomaly(
            conn, store_id=store.id, order_id=order.id, payment_id=payment.id, kind="amount_mismatch",
            amount=payment.paid_amount - payment.refunded_amount, currency=payment.currency, detail=reason,
            now=rt.now(),
        )
    note = f"OKCloud Pay: payment {payment.celerypay_id} needs manual verification: {reason}"
    await _write_order(
        rt, store, payment, order, status_id=rt.policy(store).mismatch_status_id, note=note, action="mark_mismatch",
    )


async def mark_mismatch(rt: Runtime, job: JobRecord) -> str:
    """Put the order in Manual Verification Required with the reason, never paid."""
    store, payment, _bc, order = await _context(rt, job)
    if order.status_id not in (rules.STATUS_AWAITING_PAYMENT, rules.STATUS_PENDING):
        await _audit(rt, store, payment, order, "mismatch_left", f"order in status {order.status_id}")
        return "skipped"
    note = f"OKCloud Pay: payment {payment.celerypay_id} needs manual verification: {job.payload['reason']}"
    await _write_order(
        rt, store, payment, order, status_id=rt.policy(store).mismatch_status_id, note=note,
        action="mark_mismatch",
    )
    return "apply"


async def cancel_order(rt: Runtime, job: JobRecord) -> str:
    """Cancel an order whose payment expired, if still unpaid and awaiting payment."""
    store, payment, _bc, order = await _context(rt, job)
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order.id)
    if any(a.status in rules.PAID or a.status in rules.OPEN for a in attempts):
        return "skipped"
    if order.status_id != rules.STATUS_AWAITING_PAYMENT:
        return "skipped"
    await _write_order(
        rt, store, payment, order, status_id=rules.STATUS_CANCELLED, action="cancel_expired",
        note=f"OKCloud Pay: payment {payment.celerypay_id} expired unpaid; order cancelled",
    )
    return "apply"


async def refund_status(rt: Runtime, job: JobRecord) -> str:
    """After a refund succeeded: into BigCommerce's ledger (bcpay.refund_ledger), the order's status and a note.

    With ``refund_from_bigcommerce`` a refund bcpay made is written to the ledger first; the order is read
    again then, as BigCommerce may have set its status itself. A refund made for a BigCommerce refund is
    in the ledger already. Either way the note names bcpay's number, CeleryPay's id and BigCommerce's.
    """
    from bcpay import refund_ledger

    store, payment, _bc, order = await _context(rt, job)
    if payment.outcome != "applied" or not payment.paid_amount:
        return "skipped"  # a refunded duplicate does not change the order
    refund_id = job.payload.get("refund_id")
    row: dict[str, Any] | None = None
    if refund_id is not None and rt.policy(store).refund_from_bigcommerce:
        async with rt.db.read() as conn:
            row = await q.refund_by_celerypay_id(conn, payment.id, str(refund_id))
    if (row is not None and refund_ledger.writes_ledger(row)
            and await refund_ledger.write(rt, store, payment, order, row) is not None):
        order = await rt.bigcommerce(store).get_order(order.id)  # BigCommerce may have set the status
    target = rules.refund_status_id(payment.refunded_amount, payment.paid_amount)
    done = (f"OKCloud Pay: refunded {format_amount(payment.refunded_amount, payment.currency)} of "
            f"{format_amount(payment.paid_amount, payment.currency)}")
    if row is None:
        if order.status_id == target:
            return "done"
        note = f"{done} (refund {refund_id})"
    else:
        ledger = (f"BigCommerce refund {row['bc_refund_id']}" if row["bc_refund_id"]
                  else "not in BigCommerce's refund ledger")
        note = (f"{done}: refund {row['merchant_refund_no']} of {format_amount(row['amount'], row['currency'])}, "
                f"CeleryPay refund {refund_id}, {ledger}")
        # Another succeeded refund still to be written: its own job sets the status once the ledger has it
        # (set now, Refunded would leave BigCommerce no refundable order to write it to).
        if order.status_id == target or await refund_ledger.writes_pending(rt, payment, row):
            await refund_ledger.add_note(rt, store, order.id, note)
            return "done"
    await _write_order(rt, store, payment, order, status_id=target, note=note, action="refund_status")
    return "apply"


async def cancel_remote(rt: Runtime, job: JobRecord) -> str:
    """The merchant cancelled the order: cancel its open CeleryPay attempt."""
    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, int(job.store_id or 0))
        attempts = await q.order_attempts(conn, store.id, int(job.payload["order_id"]))
    open_ = [a for a in attempts if a.status in rules.OPEN]
    for attempt in open_:
        await payflow.cancel_attempt(rt, store, attempt, reason="order cancelled in BigCommerce")
    return "apply" if open_ else "skipped"


async def refund(rt: Runtime, job: JobRecord) -> str:
    """Refund money bcpay must return (duplicate or late payments with auto refund)."""
    from bcpay import refunds

    async with rt.db.read() as conn:
        payment = await q.get_payment(conn, int(job.payload["payment_id"]))
        store = await q.get_store_by_id(conn, payment.store_id)
    await refunds.request_refund(
        rt, store, payment, amount=int(job.payload["amount"]), reason=str(job.payload.get("reason", "")),
        key=f"{refunds.AUTO_REFUND_KEY}{job.id}",
    )
    return "apply"


LOOP_BACKOFF_MAX = 5.0  # seconds between a failing worker loop's rounds at most


class NotForThisWorker(Exception):
    """The job wants another version of bcpay (a rolling deploy): give it back, uncounted, for later."""

    retry_after = 30.0


class StoreNotReady(Exception):
    """The store has no CeleryPay credentials (installed again, not configured yet): later, uncounted."""

    retry_after = 300.0


async def refresh_script(rt: Runtime, job: JobRecord) -> str:
    """Put the current snippet tag on a store (a new bcpay release, a new public_url or method name).

    The job names the tag it was queued for: during a rolling deploy a worker
    of the other version must not install its own tag (its snippet file is one
    the new servers answer 404 for) and mark the job done.
    """
    from bcpay import provisioning

    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, int(job.store_id or 0))
    if not store.installed or not store.access_token_enc or store.script_uuid is None:
        return "skipped"  # uninstalled, or its snippet was removed on purpose
    ours = await provisioning.store_digest(rt, store)
    if job.payload.get("digest", "") != ours:
        if store.script_hash == ours:
            return "skipped"  # this version's tag is already there: the job is stale
        raise NotForThisWorker
    await provisioning.install_script(rt, store)
    return "apply"


async def refresh_channels(rt: Runtime, job: JobRecord) -> str:
    """Read the store's channels again (a channel webhook, the sweep, an upgrade) and fix the snippets."""
    from bcpay import provisioning

    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, int(job.store_id or 0))
    if not store.installed or not store.access_token_enc:
        return "skipped"
    await channels.refresh(rt, store)
    if store.script_uuid is None and store.script_hash is None:
        return "apply"  # its snippet was removed on purpose (or never installed): channels only
    await provisioning.install_script(rt, store)
    return "apply"


async def check_event(rt: Runtime, job: JobRecord) -> str:
    """A CeleryPay notification arrived: apply what CeleryPay itself says about its payment."""
    from bcpay import notifications

    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, int(job.store_id or 0))
    if not store.has_credentials:
        raise StoreNotReady  # installed again but not configured yet: nothing can be asked
    refund_id = job.payload.get("refund_id")
    return await notifications.check_event(
        rt, store, event_id=str(job.payload["event_id"]), celerypay_id=str(job.payload["celerypay_id"]),
        refund_id=None if refund_id is None else str(refund_id),
    )


async def confirm_uninstall(rt: Runtime, job: JobRecord) -> str:
    """An uninstall notice BigCommerce did not confirm yet: ask again (retried with backoff until it does)."""
    from bcpay import stores

    return await stores.confirm_uninstall(rt, int(job.store_id or 0), str(job.payload["token"]))


async def bc_refund_created(rt: Runtime, job: JobRecord) -> str:
    """A refund in BigCommerce's ledger: make it at CeleryPay unless it is bcpay's own (bcpay.refund_ledger)."""
    from bcpay import refund_ledger

    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, int(job.store_id or 0))
    if not store.has_credentials:
        raise StoreNotReady
    return await refund_ledger.refund_created(rt, store.id, int(job.payload["order_id"]),
                                              int(job.payload["refund_id"]))


async def bc_refund_failed(rt: Runtime, job: JobRecord) -> str:
    """CeleryPay failed a refund made for a BigCommerce refund: an anomaly and a staff note (bcpay.refund_ledger)."""
    from bcpay import refund_ledger

    return await refund_ledger.refund_failed(rt, int(job.payload["payment_id"]), int(job.payload["refund_row_id"]))


async def cancel_unpaid(rt: Runtime, job: JobRecord) -> str:
    """An order past its store's unpaid hold: cancel it if CeleryPay confirms it unpaid (``bcpay.unpaid``)."""
    from bcpay import unpaid

    return await unpaid.cancel_unpaid(rt, job)


async def order_status_changed(rt: Runtime, job: JobRecord) -> str:
    """A statusUpdated webhook: re-read the order and act (cancel / refund)."""
    from bcpay import bcwebhooks

    return await bcwebhooks.order_status_changed(rt, int(job.store_id or 0), int(job.payload["order_id"]))


HANDLERS: dict[str, Handler] = {
    "check_event": check_event,
    "confirm_uninstall": confirm_uninstall,
    "order_status_changed": order_status_changed,
    "bc_refund_created": bc_refund_created,
    "bc_refund_failed": bc_refund_failed,
    "mark_paid": mark_paid,
    "mark_mismatch": mark_mismatch,
    "cancel_order": cancel_order,
    "cancel_unpaid": cancel_unpaid,
    "refund_status": refund_status,
    "cancel_remote": cancel_remote,
    "refund": refund,
    "refresh_script": refresh_script,
    "refresh_channels": refresh_channels,
}
# Kinds whose dedupe key means "one queued at a time", not "once ever": done, the job lets go of it.
# A snippet version can come back (a method name changed and changed back) and must be installed again.
# An unpaid order's cancel, done, lets a later sweep look at an order it left alone (a payment being created).
KEY_RELEASED_WHEN_DONE = frozenset({"refresh_script", "refresh_channels", "cancel_unpaid"})


class Worker:
    """Claims due jobs and runs them; also sweeps expired attempts."""

    def __init__(self, rt: Runtime, *, owner: str | None = None, batch: int | None = None) -> None:
        self.rt = rt
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.batch = batch or rt.settings.outbox.concurrency
        self.wakeup = asyncio.Event()
        # Jobs about one order run one at a time, whichever payment they are about: each reads the order
        # and then writes it, and two at once (two refunds' status jobs) both read the old status and both
        # write. The claim keeps processes apart (outbox.claim); this lock covers what it cannot see: jobs
        # queued before schema 0007, which have no subject in the database.
        self._subjects: weakref.WeakValueDictionary[str | int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def run_once(self) -> int:
        """Run every job due now (one batch); returns how many ran."""
        rt = self.rt
        jobs = await outbox.claim(
            rt.db, owner=self.owner, now=rt.now(), lease_seconds=rt.settings.outbox.lease_seconds, limit=self.batch
        )
        await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    def _subject_lock(self, job: JobRecord) -> asyncio.Lock:
        """The lock of the row's subject (the claim's key), else of what the payload is about, else of the job.

        The row first, so the two agree whichever version of ``outbox.subject_of`` queued the job; the
        payload speaks only for rows without a subject (queued before schema 0007).
        """
        key = job.subject or outbox.subject_of(job.store_id, job.payload) or job.id
        lock = self._subjects.get(key)
        if lock is None:
            lock = self._subjects[key] = asyncio.Lock()
        return lock

    async def _run(self, job: JobRecord) -> None:
        rt = self.rt
        cfg = rt.settings.outbox
        handler = HANDLERS.get(job.kind)
        # A job must finish inside its lease, or another worker would run it again meanwhile. The
        # lease counts from the claim, which may have waited for SQLite's lock: measure what is left.
        left = (job.lease_until - rt.now()).total_seconds() if job.lease_until else cfg.lease_seconds
        budget = max(1.0, min(cfg.lease_seconds, left) - 5.0)
        try:
            if handler is None:
                raise ConflictError(f"unknown job kind {job.kind!r}")
            async with asyncio.timeout(budget), self._subject_lock(job):
                result = await handler(rt, job)
        except TimeoutError:  # a slow upstream, transient like a 5xx: the same growing backoff
            delay = rules.backoff_seconds(job.attempts, base=cfg.backoff_base, cap=cfg.backoff_cap)
            state = await outbox.retry_later(rt.db, job, owner=self.owner, now=rt.now(), delay=delay,
                                             error=f"took longer than {budget:.0f} s", max_attempts=cfg.max_attempts)
            rt.metrics.inc("bcpay_jobs_total", kind=job.kind, result="timeout" if state == outbox.QUEUED else "dead")
        except (RateLimited, NotForThisWorker, StoreNotReady) as exc:
            await outbox.retry_later(rt.db, job, owner=self.owner, now=rt.now(), delay=exc.retry_after,
                                     error=repr(exc), max_attempts=cfg.max_attempts, counts=False)
            rt.metrics.inc("bcpay_jobs_total", kind=job.kind,
                           result="rate_limited" if isinstance(exc, RateLimited) else "deferred")
        except (UpstreamRejected, ConflictError) as exc:
            await outbox.kill(rt.db, job, owner=self.owner, now=rt.now(), error=repr(exc))
            rt.metrics.inc("bcpay_jobs_total", kind=job.kind, result="dead")
            log.warning("job %s (%s) is dead: %r", job.id, job.kind, exc)
        except Exception as exc:
            delay = rules.backoff_seconds(job.attempts, base=cfg.backoff_base, cap=cfg.backoff_cap)
            state = await outbox.retry_later(rt.db, job, owner=self.owner, now=rt.now(), delay=delay,
                                             error=repr(exc), max_attempts=cfg.max_attempts)
            rt.metrics.inc("bcpay_jobs_total", kind=job.kind, result="retry" if state == outbox.QUEUED else "dead")
            if not isinstance(exc, (UpstreamUnavailable, BcpayError)):
                log.exception("job %s (%s) failed", job.id, job.kind)
        else:
            if not await outbox.complete(rt.db, job, owner=self.owner, now=rt.now(),
                                         release_key=job.kind in KEY_RELEASED_WHEN_DONE):
                log.warning("job %s (%s) finished after losing its lease", job.id, job.kind)
            rt.metrics.inc("bcpay_jobs_total", kind=job.kind, result=result)

    async def sweep(self) -> int:
        """Check pending attempts past their expiry and refunds open too long at CeleryPay (lost notifications);
        queue the cancel of orders past their store's unpaid hold."""
        rt = self.rt
        grace = rt.now() - timedelta(seconds=30)
        async with rt.db.read() as conn:
            stale = await q.list_payments(conn, status=[rules.PENDING, rules.CREATING], expires_before=grace, limit=200)
        checked = 0
        for attempt in stale:
            async with rt.db.read() as conn:
                store = await q.get_store_by_id(conn, attempt.store_id)
            if not store.has_credentials:
                continue
            try:
                await payflow.refresh(rt, store, attempt)
                checked += 1
            except BcpayError as exc:
                log.warning("sweep of payment %s failed: %r", attempt.id, exc)
        from bcpay import refunds, unpaid

        await unpaid.queue_due(rt)
        await self.queue_stale_channels()
        await self.queue_outdated_scripts()
        return checked + await refunds.sweep_open(rt)

    async def queue_stale_channels(self) -> int:
        """Queue a channel read for every store whose channels are unread (an upgrade) or older than
        ``channels.MAX_AGE`` (a site's domain changes without a webhook)."""
        rt = self.rt
        async with rt.db.read() as conn:
            stores = await q.list_stores(conn, installed_only=True)
        queued = 0
        for store in stores:
            if not store.access_token_enc:
                continue
            known = await channels.stored(rt, store)
            read = min((c.read_at for c in known if c.read_at is not None), default=None)
            if known and read is not None and read > rt.now() - channels.MAX_AGE:
                continue
            async with rt.db.transaction() as conn:
                queued += await outbox.enqueue(conn, "refresh_channels", {}, now=rt.now(), store_id=store.id,
                                               dedupe_key=f"refresh_channels:{store.id}")
        return queued

    async def queue_outdated_scripts(self) -> int:
        """Queue a snippet update for every store whose installed tag is not the current one.

        The tag names the snippet by its content hash (``/static/inject.<hash>.js``, with
        SRI), and bcpay serves only the current file: after a release that changes it,
        stores would load a 404 until updated. One job per store and snippet version.
        """
        from bcpay import provisioning

        rt = self.rt
        async with rt.db.read() as conn:
            stores = await q.list_stores(conn, installed_only=True)
        queued = 0
        for store in stores:
            if store.script_uuid is None or not store.access_token_enc:
                continue
            digest = await provisioning.store_digest(rt, store)
            if digest == store.script_hash:
                continue
            async with rt.db.transaction() as conn:
                queued += await outbox.enqueue(conn, "refresh_script", {"digest": digest}, now=rt.now(),
                                               store_id=store.id, dedupe_key=f"refresh_script:{store.id}:{digest[:16]}")
        return queued

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set: up to ``batch`` jobs in flight, a sweep now and then.

        A slot freed by a finished job is filled at once (no waiting for the
        slowest job of a batch), so the worker keeps BigCommerce busy at the
        rate its limiter allows.
        """
        cfg = self.rt.settings.outbox
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        running: set[asyncio.Task[None]] = set()
        failures = 0  # consecutive loop errors (the database away): back off, log the first only
        while not stop.is_set():
            claimed = 0
            try:
                free = self.batch - len(running)
                if free > 0:
                    jobs = await outbox.claim(
                        self.rt.db, owner=self.owner, now=self.rt.now(),
                        lease_seconds=cfg.lease_seconds, limit=free,
                    )
                    claimed = len(jobs)
                    for job in jobs:
                        task = asyncio.create_task(self._run(job))
                        running.add(task)
                        task.add_done_callback(running.discard)
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + cfg.sweep_interval
                    await self.sweep()
            except Exception:
                failures += 1
                if failures == 1:
                    log.exception("worker loop error; retrying with backoff")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=min(LOOP_BACKOFF_MAX, cfg.poll_interval * 2**failures))
                continue
            if failures:
                log.warning("worker loop recovered after %d failed rounds", failures)
                failures = 0
            if claimed and len(running) < self.batch:
                continue  # more may be due right now
            self.wakeup.clear()
            waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(self.wakeup.wait())}
            waiters.update(running)  # type: ignore[arg-type]
            await asyncio.wait(waiters, timeout=cfg.poll_interval, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                if waiter not in running and not waiter.done():
                    waiter.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
