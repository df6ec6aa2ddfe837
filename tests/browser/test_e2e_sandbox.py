"""End to end in headless Chromium: a shopper buys in the sandbox storefront and pays at the fake cashier.

Every test starts its own sandbox (``bcpay sandbox`` in a thread, free loopback
ports, ~1 s): the real bcpay server, the fake BigCommerce API, storefront and
control panel, and the fake CeleryPay. The shopper only uses the UI: product
page, cart, checkout with "OKCloud Pay", order confirmation (where the
Script Manager snippet ``install-script`` stored shows its panel), the cashier's
Pay / Decline / Abandon buttons, and back. Assertions read what the merchant
sees (the control panel), what BigCommerce received (``put_log``), what
CeleryPay holds, and bcpay's own reconcile.
"""

from __future__ import annotations

import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from typer.testing import CliRunner

from bcpay import operations, reconcile
from bcpay.cli import app
from bcpay.sandbox.celerypay import FakeOptions
from bcpay.sandbox.runner import OUTLET_CHANNEL, STORE_HASH
from tests.browser.e2e_helpers import PANEL, Shop, open_shop, options, screenshot, wait_until

pytestmark = pytest.mark.browser

AWAITING_PAYMENT, CANCELLED, AWAITING_FULFILLMENT = 7, 5, 11
PAY_TITLE = "Complete your payment with OKCloud Pay"
PRICE = "109.00 USD"  # the Orbit Terrarium, product 77

# The sandbox storefront renders English only; a Chinese theme differs in <html lang>. This gives
# the storefront's pages that attribute as soon as <html> exists (before any page script runs).
CHINESE_THEME = """(origin => {
    if (location.origin !== origin) return;
    new MutationObserver((_, seen) => {
        if (document.documentElement) { document.documentElement.lang = 'zh-CN'; seen.disconnect(); }
    }).observe(document, {childList: true});
})(__ORIGIN__)"""


def reconcile_report(shop: Shop) -> reconcile.Report:
    """What ``bcpay reconcile sandbox1 --since 1d`` computes, run on the sandbox's runtime."""

    async def run() -> reconcile.Report:
        rt = shop.sandbox.runtime
        store = await operations.get_store(rt, STORE_HASH)
        return await reconcile.reconcile(rt, store, since=rt.now() - timedelta(days=1))

    return shop.on_loop(run)


def cli_reconcile(shop: Shop, tmp_path: Path) -> dict[str, Any]:
    """``bcpay reconcile sandbox1 --since 1d --json`` with the environment ``Sandbox.cli_env`` prints.

    In a worker thread: the command calls ``asyncio.run`` and Playwright's loop owns this one.
    """
    env: dict[str, str | None] = {"BCPAY_CONFIG": None, "BCPAY_APP_SECRET_KEY": None}
    for pair in shlex.split(shop.sandbox.cli_env()):
        name, value = pair.split("=", 1)
        env[name] = value
    config = tmp_path / "bcpay.toml"  # empty: a ./bcpay.toml in the working directory must not count
    config.write_text("", encoding="utf-8")
    args = ["--config", str(config), "reconcile", STORE_HASH, "--since", "1d", "--json"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(CliRunner().invoke, app, args, env=env).result(timeout=60)
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.output)["reports"]
    report.pop("since")
    found: dict[str, Any] = report
    return found


