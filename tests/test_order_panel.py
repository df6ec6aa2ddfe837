"""The OKCloud Pay panel on BigCommerce's order page (App Extension, reference section 14)."""

from __future__ import annotations

import html as html_lib
import re
from typing import Any

import httpx

from bcpay import operations, provisioning
from bcpay.sandbox.bc_apps import uninstall_app
from bcpay.scopes import EXTENSION_SCOPES
from bcpay.storage import queries as q
from tests import test_bcapp
from tests.test_bcapp import CLIENT_ID, SCOPES, csrf_of, install, signed
from tests.test_roles import as_clerk, paid_payment
from tests.world import STORE_HASH, World

world, panel = test_bcapp.world, test_bcapp.panel
KEY = re.compile(r'name="key" value="([^"]+)"')
APP_SCOPES = " ".join((SCOPES, *EXTENSION_SCOPES))


def extensions(w: World) -> list[dict[str, Any]]:
    return list(w.bc.store(STORE_HASH).app_extensions.values())


async def open_panel(panel: httpx.AsyncClient, order_id: int, **claims: Any) -> httpx.Response:
    """The merchant clicks "OKCloud Pay payment" on order N: BigCommerce loads the app with the extension's URL."""
    load = await panel.get("/bc/load", params={"signed_payload_jwt": signed(
        url=f"/orders/{order_id}/okcloud-pay", **claims)})
    assert load.status_code == 303, load.text
    return await panel.get(load.headers["location"])


async def test_an_install_without_the_extensions_scope_still_installs_and_says_why(
        world: World, panel: httpx.AsyncClient) -> None:
    answer = await install(world, panel)
    assert answer.status_code == 303 and extensions(world) == []
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    [check] = [c for c in await provisioning.provision(world.rt, store) if c.name == "order page panel"]
    assert not check.ok and "403" in check.detail and "App Extensions (manage) scope" in check.fix[0]


async def test_the_extension_is_registered_at_install_once_and_replaced_when_stale(
        world: World, panel: httpx.AsyncClient) -> None:
    await install(world, panel, scope=APP_SCOPES)
    [ext] = extensions(world)
    assert (ext["model"], ext["context"], ext["url"], ext["label"]["defaultValue"]) == (
        "ORDERS", "PANEL", "/orders/${id}/okcloud-pay", "OKCloud Pay payment")
    assert ext["label"]["locales"] == [{"value": "OKCloud Pay 付款", "localeCode": "zh-CN"}]
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert await provisioning.register_app_extension(world.rt, store) == "unchanged"
    ext["label"]["defaultValue"] = "An old label"
    assert await provisioning.register_app_extension(world.rt, store) == "updated"
    [fresh] = extensions(world)
    assert fresh["label"]["defaultValue"] == "OKCloud Pay payment" and fresh["id"] != ext["id"]
    checks = {c.name: c for c in await provisioning.provision(world.rt, store)}
    assert checks["order page panel"].ok and checks["order page panel"].detail == "unchanged"
    assert len(extensions(world)) == 1


async def test_uninstall_and_stores_remove_leave_no_extension(world: World, panel: httpx.AsyncClient) -> None:
    await install(world, panel, scope=APP_SCOPES)
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    notes = await operations.remove_store(world.rt, STORE_HASH)
    assert "order page panel: 1 removed" in notes and extensions(world) == []
    await install(world, panel, scope=APP_SCOPES)
    assert len(extensions(world)) == 1
    await uninstall_app(world.bc, world.rt.http, STORE_HASH, client_id=CLIENT_ID)
    assert extensions(world) == [] and store.source == "app"


async def test_a_store_with_its_own_api_account_gets_no_extension(world: World) -> None:
    await world.add_store()
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert await provisioning.register_app_extension(world.rt, store) == "not an app install"
    assert extensions(world) == []


async def test_the_panel_shows_the_payment_and_refunds_part_of_it_after_confirming(
        world: World, panel: httpx.AsyncClient) -> None:
    await world.add_store()
    payment_row, order_id = await paid_payment(world)
    page = await open_panel(panel, order_id)
    assert page.status_code == 200 and str(page.url).endswith(f"/bc/orders/{order_id}?lang=en")
    text = html_lib.unescape(page.text)
    [cp_id] = list(world.cp.payments)
    assert "20.00 USD" in text and "succeeded" in text and cp_id in text
    ask = await panel.post(f"/bc/orders/{order_id}/refund?lang=en", data={
        "csrf": csrf_of(page.text), "payment_id": str(payment_row), "amount": "5.00"})
    assert ask.status_code == 200 and "Refund 5.00 USD of order" in html_lib.unescape(ask.text)
    assert world.cp.refunds == {}  # nothing before the confirmation
    key = KEY.search(ask.text)
    assert key
    done = await panel.post(f"/bc/orders/{order_id}/refund?lang=en", data={
        "csrf": csrf_of(ask.text), "payment_id": str(payment_row), "amount": "5.00", "confirm": "yes",
        "key": key.group(1)})
    assert done.status_code == 303 and done.headers["location"] == f"/bc/orders/{order_id}?lang=en&done=refunded"
    again = await panel.post(f"/bc/orders/{order_id}/refund?lang=en", data={  # the same form posted twice
        "csrf": csrf_of(ask.text), "payment_id": str(payment_row), "amount": "5.00", "confirm": "yes",
        "key": key.group(1)})
    assert again.status_code == 303
    [refund] = world.cp.refunds.values()
    assert refund["amount"] == 500
    await world.run_jobs()
    shown = html_lib.unescape((await panel.get(done.headers["location"])).text)
    assert "Refund sent to CeleryPay." in shown and refund["id"] in shown
    over = await panel.post(f"/bc/orders/{order_id}/refund?lang=en", data={
        "csrf": csrf_of(shown), "payment_id": str(payment_row), "amount": "99.00"})
    assert over.status_code == 400 and "You can refund between 0 and 15.00 USD" in html_lib.unescape(over.text)


