"""A whole payment world in one event loop: bcpay plus the package's fakes.

The bcpay app runs with its lifespan (database, HTTP client); BigCommerce and
CeleryPay are the sandbox fakes, reached through httpx ASGI transports, and
the fake CeleryPay delivers its notifications to bcpay the same way. The
worker is driven by the test (``run_jobs``) so ordering is deterministic.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from bcpay import outbox, stores
from bcpay.config import Settings, load_settings
from bcpay.effects import Worker
from bcpay.runtime import Runtime, utcnow
from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.bigcommerce import create_bigcommerce_api
from bcpay.sandbox.celerypay import FakeCeleryPay, FakeOptions
from bcpay.server.app import create_app
from bcpay.signatures import sign_notification

PUBLIC_URL = "http://127.0.0.1:8000"
BC_URL = "http://bc.test"
CP_URL = "http://celerypay.test"
STORE_HASH = "abc123"
STORE_URL = "https://shop.example.com"
MERCHANT_ID = "mch_TestMerchant0000001"
MERCHANT_SECRET = "s" * 20 + "ecret-for-tests-0123456789"
ACCESS_TOKEN = "bc-access-token-for-tests"


def world_settings(db_url: str, secret_key: str, **sections: dict[str, Any]) -> Settings:
    """Settings pointing every upstream at the fakes."""
    base: dict[str, dict[str, Any]] = {
        "app": {"public_url": PUBLIC_URL, "secret_key": secret_key, "client_id": "app-client-id",
                "client_secret": "app-client-secret-for-tests-0123456789abcdef"},
        "database": {"url": db_url},
        "bigcommerce": {"api_url": BC_URL, "login_url": BC_URL, "max_retries": 3},
        "celerypay": {"api_url": CP_URL, "sandbox_api_url": CP_URL, "max_retries": 2},
        "server": {"run_worker": False, "rate_limit_per_ip": 100000, "rate_limit_per_store": 100000,
                   "install_attempts_per_minute": 100000},
        "payments": {"status_poll_interval": 0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_settings(environ={}, overrides=base)


@dataclass
class Travel:
    """Real time plus how far the test moved it on: the fake CeleryPay's clock, and bcpay's after a travel."""

    offset: timedelta = timedelta(0)

    def wall(self) -> float:
        return time.time() + self.offset.total_seconds()

    def now(self) -> datetime:
        return utcnow() + self.offset


@dataclass
class World:
    """Handles on every part, plus helpers that read like the test's story."""

    settings: Settings
    app: Starlette
    client: httpx.AsyncClient  # browser/CeleryPay -> bcpay
    bc: FakeBigCommerce
    cp: FakeCeleryPay
    worker: Worker
    clock: Travel = field(default_factory=Travel)

    def travel(self, by: timedelta) -> None:
        """Move bcpay's and CeleryPay's clocks on together (signatures and notifications stay fresh)."""
        self.clock.offset += by
        self.rt.clock, self.rt.wall = self.clock.now, self.clock.wall

    @property
    def rt(self) -> Runtime:
        rt: Runtime = self.app.state.runtime
        return rt

    async def add_store(self, *, configure: bool = True) -> None:
        """Register the store (as `bcpay stores add` does) and its CeleryPay merchant."""
        await stores.register(self.rt, STORE_HASH, access_token=ACCESS_TOKEN, source="api_account",
                              scopes=" ".join(stores.REQUIRED_SCOPES))
        if configure:
            await stores.configure_merchant(self.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=MERCHANT_SECRET)

    def place_order(self, total: str = "19.99", **kwargs: Any) -> dict[str, Any]:
        """An order as BigCommerce's checkout creates it (Awaiting Payment by default)."""
        order: dict[str, Any] = self.bc.create_order(STORE_HASH, total=Decimal(total), **kwargs)
        return order

    async def start(self, order: dict[str, Any], *, cart_id: str | None = None, **extra: Any) -> httpx.Response:
        """What the snippet sends."""
        body = {"store_hash": STORE_HASH, "order_id": order["id"], "cart_id": cart_id or order["cart_id"], **extra}
        return await self.client.post("/api/v1/payments", json=body, headers={"Origin": STORE_URL})

    async def paid_order(self, total: str = "20.00") -> tuple[dict[str, Any], str]:
        """An order started, paid at the cashier and applied by bcpay; (order, CeleryPay payment id)."""
        order = self.place_order(total)
        pid = (await self.start(order)).json()["cashier_url"].rsplit("/", 1)[1]
        await self.cp.pay(pid)
        await self.cp.deliver_due()
        await self.run_jobs()
        return order, pid

    async def status(self, token: str) -> httpx.Response:
        return await self.client.get(f"/api/v1/payments/{token}", headers={"Origin": STORE_URL})

    async def notify(
        self, event: dict[str, Any], *, timestamp: int | None = None, secret: str = MERCHANT_SECRET,
        raw: bytes | None = None,
    ) -> httpx.Response:
        """POST a notification signed as CeleryPay signs it."""
        body = raw if raw is not None else json.dumps(event).encode()
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "CeleryPay-Merchant": MERCHANT_ID,
            "CeleryPay-Timestamp": str(ts),
            "CeleryPay-Signature": sign_notification(secret, ts, body),
            "Content-Type": "application/json",
        }
        return await self.client.post(f"/notify/celerypay/{STORE_HASH}", content=body, headers=headers)

    def events_of(self, payment_id: str) -> list[dict[str, Any]]:
        """The fake's events for one payment, oldest first."""
        return [e for e in self.cp.events if (e["data"].get("payment") or e["data"])["id"] == payment_id]

    async def run_checks(self) -> int:
        """Run the queued notification read-backs (``check_event``) one job at a time, stopping before the
        effects they queue when those come after them; returns jobs run."""
        one, total = Worker(self.rt, owner="checks", batch=1), 0
        while any(j.kind == "check_event" for j in await outbox.list_jobs(self.rt.db, state=outbox.QUEUED)):
            ran = await one.run_once()
            if not ran:
                break
            total += ran
        return total

    async def run_jobs(self) -> int:
        """Run the outbox until nothing is due now; returns jobs run."""
        total = 0
        while ran := await self.worker.run_once():
            total += ran
        return total

    def order(self, order_id: int) -> dict[str, Any]:
        found: dict[str, Any] = self.bc.order(STORE_HASH, order_id)
        return found

    async def register_webhooks(self) -> None:
        """Register bcpay's webhooks with the fake BigCommerce (as provisioning does)."""
        from bcpay import provisioning
        from bcpay.storage import queries as q

        async with self.rt.db.read() as conn:
            store = await q.require_store(conn, STORE_HASH)
        await provisioning.register_webhooks(self.rt, store)

    async def refund_in_bigcommerce(self, order_id: int, amount: str, *, provider_id: str = "bankdeposit",
                                    reason: str = "customer asked") -> dict[str, Any]:
        """A merchant's Refund in the control panel: an offline refund in the ledger and its webhooks sent."""
        from bcpay.sandbox import bc_refunds

        body = {"items": [{"item_type": "ORDER", "item_id": order_id, "amount": amount, "reason": reason}],
                "payments": [{"provider_id": provider_id, "amount": amount, "offline": True}]}
        previous, refund = bc_refunds.create_refund(self.bc, STORE_HASH, order_id, body)
        for scope, data in bc_refunds.webhook_events(self.order(order_id), previous, refund):
            await self.bc.fire_webhook(self.client, STORE_HASH, scope, data)
        return refund

    def status_puts(self, order_id: int) -> list[dict[str, Any]]:
        """Every PUT to this order that set a status (the exactly-once count)."""
        return [body for (h, oid, body) in self.bc.put_log if h == STORE_HASH and oid == order_id and "status_id" in body]


