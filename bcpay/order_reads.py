"""One BigCommerce read per order every few seconds, and wrong cart ids refused without a call.

A payment start (the snippet), "Pay now" on the pay page and a pay link all
need the order as BigCommerce has it. Each used to read it, "Pay now" twice,
so 60 posts of one pay page cost 120 calls of the store's quota, the quota
the worker needs to mark orders paid. Here every such read goes through
:func:`read_order`:

- the ``order_reads`` row of an order holds BigCommerce's last answer and
  when it was read; within ``payments.order_read_interval`` seconds every
  process answers from it;
- past that, one caller claims the row (a conditional UPDATE, so one winner
  across processes) and reads; callers in the same process wait for that
  read (one task per order), callers in other processes wait a moment for
  its answer to land and read themselves only if it does not;
- the row also keeps a SHA-256 of the order's cart id: a start naming a
  known order with another cart id (:func:`wrong_cart`) is refused without
  asking BigCommerce, so junk for a real order never spends the quota.

When bcpay changes an order's status, or a ``store/order/statusUpdated``
webhook says it changed, the kept answer is forgotten (:func:`forget`): the
next start reads again, so "Try again" on an order just cancelled is refused.

Orders BigCommerce does not know leave no row (junk order ids are limited by
``bcpay.limits`` instead). The answer kept is what the start checks need; it
is never used to decide a write to the order (the worker reads the order
again before it changes anything).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from bcpay.clients.bigcommerce import Order
from bcpay.errors import BcpayError, NotFoundError, UpstreamNotFound
from bcpay.runtime import Runtime
from bcpay.storage import queries as q
from bcpay.storage.db import Conn
from bcpay.storage.records import StoreRecord
from bcpay.storage.schema import order_reads

# How long a caller in another process waits for a claimed read to land before reading itself.
LANDING_WAIT = 2.0
LANDING_STEP = 0.05
NEVER = datetime(2000, 1, 1, tzinfo=UTC)


class StartsLimited(BcpayError):
    """The store's budget of order reads for payment starts is spent for now (``retry_after`` seconds)."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def cart_hash(cart_id: str) -> str:
    """What is kept of a cart id: its SHA-256 (the id itself is what lets a shopper start a payment)."""
    return hashlib.sha256(cart_id.encode("utf-8", "replace")).hexdigest()


def _dump(order: Order) -> str:
    fields = dataclasses.asdict(order)
    fields["staff_notes"] = ""  # never needed to start a payment
    return json.dumps(fields, default=str, separators=(",", ":"))


def _load(text: str) -> Order:
    fields: dict[str, Any] = json.loads(text)
    fields["total_inc_tax"] = Decimal(fields["total_inc_tax"])
    fields["date_created"] = datetime.fromisoformat(fields["date_created"])
    if fields["date_modified"]:
        fields["date_modified"] = datetime.fromisoformat(fields["date_modified"])
    return Order(**fields)


async def _row(rt: Runtime, store: StoreRecord, order_id: int) -> dict[str, Any] | None:
    async with rt.db.read() as conn:
        row = (await conn.execute(select(order_reads).where(
            order_reads.c.store_id == store.id, order_reads.c.order_id == order_id))).mappings().first()
    return dict(row) if row else None


async def wrong_cart(rt: Runtime, store: StoreRecord, order_id: int, cart_id: str) -> bool:
    """True when bcpay has read this order and its cart id is another (checked in constant time)."""
    row = await _row(rt, store, order_id)
    known = row["cart_hash"] if row else None
    return bool(known) and not hmac.compare_digest(str(known), cart_hash(cart_id))


async def forget(conn: Conn, store_id: int, order_id: int) -> None:
    """bcpay changed the order, or BigCommerce says it changed: the next start reads it again.

    The cart id's hash is kept (a cart id never changes), so junk is still refused without a call.
    """
    await conn.execute(update(order_reads).where(
        order_reads.c.store_id == store_id, order_reads.c.order_id == order_id).values(read_at=NEVER, snapshot=None))


def _interval(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.settings.payments.order_read_interval)