@pytest.mark.slow
def test_paying_at_the_cashier_marks_the_order_paid_and_reconcile_finds_nothing(page: Page, tmp_path: Path) -> None:
    """The whole walkthrough: panel, cashier, Pay, "Payment received", Awaiting Fulfillment + staff note."""
    with open_shop(page, options()) as shop:
        order_id = shop.place_order(shot="checkout-method", docs=True)
        assert shop.order(order_id)["status_id"] == AWAITING_PAYMENT
        panel = page.locator(PANEL)
        shop.expect_title(PAY_TITLE)
        expect(page.locator(".payment-instructions")).to_have_text("You will be taken to OKCloud Pay to pay.")
        expect(panel).to_contain_text(f"Your order #{order_id} has been placed but is not paid yet.")
        expect(panel).to_contain_text(f"Amount due: {PRICE}")
        expect(panel).to_contain_text("Taking you to OKCloud Pay")
        payment_id = shop.reach_cashier(shot="confirmation-panel", docs=True)

        expect(page.get_by_test_id("amount")).to_have_text(f"${PRICE}")
        expect(page.get_by_test_id("status")).to_have_text("pending")
        screenshot(page, "cashier", docs=True)
        shop.press("Pay")

        shop.expect_title("Payment received")
        expect(panel).to_contain_text(f"Amount: {PRICE}")
        assert page.get_by_role("button").count() == 0, "a paid order offers no payment button"
        shop.expect_order_loaded(order_id)
        screenshot(page, "payment-received", docs=True)

        [put] = shop.wait_for_status_puts(order_id)
        assert put["status_id"] == AWAITING_FULFILLMENT and put["payment_provider_id"] == payment_id
        status, notes = shop.control_panel(order_id, shot="control-panel-paid", docs=True)
        assert status == "Awaiting Fulfillment"
        assert notes.startswith(f"OKCloud Pay: paid {PRICE}, CeleryPay payment {payment_id}")
        [payment] = shop.payments()
        assert (payment["id"], payment["status"], payment["paid_amount"]) == (payment_id, "succeeded", 10900)

        shop.wait_for_idle_outbox()
        assert cli_reconcile(shop, tmp_path) == {"store_hash": STORE_HASH, "checked": 1, "fixed": 0,
                                                 "counts": {}, "cancelled_unpaid": 0, "findings": []}
        assert len(shop.status_puts(order_id)) == 1


@pytest.mark.slow
def test_a_shopper_on_each_storefront_channel_pays_and_lands_back_on_that_channel(page: Page) -> None:
    """Two storefront channels, one snippet each: the order carries its channel, the shopper who started on
    the outlet's domain comes back to the outlet's confirmation page, and each order is paid once."""
    with open_shop(page, options()) as shop:
        for channel_id, home in ((1, shop.sandbox.urls.storefront), (OUTLET_CHANNEL, shop.sandbox.urls.outlet)):
            shop.channel_url = home
            order_id = shop.place_order()
            assert shop.order(order_id)["channel_id"] == channel_id
            shop.expect_title(PAY_TITLE)
            payment_id = shop.reach_cashier()
            shop.press("Pay")
            assert page.url.startswith(home + "/checkout/order-confirmation")
            shop.expect_title("Payment received")
            shop.expect_order_loaded(order_id)
            [put] = shop.wait_for_status_puts(order_id)
            assert put["status_id"] == AWAITING_FULFILLMENT and put["payment_provider_id"] == payment_id
        starts = [r for r in shop.bcpay_requests() if r.method == "POST" and r.url.endswith("/api/v1/payments")]
        assert [r.all_headers().get("origin") for r in starts] == [shop.sandbox.urls.storefront,
                                                                    shop.sandbox.urls.outlet]


@pytest.mark.slow
def test_a_notification_delayed_20_s_is_not_needed_to_confirm_and_changes_nothing_when_it_arrives(
    page: Page,
) -> None:
    """The page waits while confirming, bcpay asks CeleryPay itself; the late delivery is a no-op."""
    with open_shop(page, options(notify_delay=20)) as shop:
        order_id = shop.place_order()
        shop.expect_title(PAY_TITLE)
        payment_id = shop.reach_cashier()
        shop.press("Pay")

        shop.expect_title("Payment received")
        assert shop.sandbox.celerypay.deliveries == [], "confirmed by polling CeleryPay, not by the notification"
        history = shop.snippet()["history"]
        assert history.index("confirming") < history.index("received") and "failed" not in history
        [put] = shop.wait_for_status_puts(order_id)
        assert put["status_id"] == AWAITING_FULFILLMENT

        delivered = wait_until(lambda: shop.deliveries(payment_id), timeout=30, what="the delayed notification")
        assert [(d.event_type, d.status_code) for d in delivered] == [("payment.succeeded", 200)]
        paid_at = shop.sandbox.celerypay.payment_record(payment_id).paid_at
        assert paid_at is not None and delivered[0].at - paid_at >= 19
        shop.wait_for_idle_outbox()
        assert len(shop.status_puts(order_id)) == 1
        assert shop.order(order_id)["status_id"] == AWAITING_FULFILLMENT
        detail = shop.on_loop(lambda: operations.payment_detail(shop.sandbox.runtime, payment_id))
        assert detail["status"] == "succeeded"
        assert [a["action"] for a in detail["audit"]].count("mark_paid") == 1
        shop.expect_title("Payment received", timeout=1)


