"""Who changed a store's money settings, what, and when (the ``settings_audit`` table).

Every change made from the settings page or the CLI to the CeleryPay
credentials or environment, the payment settings, the snippet and webhooks,
a refund, an anomaly or who may act writes one row: the actor
(``user:<id> <email>`` from the settings page, ``cli:<os user>`` from the
CLI), an action name and a detail without secrets. The settings page shows
the newest rows.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import insert, select

from bcpay.runtime import Runtime
from bcpay.storage.db import Conn
from bcpay.storage.records import StoreRecord
from bcpay.storage.schema import settings_audit


class _User(Protocol):
    @property
    def user_id(self) -> int: ...
    @property
    def email(self) -> str: ...


@dataclass(frozen=True)
class Entry:
    """One audit row as shown."""

    actor: str
    action: str
    detail: str
    at: datetime


def user_actor(user: _User) -> str:
    """The actor name of a control-panel user."""
    return f"user:{user.user_id} {user.email}".strip()[:255]


def cli_actor() -> str:
    """The actor name of whoever runs the CLI: ``cli:<os user>``."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        name = "unknown"
    return f"cli:{name}"[:255]


async def record(
    conn: Conn, rt: Runtime, store: StoreRecord | int, *, actor: str, action: str, detail: str = ""
) -> None:
    """Write one row inside the caller's transaction (``store``: the record, or its id)."""
    await conn.execute(insert(settings_audit).values(
        store_id=store if isinstance(store, int) else store.id, actor=actor[:255], action=action[:48],
        detail=detail[:1000], created_at=rt.now()))


async def note(rt: Runtime, store: StoreRecord, *, actor: str, action: str, detail: str = "") -> None:
    """Write one row in its own transaction (after the change it records was made)."""
    async with rt.db.transaction() as conn:
        await record(conn, rt, store, actor=actor, action=action, detail=detail)


async def recent(rt: Runtime, store: StoreRecord, limit: int = 20) -> list[Entry]:
    """The store's newest rows, newest first."""
    async with rt.db.read() as conn:
        rows = (await conn.execute(
            select(settings_audit).where(settings_audit.c.store_id == store.id)
            .order_by(settings_audit.c.id.desc()).limit(limit)
        )).mappings().all()
    return [Entry(r["actor"], r["action"], r["detail"], r["created_at"]) for r in rows]
