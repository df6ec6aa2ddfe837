"""The OKCloud Pay panel on the control panel's order page (App Extension), in Chromium."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from bcpay.sandbox.runner import STORE_HASH
from tests.browser.e2e_helpers import open_shop, options, screenshot, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_merchant_refunds_part_of_an_order_from_the_order_pages_panel(page: Page) -> None:
    """Pay an order, open it in the control panel: the app's panel (an iframe on /bc/load with the
    extension's URL) shows the payment; refund 10.00 of it there and CeleryPay's refunded amount moves."""
    with open_shop(page, options()) as shop:
        order_id, payment_id = shop.pay_an_order()

        page.goto(f"{shop.sandbox.urls.storefront}/manage/orders/{order_id}")
        expect(page.locator("details.app-panel summary")).to_have_text("OKCloud Pay payment")
        frame = page.frame_locator("iframe[title='OKCloud Pay payment']")
        expect(frame.get_by_role("heading", level=1)).to_have_text(f"OKCloud Pay payment · Order #{order_id}")
        section = frame.locator("section.payment")
        expect(section.locator('[data-field="state"]')).to_have_text("succeeded")
        expect(section.locator('[data-field="celerypay-id"]')).to_have_text(payment_id)
        page.locator("details.app-panel").scroll_into_view_if_needed()
        page.wait_for_timeout(200)  # the frame's first paint, for the picture
        screenshot(page, "order-page-panel", docs=True)

        section.get_by_label("Amount").fill("10.00")
        section.get_by_role("button", name="Refund").click()
        confirm = frame.locator("#refund-confirm")
        expect(confirm).to_contain_text(f"Refund 10.00 USD of order #{order_id}?")
        confirm.get_by_role("button", name="Refund 10.00 USD").click()
        expect(frame.get_by_role("status")).to_have_text("Refund sent to CeleryPay.")
        wait_until(lambda: shop.sandbox.celerypay.payment_record(payment_id).refunded_amount == 1000, timeout=15,
                   what="CeleryPay to refund 10.00")
        # CeleryPay's refund.succeeded notification comes on its own schedule; then the worker writes the
        # refund to BigCommerce's ledger (refund_from_bigcommerce).
        [ledger] = wait_until(lambda: list(shop.sandbox.bc.store(STORE_HASH).refunds.values()), timeout=20,
                              what="the refund in BigCommerce's ledger")
        shop.wait_for_idle_outbox()
        page.reload()
        expect(frame.locator('[data-field="refunded"]')).to_have_text("10.00 USD", timeout=15000)
        # The panel names both ids.
        row = frame.locator("tr[data-refund]")
        expect(row.locator("td").nth(4)).to_have_text(str(ledger["id"]))
        expect(row.locator("td").nth(3)).to_have_text(next(iter(shop.sandbox.celerypay.refunds)))