@pytest.mark.slow
def test_duplicate_and_reordered_notifications_update_the_order_once(page: Page) -> None:
    """Each event arrives four times (shuffled per payment); the order gets one status PUT."""
    gateway = FakeOptions(duplicates=3, reorder=True, seed=7)
    with open_shop(page, options(), celerypay=gateway) as shop:
        order_id = shop.place_order()
        shop.expect_title(PAY_TITLE)
        payment_id = shop.reach_cashier()
        shop.press("Pay")
        shop.expect_title("Payment received")

        wait_until(lambda: len(shop.deliveries(payment_id)) >= 4, timeout=10, what="four deliveries")
        delivered = shop.deliveries(payment_id)
        assert len({d.event_id for d in delivered}) == 1
        assert [d.status_code for d in delivered] == [200] * 4
        assert shop.sandbox.runtime.metrics.value("bcpay_notifications_total", outcome="duplicate") == 3
        shop.wait_for_idle_outbox()
        [put] = shop.status_puts(order_id)
        assert put["status_id"] == AWAITING_FULFILLMENT
        assert shop.control_panel(order_id)[0] == "Awaiting Fulfillment"


@pytest.mark.slow
def test_bigcommerce_answering_503_delays_the_order_update_but_not_the_shopper(page: Page) -> None:
    """Paid while BigCommerce is down: "Payment received" at once, one status PUT after recovery."""
    with open_shop(page, options()) as shop:
        order_id = shop.place_order()
        shop.expect_title(PAY_TITLE)
        shop.reach_cashier()

        async def outage(rate: float) -> None:
            shop.sandbox.bc.chaos.error_rate = rate

        shop.on_loop(lambda: outage(1.0))
        down_from = len(shop.sandbox.bc.requests)
        shop.press("Pay")
        shop.expect_title("Payment received")

        [job] = wait_until(lambda: [j for j in shop.jobs("mark_paid") if j.attempts >= 2], timeout=15,
                           what="the outbox retrying mark_paid")
        assert job.state == "queued" and "503" in (job.last_error or "")
        refused = [r for r in shop.sandbox.bc.requests[down_from:] if r.path.endswith(f"/orders/{order_id}")]
        assert refused and {r.status for r in refused} == {503}
        assert shop.status_puts(order_id) == [] and shop.order(order_id)["status_id"] == AWAITING_PAYMENT

        shop.on_loop(lambda: outage(0.0))
        [put] = shop.wait_for_status_puts(order_id)
        assert put["status_id"] == AWAITING_FULFILLMENT
        shop.wait_for_idle_outbox()
        assert len(shop.status_puts(order_id)) == 1
        assert [j.state for j in shop.jobs("mark_paid")] == ["done"]
        assert shop.control_panel(order_id)[0] == "Awaiting Fulfillment"
        shop.expect_title("Payment received", timeout=1)


@pytest.mark.slow
def test_a_declined_payment_offers_try_again_and_the_second_attempt_pays_the_order_once(page: Page) -> None:
    """Decline -> "Payment failed" + "Try again" -> a new cashier -> Pay -> "Payment received"."""
    with open_shop(page, options()) as shop:
        order_id = shop.place_order()
        shop.expect_title(PAY_TITLE)
        first = shop.reach_cashier()
        shop.press("Decline")

        shop.expect_title("Payment failed")
        expect(page.locator(PANEL)).to_contain_text("The card was declined.")
        retry = page.get_by_role("button", name="Try again")
        expect(retry).to_be_visible()
        shop.expect_order_loaded(order_id)
        screenshot(page, "failed-retry")
        assert shop.order(order_id)["status_id"] == AWAITING_PAYMENT

        retry.click()
        second = shop.reach_cashier()
        assert second != first
        shop.press("Pay")
        shop.expect_title("Payment received")

        assert [(p["id"], p["status"]) for p in shop.payments()] == [(first, "failed"), (second, "succeeded")]
        assert len({p["merchant_order_no"] for p in shop.payments()}) == 2
        [put] = shop.wait_for_status_puts(order_id)
        assert put["payment_provider_id"] == second
        shop.wait_for_idle_outbox()
        assert len(shop.status_puts(order_id)) == 1
        assert reconcile_report(shop).findings == []


