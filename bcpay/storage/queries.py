"""The queries bcpay runs, as small functions over an open connection.

Callers own the transaction (``async with db.transaction() as conn``), so a
state change and the outbox jobs it causes commit together or not at all.

The statements of the hot paths (notifications, status polls, start of a
payment, outbox jobs) are built once at import as :class:`Prepared`, with
``bindparam`` placeholders, and run with their values as parameters
(:meth:`Conn.run`). Building a statement and computing its cache key cost
SQLAlchemy about 60 microseconds each time, twice what executing it costs,
and the notification profile showed that construction as a fifth of the
request. An ``UPDATE`` built without ``.values()`` sets the columns named by
the parameters; its ``WHERE`` placeholders start with an underscore so that
they never collide with a column.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bcpay.errors import ConflictError, NotFoundError
from bcpay.storage.db import Conn, Prepared
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import (
    OPEN_STATUSES,
    REFUND_IN_DOUBT,
    REFUND_IN_DOUBT_ANOMALY,
    anomalies,
    audit_log,
    bc_quota,
    events,
    payments,
    refunds,
    snippet_versions,
    stores,
    used_jwts,
    webhook_receipts,
)


async def insert_ignore(conn: Conn, table: Table, **values: Any) -> bool:
    """``INSERT ... ON CONFLICT DO NOTHING``; False when the row was already there.

    One statement instead of a savepoint, insert and release: the hot paths
    (notifications, outbox) dedupe this way. The statement is built once per
    table and dialect and the values go as parameters, so SQLAlchemy neither
    rebuilds nor re-keys it each time (the hot-path profile showed that
    construction costing more than the insert).
    """
    result = await conn.run(_insert_ignore(conn.dialect_name, table), values)
    return bool(result.rowcount)


@functools.cache
def _insert_ignore(dialect: str, table: Table) -> Prepared:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return Prepared(pg_insert(table).on_conflict_do_nothing())
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return Prepared(sqlite_insert(table).on_conflict_do_nothing())


def _only_columns(table: Table, values: dict[str, Any]) -> None:
    """Refuse a name that is no column: a prebuilt UPDATE would otherwise just leave it out."""
    unknown = values.keys() - table.c.keys()
    if unknown:
        raise TypeError(f"not columns of {table.name}: {sorted(unknown)}")


# --- stores ------------------------------------------------------------------


async def get_store(conn: Conn, store_hash: str, *, lock: bool = False) -> StoreRecord | None:
    """The store with this hash, or None; ``lock`` holds its row until the transaction ends (PostgreSQL)."""
    row = (await conn.run(_STORE_BY_HASH_LOCKED if lock else _STORE_BY_HASH, {"store_hash": store_hash})).first()
    return StoreRecord.from_row(row) if row else None


_BY_HASH = select(stores).where(stores.c.store_hash == bindparam("store_hash"))
_STORE_BY_HASH = Prepared(_BY_HASH)
_STORE_BY_HASH_LOCKED = Prepared(_BY_HASH.with_for_update())
_STORE_BY_ID = Prepared(select(stores).where(stores.c.id == bindparam("store_id")))
_UPDATE_STORE = Prepared(update(stores).where(stores.c.id == bindparam("_store_id")))


async def require_store(conn: Conn, store_hash: str, *, lock: bool = False) -> StoreRecord:
    """The store with this hash, or NotFoundError (``lock``: see :func:`get_store`)."""
    store = await get_store(conn, store_hash, lock=lock)
    if store is None:
        raise NotFoundError(f"unknown store {store_hash!r}", code="unknown_store")
    return store


async def get_store_by_id(conn: Conn, store_id: int) -> StoreRecord:
    """The store with this primary key."""
    row = (await conn.run(_STORE_BY_ID, {"store_id": store_id})).one()
    return StoreRecord.from_row(row)


async def list_stores(conn: Conn, *, installed_only: bool = False) -> list[StoreRecord]:
    """Every store, by hash."""
    query = select(stores).order_by(stores.c.store_hash)
    if installed_only:
        query = query.where(stores.c.installed.is_(True))
    return [StoreRecord.from_row(r) for r in (await conn.execute(query)).mappings()]


async def upsert_store(conn: Conn, store_hash: str, now: datetime, **values: Any) -> StoreRecord:
    """Create the store or update the given columns."""
    existing = await get_store(conn, store_hash)
    if existing is None:
        values.setdefault("source", "api_account")
        await conn.execute(
            insert(stores).values(store_hash=store_hash, installed_at=now, updated_at=now, **values)
        )
    else:
        await conn.execute(
            update(stores).where(stores.c.id == existing.id).values(updated_at=now, **values)
        )
    return await require_store(conn, store_hash)


async def update_store(conn: Conn, store_id: int, now: datetime, **values: Any) -> None:
    """Update some columns of one store."""
    _only_columns(stores, values)
    await conn.run(_UPDATE_STORE, {"_store_id": store_id, "updated_at": now, **values})


# --- payments ------------------------------------------------------------------


async def get_payment_by_token(conn: Conn, token: str) -> PaymentRecord | None:
    """The attempt with this public token."""
    row = (await conn.run(_PAYMENT_BY_TOKEN, {"token": token})).first()
    return PaymentRecord.from_row(row) if row else None


_BY_ID = select(payments).where(payments.c.id == bindparam("payment_id"))
_ATTEMPTS = (
    select(payments)
    .where(payments.c.store_id == bindparam("store_id"), payments.c.order_id == bindparam("order_id"))
    .order_by(payments.c.attempt_no)
)
_PAYMENT_BY_TOKEN = Prepared(select(payments).where(payments.c.token == bindparam("token")))
_PAYMENT_BY_ID = Prepared(_BY_ID)
_PAYMENT_BY_ID_LOCKED = Prepared(_BY_ID.with_for_update())
_PAYMENT_BY_CELERYPAY_ID = Prepared(select(payments).where(payments.c.celerypay_id == bindparam("celerypay_id")))
_PAYMENT_BY_ORDER_NO = Prepared(
    select(payments).where(payments.c.merchant_order_no == bindparam("merchant_order_no"))
)
_ORDER_ATTEMPTS = Prepared(_ATTEMPTS)
_ORDER_ATTEMPTS_LOCKED = Prepared(_ATTEMPTS.with_for_update())
_INSERT_PAYMENT = Prepared(insert(payments).returning(payments.c.id))
_UPDATE_PAYMENT = Prepared(
    update(payments).where(payments.c.id == bindparam("_payment_id")).returning(*payments.c)
)


async def get_payment(conn: Conn, payment_id: int, *, lock: bool = False) -> PaymentRecord:
    """The attempt with this primary key, optionally locked for update (PostgreSQL)."""
    query = _PAYMENT_BY_ID_LOCKED if lock else _PAYMENT_BY_ID
    return PaymentRecord.from_row((await conn.run(query, {"payment_id": payment_id})).one())


async def find_payment(
    conn: Conn,
    *,
    celerypay_id: str | None = None,
    merchant_order_no: str | None = None,
) -> PaymentRecord | None:
    """The attempt with this CeleryPay id or merchant order number."""
    if celerypay_id is not None:
        result = await conn.run(_PAYMENT_BY_CELERYPAY_ID, {"celerypay_id": celerypay_id})
    elif merchant_order_no is not None:
        result = await conn.run(_PAYMENT_BY_ORDER_NO, {"merchant_order_no": merchant_order_no})
    else:  # pragma: no cover - programming error
        raise TypeError("give celerypay_id or merchant_order_no")
    row = result.first()
    return PaymentRecord.from_row(row) if row else None


async def order_attempts(
    conn: Conn, store_id: int, order_id: int, *, lock: bool = False
) -> list[PaymentRecord]:
    """Every attempt of one order, oldest first; ``lock`` takes their rows FOR UPDATE."""
    query = _ORDER_ATTEMPTS_LOCKED if lock else _ORDER_ATTEMPTS
    rows = await conn.run(query, {"store_id": store_id, "order_id": order_id})
    return [PaymentRecord.from_row(r) for r in rows]


async def insert_payment(conn: Conn, **values: Any) -> PaymentRecord | None:
    """Insert an attempt; None when a constraint (one open attempt per order) refuses it."""
    _only_columns(payments, values)
    try:
        async with conn.savepoint():
            new_id = (await conn.run(_INSERT_PAYMENT, values)).one()["id"]
    except IntegrityError:
        return None
    return await get_payment(conn, new_id)


async def update_payment(conn: Conn, payment_id: int, **values: Any) -> PaymentRecord:
    """Update columns of one attempt and return it (one statement, RETURNING)."""
    _only_columns(payments, values)
    result = await conn.run(_UPDATE_PAYMENT, {"_payment_id": payment_id, **values})
    return PaymentRecord.from_row(result.one())


async def update_payment_if(conn: Conn, payment_id: int, expected_status: str, **values: Any) -> bool:
    """Update columns of one attempt only while its status is ``expected_status``; False if it moved on."""
    _only_columns(payments, values)
    result = await conn.run(_UPDATE_PAYMENT_IF, {"_payment_id": payment_id, "_status": expected_status, **values})
    return bool(result.rowcount)


_UPDATE_PAYMENT_IF = Prepared(
    update(payments).where(payments.c.id == bindparam("_payment_id"), payments.c.status == bindparam("_status"))
)


async def restamp_creating(conn: Conn, payment_id: int, *, now: datetime) -> bool:
    """Set a ``creating`` attempt's updated_at to ``now`` (its creation starts); False if it moved on."""
    result = await conn.run(_RESTAMP_CREATING, {"_payment_id": payment_id, "updated_at": now})
    return bool(result.rowcount)


