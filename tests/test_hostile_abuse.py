"""Cheap requests that used to lock shoppers out or spend the store's BigCommerce quota (issue 19, item 4)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bcpay import provisioning
from bcpay.clients.ratelimit import RateLimiter
from bcpay.limits import LookupGuard, client_key, starts_per_minute
from bcpay.server.app import create_app
from bcpay.storage import queries as q
from tests.world import PUBLIC_URL, STORE_HASH, STORE_URL, World, open_world

WRONG_CART = "00000000-0000-4000-8000-000000000000"


def bc_calls(w: World) -> int:
    """Every call bcpay made to BigCommerce so far (answered or not)."""
    return sum(w.rt.metrics.value("bcpay_bigcommerce_calls_total", status=s) for s in ("2xx", "4xx", "5xx"))


def client_at(app: Any, host: str) -> httpx.AsyncClient:
    """A browser at ``host``: the app sees that address as the request's client."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url=PUBLIC_URL)


async def start_from(client: httpx.AsyncClient, order_id: int, cart_id: str) -> httpx.Response:
    body = {"store_hash": STORE_HASH, "order_id": order_id, "cart_id": cart_id}
    return await client.post("/api/v1/payments", json=body, headers={"Origin": STORE_URL})


async def test_one_hostile_client_at_full_speed_never_keeps_twenty_real_shoppers_from_paying(
    sqlite_url: str, secret_key: str,
) -> None:
    """Junk starts (made-up orders, wrong carts of real orders) as fast as one client can send them, while
    20 shoppers on their own addresses start their payments: every shopper gets the cashier, the attacker
    gets 429s after a handful, and its junk costs only that handful of BigCommerce calls."""
    async with open_world(sqlite_url, secret_key) as w:
        await w.add_store()
        orders = [w.place_order(f"{10 + i}.00") for i in range(20)]
        stop = asyncio.Event()
        statuses: list[int] = []
        calls_before = bc_calls(w)

        async def attacker() -> None:
            async with client_at(w.app, "198.51.100.66") as evil:
                for n in itertools.count():
                    if stop.is_set() and n >= 200:
                        return
                    # Alternate: an order id nobody placed, then a real shopper's order with a guessed cart.
                    target = 700_000 + n if n % 2 else orders[n % 20]["id"]
                    statuses.append((await start_from(evil, target, WRONG_CART)).status_code)
                    await asyncio.sleep(0)

        async def shopper(i: int) -> httpx.Response:
            async with client_at(w.app, f"203.0.113.{i + 1}") as browser:
                await asyncio.sleep(0.01 * i)
                return await start_from(browser, orders[i]["id"], orders[i]["cart_id"])

        hostile = asyncio.ensure_future(attacker())
        answers = await asyncio.gather(*(shopper(i) for i in range(20)))
        stop.set()
        await hostile

        assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
        assert all(a.json()["cashier_url"] for a in answers)
        assert len(statuses) >= 200 and set(statuses) <= {404, 429}
        assert statuses.count(404) <= w.settings.server.failed_lookups_per_client
        assert statuses[-50:] == [429] * 50
        # The shoppers' 20 reads plus at most the attacker's handful of made-up orders.
        assert bc_calls(w) - calls_before <= 20 + w.settings.server.failed_lookups_per_client


async def test_an_ipv6_client_counts_as_its_whole_64(sqlite_url: str, secret_key: str) -> None:
    """Rotating addresses inside one /64 (every IPv6 subscriber has millions) does not reset the budget;
    another /64 has its own."""
    async with open_world(sqlite_url, secret_key) as w:
        await w.add_store()
        seen = []
        for n in range(15):
            async with client_at(w.app, f"2001:db8:1:2::{n + 1:x}") as evil:
                seen.append((await start_from(evil, 800_000 + n, WRONG_CART)).status_code)
        limit = w.settings.server.failed_lookups_per_client
        assert seen == [404] * limit + [429] * (15 - limit)
        async with client_at(w.app, "2001:db8:1:3::1") as neighbour:
            order = w.place_order("4.00")
            assert (await start_from(neighbour, order["id"], order["cart_id"])).status_code == 200