@pytest.mark.slow
def test_an_abandoned_payment_that_expires_cancels_the_order_when_on_expired_is_cancel(page: Page) -> None:
    """Abandon at the cashier, CeleryPay expires the payment: the order ends Cancelled (5)."""
    settings = {"payments": {"on_expired": "cancel", "expires_in": 300}}
    with open_shop(page, options(settings=settings)) as shop:
        order_id = shop.place_order()
        shop.expect_title(PAY_TITLE)
        payment_id = shop.reach_cashier()
        shop.press("Abandon")

        shop.expect_title("Confirming your payment\u2026")
        assert shop.payments()[0]["status"] == "pending" and shop.status_puts(order_id) == []

        async def expire_now() -> list[str]:
            gateway = shop.sandbox.celerypay
            gateway.payment_record(payment_id).expires_at = gateway.now() - 1
            return await gateway.expire_due()

        assert shop.on_loop(expire_now) == [payment_id]
        shop.expect_title("Payment failed", timeout=20)
        expect(page.locator(PANEL)).to_contain_text("The payment session expired.")

        [put] = shop.wait_for_status_puts(order_id)
        assert put["status_id"] == CANCELLED
        status, notes = shop.control_panel(order_id, shot="cancelled")
        assert status == "Cancelled"
        assert f"OKCloud Pay: payment {payment_id} expired unpaid; order cancelled" in notes
        shop.wait_for_idle_outbox()
        assert len(shop.status_puts(order_id)) == 1

        # "Try again" on the cancelled order explains itself instead of vanishing.
        page.get_by_role("button", name="Try again").click()
        shop.expect_title("Payment unavailable")
        assert page.locator(PANEL).count() == 1


def test_a_shopper_paying_with_another_method_never_sees_bcpay(page: Page) -> None:
    """Test Payment Gateway: the page loads the snippet file, which calls nothing and shows nothing."""
    with open_shop(page, options()) as shop:
        order_id = shop.place_order("Test Payment Gateway")
        shop.expect_order_loaded(order_id)
        page.wait_for_function("() => window.bcpayOkcloud && window.bcpayOkcloud.state === 'skipped'")
        assert shop.snippet()["reason"] == "other_method"
        expect(page.locator(PANEL)).to_have_count(0)

        static = re.compile(re.escape(shop.sandbox.urls.bcpay) + r"/static/inject\.[0-9a-f]+\.js$")
        assert [(r.method, bool(static.match(r.url))) for r in shop.bcpay_requests()] == [("GET", True)]
        assert shop.payments() == [] and shop.sandbox.bc.put_log == []
        assert shop.order(order_id)["status_id"] == AWAITING_FULFILLMENT


@pytest.mark.parametrize("variant", ["xhr", "fetch"])
def test_both_confirmation_page_variants_get_the_panel(page: Page, variant: str) -> None:
    """Whether the page reads its order with XMLHttpRequest or fetch, the pay panel appears."""
    with open_shop(page, options(confirmation_variant=variant)) as shop:
        order_id = shop.place_order()
        shop.expect_title(PAY_TITLE)
        expect(page.locator(PANEL)).to_contain_text(f"Amount due: {PRICE}")
        shop.expect_order_loaded(order_id)
        own = [r for r in shop.requests if "include=lineItems" in r.url]
        assert [r.resource_type for r in own] == [variant]
        shop.reach_cashier()


@pytest.mark.slow
def test_a_chinese_confirmation_page_gets_the_chinese_panel_through_to_payment_received(page: Page) -> None:
    """With ``<html lang="zh-CN">`` (as a Chinese theme renders) the snippet speaks Simplified Chinese."""
    with open_shop(page, options()) as shop:
        page.add_init_script(CHINESE_THEME.replace("__ORIGIN__", json.dumps(shop.sandbox.urls.storefront)))
        shop.place_order()
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        shop.expect_title("\u4f7f\u7528 OKCloud Pay \u5b8c\u6210\u4ed8\u6b3e")
        expect(page.locator(PANEL)).to_contain_text(f"\u5e94\u4ed8\u91d1\u989d\uff1a{PRICE}")
        shop.reach_cashier(shot="zh-panel")
        shop.press("Pay")
        shop.expect_title("\u5df2\u6536\u5230\u4ed8\u6b3e")
        assert shop.snippet()["lang"] == "zh"
