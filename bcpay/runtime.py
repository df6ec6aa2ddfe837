"""The runtime: what one process needs to do payment work.

A :class:`Runtime` bundles the settings, the database, the one shared
``httpx.AsyncClient``, the vault that opens stored secrets, the per-store rate
limiters and the clock. The server builds one in its lifespan, the CLI one per
command; the library functions take it as their first argument. Nothing here
runs at import time.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from bcpay import quota
from bcpay.clients.bigcommerce import BigCommerceClient
from bcpay.clients.celerypay import CeleryPayClient
from bcpay.clients.ratelimit import RateLimiterRegistry
from bcpay.config import Settings
from bcpay.crypto import SANDBOX_KEY, Vault
from bcpay.errors import ConflictError
from bcpay.metrics import Metrics
from bcpay.storage.db import Database
from bcpay.storage.records import StoreRecord

USER_AGENT = "bcpay/0.1 (+https://github.com/bcpay)"


def utcnow() -> datetime:
    """The current time, aware UTC, whole microseconds."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class StorePolicy:
    """Payment settings for one store: global defaults with the store's overrides."""

    method_name: str
    accepted_methods: tuple[str, ...]
    paid_status_id: int
    mismatch_status_id: int
    expires_in: int
    on_expired: str
    return_to: str
    max_order_age: timedelta
    refund_on_status: bool
    refund_from_bigcommerce: bool
    refund_duplicates: str
    unpaid_hold: int
    """Minutes after it was placed that an unpaid order for the method is cancelled; 0 keeps it (a new store
    starts with the payment's expiry plus 30 minutes)."""
    extra_origins: tuple[str, ...]
    """Browser origins besides the store's own URL that may call /api/v1 for this store (a store's own
    setting: there is no global one)."""


# Keys a store may override, with the type each must have.
STORE_OVERRIDES: dict[str, type] = {
    "method_name": str,
    "accepted_methods": list,
    "paid_status_id": int,
    "mismatch_status_id": int,
    "expires_in": int,
    "on_expired": str,
    "return_to": str,
    "refund_on_status": bool,
    "refund_from_bigcommerce": bool,
    "refund_duplicates": str,
    "unpaid_hold": int,
    "extra_origins": list,
}