def test_client_keys_group_ipv6_by_64_and_leave_ipv4_alone() -> None:
    """The key is the IPv4 address, or the /64 of an IPv6 one (an IPv4-mapped address is its IPv4)."""
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:198.51.100.7") == client_key("198.51.100.7") == "198.51.100.7"
    assert client_key(None) == "unknown" and client_key("not-an-ip") == "not-an-ip"


async def test_a_wrong_cart_for_a_known_order_never_reaches_bigcommerce(sqlite_url: str, secret_key: str) -> None:
    """Once bcpay has read an order, a start with another cart id is refused from the kept cart hash: no
    BigCommerce call, and the shopper with the right cart still goes on."""
    async with open_world(sqlite_url, secret_key) as w:
        await w.add_store()
        order = w.place_order("9.00")
        assert (await w.start(order)).status_code == 200
        w.travel(timedelta(minutes=10))  # the kept answer is long stale: only the cart hash is left to judge
        before = bc_calls(w)
        for n in range(30):
            async with client_at(w.app, f"192.0.2.{n + 1}") as evil:
                answer = await start_from(evil, order["id"], f"{n:08d}-0000-4000-8000-000000000000")
                assert answer.status_code in (404, 429) and answer.json()["error"]["code"] in (
                    "order_not_found", "rate_limited")
        assert bc_calls(w) == before
        assert (await w.start(order)).status_code == 200


async def test_sixty_pay_now_posts_cost_one_bigcommerce_read(sqlite_url: str, secret_key: str) -> None:
    """"Pay now" read the order twice (resume, then start): 60 posts cost 120 calls. Now every read of one
    order within payments.order_read_interval is the same one, sequential posts or all at once."""
    async with open_world(sqlite_url, secret_key, payments={"order_read_interval": 60}) as w:
        await w.add_store()
        order = w.place_order("12.00")
        token = (await w.start(order)).json()["token"]
        w.travel(timedelta(seconds=61))
        before = bc_calls(w)
        for _ in range(30):
            assert (await w.client.post(f"/pay/{token}")).status_code == 303
        answers = await asyncio.gather(*(w.client.post(f"/pay/{token}") for _ in range(30)))
        assert {a.status_code for a in answers} == {303}
        assert all(a.headers["location"].startswith("http://celerypay.test/") for a in answers)
        assert bc_calls(w) - before == 1
        w.travel(timedelta(seconds=61))  # past the interval the order is read again, once
        await asyncio.gather(*(w.client.post(f"/pay/{token}") for _ in range(10)))
        assert bc_calls(w) - before == 2


async def test_a_cancelled_order_is_seen_once_the_kept_read_is_older_than_the_interval(
    sqlite_url: str, secret_key: str,
) -> None:
    """The kept answer never outlives payments.order_read_interval: an order cancelled in the control panel
    refuses "Pay now" on the next read."""
    async with open_world(sqlite_url, secret_key) as w:
        await w.add_store()
        order = w.place_order("3.00")
        token = (await w.start(order)).json()["token"]
        w.bc.order(STORE_HASH, order["id"])["status_id"] = 5
        w.travel(timedelta(seconds=w.settings.payments.order_read_interval + 1))
        answer = await w.client.post(f"/pay/{token}")
        assert answer.status_code == 303 and "error=" in answer.headers["location"]


async def test_an_order_bcpay_cancelled_is_read_again_by_the_next_start(sqlite_url: str, secret_key: str) -> None:
    """The kept answer said Awaiting Payment; bcpay's own cancel (an expired payment) forgets it, so "Try
    again" a second later is refused instead of opening a new cashier for a cancelled order."""
    async with open_world(sqlite_url, secret_key, payments={"on_expired": "cancel", "order_read_interval": 60}) as w:
        await w.add_store()
        order = w.place_order("4.00")
        body = (await w.start(order)).json()
        w.cp.payment_record(body["cashier_url"].rsplit("/", 1)[1]).expires_at = 0  # type: ignore[assignment]
        assert await w.cp.expire_due()
        await w.cp.deliver_due()
        await w.run_jobs()
        assert w.order(order["id"])["status_id"] == 5
        before = bc_calls(w)
        again = await w.start(order)
        assert again.status_code == 422, again.text
        assert bc_calls(w) - before == 1
        assert len(w.cp.payments) == 1


