"""Reconcile: compare BigCommerce orders, bcpay's attempts and CeleryPay's truth.

Two listings per store, both streamed page by page from BigCommerce:

- orders in Awaiting Payment (7) with our method: their attempts in the
  database and, for open attempts, the payment at CeleryPay;
- orders BigCommerce shows paid (``policy.paid_status_id``) with our method
  but with no captured attempt.

Each mismatch is a :class:`Finding` (kinds in :data:`KINDS`); the report also
counts the orders of the period that the unpaid hold cancelled (:mod:`bcpay.unpaid`). ``fix=True``
applies CeleryPay's state through :func:`bcpay.payflow.apply_remote`, the same
idempotent path notifications take, so running it while the server runs, or
twice, changes nothing more; the order updates themselves are outbox jobs
that the worker (``bcpay serve`` / ``bcpay worker``, or :func:`run_jobs`) runs.

Memory stays flat: orders pass through a bounded queue, and findings go to
temporary files as they are found (:class:`Spool`); only their counts stay in
memory. BigCommerce calls share the store's :class:`~bcpay.clients.ratelimit.RateLimiter`
(``rt.limiters``), so any concurrency runs at the quota without 429s;
CeleryPay calls go through a :class:`Pacer` below its 100 requests/s per merchant.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy import select

from bcpay import channels, payflow, rules, unpaid
from bcpay.clients.bigcommerce import Order
from bcpay.clients.celerypay import CeleryPayClient, Payment
from bcpay.effects import Worker
from bcpay.errors import BcpayError, ConflictError, InvalidInputError
from bcpay.money import to_minor
from bcpay.runtime import Runtime
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import payments

KINDS = (
    "paid_not_applied",  # paid at CeleryPay (or recorded paid) but the order still awaits payment
    "paid_without_payment",  # BigCommerce shows it paid, no OKCloud Pay attempt captured
    "amount_mismatch",  # captured amount or currency differs from what the attempt asked
    "double_payment",  # more than one captured attempt for one order
    "expired",  # pending locally, expired at CeleryPay
    "failed",  # pending locally, failed or cancelled at CeleryPay
    "never_started",  # after payments.unstarted_after, no attempt, or the latest never reached CeleryPay
    "pending",  # an open payment the shopper may still complete
    "error",  # this order could not be checked (the detail says why); the run goes on
)
PAGE = 250  # BigCommerce's largest v2 page
BATCH = 50  # orders whose attempts are read in one query; small enough to keep memory flat
CELERYPAY_RATE = 100.0  # requests per second per merchant (contract, "Rate limit")

Progress = Callable[[int, int, bool], None]  # (orders checked, orders listed, listing finished)


@dataclass(frozen=True)
class Finding:
    """One order whose state needs a look, or was fixed."""

    kind: str
    store_hash: str
    order_id: int
    detail: str
    celerypay_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    pay_link: str | None = None
    fixed: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON for ``bcpay reconcile --json``."""
        return {
            "kind": self.kind, "store_hash": self.store_hash, "order_id": self.order_id, "detail": self.detail,
            "celerypay_id": self.celerypay_id, "amount": self.amount, "currency": self.currency,
            "pay_link": self.pay_link, "fixed": self.fixed,
        }


class Spool:
    """Findings kept in unnamed temporary files, one per kind, instead of in memory.

    A reconcile over tens of thousands of orders may find as many; keeping
    them in lists made memory grow with the store. Read back by kind, each
    kind in the order found.
    """

    def __init__(self) -> None:
        self._files: dict[str, IO[str]] = {}
        # A report nobody closes (a library caller) still frees its files when collected.
        self._finalizer = weakref.finalize(self, _close_all, self._files)

    def add(self, finding: Finding) -> None:
        """Append one finding."""
        spool = self._files.get(finding.kind)
        if spool is None:
            spool = self._files[finding.kind] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()
        spool.write(json.dumps(finding.to_json(), separators=(",", ":")) + "\n")

    def __iter__(self) -> Iterator[Finding]:
        for kind in KINDS:
            spool = self._files.get(kind)
            if spool is None:
                continue
            spool.flush()
            spool.seek(0)
            for line in spool:
                yield Finding(**json.loads(line))
            spool.seek(0, 2)  # back to the end: more may be added

    def close(self) -> None:
        """Delete the files (they have no name; closing frees the space)."""
        self._finalizer()


