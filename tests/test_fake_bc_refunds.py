"""The fake BigCommerce's refund ledger: quotes, refunds, reads and the refund webhook (orders.v3.yml)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.bigcommerce import create_bigcommerce_api

STORE = "abc123"
TOKEN = "tok-full"
BASE = f"/stores/{STORE}/v3/orders"


@pytest.fixture
def state() -> FakeBigCommerce:
    fake = FakeBigCommerce()
    fake.add_store(STORE, secure_url="http://127.0.0.1:8081", access_token=TOKEN)
    return fake


@pytest.fixture
def received() -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def api(state: FakeBigCommerce, received: list[dict[str, Any]]) -> AsyncIterator[httpx.AsyncClient]:
    async def receiver(request: Request) -> Response:
        received.append(await request.json())
        return Response(status_code=200)

    hooks = Starlette(routes=[Route("/hooks", receiver, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hooks)) as http:
        app = create_bigcommerce_api(state, webhook_client=http)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.test",
                                     headers={"X-Auth-Token": TOKEN}) as client:
            yield client


def paid_order(state: FakeBigCommerce, total: str = "20.00") -> dict[str, Any]:
    return state.create_order(STORE, total=total, status_id=11)


def order_level(order_id: int, amount: float, reason: str = "") -> list[dict[str, Any]]:
    return [{"item_type": "ORDER", "item_id": order_id, "amount": amount, "reason": reason}]


def offline(amount: float) -> list[dict[str, Any]]:
    return [{"provider_id": "bankdeposit", "amount": amount, "offline": True}]


async def test_quote_offers_the_offline_method_and_custom(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """A quote for an OKCloud Pay order prices the items and offers its offline provider, then "custom"."""
    order = paid_order(state)
    response = await api.post(f"{BASE}/{order['id']}/payment_actions/refund_quotes",
                              json={"items": order_level(order["id"], 5.5)})
    assert response.status_code == 201
    quote = response.json()["data"]
    assert quote["order_id"] == order["id"] and quote["total_refund_amount"] == 5.5
    assert quote["order_level_refund_amount"] == 5.5
    [[own], [custom]] = quote["refund_methods"]
    assert own == {"provider_id": "bankdeposit", "provider_description": "OKCloud Pay", "amount": 5.5,
                   "offline": True, "offline_provider": True, "offline_reason": "This is an offline payment provider."}
    assert custom["provider_id"] == "custom" and custom["offline"] is True


async def test_quote_prices_products_by_quantity(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """A PRODUCT item (the order product id) is priced as quantity times the line's price."""
    order = state.create_order(STORE, total="30.00", status_id=11,
                               line_items=[{"name": "Mug", "sku": "M", "quantity": 3, "price": "10.0000"}])
    response = await api.post(f"{BASE}/{order['id']}/payment_actions/refund_quotes",
                              json={"items": [{"item_type": "PRODUCT", "item_id": 1, "quantity": 2}]})
    assert response.status_code == 201 and response.json()["data"]["total_refund_amount"] == 20.0
    too_many = await api.post(f"{BASE}/{order['id']}/payment_actions/refund_quotes",
                              json={"items": [{"item_type": "PRODUCT", "item_id": 1, "quantity": 4}]})
    assert too_many.status_code == 422 and "more than was ordered" in too_many.json()["title"]


@pytest.mark.parametrize(("body", "message"), [
    ({}, "items must be a non-empty array"),
    ({"items": [{"item_type": "BOGUS", "item_id": 1}]}, "item_type is not one of the refund item types"),
    ({"items": [{"item_type": "ORDER", "item_id": 1, "amount": 1}]}, "must be the order id"),
    ({"items": [{"item_type": "SHIPPING", "item_id": 1, "amount": "x"}]}, "amount must be a number"),
    ({"items": [{"item_type": "SHIPPING", "item_id": 1, "amount": 1.234}]}, "at most 2 decimal places"),
    ({"items": [{"item_type": "PRODUCT", "item_id": 1}]}, "quantity must be a positive integer"),
])
async def test_quote_bodies_off_the_schema_are_422(api: httpx.AsyncClient, state: FakeBigCommerce,
                                                   body: dict[str, Any], message: str) -> None:
    """RefundQuote_Post is checked: required fields, item types, amounts with 2 decimal places."""
    order = paid_order(state)
    response = await api.post(f"{BASE}/{order['id']}/payment_actions/refund_quotes", json=body)
    assert response.status_code == 422 and message in response.json()["title"]