_RESTAMP_CREATING = Prepared(
    update(payments).where(payments.c.id == bindparam("_payment_id"), payments.c.status == "creating")
)


async def give_up_creating(
    conn: Conn, payment_id: int, *, seen: datetime, now: datetime, failure_code: str, failure_message: str
) -> bool:
    """Fail a ``creating`` attempt whose updated_at is still ``seen``; False if it moved on or was touched."""
    result = await conn.run(_GIVE_UP_CREATING, {
        "_payment_id": payment_id, "_seen": seen, "status": "failed", "failure_code": failure_code,
        "failure_message": failure_message, "updated_at": now,
    })
    return bool(result.rowcount)


_GIVE_UP_CREATING = Prepared(
    update(payments).where(payments.c.id == bindparam("_payment_id"), payments.c.status == "creating",
                           payments.c.updated_at == bindparam("_seen", type_=payments.c.updated_at.type))
)


async def claim_check(conn: Conn, payment_id: int, *, now: datetime, checked_before: datetime) -> bool:
    """Record a look at CeleryPay for this attempt unless one was made since ``checked_before``.

    True when this caller won the check (processes polling the same payment
    race here, and only the winner asks CeleryPay).
    """
    result = await conn.run(
        _CLAIM_CHECK, {"_payment_id": payment_id, "_before": checked_before, "last_checked_at": now}
    )
    return bool(result.rowcount)