async def read_order(
    rt: Runtime, store: StoreRecord, order_id: int, *, admit: Callable[[], float] | None = None,
    fresh: bool = False,
) -> Order:
    """The order as BigCommerce answered it at most ``payments.order_read_interval`` seconds ago.

    ``admit()`` is asked before a call to BigCommerce is made: a wait in
    seconds refuses it (:class:`StartsLimited`). Raises NotFoundError
    (``order_not_found``) for an order BigCommerce does not know. ``fresh``
    reads BigCommerce now whatever is kept (an operator's action, such as a
    pay link, must not act on a status a few seconds old) and keeps the answer.
    """
    if fresh:
        return await _call(rt, store, order_id, await _row(rt, store, order_id), release=False)
    key = (store.id, order_id)
    flight = rt.order_flights.get(key)
    if flight is None:
        flight = rt.order_flights[key] = asyncio.ensure_future(_read(rt, store, order_id, admit))
        flight.add_done_callback(lambda _f: rt.order_flights.pop(key, None))
    return await asyncio.shield(flight)


async def _read(rt: Runtime, store: StoreRecord, order_id: int, admit: Callable[[], float] | None) -> Order:
    row = await _row(rt, store, order_id)
    now = rt.now()
    fresh_after = now - _interval(rt)
    if row is not None and row["read_at"] > fresh_after:
        if row["snapshot"]:
            return _load(row["snapshot"])
        landed = await _landed(rt, store, order_id, row["read_at"])  # another process is reading it now
        if landed is not None:
            return landed
    if row is not None:
        async with rt.db.transaction(durable=False) as conn:
            claimed = await conn.execute(update(order_reads).where(
                order_reads.c.store_id == store.id, order_reads.c.order_id == order_id,
                order_reads.c.read_at <= fresh_after,
            ).values(read_at=now, snapshot=None))
        if not claimed.rowcount:
            landed = await _landed(rt, store, order_id, now - _interval(rt))
            if landed is not None:
                return landed
    if admit is not None and (wait := admit()):
        await _release(rt, store, order_id, row)
        raise StartsLimited("too many payment starts for this store; try again", retry_after=wait)
    return await _call(rt, store, order_id, row, release=True)


async def _call(rt: Runtime, store: StoreRecord, order_id: int, row: dict[str, Any] | None, *, release: bool) -> Order:
    """Read the order from BigCommerce and keep the answer (``release``: give back a claim on failure)."""
    try:
        order = await rt.bigcommerce(store).get_order(order_id)
    except UpstreamNotFound:
        if release:
            await _release(rt, store, order_id, row)
        raise NotFoundError("no such order", code="order_not_found") from None
    except BaseException:
        if release:
            await _release(rt, store, order_id, row)
        raise
    values = {"snapshot": _dump(order), "read_at": rt.now(),
              "cart_hash": cart_hash(order.cart_id) if order.cart_id else None}
    async with rt.db.transaction(durable=False) as conn:
        if row is None and await q.insert_ignore(conn, order_reads, store_id=store.id, order_id=order_id, **values):
            return order
        await conn.execute(update(order_reads).where(
            order_reads.c.store_id == store.id, order_reads.c.order_id == order_id).values(**values))
    return order


async def _landed(rt: Runtime, store: StoreRecord, order_id: int, since: datetime) -> Order | None:
    """Wait a moment for a read claimed elsewhere to store its answer."""
    for _ in range(int(LANDING_WAIT / LANDING_STEP)):
        await asyncio.sleep(LANDING_STEP)
        row = await _row(rt, store, order_id)
        if row is None or row["read_at"] < since:
            return None  # given back: read it here
        if row["snapshot"]:
            return _load(row["snapshot"])
    return None


async def _release(rt: Runtime, store: StoreRecord, order_id: int, row: dict[str, Any] | None) -> None:
    """A claimed read that did not happen or failed: the next caller reads at once."""
    if row is None:
        return
    async with rt.db.transaction(durable=False) as conn:
        await conn.execute(update(order_reads).where(
            order_reads.c.store_id == store.id, order_reads.c.order_id == order_id,
            order_reads.c.snapshot.is_(None)).values(read_at=NEVER))