@dataclass
class Runtime:
    """Shared services of one process."""

    settings: Settings
    db: Database
    http: httpx.AsyncClient
    vault: Vault
    limiters: RateLimiterRegistry = field(default_factory=RateLimiterRegistry)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], datetime] = utcnow
    wall: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)  # spreads CeleryPay look-ups (seeded in tests)
    # The BigCommerce order reads in flight in this process, one per (store id, order id) (bcpay.order_reads).
    order_flights: dict[tuple[int, int], asyncio.Future[Any]] = field(default_factory=dict)

    def now(self) -> datetime:
        """The current time (injectable for tests)."""
        return self.clock()

    def policy(self, store: StoreRecord) -> StorePolicy:
        """The payment rules in force for ``store``."""
        p = self.settings.payments
        o = store.settings
        method = str(o.get("method_name") or p.method_name)
        accepted = tuple(o.get("accepted_methods") or p.accepted_methods or (method,))
        if method not in accepted:
            accepted = (method, *accepted)
        return StorePolicy(
            method_name=method,
            accepted_methods=accepted,
            paid_status_id=int(o.get("paid_status_id", p.paid_status_id)),
            mismatch_status_id=int(o.get("mismatch_status_id", p.mismatch_status_id)),
            expires_in=int(o.get("expires_in", p.expires_in)),
            on_expired=str(o.get("on_expired", p.on_expired)),
            return_to=str(o.get("return_to", p.return_to)),
            max_order_age=timedelta(seconds=p.max_order_age),
            refund_on_status=bool(o.get("refund_on_status", p.refund_on_status)),
            refund_from_bigcommerce=bool(o.get("refund_from_bigcommerce", p.refund_from_bigcommerce)),
            refund_duplicates=str(o.get("refund_duplicates", p.refund_duplicates)),
            unpaid_hold=int(o.get("unpaid_hold", p.unpaid_hold)),
            extra_origins=tuple(o.get("extra_origins", ())),
        )

    def bigcommerce(self, store: StoreRecord) -> BigCommerceClient:
        """A BigCommerce client for ``store`` (sharing this process's HTTP pool and limiter)."""
        if not store.access_token_enc:
            raise ConflictError(
                f"store {store.store_hash} has no API token (uninstalled?)", code="store_not_installed"
            )
        return BigCommerceClient(
            self.http,
            api_url=self.settings.bigcommerce.api_url,
            store_hash=store.store_hash,
            access_token=self.vault.open(store.access_token_enc),
            limiter=self.limiters.for_store(store.store_hash),
            max_retries=self.settings.bigcommerce.max_retries,
            on_response=self.metrics.bigcommerce_response,
        )

    def celerypay_url(self, store: StoreRecord) -> str:
        """The CeleryPay base URL of the store's environment."""
        c = self.settings.celerypay
        return c.api_url if store.environment == "production" else c.sandbox_api_url

    def celerypay(self, store: StoreRecord) -> CeleryPayClient:
        """A CeleryPay client with the store's merchant credentials."""
        if not (store.merchant_id and store.celerypay_secret_enc):
            raise ConflictError(
                f"store {store.store_hash} has no CeleryPay credentials", code="store_not_configured"
            )
        return CeleryPayClient(
            self.http,
            base_url=self.celerypay_url(store),
            merchant_id=store.merchant_id,
            api_secret=self.vault.open(store.celerypay_secret_enc),
            max_retries=self.settings.celerypay.max_retries,
            clock=self.wall,  # signs with the process's wall clock, the one notifications are checked against
            environment="production" if store.environment == "production" else "sandbox",
        )

    def notification_secrets(self, store: StoreRecord) -> list[str]:
        """Secrets a notification may be signed with: current, and the old one during rotation."""
        found: list[str] = []
        if store.celerypay_secret_enc:
            found.append(self.vault.open(store.celerypay_secret_enc))
        if (
            store.celerypay_old_secret_enc
            and store.celerypay_old_secret_until
            and store.celerypay_old_secret_until > self.now()
        ):
            found.append(self.vault.open(store.celerypay_old_secret_enc))
        return found

    def public_url(self, path: str) -> str:
        """An absolute URL on this server."""
        return self.settings.app.public_url.rstrip("/") + path


def settle_heap() -> None:
    """Take what start-up allocated out of the cyclic garbage collector's sight, for a long-lived process.

    Modules, tables, compiled statements and the app live as long as the
    process, yet every full collection walked them again: the server's loop
    stopped for 70-100 ms at a time under the notification benchmark. After
    ``gc.freeze()`` a full collection walks only what came later.
    """
    gc.collect()
    gc.freeze()


def make_vault(settings: Settings) -> Vault:
    """The vault for ``app.secret_key`` (a fixed, public key in sandbox mode only), also opening
    values sealed with ``app.other_secret_key`` (a key rotation in progress)."""
    settings.require_secret_key()
    key = settings.app.secret_key.get() or SANDBOX_KEY
    other = settings.app.other_secret_key.get()
    return Vault(key, other) if other else Vault(key)


def make_http(settings: Settings, **kwargs: Any) -> httpx.AsyncClient:
    """The process's HTTP client: explicit timeouts and pool limits, aiohttp's pool underneath.

    :mod:`bcpay.clients.transport` says why the transport is not httpx's own.
    No cookies are kept: every store's API calls go to the same host, and a
    cookie one answer sets must not ride along on another store's call.
    """
    from bcpay.clients.transport import AiohttpTransport

    timeout = httpx.Timeout(max(settings.bigcommerce.timeout, settings.celerypay.timeout), connect=5.0)
    kwargs.setdefault("transport", AiohttpTransport(limits=httpx.Limits(max_connections=100)))
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT}, cookies=no_cookies, **kwargs)


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    http: httpx.AsyncClient | None = None,
    clock: Callable[[], datetime] | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Runtime]:
    """Open the database and HTTP client for one process (or one CLI command)."""
    db = Database(settings.database.url, pool_size=settings.database.pool_size,
                  max_overflow=settings.database.max_overflow)
    own_http = http is None
    client = http or make_http(settings)
    try:
        rt = Runtime(settings=settings, db=db, http=client, vault=make_vault(settings),
                     limiters=quota.limiters(settings, db), metrics=metrics or Metrics())
        if clock is not None:
            rt.clock = clock
        yield rt
    finally:
        if own_http:
            await client.aclose()
        await db.dispose()