class Deferred:
    """An ASGI app whose target is set after construction (the fakes and bcpay call each other)."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def open_world(
    db_url: str, secret_key: str, *, cp_options: FakeOptions | None = None, bc_webhooks: bool = False,
    **sections: dict[str, Any]
) -> AsyncIterator[World]:
    """Start bcpay (lifespan included) wired to fresh fakes.

    ``bc_webhooks``: the fake BigCommerce API delivers the webhooks its calls fire (a status PUT, a refund)
    to the hooks registered with it, bcpay's among them once ``register_webhooks`` ran.
    """
    settings = world_settings(db_url, secret_key, **sections)
    bc = FakeBigCommerce()
    bc.add_store(STORE_HASH, secure_url=STORE_URL, name="Test Shop", access_token=ACCESS_TOKEN)
    bcpay_entry = Deferred()
    to_bcpay = httpx.AsyncClient(transport=httpx.ASGITransport(app=bcpay_entry), base_url=PUBLIC_URL)
    travel = Travel()
    cp = FakeCeleryPay(cp_options or FakeOptions(), clock=travel.wall, http=to_bcpay)
    cp.add_merchant(MERCHANT_ID, MERCHANT_SECRET)
    upstream = httpx.AsyncClient(mounts={
        "all://bc.test": httpx.ASGITransport(app=create_bigcommerce_api(
            bc, webhook_client=to_bcpay if bc_webhooks else None)),
        "all://celerypay.test": httpx.ASGITransport(app=cp.app),
    })
    app = create_app(settings, http=upstream, run_worker=False)
    bcpay_entry.app = app
    async with app.router.lifespan_context(app):
        world = World(settings, app, to_bcpay, bc, cp, Worker(app.state.runtime), travel)
        try:
            yield world
        finally:
            await to_bcpay.aclose()
            await upstream.aclose()
