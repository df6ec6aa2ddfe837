"""The fake storefront places orders and renders the confirmation page like BigCommerce."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.storefront import create_storefront, render_stencil_values

STORE = "abc123"
SHOP = "http://127.0.0.1:8081"


@pytest.fixture
def state() -> FakeBigCommerce:
    fake = FakeBigCommerce()
    fake.add_store(STORE, secure_url=SHOP)
    return fake


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SHOP)


@pytest.fixture
async def shop(state: FakeBigCommerce) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_storefront(state, STORE)) as client:
        yield client


async def _place_order(shop: httpx.AsyncClient, method: str = "bankdeposit",
                       email: str = "shopper@example.com") -> int:
    added = await shop.post("/cart.php", data={"product_id": "77", "qty": "2"})
    assert added.status_code == 302 and added.headers["location"] == "/cart.php"
    placed = await shop.post("/checkout", data={"email": email, "first_name": "Ada",
                                                 "last_name": "Lovelace", "payment_method": method})
    assert placed.status_code == 302, placed.text
    location = placed.headers["location"]
    assert location.startswith("/checkout/order-confirmation/")
    return int(location.rsplit("/", 1)[1])


def _add_script(state: FakeBigCommerce, uuid: str, **fields: Any) -> None:
    script = {"uuid": uuid, "name": uuid, "kind": "script_tag", "html": f"<script>/*{uuid}*/</script>",
              "visibility": "order_confirmation", "location": "footer", "enabled": True,
              "channel_id": 1, "consent_category": "essential", "load_method": "default",
              "integrity_hashes": [], "api_client_id": "sandbox-client-id", **fields}
    state.stores[STORE].scripts[uuid] = script


# --- shopping and checkout ----------------------------------------------------------


async def test_product_page_lists_products_in_store_currency(shop: httpx.AsyncClient) -> None:
    """The home page shows both products with prices and add-to-cart forms."""
    page = await shop.get("/")
    assert page.status_code == 200
    assert "Orbit Terrarium" in page.text and "109.00 USD" in page.text
    assert 'action="/cart.php"' in page.text


async def test_cart_keeps_items_under_a_cart_cookie(shop: httpx.AsyncClient) -> None:
    """Adding twice accumulates quantity in the same cart."""
    await shop.post("/cart.php", data={"product_id": "86"})
    await shop.get("/cart.php", params={"action": "add", "product_id": "86"})
    cart = await shop.get("/cart.php")
    assert shop.cookies.get("bc_cart_id")
    assert "99.00 USD" in cart.text  # 2 x 49.50


async def test_offline_method_checkout_creates_awaiting_payment_order(
        shop: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """The offline method places a status-7 order with the display name and cart id."""
    order_id = await _place_order(shop)
    order = state.order(STORE, order_id)
    assert order["status_id"] == 7 and order["status"] == "Awaiting Payment"
    assert order["payment_method"] == "OKCloud Pay" and order["payment_status"] == ""
    assert order["total_inc_tax"] == "218.0000" and order["default_currency_code"] == "USD"
    assert order["billing_address"]["email"] == "shopper@example.com"
    assert order["cart_id"] not in state.stores[STORE].carts
    assert state.stores[STORE].order_items[order_id][0]["quantity"] == 2
    assert shop.cookies.get("SHOP_SESSION_TOKEN")


async def test_test_gateway_checkout_creates_awaiting_fulfillment_order(
        shop: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """The test gateway places a paid status-11 order."""
    order = state.order(STORE, await _place_order(shop, method="testgateway"))
    assert order["status_id"] == 11 and order["payment_method"] == "Test Payment Gateway"
    assert order["payment_status"] == "captured"


async def test_checkout_lists_enabled_methods_and_validates(shop: httpx.AsyncClient,
                                                           state: FakeBigCommerce) -> None:
    """Checkout offers enabled methods only and refuses a bad email without placing an order."""
    assert (await shop.get("/checkout")).headers.get("location") == "/cart.php"
    await shop.post("/cart.php", data={"product_id": "77"})
    state.stores[STORE].payment_methods[1].enabled = False
    page = await shop.get("/checkout")
    assert "OKCloud Pay" in page.text and "Test Payment Gateway" not in page.text
    refused = await shop.post("/checkout", data={"email": "nope", "payment_method": "bankdeposit"})
    assert refused.status_code == 400 and "valid email" in refused.text
    gone = await shop.post("/checkout", data={"email": "a@b.test", "payment_method": "testgateway"})
    assert gone.status_code == 400
    assert state.stores[STORE].orders == {}


# --- storefront orders API ------------------------------------------------------------------


async def test_storefront_order_api_shape(shop: httpx.AsyncClient) -> None:
    """The session that placed the order reads it in the orders.sf.yml shape, with payments."""
    order_id = await _place_order(shop)
    response = await shop.get(f"/api/storefront/orders/{order_id}",
                              params={"include": "lineItems,payments,billingAddress"},
                              headers={"Accept": "application/vnd.bc.v1+json"})
    assert response.status_code == 200
    body = response.json()
    assert body["orderId"] == order_id and body["cartId"]
    assert body["currency"] == {"name": "US Dollar", "code": "USD", "symbol": "$",
                                "decimalPlaces": 2}
    assert body["orderAmount"] == 218 and body["orderAmountAsInteger"] == 21800
    assert body["status"] == "AWAITING_PAYMENT" and body["isComplete"] is True
    assert body["billingAddress"]["email"] == "shopper@example.com"
    [item] = body["lineItems"]["physicalItems"]
    assert (item["name"], item["quantity"], item["productId"]) == ("Orbit Terrarium", 2, 77)
    [payment] = body["payments"]
    assert payment["providerId"] == "bankdeposit" and payment["description"] == "OKCloud Pay"
    assert payment["amount"] == 218 and payment["detail"]["instructions"]
    alias = await shop.get(f"/api/storefront/order/{order_id}")
    assert alias.status_code == 200 and "payments" not in alias.json()


async def test_storefront_status_follows_the_order(shop: httpx.AsyncClient,
                                                   state: FakeBigCommerce) -> None:
    """The storefront status name maps from status_id."""
    order_id = await _place_order(shop, method="testgateway")
    body = (await shop.get(f"/api/storefront/orders/{order_id}")).json()
    assert body["status"] == "AWAITING_FULFILLMENT"
    state.set_order_status(STORE, order_id, 12)
    body = (await shop.get(f"/api/storefront/orders/{order_id}")).json()
    assert body["status"] == "MANUAL_VERIFICATION_REQUIRED"


async def test_storefront_order_api_needs_the_placing_session(shop: httpx.AsyncClient,
                                                              state: FakeBigCommerce) -> None:
    """Another shopper, or no session, gets 404 for the same order."""
    order_id = await _place_order(shop)
    async with _client(create_storefront(state, STORE)) as stranger:
        assert (await stranger.get(f"/api/storefront/orders/{order_id}")).status_code == 404
        await _place_order(stranger, email="other@example.com")
        refused = await stranger.get(f"/api/storefront/orders/{order_id}")
        assert refused.status_code == 404 and refused.json()["title"] == "Order not found"
    # An order created outside this session (e.g. through the API) is not readable either.
    other = state.create_order(STORE, total="5")
    assert (await shop.get(f"/api/storefront/orders/{other['id']}")).status_code == 404


# --- order confirmation page -------------------------------------------------------------------


async def test_confirmation_page_embeds_scripts_as_stencil_does(shop: httpx.AsyncClient,
                                                               state: FakeBigCommerce) -> None:
    """script_tag html is stored verbatim with Stencil values substituted; src scripts get SRI."""
    _add_script(state, "snippet", html="<script>var o = {{checkout.order.id}}, "
                                       "c = '{{ checkout.id }}';</script>")
    _add_script(state, "everywhere", visibility="all_pages", html="<script>var all = 1;</script>")
    _add_script(state, "loader", kind="src", html=None, src="https://cdn.test/a.js?x=1&y=2",
                integrity_hashes=["sha384-abc"], load_method="defer")
    _add_script(state, "disabled", enabled=False)
    _add_script(state, "shop-only", visibility="storefront")
    _add_script(state, "checkout-only", visibility="checkout")
    order_id = await _place_order(shop)
    cart_id = state.order(STORE, order_id)["cart_id"]
    page = await shop.get(f"/checkout/order-confirmation/{order_id}")
    assert page.status_code == 200 and "Thank you for your order" in page.text
    assert f"<script>var o = {order_id}, c = '{cart_id}';</script>" in page.text
    assert "<script>var all = 1;</script>" in page.text
    assert ('<script src="https://cdn.test/a.js?x=1&amp;y=2" defer integrity="sha384-abc" '
            'crossorigin="anonymous"></script>') in page.text
    for hidden in ("disabled", "shop-only", "checkout-only"):
        assert f"/*{hidden}*/" not in page.text
    footer = page.text.split('<footer class="site">', 1)[1]
    assert "var o = " in footer and footer.index("order-confirmation.js") < footer.index("var o = ")


async def test_confirmation_page_sets_checkout_config_and_variant(state: FakeBigCommerce) -> None:
    """window.checkoutConfig carries the order id; the variant and delay reach the page script."""
    async with _client(create_storefront(state, STORE, confirmation_variant="xhr",
                                         storefront_delay_ms=120)) as shop:
        order_id = await _place_order(shop)
        page = (await shop.get(f"/checkout/order-confirmation/{order_id}")).text
        config = json.loads(page.split("window.checkoutConfig = ", 1)[1].split(";", 1)[0])
        assert config["orderId"] == order_id
        sandbox = json.loads(page.split("window.sandboxStorefront = ", 1)[1].split(";", 1)[0])
        assert sandbox == {"variant": "xhr", "delayMs": 120}
        page = (await shop.get(f"/checkout/order-confirmation/{order_id}",
                               params={"variant": "fetch"})).text
        assert '"variant": "fetch"' in page
        script = await shop.get("/assets/js/order-confirmation.js")
        assert script.headers["content-type"].startswith("text/javascript")
        for needle in ("XMLHttpRequest", "fetch(", "application/vnd.bc.v1+json",
                       "include=lineItems,payments,billingAddress", 'credentials: "include"',
                       "withCredentials = true", "sandbox.delayMs"):
            assert needle in script.text


async def test_confirmation_without_id_uses_the_last_order(shop: httpx.AsyncClient) -> None:
    """/checkout/order-confirmation shows the session's last order; strangers get 404."""
    await _place_order(shop)
    second = await _place_order(shop)
    page = await shop.get("/checkout/order-confirmation")
    assert page.status_code == 200 and f'"orderId": {second}' in page.text
    shop.cookies.clear()
    assert (await shop.get(f"/checkout/order-confirmation/{second}")).status_code == 404