async def test_an_unpaid_order_cannot_be_refunded(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """Awaiting Payment is no refundable state: quote and refund are refused, nothing is recorded."""
    order = state.create_order(STORE, total="20.00")
    quote = await api.post(f"{BASE}/{order['id']}/payment_actions/refund_quotes",
                           json={"items": order_level(order["id"], 1)})
    assert quote.status_code == 422 and "not in a refundable state (Awaiting Payment)" in quote.json()["title"]
    refund = await api.post(f"{BASE}/{order['id']}/payment_actions/refunds",
                            json={"items": order_level(order["id"], 1), "payments": offline(1)})
    assert refund.status_code == 422 and state.stores[STORE].refunds == {}


async def test_refund_records_moves_the_order_and_fires_the_webhook(
        api: httpx.AsyncClient, state: FakeBigCommerce, received: list[dict[str, Any]]) -> None:
    """A partial refund: Partially Refunded, refunded_amount raised, refund/created and statusUpdated sent."""
    await api.post(f"/stores/{STORE}/v3/hooks", json={"scope": "store/order/*", "is_active": True,
                                                      "destination": "http://127.0.0.1:9/hooks"})
    order = paid_order(state)
    response = await api.post(f"{BASE}/{order['id']}/payment_actions/refunds",
                              json={"items": order_level(order["id"], 5, "bcpay refund 7"), "payments": offline(5)})
    assert response.status_code == 201
    refund = response.json()["data"]
    assert refund["order_id"] == order["id"] and refund["total_amount"] == 5.0 and refund["reason"] == "bcpay refund 7"
    assert refund["items"] == [{"item_type": "ORDER", "item_id": order["id"], "reason": "bcpay refund 7",
                                "requested_amount": "5.00"}]
    [payment] = refund["payments"]
    assert payment["provider_id"] == "bankdeposit" and payment["offline"] is True and payment["is_declined"] is False
    stored = state.order(STORE, order["id"])
    assert stored["refunded_amount"] == "5.0000" and stored["status_id"] == 14
    created, status = received
    assert created["scope"] == "store/order/refund/created"
    assert created["data"] == {"type": "order", "id": order["id"], "refund": {"refund_id": refund["id"]}}
    assert status["data"]["status"] == {"previous_status_id": 11, "new_status_id": 14}


async def test_refunds_up_to_the_total_then_refused(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """The rest refunds the order (Refunded); a cent more is refused as more than is left."""
    order = paid_order(state)
    url = f"{BASE}/{order['id']}/payment_actions/refunds"
    assert (await api.post(url, json={"items": order_level(order["id"], 5), "payments": offline(5)})).status_code == 201
    assert (await api.post(url, json={"items": order_level(order["id"], 15),
                                      "payments": offline(15)})).status_code == 201
    assert state.order(STORE, order["id"])["status_id"] == 4
    over = await api.post(url, json={"items": order_level(order["id"], 0.01), "payments": offline(0.01)})
    assert over.status_code == 422
    listed = (await api.get(url)).json()["data"]
    assert [r["total_amount"] for r in listed] == [5.0, 15.0]


async def test_payments_must_match_the_items_and_an_offered_method(
        api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """Payments that do not add up, or a provider not offered (online for an offline order), are 422."""
    order = paid_order(state)
    url = f"{BASE}/{order['id']}/payment_actions/refunds"
    short = await api.post(url, json={"items": order_level(order["id"], 5), "payments": offline(4)})
    assert short.status_code == 422 and "do not add up" in short.json()["title"]
    online = await api.post(url, json={"items": order_level(order["id"], 5),
                                       "payments": [{"provider_id": "bankdeposit", "amount": 5, "offline": False}]})
    assert online.status_code == 422 and "is not a refund method" in online.json()["title"]
    missing = await api.post(url, json={"items": order_level(order["id"], 5)})
    assert missing.status_code == 422 and "payments must be a non-empty array" in missing.json()["title"]
    assert state.stores[STORE].refunds == {}


async def test_no_offline_option_means_no_offline_refund(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """A store where BigCommerce offers no offline option: the quote has none and the refund is refused."""
    state.stores[STORE].offline_refunds = False
    order = paid_order(state)
    quote = await api.post(f"{BASE}/{order['id']}/payment_actions/refund_quotes",
                           json={"items": order_level(order["id"], 5)})
    assert quote.json()["data"]["refund_methods"] == []
    refund = await api.post(f"{BASE}/{order['id']}/payment_actions/refunds",
                            json={"items": order_level(order["id"], 5), "payments": offline(5)})
    assert refund.status_code == 422


async def test_refunds_of_one_order_are_made_one_at_a_time(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """A second refund while the first is being made is refused with 409; after it, it is accepted."""
    state.refund_delay = 0.05
    order = paid_order(state)
    url = f"{BASE}/{order['id']}/payment_actions/refunds"
    body = {"items": order_level(order["id"], 5), "payments": offline(5)}
    first, second = await asyncio.gather(api.post(url, json=body), api.post(url, json=body))
    assert sorted((first.status_code, second.status_code)) == [201, 409]
    assert "one after another" in (first if first.status_code == 409 else second).json()["title"]
    assert (await api.post(url, json=body)).status_code == 201
    assert len(state.stores[STORE].refunds) == 2


async def test_get_one_refund_and_filter_all(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """GET .../refunds/{id} reads one; the store-wide list filters by order_id:in and id:in; unknown is 404."""
    one, two = paid_order(state), paid_order(state)
    for order in (one, two):
        await api.post(f"{BASE}/{order['id']}/payment_actions/refunds",
                       json={"items": order_level(order["id"], 2), "payments": offline(2)})
    [first, second] = sorted(state.stores[STORE].refunds)
    got = await api.get(f"{BASE}/payment_actions/refunds/{second}")
    assert got.status_code == 200 and got.json()["data"]["order_id"] == two["id"]
    assert (await api.get(f"{BASE}/payment_actions/refunds/999")).status_code == 404
    listed = (await api.get(f"{BASE}/payment_actions/refunds", params={"order_id:in": str(one["id"])})).json()
    assert [r["id"] for r in listed["data"]] == [first]
    by_id = (await api.get(f"{BASE}/payment_actions/refunds", params={"id:in": f"{first},{second}"})).json()
    assert [r["id"] for r in by_id["data"]] == [first, second]


async def test_refund_endpoints_need_the_orders_scope(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """A read-only orders token lists refunds but cannot create one."""
    state.add_token(STORE, "ro", client_id="c2", scopes={"store_v2_orders_read_only"})
    order = paid_order(state)
    url = f"{BASE}/{order['id']}/payment_actions/refunds"
    assert (await api.get(url, headers={"X-Auth-Token": "ro"})).status_code == 200
    post = await api.post(url, json={"items": order_level(order["id"], 1), "payments": offline(1)},
                          headers={"X-Auth-Token": "ro"})
    assert post.status_code == 403
