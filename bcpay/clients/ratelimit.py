"""A per-store limiter that keeps BigCommerce calls inside the store's quota.

BigCommerce reports the quota on every answer (reference section 9):
``X-Rate-Limit-Requests-Left``, ``-Time-Reset-Ms``, ``-Requests-Quota`` and
``-Time-Window-Ms``; every app on a store shares that quota. All tasks working
on one store share one :class:`RateLimiter` (``RateLimiterRegistry.for_store``):

- ``acquire()`` before each request. While nothing is known yet only one
  request is in flight (learn the quota first); afterwards a request goes
  when ``requests_left - in_flight`` is above a small reserve, else the task
  waits for the window to reset.
- ``record(response)`` after each answer (``None`` after a transport error)
  updates what is known and frees the slot.
- A 429 blocks every task of the store until the reported reset. A 429
  without ``X-Rate-Limit-Time-Reset-Ms`` is not the quota but platform load
  (section 9: "retry later"): it blocks the store for a backoff that doubles
  with each such 429 in a row (or ``X-Retry-After`` seconds, which older docs
  name), and changes nothing the limiter or the ledger knows of the quota.

So a reconcile over thousands of orders with N concurrent tasks runs at the
quota without being throttled. Clock and sleep are injectable for tests.

Several processes working one store each see the same count of requests
left, and at every window turnover each would spend all of it: the store
gets 429s in every window. With a :class:`QuotaLedger` (one row per store in
bcpay's database, ``bcpay.quota``) every request past the first also takes a
slot of the current window from the ledger, so all processes together stay
inside the quota; BigCommerce's own count, reported on every answer, is
passed along with the next claim and keeps the ledger honest about other
apps and aligned with BigCommerce's windows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

log = logging.getLogger("bcpay.ratelimit")

LEFT = "x-rate-limit-requests-left"
RESET_MS = "x-rate-limit-time-reset-ms"
QUOTA = "x-rate-limit-requests-quota"
WINDOW_MS = "x-rate-limit-time-window-ms"
RETRY_AFTER = "x-retry-after"  # seconds; only older BigCommerce docs name it
# The longest X-Retry-After taken at its word: a store (and its jobs) held for a day on one header
# would be worse than a few early retries, each of which is answered with a fresh wait.
RETRY_AFTER_CAP = 60.0


def _header_int(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def reset_seconds(response: httpx.Response) -> float | None:
    """``X-Rate-Limit-Time-Reset-Ms`` in seconds, when present and sane."""
    ms = _header_int(response, RESET_MS)
    return None if ms is None else ms / 1000.0


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``X-Retry-After`` (seconds), when present and sane; at most :data:`RETRY_AFTER_CAP`."""
    seconds = _header_int(response, RETRY_AFTER)
    return None if seconds is None else min(float(seconds), RETRY_AFTER_CAP)


def busy_backoff(streak: int, *, base: float, cap: float) -> float:
    """Seconds to hold a store after its ``streak``-th platform-load 429 in a row (1-based): base, 2 x base, ..."""
    return min(cap, base * float(2 ** min(max(streak, 1) - 1, 32)))


@dataclass(frozen=True, slots=True)
class Report:
    """What BigCommerce last said about the window: when it ends (wall clock) and how much is used."""

    window_end: float
    used: int


class QuotaLedger(Protocol):
    """The store's quota shared by every process (``bcpay.quota.DbQuotaLedger``)."""

    async def claim(self, *, quota: int, window: float, reserve: int, report: Report | None) -> float:
        """Take one request slot of the current window: 0.0 when granted, else seconds until the window
        ends. ``report`` is BigCommerce's newest count, folded in first."""
        ...


