"""The BigCommerce quota of each store, shared by every bcpay process through the database.

BigCommerce gives a store one quota per 30 s window for all its apps. Each
process's :class:`~bcpay.clients.ratelimit.RateLimiter` knows what
BigCommerce reported to it; with several processes (``serve --workers``,
a separate ``bcpay worker``, several hosts) each would spend all of what is
left at every window turnover, and the store would answer 429s in every
window ("ignoring 429s is treated as abuse"). With the ledger, a request
takes a slot of the window from one row per store (``bc_quota``) first.

``bigcommerce.shared_quota``: "auto" is on with PostgreSQL and off with
SQLite, where bcpay runs on one host and a slot would cost a write
transaction per BigCommerce call for little gain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bcpay.clients.ratelimit import RateLimiter, RateLimiterRegistry, Report
from bcpay.config import Settings
from bcpay.storage import queries
from bcpay.storage.db import Database


class DbQuotaLedger:
    """One store's quota in the ``bc_quota`` table."""

    def __init__(self, db: Database, store_hash: str, wall: Callable[[], float] = time.time) -> None:
        self.db = db
        self.store_hash = store_hash
        self._wall = wall
        # One claim at a time per process: at a window's turnover every waiting task claims at once, and
        # each would hold a pooled connection while queued on the row's lock, starving payments of them.
        self._one_at_a_time = asyncio.Lock()

    def __repr__(self) -> str:
        return f"DbQuotaLedger(store_hash={self.store_hash!r})"

    async def claim(self, *, quota: int, window: float, reserve: int, report: Report | None) -> float:
        """Take one slot of the current window (see :func:`bcpay.storage.queries.claim_quota`)."""
        async with self._one_at_a_time, self.db.transaction() as conn:
            return await queries.claim_quota(
                conn, self.store_hash, clock=self._wall, quota=quota, window=window, reserve=reserve,
                reported=None if report is None else (report.window_end, report.used),
            )


def shared(settings: Settings, db: Database) -> bool:
    """Whether this process takes its BigCommerce requests from the shared count."""
    mode = settings.bigcommerce.shared_quota
    return mode == "on" or (mode == "auto" and not db.is_sqlite)


def limiters(settings: Settings, db: Database) -> RateLimiterRegistry:
    """The process's per-store limiters, sharing the quota through ``db`` when configured to."""
    if not shared(settings, db):
        return RateLimiterRegistry()
    return RateLimiterRegistry(lambda store_hash: RateLimiter(ledger=DbQuotaLedger(db, store_hash)))