async def test_the_panel_speaks_chinese_to_a_chinese_control_panel(world: World, panel: httpx.AsyncClient) -> None:
    await world.add_store()
    _, order_id = await paid_payment(world)
    page = await open_panel(panel, order_id, user={"id": 1, "email": "owner@example.com", "locale": "zh-CN"},
                            owner={"id": 1, "email": "owner@example.com"})
    assert str(page.url).endswith("?lang=zh")
    assert "OKCloud Pay 付款 · 订单" in page.text and "立即向 CeleryPay 查询" in page.text


async def test_a_user_the_owner_did_not_allow_sees_the_panel_read_only(world: World, panel: httpx.AsyncClient) -> None:
    await world.add_store()
    payment_row, order_id = await paid_payment(world)
    page = await open_panel(panel, order_id, **as_clerk())
    assert 'id="read-only"' in page.text and "<button" not in page.text
    for path, extra in (("refund", {"payment_id": str(payment_row), "amount": "1.00", "confirm": "yes",
                                    "key": "panel-" + "k" * 24}), ("lookup", {}), ("pay-link", {})):
        token = csrf_of((await panel.get("/bc/settings")).text)  # a valid token of this session
        refused = await panel.post(f"/bc/orders/{order_id}/{path}", data={"csrf": token, **extra})
        assert refused.status_code == 403 and refused.headers["X-Bcpay-Error"] == "not_allowed"
    assert world.cp.refunds == {}


async def test_look_up_now_and_the_pay_link_for_an_unpaid_order(world: World, panel: httpx.AsyncClient) -> None:
    """Paid at CeleryPay, the notification not here yet: "Look up" applies CeleryPay's answer. An unpaid order's
    pay link is shown to send the shopper."""
    await world.add_store()
    order = world.place_order("7.00")
    body = (await world.start(order)).json()
    page = await open_panel(panel, order["id"])
    link = await panel.post(f"/bc/orders/{order['id']}/pay-link", data={"csrf": csrf_of(page.text)})
    assert link.status_code == 200 and f"/pay/{body['token']}" in link.text
    await world.cp.pay(body["cashier_url"].rsplit("/", 1)[1])  # no delivery
    looked = await panel.post(f"/bc/orders/{order['id']}/lookup", data={"csrf": csrf_of(link.text)})
    assert looked.status_code == 303
    shown = (await panel.get(looked.headers["location"])).text
    assert 'data-field="state">succeeded' in shown


async def test_hostile_panel_requests_change_nothing(world: World, panel: httpx.AsyncClient) -> None:
    await world.add_store()
    payment_row, order_id = await paid_payment(world)
    other = world.place_order("3.00")
    page = await open_panel(panel, order_id)
    token = csrf_of(page.text)
    # Another order's payment row, a forged CSRF token, a key not from the panel, an order id out of range.
    wrong = await panel.post(f"/bc/orders/{other['id']}/refund", data={
        "csrf": token, "payment_id": str(payment_row), "amount": "1.00"})
    assert wrong.status_code == 404 and "not one of this order's" in html_lib.unescape(wrong.text)
    forged = await panel.post(f"/bc/orders/{order_id}/refund", data={
        "csrf": "x" * 40, "payment_id": str(payment_row), "amount": "1.00", "confirm": "yes", "key": "panel-" + "k" * 24})
    assert forged.status_code == 403
    bad_key = await panel.post(f"/bc/orders/{order_id}/refund", data={
        "csrf": token, "payment_id": str(payment_row), "amount": "1.00", "confirm": "yes", "key": "settings-x"})
    assert bad_key.status_code == 400
    assert (await panel.get("/bc/orders/0")).status_code == 400
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="https://127.0.0.1:8000") as c:
        assert (await c.get(f"/bc/orders/{order_id}")).status_code == 401  # no session
    assert world.cp.refunds == {}
    junk_url = await panel.get("/bc/load", params={"signed_payload_jwt": signed(url="/orders/../x/okcloud-pay")})
    assert junk_url.headers["location"] == "/bc/settings"