async def test_a_status_webhook_lets_the_next_pay_now_see_the_new_status(sqlite_url: str, secret_key: str) -> None:
    """An order cancelled in the control panel: its store/order/statusUpdated webhook forgets the kept read."""
    async with open_world(sqlite_url, secret_key, payments={"order_read_interval": 60}) as w:
        await w.add_store()
        order = w.place_order("3.00")
        token = (await w.start(order)).json()["token"]
        w.bc.set_order_status(STORE_HASH, order["id"], 5)
        async with w.rt.db.read() as conn:
            store = await q.require_store(conn, STORE_HASH)
        hook = json.dumps({"scope": "store/order/statusUpdated", "producer": f"stores/{STORE_HASH}", "hash": "s1",
                           "data": {"type": "order", "id": order["id"]}}).encode()
        answer = await w.client.post(f"/webhooks/bigcommerce/{STORE_HASH}", content=hook, headers={
            "Content-Type": "application/json",
            provisioning.WEBHOOK_SECRET_HEADER: w.rt.vault.open(store.webhook_secret_enc or "")})
        assert answer.status_code == 200
        pay_now = await w.client.post(f"/pay/{token}")
        assert pay_now.status_code == 303 and "error=" in pay_now.headers["location"]


@contextlib.asynccontextmanager
async def second_process(w: World) -> AsyncIterator[httpx.AsyncClient]:
    """Another bcpay process: its own app and Database on the same database and fakes."""
    app = create_app(w.settings, http=w.rt.http, run_worker=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
            yield client


async def test_processes_share_one_read_per_order_and_the_cart_check(db_url: str, secret_key: str) -> None:
    """A start on one process and "Pay now" plus a wrong-cart start on another cost one BigCommerce read."""
    async with open_world(db_url, secret_key, payments={"order_read_interval": 60}) as w:
        await w.add_store()
        order = w.place_order("8.00")
        before = bc_calls(w)
        token = (await w.start(order)).json()["token"]
        async with second_process(w) as other:
            assert (await other.post(f"/pay/{token}")).status_code == 303
            assert (await start_from(other, order["id"], WRONG_CART)).status_code == 404
            other_rt = other._transport.app.state.runtime  # type: ignore[attr-defined]
            other_calls = sum(other_rt.metrics.value("bcpay_bigcommerce_calls_total", status=s)
                              for s in ("2xx", "4xx", "5xx"))
        assert bc_calls(w) - before == 1 and other_calls == 0


def test_the_start_budget_is_half_the_stores_quota_a_minute() -> None:
    """Standard plan (150 per 30 s) gives 150 starts a minute that read an order; Enterprise-sized quotas
    more; a store whose quota is not known yet gets the smallest plan's."""
    assert starts_per_minute(150, 30.0) == 150
    assert starts_per_minute(450, 30.0) == 450
    assert starts_per_minute(None, None) == 150
    assert starts_per_minute(10, 30.0) == 30  # never below the floor

    now = [0.0]
    guard = LookupGuard(per_client=10, per_order=5, per_store=300, clock=lambda: now[0])
    limiter = RateLimiter()
    limiter.quota, limiter.window, limiter.window_known = 60, 30.0, True  # 120 a minute: 60 for starts
    admit = guard.read_admitter(STORE_HASH, limiter)
    granted = [admit() == 0 for _ in range(70)]
    assert granted.count(True) == 60 and not any(granted[60:])
    now[0] += 1.0  # one second later one more fits
    assert admit() == 0 and admit() > 0


@pytest.mark.parametrize("per_store", [3])
async def test_past_the_store_budget_only_known_orders_go_on(sqlite_url: str, secret_key: str, per_store: int) -> None:
    """Junk from many clients together spends the store-wide budget; then unknown orders wait, while a
    shopper resuming an order bcpay knows goes on."""
    async with open_world(sqlite_url, secret_key, server={"failed_lookups_per_minute": per_store}) as w:
        await w.add_store()
        known = w.place_order("5.00")
        assert (await w.start(known)).status_code == 200
        seen = []
        for n in range(per_store + 2):
            async with client_at(w.app, f"192.0.2.{n + 10}") as evil:
                seen.append((await start_from(evil, 900_000 + n, WRONG_CART)).status_code)
        assert seen == [404] * per_store + [429, 429]
        assert (await w.start(known)).status_code == 200
