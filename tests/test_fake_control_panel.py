"""The sandbox control panel's settings pages change the fake store the way BigCommerce's do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.storefront import create_storefront

STORE = "abc123"
SHOP = "http://127.0.0.1:8081"
AWAITING_FULFILLMENT, SHIPPED = 11, 2


@pytest.fixture
def state() -> FakeBigCommerce:
    fake = FakeBigCommerce()
    fake.add_store(STORE, secure_url=SHOP, offline_method_name="Pay in Store")
    return fake


@pytest.fixture
async def shop(state: FakeBigCommerce) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_storefront(state, STORE))
    async with httpx.AsyncClient(transport=transport, base_url=SHOP) as client:
        yield client


async def _place_order(shop: httpx.AsyncClient, email: str = "ada@example.com") -> int:
    await shop.post("/cart.php", data={"product_id": "77", "qty": "1"})
    placed = await shop.post("/checkout", data={"email": email, "payment_method": "bankdeposit"})
    assert placed.status_code == 302, placed.text
    return int(placed.headers["location"].rsplit("/", 1)[1])


async def test_renaming_the_offline_method_changes_checkout_and_the_order_email(
        shop: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    page = await shop.get("/manage/settings/payment")
    assert page.status_code == 200 and 'value="Pay in Store"' in page.text
    saved = await shop.post("/manage/settings/payment", data={
        "code": "bankdeposit", "enabled": "on", "name": "OKCloud Pay",
        "instructions": "You will be taken to OKCloud Pay to complete payment."})
    assert saved.status_code == 303 and saved.headers["location"] == "/manage/settings/payment?saved=1"
    assert "Your payment settings have been saved." in (await shop.get(saved.headers["location"])).text

    await shop.post("/cart.php", data={"product_id": "77", "qty": "1"})
    checkout = await shop.get("/checkout")
    assert "OKCloud Pay" in checkout.text and "Pay in Store" not in checkout.text
    order_id = await _place_order(shop)
    assert state.order(STORE, order_id)["payment_method"] == "OKCloud Pay"
    [mail] = state.stores[STORE].emails
    assert mail["order_id"] == order_id and mail["to"] == "ada@example.com"
    assert mail["body"] == "Payment method: OKCloud Pay\nYou will be taken to OKCloud Pay to complete payment."


@pytest.mark.parametrize("form, error", [
    ({"code": "testgateway", "name": "X"}, "Choose an offline payment method."),
    ({"code": "nope", "name": "X"}, "Choose an offline payment method."),
    ({"code": "bankdeposit", "name": "  "}, "Enter a display name of 1 to 100 characters."),
    ({"code": "bankdeposit", "name": "x" * 101}, "Enter a display name of 1 to 100 characters."),
    ({"code": "bankdeposit", "name": "OK", "instructions": "x" * 2001}, "Keep the instructions under 2000"),
])
async def test_bad_payment_settings_are_refused_and_change_nothing(
        shop: httpx.AsyncClient, state: FakeBigCommerce, form: dict[str, str], error: str) -> None:
    refused = await shop.post("/manage/settings/payment", data=form)
    assert refused.status_code == 400 and error in refused.text
    names = [(m.code, m.name, m.enabled) for m in state.stores[STORE].payment_methods]
    assert names == [("bankdeposit", "Pay in Store", True), ("testgateway", "Test Payment Gateway", True)]


async def test_a_disabled_offline_method_leaves_checkout(shop: httpx.AsyncClient) -> None:
    await shop.post("/manage/settings/payment", data={"code": "bankdeposit", "name": "Pay in Store"})
    await shop.post("/cart.php", data={"product_id": "77", "qty": "1"})
    assert "Pay in Store" not in (await shop.get("/checkout")).text


async def test_only_ticked_statuses_email_the_customer(shop: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    order_id = await _place_order(shop)
    saved = await shop.post("/manage/settings/order-notifications",
                            data={"status_id": [str(AWAITING_FULFILLMENT)]})
    assert saved.status_code == 303 and state.stores[STORE].status_emails == {AWAITING_FULFILLMENT}
    page = await shop.get("/manage/settings/order-notifications")
    assert f'value="{AWAITING_FULFILLMENT}" aria-label="E-mail on Awaiting Fulfillment" checked' in page.text

    state.apply_order_put(STORE, order_id, {"status_id": AWAITING_FULFILLMENT})  # as bcpay marks it paid
    state.apply_order_put(STORE, order_id, {"status_id": AWAITING_FULFILLMENT})  # unchanged: no second mail
    state.set_order_status(STORE, order_id, SHIPPED)  # not ticked
    subjects = [m["subject"] for m in state.stores[STORE].emails]
    assert subjects == [f"Thank you for your order #{order_id}", f"Order #{order_id}: Awaiting Fulfillment"]
    mailbox = await shop.get("/manage/emails")
    assert mailbox.text.index("Awaiting Fulfillment") < mailbox.text.index("Thank you for your order")


async def test_unknown_statuses_are_refused(shop: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    refused = await shop.post("/manage/settings/order-notifications", data={"status_id": ["11", "999"]})
    assert refused.status_code == 400 and state.stores[STORE].status_emails == set()


async def test_script_manager_changes_a_consent_category(shop: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    state.stores[STORE].scripts["s1"] = {
        "uuid": "s1", "name": "bcpay: OKCloud Pay", "location": "footer", "visibility": "order_confirmation",
        "channel_id": 1, "enabled": True, "consent_category": "essential"}
    page = await shop.get("/manage/storefront/script-manager")
    assert '<option value="essential" selected>Essential</option>' in page.text
    moved = await shop.post("/manage/storefront/script-manager",
                            data={"uuid": "s1", "consent_category": "analytics"})
    assert moved.status_code == 303 and state.stores[STORE].scripts["s1"]["consent_category"] == "analytics"
    for bad in ({"uuid": "s1", "consent_category": "unknown"}, {"uuid": "nope", "consent_category": "essential"}):
        assert (await shop.post("/manage/storefront/script-manager", data=bad)).status_code == 400
    assert state.stores[STORE].scripts["s1"]["consent_category"] == "analytics"


async def test_the_refund_button_records_a_refund_as_bigcommerce_does(
        shop: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """Refund on a paid order: offered through the offline provider, recorded in the ledger, the order
    Partially Refunded; an unpaid order has no Refund form; more than is left is refused on the page."""
    order_id = await _place_order(shop)
    assert 'id="refund-form"' not in (await shop.get(f"/manage/orders/{order_id}")).text  # Awaiting Payment
    state.set_order_status(STORE, order_id, AWAITING_FULFILLMENT)
    total = state.order(STORE, order_id)["total_inc_tax"]
    page = (await shop.get(f"/manage/orders/{order_id}")).text
    assert "Refund through a third-party provider: Pay in Store" in page and 'value="bankdeposit"' in page
    done = await shop.post(f"/manage/orders/{order_id}/refund",
                           data={"amount": "1.00", "provider_id": "bankdeposit", "reason": "scratched"})
    assert done.status_code == 303
    [refund] = state.stores[STORE].refunds.values()
    assert done.headers["location"] == f"/manage/orders/{order_id}?refunded={refund['id']}"
    assert (refund["total_amount"], refund["reason"], refund["payments"][0]["offline"]) == (1.0, "scratched", True)
    order = state.order(STORE, order_id)
    assert order["status_id"] == 14 and order["refunded_amount"] == "1.0000"
    shown = (await shop.get(f"/manage/orders/{order_id}")).text
    assert f'data-refund-id="{refund["id"]}"' in shown and 'id="refunded-amount">1.0000' in shown
    too_much = await shop.post(f"/manage/orders/{order_id}/refund",
                               data={"amount": total.split(".")[0] + ".00", "provider_id": "bankdeposit"})
    assert too_much.status_code == 400 and "is more than the" in too_much.text
    assert len(state.stores[STORE].refunds) == 1
