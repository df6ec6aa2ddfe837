"""Who may act on a store's money: the owner, and the users the owner allows.

BigCommerce sends every control-panel user it lets open the app to
``/bc/load``, with the store owner's id in the JWT (``owner``, reference
section 14). Only the owner, and users the owner allows on the settings page
(``store_users.may_act``), may change the CeleryPay credentials or
environment, provision, refund, resolve anomalies or change the payment
settings; anyone else sees the settings page read-only, and every such POST
answers 403 ``not_allowed``. :func:`may_act` is the one rule every face calls
(the settings page; an App Extension panel calls it the same way). Only the
owner grants or withdraws the right, and each change is an audit row.
"""

from __future__ import annotations

from sqlalchemy import select, update

from bcpay import settings_audit
from bcpay.errors import BcpayError, NotFoundError
from bcpay.install import AppUser
from bcpay.runtime import Runtime
from bcpay.storage.records import StoreRecord
from bcpay.storage.schema import store_users


class NotAllowed(BcpayError):
    """This user may look but not act (only the owner and users the owner allows may)."""

    code = "not_allowed"
    http_status = 403


def may_act(user: AppUser | None) -> bool:
    """Whether ``user`` may change money settings, provision, refund or resolve anomalies of their store."""
    return user is not None and (user.is_owner or user.may_act)


def require(user: AppUser | None) -> None:
    """Raise :class:`NotAllowed` unless :func:`may_act`."""
    if not may_act(user):
        raise NotAllowed("Only the store owner, or a user the owner allows, may change this; "
                         "this page is read-only for you.")


async def team(rt: Runtime, store: StoreRecord) -> list[AppUser]:
    """The users of a store who opened the app, owner first."""
    async with rt.db.read() as conn:
        rows = (await conn.execute(
            select(store_users).where(store_users.c.store_id == store.id).order_by(store_users.c.user_id)
        )).mappings().all()
    users = [AppUser(store.id, r["user_id"], r["email"], bool(r["is_owner"]), bool(r["may_act"])) for r in rows]
    return sorted(users, key=lambda u: not u.is_owner)


async def allow(rt: Runtime, store: StoreRecord, *, by: AppUser, user_id: int, allowed: bool) -> AppUser:
    """The owner (``by``) allows, or stops allowing, one user to act; an audit row says so."""
    if not by.is_owner:
        raise NotAllowed("Only the store owner chooses who may change payment settings.")
    async with rt.db.transaction() as conn:
        row = (await conn.execute(select(store_users).where(
            store_users.c.store_id == store.id, store_users.c.user_id == user_id))).mappings().first()
        if row is None:
            raise NotFoundError("That user has not opened OKCloud Pay in this store.", code="unknown_user")
        if row["is_owner"]:
            raise NotAllowed("The store owner always may; that cannot be changed here.")
        await conn.execute(update(store_users).where(store_users.c.id == row["id"]).values(may_act=allowed))
        await settings_audit.record(
            conn, rt, store, actor=settings_audit.user_actor(by),
            action="user_allowed" if allowed else "user_disallowed",
            detail=f"{row['email'] or 'user'} (user {user_id})",
        )
    return AppUser(store.id, user_id, row["email"], False, allowed)
