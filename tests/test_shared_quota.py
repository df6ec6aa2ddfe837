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


async def test_claims_stop_at_the_quota_and_the_next_window_starts_with_the_next_claim(db: Database) -> None:
    """8 of 10 (2 in reserve) per window, counted 2 % longer than the window; then the wait to its end;
    after it, a new window from the next claim on, however long after."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    start = wall.now
    assert await claims(ledger, 8) == [0.0] * 8
    wall.now += 12.5
    assert await claims(ledger, 1) == [pytest.approx(18.1)]
    assert await row(db) == (pytest.approx(start + 30.6), 8)
    wall.now = start + 75.0  # long after
    assert await claims(ledger, 1) == [0.0]
    assert await row(db) == (pytest.approx(start + 105.6), 1)


async def test_bigcommerce_count_and_end_win_inside_the_window(db: Database) -> None:
    """Other apps used the store's quota too, and BigCommerce's window ends a little later or earlier
    than our guess: its count (when higher) and its end replace ours."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    await claims(ledger, 1)
    assert await claims(ledger, 2, Report(window_end=wall.now + 31.0, used=7)) == [0.0, pytest.approx(31.0)]
    assert await row(db) == (pytest.approx(wall.now + 31.0), 8)
    assert await claims(ledger, 1, Report(window_end=wall.now + 29.0, used=1)) == [pytest.approx(29.0)]
    assert await row(db) == (pytest.approx(wall.now + 29.0), 8)


async def test_a_report_of_another_phase_moves_the_window_and_keeps_our_count(db: Database) -> None:
    """BigCommerce's window ends half a window before ours: it began before ours, so everything we
    counted is in it too. Its end replaces ours and the higher count stays."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    await claims(ledger, 3)
    report = Report(window_end=wall.now + 5.0, used=1)
    assert await claims(ledger, 1, report) == [0.0]
    assert await row(db) == (pytest.approx(wall.now + 5.0), 4)


async def test_a_report_of_a_later_window_starts_the_count_from_bigcommerces(db: Database) -> None:
    """BigCommerce's window ends more than half a window after ours: a new window, which holds none of
    what we counted in ours."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    await claims(ledger, 6)
    report = Report(window_end=wall.now + 50.0, used=1)
    assert await claims(ledger, 1, report) == [0.0]
    assert await row(db) == (pytest.approx(wall.now + 50.0), 2)


@pytest.mark.parametrize("ends_in", [-1.0, 0.0, 0.5])
async def test_a_report_of_a_window_that_ended_or_is_ending_changes_nothing(db: Database, ends_in: float) -> None:
    """A count carried by a late answer from the window that just ended (or ends within a fiftieth of a
    window) would put the count back, and the next claim would start the new window a second time."""
    wall = Wall()
    ledger = quota.DbQuotaLedger(db, STORE_HASH, wall)
    await claims(ledger, 2)
    assert await claims(ledger, 1, Report(window_end=wall.now + ends_in, used=10)) == [0.0]
    assert await row(db) == (pytest.approx(wall.now + 30.6), 3)


async def test_the_time_is_read_once_the_row_is_locked(db_url: str) -> None:
    """A claim waiting for another process's lock on the row judges the window by the time it gets the
    row: a time taken before the wait could see a window that the other process has since ended."""
    holder, claimer = Database(db_url), Database(db_url)
    held = False
    seen: list[bool] = []

    def clock() -> float:
        seen.append(held)
        return 1_800_000_000.0

    ledger = quota.DbQuotaLedger(claimer, STORE_HASH, clock)
    try:
        await ledger.claim(quota=10, window=30.0, reserve=2, report=None)  # the row exists
        async with holder.transaction() as conn:
            await conn.execute(select(bc_quota).where(bc_quota.c.store_hash == STORE_HASH).with_for_update())
            held = True
            waiting = asyncio.create_task(ledger.claim(quota=10, window=30.0, reserve=2, report=None))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            held = False
        assert await waiting == 0.0
        assert seen == [False, False]
    finally:
        await holder.dispose()
        await claimer.dispose()


class QuotaServer:
    """A fake BigCommerce: ``quota`` requests per window of real time, answered after ``latency``.

    ``periodic``: windows follow each other back to back; else (as the sandbox's
    fake) a window starts with the first request after the last one ended.
    """

    def __init__(self, quota: int, window: float, latency: float, periodic: bool) -> None:
        self.quota, self.window, self.latency, self.periodic = quota, window, latency, periodic
        self.start = time.monotonic()
        self.window_start = self.start
        self.index = 0
        self.counts: dict[int, int] = {}  # requests served per window
        self.attempts: dict[int, int] = {}  # requests sent per window, 429s included
        self.throttled: list[int] = []

    def _window(self, now: float) -> tuple[int, float]:
        """The current window's index and end."""
        if self.periodic:
            index = int((now - self.start) // self.window)
            return index, self.start + (index + 1) * self.window
        if now >= self.window_start + self.window:
            self.index, self.window_start = self.index + 1, now
        return self.index, self.window_start + self.window

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        index, end = self._window(now)
        headers = {
            "X-Rate-Limit-Requests-Quota": str(self.quota),
            "X-Rate-Limit-Time-Window-Ms": str(int(self.window * 1000)),
            "X-Rate-Limit-Time-Reset-Ms": str(int((end - now) * 1000)),
        }
        used = self.counts.get(index, 0)
        self.attempts[index] = self.attempts.get(index, 0) + 1
        if used >= self.quota:
            self.throttled.append(index)
            return httpx.Response(429, headers=headers)
        self.counts[index] = used + 1
        headers["X-Rate-Limit-Requests-Left"] = str(self.quota - used - 1)
        await asyncio.sleep(self.latency)
        return httpx.Response(200, json=order_json(id=int(request.url.path.rsplit("/", 1)[1])), headers=headers)


async def run_processes(
    db_url: str | None, processes: int, tasks: int, orders: int, *, periodic: bool = True
) -> QuotaServer:
    """``processes`` limiters (with their own Database when ``db_url``) work one queue of orders."""
    server = QuotaServer(quota=20, window=0.4, latency=0.005, periodic=periodic)
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


@pytest.mark.parametrize("periodic", [True, False], ids=["back-to-back-windows", "window-on-first-request"])
async def test_three_processes_share_the_quota_without_429s(db_url: str, periodic: bool) -> None:
    """Three processes, ten tasks each: 429s at most in the first window (each process's first
    request learns the quota before it claims), none after, and no window left idle; whether
    BigCommerce's windows follow each other or start with the first request after one ended."""
    started = time.monotonic()
    server = await run_processes(db_url, processes=3, tasks=10, orders=120, periodic=periodic)
    elapsed = time.monotonic() - started
    assert [w for w in server.throttled if w > 0] == []
    assert max(n for w, n in server.attempts.items() if w > 0) <= 20
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
