"""One BigCommerce quota shared by several bcpay processes (``bcpay.quota``), on SQLite and PostgreSQL.

Each "process" below is its own :class:`Database` (its own connections) and its
own limiter, as in ``serve --workers 3`` or a worker beside the server.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from builders import STORE_HASH, order_json
from sqlalchemy import select

from bcpay import config, quota
from bcpay.clients.bigcommerce import BigCommerceClient
from bcpay.clients.ratelimit import RateLimiter, Report
from bcpay.config import Settings
from bcpay.errors import ConfigError
from bcpay.storage.db import Database
from bcpay.storage.schema import bc_quota


class Wall:
    """A settable wall clock for the ledger."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


async def row(db: Database) -> tuple[float, int]:
    async with db.read() as conn:
        found = (await conn.execute(select(bc_quota).where(bc_quota.c.store_hash == STORE_HASH))).one()
    return found.window_end, found.used


async def claims(ledger: quota.DbQuotaLedger, n: int, report: Report | None = None) -> list[float]:
    out = []
    for i in range(n):
        out.append(await ledger.claim(quota=10, window=30.0, reserve=2, report=report if i == 0 else None))
    return out


async def test_claims_stop_at_the_quota_and_the_next_window_keeps_the_phase(db: Database) -> None:
    """8 of 10 (2 in reserve) per window; then the wait to the window's end; then a new window,
    ending a whole number of windows after the first."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    start = wall.now
    assert await claims(ledger, 8) == [0.0] * 8
    wall.now += 12.5
    assert await claims(ledger, 1) == [pytest.approx(17.5)]
    assert await row(db) == (pytest.approx(start + 30), 8)
    wall.now = start + 75.0  # two windows later, mid-window
    assert await claims(ledger, 1) == [0.0]
    assert await row(db) == (pytest.approx(start + 90), 1)


async def test_bigcommerce_count_wins_inside_the_window(db: Database) -> None:
    """Other apps used the store's quota too: BigCommerce's higher count replaces ours."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    await claims(ledger, 1)
    report = Report(window_end=wall.now + 29.0, used=7)  # within half a window of our end
    assert await claims(ledger, 2, report) == [0.0, pytest.approx(30.0)]
    assert (await row(db))[1] == 8


async def test_a_report_of_another_phase_moves_the_window(db: Database) -> None:
    """Our guess of where the window ends was wrong: BigCommerce's end and count replace it."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    await claims(ledger, 3)
    report = Report(window_end=wall.now + 5.0, used=1)
    assert await claims(ledger, 1, report) == [0.0]
    assert await row(db) == (pytest.approx(wall.now + 5.0), 2)


async def test_a_report_of_a_window_that_ended_changes_nothing(db: Database) -> None:
    """A count carried over from a window that has ended since says nothing about this one."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    await claims(ledger, 2)
    assert await claims(ledger, 1, Report(window_end=wall.now - 1.0, used=10)) == [0.0]
    assert await row(db) == (pytest.approx(wall.now + 30.0), 3)


class QuotaServer:
    """A fake BigCommerce: ``quota`` requests per fixed window of real time, answered after ``latency``."""

    def __init__(self, quota: int, window: float, latency: float) -> None:
        self.quota, self.window, self.latency = quota, window, latency
        self.start = time.monotonic()
        self.counts: dict[int, int] = {}
        self.throttled: list[int] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        elapsed = time.monotonic() - self.start
        index = int(elapsed // self.window)
        headers = {
            "X-Rate-Limit-Requests-Quota": str(self.quota),
            "X-Rate-Limit-Time-Window-Ms": str(int(self.window * 1000)),
            "X-Rate-Limit-Time-Reset-Ms": str(int(((index + 1) * self.window - elapsed) * 1000)),
        }
        used = self.counts.get(index, 0)
        if used >= self.quota:
            self.throttled.append(index)
            return httpx.Response(429, headers=headers)
        self.counts[index] = used + 1
        headers["X-Rate-Limit-Requests-Left"] = str(self.quota - used - 1)
        await asyncio.sleep(self.latency)
        return httpx.Response(200, json=order_json(id=int(request.url.path.rsplit("/", 1)[1])), headers=headers)


async def run_processes(db_url: str | None, processes: int, tasks: int, orders: int) -> QuotaServer:
    """``processes`` limiters (with their own Database when ``db_url``) work one queue of orders."""
    server = QuotaServer(quota=20, window=0.4, latency=0.005)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for oid in range(1, orders + 1):
        queue.put_nowait(oid)
    done: list[int] = []
    databases = [Database(db_url) for _ in range(processes)] if db_url else []
    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as http:

            async def process(n: int) -> None:
                ledger = quota.DbQuotaLedger(databases[n], STORE_HASH) if databases else None
                client = BigCommerceClient(http, api_url="https://api.bc.test", store_hash=STORE_HASH,
                                           access_token="t" * 20, limiter=RateLimiter(ledger=ledger),
                                           max_retries=50)

                async def work() -> None:
                    while not queue.empty():
                        done.append((await client.get_order(queue.get_nowait())).id)

                await asyncio.gather(*(work() for _ in range(tasks)))

            await asyncio.gather(*(process(n) for n in range(processes)))
    finally:
        for database in databases:
            await database.dispose()
    assert sorted(done) == list(range(1, orders + 1))
    return server


async def test_three_processes_share_the_quota_without_429s(db_url: str) -> None:
    """Three processes, ten tasks each: 429s at most in the first window (each process's first
    request learns the quota before it claims), none after, and no window left idle."""
    started = time.monotonic()
    server = await run_processes(db_url, processes=3, tasks=10, orders=120)
    elapsed = time.monotonic() - started
    assert [w for w in server.throttled if w > 0] == []
    assert max(server.counts.values()) <= 20
    windows = math.ceil(120 / 18)
    assert elapsed < (windows + 3) * 0.4  # paced at the quota, not stalled


async def test_without_the_ledger_three_processes_are_throttled_in_most_windows() -> None:
    """Control: the same load with three limiters that share nothing draws 429s window after window,
    so the test above can fail."""
    server = await run_processes(None, processes=3, tasks=10, orders=120)
    assert len({w for w in server.throttled if w > 0}) >= 3


def test_auto_shares_the_quota_on_postgresql_only(tmp_path: Path) -> None:
    """"auto" is on with PostgreSQL, off with SQLite; "on" and "off" say so on both; nothing else."""
    sqlite = Database(f"sqlite:///{tmp_path / 'bcpay.db'}")
    pg = Database("postgresql://nobody@127.0.0.1:1/none")  # never connected
    auto = Settings()
    assert quota.shared(auto, pg) and not quota.shared(auto, sqlite)
    on = config.replace(auto, bigcommerce={"shared_quota": "on"})
    off = config.replace(auto, bigcommerce={"shared_quota": "off"})
    assert quota.shared(on, sqlite) and not quota.shared(off, pg)
    assert quota.limiters(on, sqlite).for_store(STORE_HASH).ledger is not None
    assert quota.limiters(off, sqlite).for_store(STORE_HASH).ledger is None
    with pytest.raises(ConfigError, match="bigcommerce.shared_quota"):
        config.replace(auto, bigcommerce={"shared_quota": "yes"})
