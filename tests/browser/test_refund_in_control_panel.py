"""A merchant refunds part of an order with the sandbox control panel's Refund action, as in BigCommerce.

The refund goes into the fake BigCommerce's refund ledger, which fires
``store/order/refund/created``; bcpay reads it and refunds that amount at the
fake CeleryPay. What the merchant sees (the order page) and what CeleryPay
holds are both checked.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from bcpay.sandbox.runner import STORE_HASH
from tests.browser.e2e_helpers import open_shop, options, screenshot, wait_until

pytestmark = pytest.mark.browser

PARTIALLY_REFUNDED = 14


def test_a_partial_refund_in_the_control_panel_is_refunded_at_celerypay(page: Page) -> None:
    """Refund 9.00 of a paid 109.00 order through the third-party provider: CeleryPay refunds 9.00 once."""
    with open_shop(page, options()) as shop:
        order_id, payment_id = shop.pay_an_order()

        tab = page.context.new_page()
        tab.goto(f"{shop.sandbox.urls.storefront}/manage/orders/{order_id}")
        form = tab.locator("#refund-form")
        form.get_by_label("Amount to refund").fill("9.00")
        form.get_by_label("Reason").fill("one item arrived scratched")
        form.get_by_label("Refund through a third-party provider: OKCloud Pay").check()
        screenshot(tab, "cp-refund")
        form.get_by_role("button", name="Refund").click()
        expect(tab.locator("#refunded-amount")).to_have_text("9.0000 USD")
        expect(tab.locator("#status-name")).to_have_text("Partially Refunded")

        wait_until(lambda: shop.sandbox.celerypay.payments[payment_id]["refunded_amount"] == 900, timeout=15,
                   what="CeleryPay's refunded amount to reach 9.00")
        shop.wait_for_idle_outbox()
        [refund] = shop.sandbox.celerypay.refunds.values()
        assert (refund["amount"], refund["status"]) == (900, "succeeded")
        assert shop.order(order_id)["status_id"] == PARTIALLY_REFUNDED
        [entry] = shop.sandbox.bc.store(STORE_HASH).refunds.values()
        wait_until(lambda: f"BigCommerce refund {entry['id']}" in shop.order(order_id)["staff_notes"], timeout=15,
                   what="the staff note naming BigCommerce's refund")
        tab.reload()
        expect(tab.locator("#staff-notes")).to_contain_text(f"CeleryPay refund {refund['id']}")
        tab.close()
