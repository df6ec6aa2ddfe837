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
- A 429 blocks every task of the store until the reported reset.

So a reconcile over thousands of orders with N concurrent tasks runs at the
quota without being throttled. Clock and sleep are injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

LEFT = "x-rate-limit-requests-left"
RESET_MS = "x-rate-limit-time-reset-ms"
QUOTA = "x-rate-limit-requests-quota"
WINDOW_MS = "x-rate-limit-time-window-ms"


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


class RateLimiter:
    """The shared view of one store's BigCommerce quota."""

    def __init__(
        self,
        *,
        reserve: int = 2,
        margin: float = 0.01,
        default_block: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``reserve`` requests are left for other apps and stragglers; ``margin``
        seconds are added to every reset so we never wake a hair too early."""
        self.reserve = reserve
        self.margin = margin
        self.default_block = default_block
        self._clock = clock
        self._sleep = sleep
        self.left: int | None = None  # as last reported (lowered by in-window reports)
        self.quota: int | None = None
        self.window = 1.0  # seconds; replaced by X-Rate-Limit-Time-Window-Ms (30 s on BigCommerce)
        self.reset_at = 0.0  # clock time when the current window ends
        self.blocked_until = 0.0
        self.in_flight = 0
        self.throttled = 0  # 429s seen, for tests and metrics

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
                return
            if self.left is None:
                # Another task is learning the quota; its answer comes soon.
                await self._sleep(0.005)
            elif now < self.reset_at:
                await self._sleep(self.reset_at - now)
            else:
                # Quota known to be tiny (<= reserve) and the window is over.
                await self._sleep(self.margin)
                self.left = None

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
        if response.status_code == 429:
            self.throttled += 1
            wait = reset if reset is not None else self.default_block
            self.blocked_until = max(self.blocked_until, now + wait + self.margin)
            self.left = 0
            # The 429's reset is the newest word on when the quota returns: it replaces the
            # window end learned earlier (a 1 s burst must not block for the rest of a 30 s window).
            self.reset_at = now + wait + self.margin
            return
        if left is None or reset is None:
            return
        window = _header_int(response, WINDOW_MS)
        resized = bool(window) and window != round(self.window * 1000)
        if window:
            self.window = window / 1000.0
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


class RateLimiterRegistry:
    """One :class:`RateLimiter` per store hash, shared by every task of a process."""

    def __init__(self, factory: Callable[[], RateLimiter] = RateLimiter) -> None:
        """``factory`` makes a limiter for a store seen for the first time."""
        self._factory = factory
        self._limiters: dict[str, RateLimiter] = {}

    def for_store(self, store_hash: str) -> RateLimiter:
        """The limiter of ``store_hash`` (created on first use)."""
        limiter = self._limiters.get(store_hash)
        if limiter is None:
            limiter = self._limiters[store_hash] = self._factory()
        return limiter