class RateLimiter:
    """The shared view of one store's BigCommerce quota."""

    def __init__(
        self,
        *,
        reserve: int = 2,
        margin: float = 0.01,
        default_block: float = 1.0,
        max_block: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        ledger: QuotaLedger | None = None,
        wall: Callable[[], float] = time.time,
        ledger_timeout: float = 2.0,
        ledger_rest: float = 30.0,
    ) -> None:
        """``reserve`` requests are left for other apps and stragglers; ``margin``
        seconds are added to every reset so we never wake a hair too early;
        a platform-load 429 holds the store ``default_block`` seconds, doubling with each one in a
        row up to ``max_block`` (BigCommerce's window);
        ``ledger`` shares the quota with other processes (``wall`` dates its reports)."""
        self.reserve = reserve
        self.ledger = ledger
        self._wall = wall
        self._report: Report | None = None  # BigCommerce's newest count, for the ledger's next claim
        self.margin = margin
        self.default_block = default_block
        self.max_block = max_block
        self.busy_streak = 0  # platform-load 429s in a row
        self._clock = clock
        self._sleep = sleep
        self.left: int | None = None  # as last reported (lowered by in-window reports)
        self.quota: int | None = None
        self.window = 1.0  # seconds; replaced by X-Rate-Limit-Time-Window-Ms (30 s on BigCommerce)
        self.reset_at = 0.0  # clock time when the current window ends
        self.blocked_until = 0.0
        self.in_flight = 0
        self.throttled = 0  # 429s seen, for tests and metrics
        self.ledger_failed = False
        self.ledger_timeout = ledger_timeout
        self.ledger_rest = ledger_rest
        self._ledger_rest_until = 0.0
        self.window_known = False  # X-Rate-Limit-Time-Window-Ms seen: the ledger needs the real window

    def _can_go(self, now: float) -> bool:
        if now >= self.reset_at and self.left is not None:
            # The window turned over: assume the full quota until told otherwise.
            self.left = self.quota
        if self.left is None:
            return self.in_flight == 0
        return self.left - self.in_flight > self.reserve

    async def acquire(self) -> None:
        """Wait until one more request fits in the store's quota, then take the slot."""
        while True:
            now = self._clock()
            if now < self.blocked_until:
                await self._sleep(self.blocked_until - now)
                continue
            if self._can_go(now):
                self.in_flight += 1
                if not self._shared(now):
                    return  # alone, or the probe that learns the quota and its window
                try:
                    wait = await self._claim(now)
                except BaseException:  # cancelled (a job's time limit) while claiming: give the slot back
                    self.in_flight -= 1
                    raise
                if not wait:
                    return
                self.in_flight -= 1
                await self._sleep(wait + self.margin)
                continue
            if self.left is None:
                # Another task is learning the quota; its answer comes soon.
                await self._sleep(0.005)
            elif now < self.reset_at:
                await self._sleep(self.reset_at - now)
            else:
                # Quota known to be tiny (<= reserve) and the window is over.
                await self._sleep(self.margin)
                self.left = None

    def _shared(self, now: float) -> bool:
        """Whether this request takes its slot from the ledger: once the quota and its window are known,
        and not while the ledger is resting after a failure."""
        return (self.ledger is not None and self.quota is not None and self.window_known
                and now >= self._ledger_rest_until)

    async def _claim(self, now: float) -> float:
        """A slot from the ledger. A failure, or no answer within ``ledger_timeout`` (a process holding the
        row's lock, a database out of reach), leaves this process pacing itself alone for
        ``ledger_rest`` seconds, then it tries again: payments never wait on the ledger."""
        assert self.ledger is not None and self.quota is not None
        report, self._report = self._report, None
        try:
            async with asyncio.timeout(self.ledger_timeout):
                wait = await self.ledger.claim(quota=self.quota, window=self.window, reserve=self.reserve,
                                               report=report)
        except BaseException as exc:
            if report is not None and self._report is None:
                self._report = report  # not lost: the next claim carries it
            if not isinstance(exc, Exception):
                raise  # cancelled
            # The database behind the ledger failed or did not answer in time.
            if not self.ledger_failed:
                log.warning("the shared BigCommerce quota is unavailable; this process paces itself alone "
                            "and tries again in %.0f s", self.ledger_rest, exc_info=True)
            self.ledger_failed = True
            self._ledger_rest_until = now + self.ledger_rest
            return 0.0
        if self.ledger_failed:
            log.info("the shared BigCommerce quota is available again")
            self.ledger_failed = False
        return wait

    def record(self, response: httpx.Response | None) -> None:
        """Free the slot taken by ``acquire`` and learn from the answer's headers."""
        self.in_flight = max(0, self.in_flight - 1)
        if response is None:
            return
        now = self._clock()
        reset = reset_seconds(response)
        left = _header_int(response, LEFT)
        quota = _header_int(response, QUOTA)
        if quota is not None:
            self.quota = quota
        window = _header_int(response, WINDOW_MS)
        resized = bool(window) and window != round(self.window * 1000)
        if window:
            self.window = window / 1000.0
            self.window_known = True
        if response.status_code == 429:
            self.throttled += 1
            if reset is None:
                self._hold_for_load(response, now)
                return
            self.busy_streak = 0
            if quota is not None:
                self._report = Report(self._wall() + reset, quota)
            self.blocked_until = max(self.blocked_until, now + reset + self.margin)
            self.left = 0
            # The 429's reset is the newest word on when the quota returns: it replaces the
            # window end learned earlier (a 1 s burst must not block for the rest of a 30 s window).
            self.reset_at = now + reset + self.margin
            return
        self.busy_streak = 0
        if left is None or reset is None:
            return
        if self.quota is not None:
            self._report = Report(self._wall() + reset, self.quota - left)
        new_reset = now + reset + self.margin
        # Answers arrive out of order. Within one window every answer implies
        # about the same reset time, so keep the lowest count. An implied reset
        # half a window away (later: a new window began; earlier, or a new
        # window size: the store's quota was changed) replaces what we knew.
        if (self.left is None or now >= self.reset_at or resized
                or abs(new_reset - self.reset_at) > self.window / 2):
            self.left = left
            self.reset_at = new_reset
        else:
            self.left = min(self.left, left)


    def _hold_for_load(self, response: httpx.Response, now: float) -> None:
        """A 429 without the quota's reset: platform load (reference section 9, "retry later").

        What is known of the quota still holds: a made-up reset would have the limiter assume a
        full window when it passes and overrun the real one, and a report would cut the shared
        ledger's window short. So the store is only held, for ``X-Retry-After`` when sent, else
        for a backoff that doubles with each such 429 in a row.
        """
        self.busy_streak += 1
        wait = retry_after_seconds(response)
        if wait is None:
            wait = busy_backoff(self.busy_streak, base=self.default_block, cap=self.max_block)
        self.blocked_until = max(self.blocked_until, now + wait + self.margin)


class RateLimiterRegistry:
    """One :class:`RateLimiter` per store hash, shared by every task of a process."""

    def __init__(self, factory: Callable[[str], RateLimiter] = lambda _store_hash: RateLimiter()) -> None:
        """``factory(store_hash)`` makes a limiter for a store seen for the first time."""
        self._factory = factory
        self._limiters: dict[str, RateLimiter] = {}

    def for_store(self, store_hash: str) -> RateLimiter:
        """The limiter of ``store_hash`` (created on first use)."""
        limiter = self._limiters.get(store_hash)
        if limiter is None:
            limiter = self._limiters[store_hash] = self._factory(store_hash)
        return limiter
