"""The sandbox: real servers on loopback, provisioned like an operator would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from bcpay.sandbox.runner import OUTLET_CHANNEL, STORE_HASH, Sandbox, SandboxOptions
from bcpay.snippet import SCRIPT_NAME, asset


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxOptions(port_base=0, storefront_delay_ms=0)) as sb:
        yield sb


async def test_sandbox_provisions_the_store_like_an_operator(sandbox: Sandbox) -> None:
    store = sandbox.bc.store(STORE_HASH)
    scripts = sorted((s for s in store.scripts.values() if s["name"] == SCRIPT_NAME), key=lambda s: s["channel_id"])
    assert [s["channel_id"] for s in scripts] == [1, OUTLET_CHANNEL]  # one per storefront channel
    for script in scripts:
        assert script["visibility"] == "order_confirmation" and script["consent_category"] == "essential"
        assert asset().integrity in script["html"] and sandbox.urls.bcpay in script["html"]
    scopes = sorted(h["scope"] for h in store.hooks.values())
    assert scopes == ["store/app/uninstalled", "store/channel/created", "store/channel/updated",
                      "store/order/refund/created", "store/order/statusUpdated"]
    # A new store's hold (the expiry plus 30 minutes), with the usual sweep: --unpaid-hold shortens both.
    assert sandbox.settings is not None and sandbox.settings.outbox.sweep_interval == 60
    assert "60 minute(s) after" in sandbox.banner()
    async with httpx.AsyncClient() as http:
        assert (await http.get(sandbox.urls.bcpay + "/readyz")).json() == {"status": "ok"}
        page = await http.get(sandbox.urls.storefront + "/")
        assert page.status_code == 200
        assert (await http.get(sandbox.urls.outlet + "/")).status_code == 200
    assert sandbox.urls.outlet in sandbox.banner() and sandbox.urls.storefront in sandbox.banner()


async def test_an_order_on_the_second_channel_comes_back_to_that_channel(sandbox: Sandbox) -> None:
    """Channel 2 has its own site and checkout URL: CORS allows it for this store, the return goes there."""
    order = sandbox.bc.create_order(STORE_HASH, total="10.00", channel_id=OUTLET_CHANNEL)
    async with httpx.AsyncClient(timeout=10) as http:
        start = await http.post(
            sandbox.urls.bcpay + "/api/v1/payments",
            json={"store_hash": STORE_HASH, "order_id": order["id"], "cart_id": order["cart_id"]},
            headers={"Origin": sandbox.urls.outlet},
        )
        assert start.status_code == 200, start.text
        assert start.headers["access-control-allow-origin"] == sandbox.urls.outlet
        paid = await http.post(start.json()["cashier_url"] + "/pay")
        back = await http.get(paid.headers["location"])
        assert back.headers["location"].startswith(sandbox.urls.outlet + "/checkout/order-confirmation#bcpay_token=")


async def test_whole_flow_over_real_http(sandbox: Sandbox) -> None:
    """Snippet call, cashier Pay button, return hop, background notification, order paid."""
    order = sandbox.bc.create_order(STORE_HASH, total="42.50")
    async with httpx.AsyncClient(timeout=10) as http:
        start = await http.post(
            sandbox.urls.bcpay + "/api/v1/payments",
            json={"store_hash": STORE_HASH, "order_id": order["id"], "cart_id": order["cart_id"]},
            headers={"Origin": sandbox.urls.storefront},
        )
        assert start.status_code == 200, start.text
        assert start.headers["access-control-allow-origin"] == sandbox.urls.storefront
        body = start.json()
        assert body["cashier_url"].startswith(sandbox.urls.celerypay + "/cashier/")
        paid = await http.post(body["cashier_url"] + "/pay")
        assert paid.status_code == 303
        back = await http.get(paid.headers["location"])
        assert back.status_code == 303
        assert back.headers["location"].startswith(sandbox.urls.storefront + "/checkout/order-confirmation#bcpay_token=")
        for _ in range(100):
            state = (await http.get(f"{sandbox.urls.bcpay}/api/v1/payments/{body['token']}")).json()["state"]
            if state == "paid" and sandbox.bc.order(STORE_HASH, order["id"])["status_id"] == 11:
                break
            await asyncio.sleep(0.1)
    final = sandbox.bc.order(STORE_HASH, order["id"])
    assert final["status_id"] == 11 and "OKCloud Pay: paid 42.50 USD" in final["staff_notes"]
    assert any(d.status_code == 200 for d in sandbox.celerypay.deliveries)


async def test_foreign_origins_are_refused_by_cors(sandbox: Sandbox) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.options(
            sandbox.urls.bcpay + "/api/v1/payments",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert answer.status_code == 403
        ok = await http.options(
            sandbox.urls.bcpay + "/api/v1/payments",
            headers={"Origin": sandbox.urls.storefront, "Access-Control-Request-Method": "POST"},
        )
        assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == sandbox.urls.storefront


async def test_the_sandbox_with_a_one_minute_hold_cancels_an_abandoned_order() -> None:
    """`bcpay sandbox --unpaid-hold 1`: an order left unpaid for over a minute is cancelled by the worker."""
    from datetime import UTC, datetime, timedelta

    options = SandboxOptions(port_base=0, storefront_delay_ms=0, unpaid_hold=1,
                             settings={"outbox": {"sweep_interval": 1}})
    async with Sandbox(options) as sb:
        assert sb.settings is not None and sb.store is not None and sb.store.settings["unpaid_hold"] == 1
        assert "1 minute(s) after" in sb.banner()
        old = sb.bc.create_order(STORE_HASH, total="12.00", created=datetime.now(UTC) - timedelta(minutes=2))
        fresh = sb.bc.create_order(STORE_HASH, total="12.00")
        for _ in range(100):
            if sb.bc.order(STORE_HASH, old["id"])["status_id"] == 5:
                break
            await asyncio.sleep(0.1)
        cancelled = sb.bc.order(STORE_HASH, old["id"])
        assert cancelled["status_id"] == 5 and "not paid within 1 minute; order cancelled" in cancelled["staff_notes"]
        assert sb.bc.order(STORE_HASH, fresh["id"])["status_id"] == 7