_CLAIM_CHECK = Prepared(update(payments).where(
    payments.c.id == bindparam("_payment_id"),
    payments.c.last_checked_at.is_(None) | (payments.c.last_checked_at < bindparam("_before")),
))


async def list_payments(
    conn: Conn,
    *,
    store_id: int | None = None,
    status: Sequence[str] | None = None,
    expires_before: datetime | None = None,
    limit: int = 50,
    after_id: int = 0,
) -> list[PaymentRecord]:
    """Recent attempts, newest first unless paging with ``after_id``."""
    conds = [payments.c.id > after_id]
    if store_id is not None:
        conds.append(payments.c.store_id == store_id)
    if status:
        conds.append(payments.c.status.in_(list(status)))
    if expires_before is not None:
        conds.append(payments.c.expires_at < expires_before)
    order = payments.c.id.asc() if after_id or expires_before else payments.c.id.desc()
    rows = await conn.execute(select(payments).where(and_(*conds)).order_by(order).limit(limit))
    return [PaymentRecord.from_row(r) for r in rows.mappings()]


def open_statuses() -> tuple[str, ...]:
    """Attempt statuses that still hold the one-open-attempt slot."""
    return OPEN_STATUSES


# --- events ------------------------------------------------------------------------


async def record_event(
    conn: Conn,
    *,
    event_id: str,
    store_id: int,
    type_: str,
    celerypay_payment_id: str | None,
    raw_body: str,
    outcome: str,
    now: datetime,
) -> bool:
    """Store a notification once per store; False when this store already has this event id."""
    return await insert_ignore(
        conn,
        events,
        event_id=event_id,
        store_id=store_id,
        type=type_,
        celerypay_payment_id=celerypay_payment_id,
        raw_body=raw_body,
        outcome=outcome,
        received_at=now,
    )


