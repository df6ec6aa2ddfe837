"""What merchants and shoppers see of the unpaid hold: the settings page, the pay page and the pay link."""

from __future__ import annotations

import html as html_lib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from bcpay.storage import queries as q
from tests.test_bcapp import CLIENT_SECRET, csrf_of, open_settings, settings_form
from tests.world import STORE_HASH, World, open_world

HOLD = 60


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key, app={"client_secret": CLIENT_SECRET}) as w:
        await w.add_store()
        yield w


@pytest.fixture
async def panel(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """The control-panel iframe's browser (https, so the Secure session cookie is kept)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="https://127.0.0.1:8000") as c:
        yield c


async def cancel_unpaid(world: World) -> dict[str, object]:
    """An abandoned order, cancelled by the hold."""
    order = world.place_order()
    world.travel(timedelta(minutes=HOLD + 1))
    await world.worker.sweep()
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 5
    return order


async def test_the_settings_page_lists_the_orders_cancelled_unpaid_and_edits_the_hold(
    world: World, panel: httpx.AsyncClient
) -> None:
    """The last cancellations, each linked to its order; the hold is a field, and a merchant's 0 stays theirs."""
    order = await cancel_unpaid(world)
    page = html_lib.unescape(await open_settings(panel))
    assert 'id="unpaid_hold" name="unpaid_hold" value="60"' in page
    listed = page.split('<h2 id="unpaid">', 1)[1].split("<h2", 1)[0]
    assert f'/manage/orders/{order["id"]}"' in listed and f"#{order['id']}</a>" in listed
    assert "not paid within 60 minutes; order cancelled" in listed

    saved = await panel.post("/bc/settings", data=settings_form(csrf_of(page), api_secret="", unpaid_hold="0"))
    assert saved.status_code == 303, saved.text
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert store.settings["unpaid_hold"] == 0

    bad = await panel.post("/bc/settings", data=settings_form(csrf_of(page), api_secret="", unpaid_hold="1h",
                                                              version=""))
    assert bad.status_code == 400 and "0 (keep it) to 43200" in bad.text and 'value="1h"' in bad.text


async def test_a_settings_form_without_the_hold_leaves_it_as_it_is(world: World, panel: httpx.AsyncClient) -> None:
    """A page opened before the field existed saves the other settings and keeps the store's hold."""
    page = await open_settings(panel)
    saved = await panel.post("/bc/settings", data=settings_form(csrf_of(page)))
    assert saved.status_code == 303
    async with world.rt.db.read() as conn:
        row = await q.require_store(conn, STORE_HASH)
    assert row.settings["unpaid_hold"] == HOLD


async def abandoned_at_the_cashier(world: World) -> tuple[dict[str, object], str]:
    """A shopper opened the cashier and left; the store's 10-minute hold cancels the order."""
    from bcpay import stores

    await stores.update_settings(world.rt, STORE_HASH, {"unpaid_hold": 10})
    order = world.place_order()
    token = (await world.start(order)).json()["token"]
    world.travel(timedelta(minutes=11))
    await world.worker.sweep()
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 5
    return order, token


@pytest.mark.parametrize(("accept", "title", "body"), [
    ("en-US,en;q=0.8", "was cancelled", "This order was not paid in time, so it was cancelled. No payment was taken."),
    ("zh-CN,zh;q=0.9,en;q=0.5", "已取消", "此订单未在规定时间内付款，已被取消，未收取任何款项。"),
])
async def test_the_pay_page_of_an_order_cancelled_unpaid_says_so_in_the_shoppers_language_without_a_cashier(
    world: World, accept: str, title: str, body: str,
) -> None:
    """The store's link, no Pay now; pressing Pay now anyway opens no cashier and creates no payment."""
    order, token = await abandoned_at_the_cashier(world)
    payments_before = len(world.cp.payments)
    page = await world.client.get(f"/pay/{token}", headers={"Accept-Language": accept})
    assert page.status_code == 200
    text = html_lib.unescape(page.text)
    assert f"#{order['id']}" in text and title in text and body in text
    assert '<a href="https://shop.example.com">' in text
    assert "<form" not in text and "cashier" not in text and 'lang="' + accept[:2] + '"' in text

    pressed = await world.client.post(f"/pay/{token}")
    assert pressed.status_code == 303 and pressed.headers["location"].startswith(f"/pay/{token}")
    again = html_lib.unescape((await world.client.get(pressed.headers["location"])).text)
    assert "No payment was taken" in again and "<form" not in again
    assert len(world.cp.payments) == payments_before


async def test_an_order_the_merchant_reopened_can_be_paid_again(world: World) -> None:
    """Put back to Awaiting Payment by hand after the hold cancelled it: the page offers Pay now again."""
    order, token = await abandoned_at_the_cashier(world)
    world.bc.store(STORE_HASH).orders[int(str(order["id"]))]["status_id"] = 7
    world.travel(timedelta(seconds=10))  # past the shared order read's interval
    page = html_lib.unescape((await world.client.get(f"/pay/{token}")).text)
    assert "Pay now with OKCloud Pay" in page and "No payment was taken" not in page


async def test_a_pay_link_for_an_order_cancelled_unpaid_is_refused_saying_why(world: World) -> None:
    """`bcpay pay-link` names the reason and where the shopper can order again; no link is made."""
    from bcpay import payflow

    order, _ = await abandoned_at_the_cashier(world)
    with pytest.raises(payflow.Refused, match=r"cancelled because it was not paid within the store's hold: no pay "
                                              r"link; the shopper can place a new order at https://shop.example.com"
                       ) as refused:
        await payflow.pay_link(world.rt, STORE_HASH, int(str(order["id"])))
    assert refused.value.code == "cancelled_unpaid"
