"""Budgets for payment starts, so cheap junk never locks a store's shoppers out nor spends its quota.

A start names an order and its cart id; one that finds nothing cost a
BigCommerce read and used to count against one budget per store, so 31 junk
starts from one client in 0.1 s made every new shopper of the store wait a
minute. Failed look-ups are now counted three ways (:class:`LookupGuard`):

- per client: an IPv4 address, or the /64 of an IPv6 address (one
  subscriber's whole network, :func:`client_key`); past
  ``server.failed_lookups_per_client`` a minute, only that client waits;
- per order: guessing cart ids of one order id (``server.failed_lookups_per_order``);
- per store: ``server.failed_lookups_per_minute``, far above what one client
  can reach; past it, orders bcpay has never read wait, known ones go on.

Starts that would read an order from BigCommerce also take from a per-store
budget derived from the store's quota (:func:`starts_per_minute`): half of
what BigCommerce grants a minute, so the worker keeps the rest. A known
order's wrong cart id, and orders read in the last few seconds, cost no
call (``bcpay.order_reads``) and take nothing.

Like the per-address limit in front of them, these counts live in each
process: with N processes a client gets N times its budget, still a bounded
few; the per-order read limit (``bcpay.order_reads``) is shared through the
database.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from bcpay.clients.ratelimit import RateLimiter

# BigCommerce's smallest plan (reference section 9): 150 requests per 30 s window, until the store's own
# quota is known from its answers.
DEFAULT_QUOTA = 150
DEFAULT_WINDOW = 30.0
STARTS_SHARE = 0.5  # of the store's quota a minute; the rest stays for the worker and other apps
MIN_STARTS_PER_MINUTE = 30


def client_key(host: str | None) -> str:
    """The key a client is counted under: its IPv4 address, the /64 network of an IPv6 one."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def starts_per_minute(quota: int | None, window: float | None) -> int:
    """The per-store budget of starts that read an order: half the store's BigCommerce quota a minute."""
    quota = quota or DEFAULT_QUOTA
    window = window if window and window > 0 else DEFAULT_WINDOW
    return max(MIN_STARTS_PER_MINUTE, int(quota * (60.0 / window) * STARTS_SHARE))


class Buckets:
    """Token buckets by key: ``per_minute`` a minute, bursts up to ``per_minute``; bounded memory."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float, per_minute: int) -> float:
        tokens, last = self._buckets.get(key, (float(per_minute), now))
        return min(float(per_minute), tokens + (now - last) * per_minute / 60.0)

    def wait(self, key: str, per_minute: int | None = None) -> float:
        """0 when one more would be allowed now, else seconds until it would (nothing taken)."""
        rate = per_minute or self.per_minute
        tokens = self._level(key, self.clock(), rate)
        return 0.0 if tokens >= 1 else (1 - tokens) * 60.0 / rate

    def take(self, key: str, per_minute: int | None = None) -> float:
        """Take one: 0 when allowed, else seconds until one would be (nothing taken)."""
        rate = per_minute or self.per_minute
        now = self.clock()
        tokens = self._level(key, now, rate)
        if tokens < 1:
            return (1 - tokens) * 60.0 / rate
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # a flood of distinct keys: forget, rather than grow without bound
        self._buckets[key] = (tokens - 1, now)
        return 0.0


class LookupGuard:
    """Failed look-ups per client, per order and per store, and the per-store budget of order reads."""

    def __init__(self, *, per_client: int, per_order: int, per_store: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clients = Buckets(per_client, clock)
        self.orders = Buckets(per_order, clock)
        self.stores = Buckets(per_store, clock)
        self.reads = Buckets(MIN_STARTS_PER_MINUTE, clock)

    def client_wait(self, client: str) -> float:
        """Seconds this client must wait before its next start (0: go on)."""
        return self.clients.wait(client)

    def order_wait(self, store_hash: str, order_id: int) -> float:
        """Seconds before this order may be looked up again after failed look-ups (0: go on)."""
        return self.orders.wait(f"{store_hash}:{order_id}")

    def store_wait(self, store_hash: str) -> float:
        """Seconds before orders bcpay never read may be looked up in this store (0: go on)."""
        return self.stores.wait(store_hash)

    def failed(self, client: str, store_hash: str, order_id: int) -> None:
        """Count a start that found no such order (or the wrong cart) against all three budgets."""
        self.clients.take(client)
        self.orders.take(f"{store_hash}:{order_id}")
        self.stores.take(store_hash)

    def read_admitter(self, store_hash: str, limiter: RateLimiter) -> Callable[[], float]:
        """``admit`` for ``payflow.start_payment``: one of the store's order reads, sized from its quota."""

        def admit() -> float:
            rate = starts_per_minute(limiter.quota, limiter.window if limiter.window_known else None)
            return self.reads.take(store_hash, rate)

        return admit