async def test_consent_banner_keeps_only_essential_scripts(shop: httpx.AsyncClient,
                                                           state: FakeBigCommerce) -> None:
    """With the cookie-consent banner on, analytics scripts do not load."""
    _add_script(state, "essential-one")
    _add_script(state, "analytics-one", consent_category="analytics")
    state.stores[STORE].cookie_consent_banner = True
    page = (await shop.get(f"/checkout/order-confirmation/{await _place_order(shop)}")).text
    assert "/*essential-one*/" in page and "/*analytics-one*/" not in page


def test_unknown_stencil_values_render_empty() -> None:
    """Handlebars renders a missing context key as an empty string."""
    html = "{{checkout.order.id}}|{{{checkout.id}}}|{{customer.id}}"
    assert render_stencil_values(html, {"checkout.order.id": "7", "checkout.id": "c"}) == "7|c|"


# --- control panel --------------------------------------------------------------------------------


async def test_control_panel_lists_orders(shop: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """The order table shows id, customer, total, method, status and staff notes."""
    order_id = await _place_order(shop)
    state.apply_order_put(STORE, order_id, {"staff_notes": "CeleryPay pay_9"})
    page = await shop.get("/manage/orders")
    row = page.text.split(f'data-order-id="{order_id}"', 1)[1].split("</tr>", 1)[0]
    for text in ("shopper@example.com", "218.0000 USD", "OKCloud Pay", "Awaiting Payment",
                 "CeleryPay pay_9"):
        assert text in row


async def test_control_panel_status_change_fires_webhook(state: FakeBigCommerce) -> None:
    """Changing the status posts store/order/statusUpdated with previous/new ids and hook headers."""
    received: list[tuple[dict[str, Any], str | None]] = []

    async def receiver(request: Request) -> Response:
        received.append((await request.json(), request.headers.get("x-secret")))
        return Response(status_code=200)

    hooks = Starlette(routes=[Route("/hooks", receiver, methods=["POST"])])
    store = state.stores[STORE]
    store.hooks[1] = {"id": 1, "scope": "store/order/statusUpdated", "is_active": True,
                      "destination": "http://127.0.0.1:9000/hooks", "headers": {"X-Secret": "s"},
                      "client_id": "sandbox-client-id", "store_hash": STORE}
    store.hooks[2] = {**store.hooks[1], "id": 2, "is_active": False}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hooks)) as http, \
            _client(create_storefront(state, STORE, http=http)) as shop:
        order_id = await _place_order(shop)
        changed = await shop.post(f"/manage/orders/{order_id}", data={"status_id": "11"})
        assert changed.status_code == 303
        assert state.order(STORE, order_id)["status"] == "Awaiting Fulfillment"
        detail = await shop.get(f"/manage/orders/{order_id}")
        assert 'id="status-name">Awaiting Fulfillment' in detail.text
        unchanged = await shop.post(f"/manage/orders/{order_id}", data={"status_id": "11"})
        assert unchanged.status_code == 303
        assert (await shop.post(f"/manage/orders/{order_id}", data={"status_id": "99"})).status_code == 400
    [(payload, secret)] = received
    assert secret == "s"
    assert payload["scope"] == "store/order/statusUpdated" and payload["producer"] == f"stores/{STORE}"
    assert payload["store_id"] == store.store_id and payload["hash"]
    assert payload["data"] == {"type": "order", "id": order_id,
                               "status": {"previous_status_id": 7, "new_status_id": 11}}
    assert [d.status for d in state.webhook_deliveries] == [200]