def _close_all(files: dict[str, IO[str]]) -> None:
    for spool in files.values():
        spool.close()
    files.clear()


@dataclass
class Report:
    """What one store's reconcile found: counts in memory, the findings themselves spooled."""

    store_hash: str
    since: datetime
    checked: int = 0
    fixed: int = 0  # findings whose CeleryPay state was applied in this run
    cancelled_unpaid: int = 0  # orders of the period the unpaid hold cancelled (bcpay.unpaid), not findings
    _counts: Counter[str] = field(default_factory=Counter, repr=False)
    _spool: Spool = field(default_factory=Spool, repr=False)

    def add(self, finding: Finding) -> None:
        """Record one finding."""
        self._counts[finding.kind] += 1
        self.fixed += finding.fixed
        self._spool.add(finding)

    @property
    def counts(self) -> dict[str, int]:
        """Findings per kind, in :data:`KINDS` order."""
        return {kind: self._counts[kind] for kind in KINDS if self._counts[kind]}

    def iter_findings(self) -> Iterator[Finding]:
        """Every finding, by kind (:data:`KINDS` order), each kind in the order found; streamed from disk."""
        return iter(self._spool)

    @property
    def findings(self) -> list[Finding]:
        """Every finding as a list (small reports; the CLI streams with :meth:`iter_findings`)."""
        return list(self._spool)

    def close(self) -> None:
        """Free the spooled findings."""
        self._spool.close()

    def json_head(self) -> dict[str, Any]:
        """The report without its findings."""
        return {
            "store_hash": self.store_hash, "since": self.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "checked": self.checked, "fixed": self.fixed, "counts": self.counts,
            "cancelled_unpaid": self.cancelled_unpaid,
        }

    def to_json(self) -> dict[str, Any]:
        """JSON for ``bcpay reconcile --json`` (in memory; the CLI writes it streamed)."""
        return {**self.json_head(), "findings": [f.to_json() for f in self.iter_findings()]}


