"""The merchant's control-panel steps, done in the sandbox control panel, then a paid order.

No API renames the offline method, writes its instructions or switches the
status e-mails, so the handbook's merchant pages show these steps; the
pictures come from here (``BCPAY_UPDATE_SCREENSHOTS=1`` refreshes them).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from bcpay.sandbox.runner import STORE_HASH
from tests.browser.e2e_helpers import open_shop, options, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

INSTRUCTIONS = ("You will be taken to OKCloud Pay to complete payment. If the payment page did not open, "
                "contact us and we will send you a payment link.")


def test_rename_instructions_paid_email_and_consent_then_a_paid_order_emails_the_receipt(page: Page) -> None:
    with open_shop(page, options()) as shop:
        store = shop.sandbox.bc.store(STORE_HASH)
        method = store.payment_methods[0]
        method.name, method.instructions = "Pay in Store", "Pay when you collect your order."
        manage = shop.sandbox.urls.storefront + "/manage"

        page.goto(manage + "/settings/payment")
        form = page.locator('form.offline-method[data-code="bankdeposit"]')
        form.get_by_label("Display name").fill("OKCloud Pay")
        form.get_by_label("Payment instructions").fill(INSTRUCTIONS)
        screenshot(page, "cp-payment-method", docs=True)
        form.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text("Your payment settings have been saved.")
        assert (method.name, method.instructions, method.enabled) == ("OKCloud Pay", INSTRUCTIONS, True)

        page.goto(manage + "/settings/order-notifications")
        page.get_by_label("E-mail on Awaiting Fulfillment").check()
        screenshot(page, "cp-order-notifications", docs=True)
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text("Order notification settings saved.")

        page.goto(manage + "/storefront/script-manager")
        [script] = [s for s in store.scripts.values() if s["name"].startswith("bcpay") and s["channel_id"] == 1]
        row = page.locator(f'tr[data-uuid="{script["uuid"]}"]')
        expect(row.get_by_role("combobox")).to_have_value("essential")
        screenshot(page, "cp-script-manager", docs=True)

        order_id = shop.place_order()
        expect(page.locator(".payment-instructions")).to_have_text(INSTRUCTIONS)
        shop.reach_cashier()
        shop.press("Pay")
        shop.expect_title("Payment received")
        shop.wait_for_status_puts(order_id)

        page.goto(manage + "/emails")
        rows = page.locator(f'#emails tr[data-order-id="{order_id}"]')
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text(f"Order #{order_id}: Awaiting Fulfillment")
        expect(rows.nth(1)).to_contain_text(f"Thank you for your order #{order_id}")
        expect(rows.nth(1)).to_contain_text(INSTRUCTIONS)
        screenshot(page, "cp-emails", docs=True)