async def set_event_outcome(conn: Conn, event_id: str, outcome: str, *, store_id: int) -> None:
    """Record what applying one store's event did."""
    await conn.run(_EVENT_OUTCOME, {"_event_id": event_id, "_store_id": store_id, "outcome": outcome})


_EVENT_OUTCOME = Prepared(update(events).where(events.c.event_id == bindparam("_event_id"),
                                               events.c.store_id == bindparam("_store_id")))


async def find_events(conn: Conn, event_id: str, *, store_id: int | None = None) -> list[dict[str, Any]]:
    """The stored rows with this event id (one per store at most), oldest first, as dicts."""
    query = select(events).where(events.c.event_id == event_id).order_by(events.c.id)
    if store_id is not None:
        query = query.where(events.c.store_id == store_id)
    return [dict(row) for row in (await conn.execute(query)).mappings()]


async def list_events(
    conn: Conn, *, store_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Recent events, newest first."""
    query = select(events).order_by(events.c.id.desc()).limit(limit)
    if store_id is not None:
        query = query.where(events.c.store_id == store_id)
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def prune_events(conn: Conn, before: datetime) -> int:
    """Delete events received before ``before``; returns how many."""
    result = await conn.execute(events.delete().where(events.c.received_at < before))
    return int(result.rowcount or 0)


# --- audit and anomalies -----------------------------------------------------


async def audit(
    conn: Conn,
    *,
    store_id: int,
    order_id: int,
    action: str,
    now: datetime,
    payment_id: int | None = None,
    from_status_id: int | None = None,
    to_status_id: int | None = None,
    detail: str = "",
) -> None:
    """Append one line to the audit log of order changes bcpay made."""
    await conn.run(
        _AUDIT_INSERT,
        {
            "store_id": store_id, "order_id": order_id, "payment_id": payment_id,
            "from_status_id": from_status_id, "to_status_id": to_status_id, "action": action,
            "detail": detail, "created_at": now,
        },
    )


_AUDIT_INSERT = Prepared(insert(audit_log))  # built once; the values go as parameters (a hot path)


async def audit_entries(conn: Conn, store_id: int, order_id: int) -> list[dict[str, Any]]:
    """The audit log of one order, oldest first."""
    rows = await conn.execute(
        select(audit_log)
        .where(audit_log.c.store_id == store_id, audit_log.c.order_id == order_id)
        .order_by(audit_log.c.id)
    )
    return [dict(r) for r in rows.mappings()]


async def has_audit(conn: Conn, store_id: int, order_id: int, action: str) -> bool:
    """Whether bcpay recorded ``action`` on this order (e.g. ``cancel_unpaid``: cancelled for non-payment)."""
    query = select(audit_log.c.id).where(
        audit_log.c.store_id == store_id, audit_log.c.order_id == order_id, audit_log.c.action == action
    ).limit(1)
    return (await conn.execute(query)).first() is not None


async def record_anomaly(
    conn: Conn,
    *,
    store_id: int,
    order_id: int,
    payment_id: int,
    kind: str,
    amount: int,
    currency: str,
    detail: str,
    now: datetime,
) -> bool:
    """Record an anomaly once per (payment, kind); False if it was already there."""
    return await insert_ignore(
        conn,
        anomalies,
        store_id=store_id,
        order_id=order_id,
        payment_id=payment_id,
        kind=kind,
        amount=amount,
        currency=currency,
        detail=detail,
        created_at=now,
    )


async def list_anomalies(
    conn: Conn, *, store_id: int | None = None, state: str | None = "open"
) -> list[dict[str, Any]]:
    """Anomalies, newest first."""
    query = select(anomalies).order_by(anomalies.c.id.desc())
    if store_id is not None:
        query = query.where(anomalies.c.store_id == store_id)
    if state is not None:
        query = query.where(anomalies.c.state == state)
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def reopen_anomaly(conn: Conn, *, payment_id: int, kind: str, amount: int, detail: str) -> None:
    """Open the payment's anomaly of ``kind`` again with today's amount, its detail added to the old one."""
    await conn.execute(
        update(anomalies)
        .where(anomalies.c.payment_id == payment_id, anomalies.c.kind == kind)
        .values(state="open", resolved_at=None, amount=amount, detail=anomalies.c.detail + " | " + detail)
    )


async def resolve_anomaly_of(conn: Conn, payment_id: int, kind: str, now: datetime, note: str) -> bool:
    """Mark the payment's open anomaly of ``kind`` resolved (its cause is gone); False when none was open."""
    result = await conn.execute(
        update(anomalies)
        .where(anomalies.c.payment_id == payment_id, anomalies.c.kind == kind, anomalies.c.state == "open")
        .values(state="resolved", resolved_at=now, detail=anomalies.c.detail + " | " + note)
    )
    return bool(result.rowcount)


async def refund_by_celerypay_id(conn: Conn, payment_id: int, celerypay_id: str) -> dict[str, Any] | None:
    """The payment's refund row with CeleryPay's refund id, or None."""
    row = (await conn.execute(select(refunds).where(
        refunds.c.payment_id == payment_id, refunds.c.celerypay_id == celerypay_id))).mappings().first()
    return dict(row) if row else None


async def clear_refund_doubt(conn: Conn, payment_id: int, now: datetime, note: str) -> None:
    """Resolve the payment's ``refund_in_doubt`` anomaly once none of its refunds is in doubt any more."""
    left = await count(conn, refunds, refunds.c.payment_id == payment_id, refunds.c.status == REFUND_IN_DOUBT)
    if not left:
        await resolve_anomaly_of(conn, payment_id, REFUND_IN_DOUBT_ANOMALY, now, note)


async def resolve_anomaly(conn: Conn, anomaly_id: int, now: datetime, note: str) -> bool:
    """Mark an anomaly resolved; False when it does not exist or was resolved.

    A ``refund_in_doubt`` one is refused while a refund of its payment is still in doubt: it is what
    points at that refund (its amount held until CeleryPay or ``bcpay refund-resolve`` settles it).
    """
    found = (await conn.execute(select(anomalies.c.kind, anomalies.c.payment_id)
                                .where(anomalies.c.id == anomaly_id))).first()
    if found is not None and found.kind == REFUND_IN_DOUBT_ANOMALY and await count(
            conn, refunds, refunds.c.payment_id == found.payment_id, refunds.c.status == REFUND_IN_DOUBT):
        raise ConflictError("a refund of this payment is still in doubt: settle it with `bcpay refund-resolve` "
                            "(found at CeleryPay: --made ref_...; not there: --not-made); this resolves it",
                            code="refund_still_in_doubt")
    result = await conn.execute(
        update(anomalies)
        .where(anomalies.c.id == anomaly_id, anomalies.c.state == "open")
        .values(state="resolved", resolved_at=now, detail=anomalies.c.detail + " | " + note)
    )
    return bool(result.rowcount)


# --- BigCommerce webhook receipts -------------------------------------------------


async def use_jwt_once(conn: Conn, jti: str, expires_at: datetime, now: datetime) -> bool:
    """Remember a JWT id until it expires; False when it was used before. Forgets expired ones."""
    await conn.execute(delete(used_jwts).where(used_jwts.c.expires_at < now))
    return await insert_ignore(conn, used_jwts, jti=jti, expires_at=expires_at)


async def record_webhook(conn: Conn, *, hash_: str, store_id: int, scope: str, now: datetime) -> bool:
    """Store a webhook delivery hash once; False for a duplicate delivery."""
    return await insert_ignore(conn, webhook_receipts, hash=hash_, store_id=store_id, scope=scope, received_at=now)


_QUOTA_LOCKED = Prepared(select(bc_quota).where(bc_quota.c.store_hash == bindparam("store_hash")).with_for_update())
_UPDATE_QUOTA = Prepared(update(bc_quota).where(bc_quota.c.store_hash == bindparam("_store_hash")))


async def claim_quota(
    conn: Conn, store_hash: str, *, clock: Callable[[], float], quota: int, window: float, reserve: int,
    reported: tuple[float, int] | None,
) -> float:
    """Take one request slot of the store's current BigCommerce window: 0.0, or seconds until it ends.

    ``clock`` (wall time) is read once the row is locked: a time taken before
    waiting for the lock could see a window that another process has since
    ended. ``reported`` is BigCommerce's newest word (window end, requests
    used); its end is the truth, earlier or later than ours, and the higher
    count wins, except that a window starting half a window after ours is a
    new one, counted from BigCommerce's figure alone. A report of a window
    that ends within a fiftieth of a window is ignored: it may be the one
    that just ended, carried by a late answer, and taking it would put the
    count back and start the next window twice.

    A window that has ended is followed by one starting with this claim, as
    BigCommerce starts a store's next window with the first request after
    the last one ended, counted a fiftieth of a window longer: before
    BigCommerce says where its window ends, our guess must not end first
    (every process would start a window BigCommerce has not).
    """
    await insert_ignore(conn, bc_quota, store_hash=store_hash, window_end=0.0, used=0)
    row = (await conn.run(_QUOTA_LOCKED, {"store_hash": store_hash})).one()
    now, slack = clock(), window / 50
    end, used = float(row["window_end"]), int(row["used"])
    if end <= now:
        end, used = now + window + slack, 0
    if reported is not None and reported[0] > now + slack:
        # Our count still holds unless BigCommerce's window is a later one than ours (everything we
        # counted then went into a window that has ended): ours began after BigCommerce's otherwise.
        later = reported[0] > end + window / 2
        end, used = reported[0], reported[1] if later else max(used, reported[1])
    wait = 0.0
    if used < max(1, quota - reserve):
        used += 1
    else:
        wait = end - now
    await conn.run(_UPDATE_QUOTA, {"_store_hash": store_hash, "window_end": end, "used": used})
    return wait


async def save_snippet_version(conn: Conn, short_hash: str, body: bytes, now: datetime) -> bool:
    """Keep a snippet version (once); False when it was already kept."""
    return await insert_ignore(conn, snippet_versions, short_hash=short_hash, body=body, created_at=now)


async def snippet_version(conn: Conn, short_hash: str) -> bytes | None:
    """The body of a snippet version some bcpay server served, or None."""
    row = (await conn.execute(select(snippet_versions.c.body).where(snippet_versions.c.short_hash == short_hash))
           ).first()
    return None if row is None else bytes(row.body)


async def count(conn: Conn, table: Any, *conds: Any) -> int:
    """Row count of a table with optional conditions (for health and metrics)."""
    query = select(func.count()).select_from(table)
    if conds:
        query = query.where(*conds)
    return int((await conn.execute(query)).scalar_one())


def dumps(value: Any) -> str:
    """Compact JSON for payload/settings columns."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