class Pacer:
    """Spaces calls to at most ``rate`` per second, shared by every task of one merchant."""

    def __init__(
        self, rate: float, *, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise InvalidInputError("rate must be positive")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    async def wait(self) -> None:
        """Take the next free slot, sleeping until it comes."""
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await self._sleep(slot - now)


@dataclass
class _Context:
    rt: Runtime
    store: StoreRecord
    cp: CeleryPayClient
    pacer: Pacer
    fix: bool
    unstarted_before: datetime

    def finding(self, kind: str, order: Order, detail: str, **extra: Any) -> Finding:
        return Finding(kind, self.store.store_hash, order.id, detail, **extra)

    async def remote(self, attempt: PaymentRecord) -> Payment | None:
        """CeleryPay's view of an attempt (None: CeleryPay never created it)."""
        await self.pacer.wait()
        if attempt.celerypay_id:
            return await self.cp.get_payment(attempt.celerypay_id)
        return await self.cp.find_payment(attempt.merchant_order_no)

    async def apply(self, remote: Payment) -> bool:
        """Apply CeleryPay's state when fixing; True when it changed something."""
        if not self.fix:
            return False
        result = await payflow.apply_remote(self.rt, self.store, remote, source="reconcile")
        return result.outcome not in ("stale", "unknown")


async def attempts_of(rt: Runtime, store: StoreRecord, order_ids: list[int]) -> dict[int, list[PaymentRecord]]:
    """The attempts of many orders in one query (one per listed page, not one per order)."""
    found: dict[int, list[PaymentRecord]] = {order_id: [] for order_id in order_ids}
    if not order_ids:
        return found
    query = (
        select(payments)
        .where(payments.c.store_id == store.id, payments.c.order_id.in_(order_ids))
        .order_by(payments.c.order_id, payments.c.attempt_no)
    )
    async with rt.db.read() as conn:
        for row in (await conn.execute(query)).mappings():
            found[row["order_id"]].append(PaymentRecord.from_row(row))
    return found


def _ask_celerypay(attempt: PaymentRecord) -> bool:
    """Open attempts, and unpaid ones whose state bcpay inferred without CeleryPay's word.

    An attempt CeleryPay itself called failed, expired or cancelled is final
    (contract state machine); one bcpay marked failed without ever seeing its
    payment id (a creation thought lost) may still have been paid.
    """
    return attempt.status in rules.OPEN or (attempt.status in rules.UNPAID_FINAL and attempt.celerypay_id is None)


async def check_awaiting(ctx: _Context, order: Order, attempts: list[PaymentRecord]) -> list[Finding]:
    """An order in Awaiting Payment: is it really unpaid?"""
    if not attempts:
        if order.date_created >= ctx.unstarted_before:
            return []
        return [await never_started(ctx, order, "no payment was ever started (snippet blocked or tab closed)")]
    remote = {a.id: await ctx.remote(a) for a in attempts if _ask_celerypay(a)}
    found: list[Finding] = []
    captured = [a for a in attempts if a.status in rules.PAID]
    newly = [(a, r) for a in attempts if (r := remote.get(a.id)) is not None and r.status in rules.PAID]
    if len(captured) + len(newly) > 1:
        ids = [a.celerypay_id for a in captured] + [r.id for _, r in newly]
        found.append(ctx.finding("double_payment", order, f"{len(ids)} captured payments: {', '.join(map(str, ids))}",
                                 currency=order.currency))
    for attempt, payment in newly:
        check = rules.check_capture(attempt, payment, ctx.store.store_hash)
        kind = "paid_not_applied" if check.ok else "amount_mismatch"
        detail = "paid at CeleryPay, not applied yet" if check.ok else check.reason
        found.append(ctx.finding(kind, order, detail, celerypay_id=payment.id, amount=payment.paid_amount,
                                 currency=payment.currency, fixed=await ctx.apply(payment)))
    for attempt in captured:
        if attempt.outcome == "applied":
            found.append(ctx.finding("paid_not_applied", order,
                                     "recorded as paid; its order update waits in the outbox (`bcpay jobs list`)",
                                     celerypay_id=attempt.celerypay_id, amount=attempt.paid_amount,
                                     currency=attempt.currency))
        elif attempt.outcome == "mismatch":
            found.append(ctx.finding("amount_mismatch", order, "captured amount differs; waiting for manual review",
                                     celerypay_id=attempt.celerypay_id, amount=attempt.paid_amount,
                                     currency=attempt.currency))
    for attempt in attempts:
        maybe = remote.get(attempt.id)
        if maybe is None or maybe.status in rules.PAID:
            continue
        payment = maybe
        if payment.status == rules.PENDING:
            # Still "creating" here: CeleryPay created it and its answer was lost; a fix records it.
            fixed = attempt.status == rules.CREATING and await ctx.apply(payment)
            found.append(ctx.finding("pending", order, f"open until {payment.expires_at:%Y-%m-%d %H:%M} UTC"
                                     if payment.expires_at else "open", celerypay_id=payment.id,
                                     amount=payment.amount, currency=payment.currency, fixed=fixed))
        elif attempt.status in rules.OPEN:
            kind = "expired" if payment.status == rules.EXPIRED else "failed"
            found.append(ctx.finding(kind, order, f"{payment.status} at CeleryPay, pending in bcpay",
                                     celerypay_id=payment.id, amount=payment.amount, currency=payment.currency,
                                     fixed=await ctx.apply(payment)))
    latest = attempts[-1]
    if (not captured and not newly and latest.id in remote and remote[latest.id] is None
            and payflow.never_created(latest) and order.date_created < ctx.unstarted_before):
        found.append(await not_created(ctx, order, latest))
    return found


async def never_started(ctx: _Context, order: Order, why: str, *, fixed: bool = False) -> Finding:
    """A ``never_started`` finding: the shopper never reached a cashier page; a fix run adds a pay link."""
    # A link may open an attempt row: only a --fix run writes; a report says how to get one.
    link = await payflow.pay_link(ctx.rt, ctx.store.store_hash, order.id) if ctx.fix else None
    detail = why
    if link is None:
        detail += f"; a link for the shopper: `bcpay pay-link {order.id} --store {ctx.store.store_hash}`"
    return ctx.finding("never_started", order, detail, amount=to_minor(order.total_inc_tax, order.currency),
                       currency=order.currency, pay_link=link, fixed=fixed)


async def not_created(ctx: _Context, order: Order, attempt: PaymentRecord) -> Finding:
    """The order's latest attempt never reached CeleryPay (no payment by its merchant order number).

    Reported on every run until the order is paid, cancelled or a payment is
    created: only its attempt row says the order was ever started. A fix run
    gives a stale ``creating`` attempt up as ``not_created`` (as a status poll
    does), which frees the order for a new attempt, and adds the pay link.
    """
    fixed = ctx.fix and await payflow.give_up_creation(ctx.rt, attempt)
    why = (f"attempt {attempt.merchant_order_no} never reached CeleryPay "
           "(bcpay stopped before CeleryPay answered, or its pay link was not opened)")
    return await never_started(ctx, order, why, fixed=fixed)


async def check_paid(ctx: _Context, order: Order, attempts: list[PaymentRecord]) -> list[Finding]:
    """An order BigCommerce shows paid: did an OKCloud Pay payment pay it?"""
    if any(a.status in rules.PAID for a in attempts):
        return []
    for attempt in attempts:
        if not _ask_celerypay(attempt):
            continue
        payment = await ctx.remote(attempt)
        if payment is not None and payment.status in rules.PAID:
            return [ctx.finding("paid_not_applied", order, "paid at CeleryPay; bcpay had not recorded it",
                                celerypay_id=payment.id, amount=payment.paid_amount, currency=payment.currency,
                                fixed=await ctx.apply(payment))]
    detail = "no OKCloud Pay payment captured" + (f" ({len(attempts)} attempt(s) unpaid)" if attempts else "")
    return [ctx.finding("paid_without_payment", order, detail, currency=order.currency,
                        amount=to_minor(order.total_inc_tax, order.currency))]


async def reconcile(
    rt: Runtime,
    store: StoreRecord,
    *,
    since: datetime,
    fix: bool = False,
    concurrency: int = 8,
    on_progress: Progress | None = None,
    celerypay_rate: float = CELERYPAY_RATE,
) -> Report:
    """Reconcile one store's orders created since ``since``; see the module docstring."""
    if concurrency < 1:
        raise InvalidInputError("concurrency must be at least 1", code="invalid_concurrency")
    if not store.has_credentials:
        raise ConflictError(f"store {store.store_hash} is not installed and configured", code="store_not_configured")
    policy = rt.policy(store)
    # Any channel's own method names count (multi-storefront: a channel may name the method differently).
    known = await channels.known(rt, store)
    accepted = {c.channel_id: set(channels.policy(rt, store, c).accepted_methods) for c in known}
    bc = rt.bigcommerce(store)
    ctx = _Context(rt, store, rt.celerypay(store), Pacer(celerypay_rate), fix,
                   rt.now() - timedelta(seconds=rt.settings.payments.unstarted_after))
    report = Report(store.store_hash, since, cancelled_unpaid=await unpaid.count_since(rt, store, since))
    queue: asyncio.Queue[tuple[str, Order, list[PaymentRecord]] | None] = asyncio.Queue(maxsize=concurrency * 2)
    listed = 0
    listing_done = False

    def progress() -> None:
        if on_progress is not None:
            on_progress(report.checked, listed, listing_done)

    async def produce() -> None:
        nonlocal listed, listing_done

        async def hand_over(kind: str, batch: list[Order]) -> None:
            nonlocal listed
            attempts = await attempts_of(rt, store, [o.id for o in batch])
            for order in batch:
                listed += 1
                await queue.put((kind, order, attempts[order.id]))

        for kind, status in (("awaiting", rules.STATUS_AWAITING_PAYMENT), ("paid", policy.paid_status_id)):
            batch: list[Order] = []
            async for order in bc.iter_orders(status_id=status, min_date_created=since, page_size=PAGE):
                if order.payment_method in accepted.get(order.channel_id, set(policy.accepted_methods)):
                    batch.append(order)
                if len(batch) >= BATCH:
                    await hand_over(kind, batch)
                    batch = []
            await hand_over(kind, batch)
        listing_done = True
        progress()
        for _ in range(concurrency):  # one stop sign per consumer; on failure the group cancels them
            await queue.put(None)

    async def consume() -> None:
        while (item := await queue.get()) is not None:
            kind, order, attempts = item
            try:
                found = await (check_awaiting if kind == "awaiting" else check_paid)(ctx, order, attempts)
            except BcpayError as exc:
                found = [ctx.finding("error", order, exc.message)]
            for finding in found:
                report.add(finding)
            report.checked += 1
            progress()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(concurrency):
                group.create_task(consume())
    except BaseExceptionGroup as failed:
        report.close()
        raise failed.exceptions[0] from None
    return report


async def run_jobs(rt: Runtime) -> int:
    """Drain the outbox in this process (for operators who run no server); returns jobs run."""
    worker = Worker(rt)
    total = 0
    while ran := await worker.run_once():
        total += ran
    return total
