"""The storefront snippet (bcpay/assets/inject.js) in headless Chromium against loopback stand-ins.

Each test loads a BigCommerce-like confirmation page on the store origin with the
Script Manager tag exactly as ``bcpay.snippet.script_tag`` renders it (SRI checked on
the real file bytes), a scripted bcpay API on another origin and a stand-in cashier.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import CART_ID, ORDER_ID, STORE_HASH, World, storefront_order

pytestmark = pytest.mark.browser

PANEL = "section.bcpay-okcloud"


def wait_state(page: Page, *states: str) -> None:
    """Wait until the snippet reports one of ``states``."""
    page.wait_for_function("s => !!window.bcpayOkcloud && s.includes(window.bcpayOkcloud.state)", arg=list(states))


def snippet_state(page: Page) -> dict[str, Any]:
    """The data part of ``window.bcpayOkcloud``."""
    state: dict[str, Any] = page.evaluate("() => JSON.parse(JSON.stringify(window.bcpayOkcloud))")
    return state


def expect_pay_panel(page: Page) -> None:
    """The English pay panel: title, amount and a real Pay button."""
    panel = page.locator(PANEL)
    expect(panel.locator("h2")).to_have_text("Complete your payment with OKCloud Pay")
    expect(panel).to_contain_text(f"Your order #{ORDER_ID} has been placed but is not paid yet.")
    expect(panel).to_contain_text("Amount due: 19.99 USD")
    expect(panel.get_by_role("button", name="Pay now")).to_be_visible()


def test_helpers_read_ids_methods_and_languages(world: World, page: Page) -> None:
    """Order ids must be positive integers on this origin; methods match trimmed and case-blind."""
    world.store.page.order_id_attr = None
    world.store.page.attrs["data-order-wait-ms"] = "0"
    page.goto(world.confirmation_url)
    wait_state(page, "no_order")
    got = page.evaluate("""() => {
        const u = window.bcpayOkcloud.util;
        return {
          ints: ['{{checkout.order.id}}', '', '0', '-3', '1e3', '12.5', ' 42 ', '101', 7, 0].map(u.positiveInt),
          urls: ['/api/storefront/orders/55?include=payments', '/api/storefront/order/56',
                 location.origin + '/api/storefront/orders/57/', 'http://evil.example/api/storefront/orders/58',
                 '/api/storefront/orders/abc', '/api/storefront/orders/59/items', null].map(u.orderIdFromUrl),
          methods: [u.paidWith({payments: [{description: '  okcloud PAY '}]}, 'OKCloud Pay'),
                    u.paidWith({payments: [{providerId: 'OKCloud Pay'}]}, 'okcloud pay'),
                    u.paidWith({payments: [{description: 'Bank Deposit'}]}, 'OKCloud Pay'),
                    u.paidWith({}, 'OKCloud Pay')],
          langs: [u.chooseLang('auto', 'zh-CN'), u.chooseLang('', 'zh'), u.chooseLang('auto', 'en-US'),
                  u.chooseLang('en', 'zh-CN'), u.chooseLang('zh-Hans', 'en')],
          urlsafe: [u.safeUrl('javascript:alert(1)'), u.safeUrl('https://pay.example/x')],
        };
    }""")
    assert got["ints"] == [None, None, None, None, None, None, 42, 101, 7, None]
    assert got["urls"] == [55, 56, 57, None, None, None, None]
    assert got["methods"] == [True, True, False, False]
    assert got["langs"] == ["zh", "zh", "en", "en", "zh"]
    assert got["urlsafe"] == [None, "https://pay.example/x"]


def test_order_id_from_data_attribute_shows_pay_panel_and_pay_button_goes_to_cashier(
    world: World, page: Page, shot: Any
) -> None:
    """Stencil's substituted id is enough: own order read, one POST, panel above the content."""
    world.bcpay.start_replies = [(200, world.bcpay.view("tokAttr0001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    expect_pay_panel(page)
    assert page.evaluate(f"() => document.querySelector('{PANEL}').nextElementSibling.className") == "orderConfirmation"
    assert page.get_by_role("status").count() == 1
    shot(page, "pay-panel")

    state = snippet_state(page)
    assert (state["orderId"], state["orderSource"], state["seen"]) == (ORDER_ID, "attribute", [])
    [own] = world.store.own_calls()
    assert (own.path, own.accept) == (f"/api/storefront/orders/{ORDER_ID}", "application/vnd.bc.v1+json")
    assert "SHOP_SESSION_TOKEN=sess-jane" in own.cookie
    [post] = world.bcpay.posts()
    assert post.body == {"store_hash": STORE_HASH, "order_id": ORDER_ID, "cart_id": CART_ID}
    assert post.origin == world.store_url and post.content_type == "application/json"
    assert all(h.cookie == "" for h in world.bcpay.hits), "credentials must never reach bcpay"

    page.get_by_role("button", name="Pay now").click()
    page.wait_for_url(f"{world.cashier_url}/cashier/tokAttr0001")


def test_order_id_from_the_pages_own_xhr_leaves_its_response_intact(world: World, page: Page) -> None:
    """A raw {{checkout.order.id}}: the page's delayed XHR to /order/{id} is observed, not altered."""
    world.store.page.order_id_attr = None
    world.store.page.mode = "xhr"
    world.store.orders[ORDER_ID] = storefront_order(method="  okcloud PAY ")
    world.bcpay.start_replies = [(200, world.bcpay.view("tokXhr00001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    expect_pay_panel(page)

    assert {"via": "xhr", "id": ORDER_ID} in snippet_state(page)["seen"]
    expect(page.locator("#order-summary")).to_have_text("Total 19.99 USD (AWAITING_PAYMENT)")
    result = page.evaluate("() => window.__page.result")
    [page_call] = [c for c in world.store.calls if c.path == f"/api/storefront/order/{ORDER_ID}"]
    assert (result["via"], result["status"], result["body"]) == ("xhr", 200, page_call.body.decode())
    assert len(world.bcpay.posts()) == 1


def test_order_id_from_the_pages_own_fetch_leaves_all_its_results_intact(world: World, page: Page) -> None:
    """The page's fetch keeps its body, its 404s and its rejections (no unhandled ones added)."""
    world.store.page.order_id_attr = ""
    world.store.page.mode = "fetch"
    # Another script's pass-through wrapper, loaded first, records what fetch really returned.
    world.store.page.head_extra = """<script>(function () {
      var real = window.fetch; window.__returned = [];
      window.fetch = function (i, o) { var p = real.apply(this, arguments); window.__returned.push(p); return p; };
    })();</script>"""
    world.bcpay.start_replies = [(200, world.bcpay.view("tokFetch001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    expect_pay_panel(page)

    assert {"via": "fetch", "id": ORDER_ID} in snippet_state(page)["seen"]
    expect(page.locator("#order-summary")).to_have_text("Total 19.99 USD (AWAITING_PAYMENT)")
    page.wait_for_function("() => Object.keys(window.__page.extra).length === 3")
    page_data = page.evaluate("() => window.__page")
    [page_call] = [c for c in world.store.calls if c.query == "include=lineItems,payments"]
    assert page_data["result"] == {"via": "fetch", "status": 200, "body": page_call.body.decode()}
    assert page_data["extra"] == {"missing": 404, "refused": "TypeError", "aborted": "AbortError"}
    assert page.evaluate("() => window.fetch.name") == "fetch"
    assert page.evaluate("""async () => {
        const n = window.__returned.length;
        const p = window.fetch('/api/storefront/orders/101?include=lineItems');
        return p === window.__returned[n] && (await p).status === 200;
    }""") is True, "the wrapper must hand back the original promise itself"


def test_page_call_finished_before_the_snippet_loaded_is_found_in_resource_timing(
    world: World, page: Page
) -> None:
    """A call the wrappers could not see (snippet still downloading) is not missed."""
    world.store.page.order_id_attr = None
    world.store.page.mode = "early"
    world.bcpay.script_delay = 0.15
    world.bcpay.start_replies = [(200, world.bcpay.view("tokEarly001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")

    state = snippet_state(page)
    assert (state["orderSource"], state["seen"]) == ("resource", [{"via": "resource", "id": ORDER_ID}])
    assert len(world.store.own_calls()) == 1 and len(world.bcpay.posts()) == 1


def test_checkout_config_order_id_is_used_when_the_page_makes_no_call(world: World, page: Page) -> None:
    """No attribute, no page call: window.checkoutConfig.orderId and the snippet's own read."""
    world.store.page.order_id_attr = None
    world.store.page.head_extra = f"<script>window.checkoutConfig = {{orderId: {ORDER_ID}}};</script>"
    world.bcpay.start_replies = [(200, world.bcpay.view("tokConfig01"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    expect_pay_panel(page)
    assert snippet_state(page)["orderSource"] == "checkoutConfig"
    assert [c.path for c in world.store.calls] == [f"/api/storefront/orders/{ORDER_ID}"]


def test_no_order_id_anywhere_does_nothing(world: World, page: Page) -> None:
    """Nothing to go on: no panel, no order read, no request to bcpay."""
    world.store.page.order_id_attr = None
    world.store.page.attrs["data-order-wait-ms"] = "300"
    page.goto(world.confirmation_url)
    wait_state(page, "no_order")
    assert page.locator(PANEL).count() == 0
    assert world.store.calls == [] and world.bcpay.api_hits() == []


@pytest.mark.parametrize(("method", "status", "reason"), [
    ("Bank Deposit", "AWAITING_PAYMENT", "other_method"),
    ("OKCloud Pay", "AWAITING_FULFILLMENT", "not_awaiting_payment"),
])
def test_orders_that_are_not_ours_to_collect_get_no_panel_and_no_bcpay_request(
    world: World, page: Page, method: str, status: str, reason: str
) -> None:
    """Another payment method, or an order no longer awaiting payment: silent."""
    world.store.orders[ORDER_ID] = storefront_order(method=method, status=status)
    page.goto(world.confirmation_url)
    wait_state(page, "skipped")
    assert snippet_state(page)["reason"] == reason
    assert page.locator(PANEL).count() == 0
    assert world.bcpay.api_hits() == []


def test_already_paid_order_shows_received_and_no_cashier_link(world: World, page: Page, shot: Any) -> None:
    """409 already_paid: "Payment received", no button, no link, no redirect."""
    paid = world.bcpay.view("tokPaid0001", "paid")
    world.bcpay.start_replies = [(409, {"error": {"code": "already_paid", "message": "paid"}, "payment": paid})]
    world.store.page.attrs["data-redirect-ms"] = "0"
    page.goto(world.confirmation_url)
    wait_state(page, "received")
    panel = page.locator(PANEL)
    expect(panel.locator("h2")).to_have_text("Payment received")
    expect(panel).to_contain_text("Amount: 19.99 USD")
    assert panel.locator("a, button").count() == 0
    assert page.url == world.confirmation_url
    shot(page, "received")


def test_bcpay_down_shows_friendly_message_and_retry_works_once_it_is_back(
    world: World, page: Page, shot: Any
) -> None:
    """A network failure is a retryable message; Retry then goes to the cashier."""
    world.bcpay.up = False
    world.bcpay.start_replies = [(200, world.bcpay.view("tokBack0001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "unreachable")
    panel = page.locator(PANEL)
    expect(panel.locator("h2")).to_have_text("We could not reach OKCloud Pay.")
    expect(panel).to_have_attribute("class", "bcpay-okcloud bcpay-okcloud--error")
    assert world.bcpay.posts() == []
    shot(page, "unreachable")

    world.bcpay.up = True
    panel.get_by_role("button", name="Retry").click()
    page.wait_for_url(f"{world.cashier_url}/cashier/tokBack0001")
    assert len(world.bcpay.posts()) == 1


def test_redirect_to_cashier_and_back_shows_received_after_awaiting_polls(
    world: World, page: Page, shot: Any
) -> None:
    """The whole trip; the token leaves the address bar once read, and a reload still knows the
    payment from sessionStorage."""
    token = "tokTrip0001"
    bc = world.bcpay
    bc.start_replies = [(200, bc.view(token))]
    bc.status_replies[token] = [bc.view(token)] * 3 + [bc.view(token, "paid")]
    world.store.page.attrs["data-redirect-ms"] = "50"
    page.goto(world.confirmation_url)
    page.wait_for_url(f"{world.cashier_url}/cashier/{token}")
    shot(page, "cashier")

    page.click("#pay")
    page.wait_for_url(f"{world.confirmation_url}**")
    wait_state(page, "received")
    expect(page.locator(f"{PANEL} h2")).to_have_text("Payment received")
    assert page.url == world.confirmation_url  # the #bcpay_token fragment was read and taken out
    history = snippet_state(page)["history"]
    assert "confirming" in history and "failed" not in history
    gets = [h for h in bc.hits if h.method == "GET" and h.path == f"/api/v1/payments/{token}"]
    assert len(gets) == 4 and all(h.cookie == "" and h.origin == world.store_url for h in gets)

    page.goto(world.confirmation_url)
    wait_state(page, "received")
    expect(page.locator(f"{PANEL} h2")).to_have_text("Payment received")
    assert len(bc.posts()) == 1, "a known token is followed, never restarted"


def test_failed_payment_offers_retry_that_starts_a_new_attempt(world: World, page: Page, shot: Any) -> None:
    """Back with a failed token: "Payment failed", and Try again POSTs and redirects."""
    bc = world.bcpay
    bc.status_replies["tokFail0001"] = [bc.view("tokFail0001", "failed", failure_message="Card declined")]
    bc.start_replies = [(200, bc.view("tokNew00001"))]
    page.goto(f"{world.confirmation_url}?bcpay_token=tokFail0001")
    wait_state(page, "failed")
    panel = page.locator(PANEL)
    expect(panel.locator("h2")).to_have_text("Payment failed")
    expect(panel).to_contain_text("Card declined")
    shot(page, "failed")

    panel.get_by_role("button", name="Try again").click()
    page.wait_for_url(f"{world.cashier_url}/cashier/tokNew00001")
    [post] = bc.posts()
    assert post.body == {"store_hash": STORE_HASH, "order_id": ORDER_ID, "cart_id": CART_ID}
    assert [c.path for c in world.store.own_calls()] == [f"/api/storefront/orders/{ORDER_ID}"]


def test_slow_notification_ends_as_still_confirming_with_pay_page_link(
    world: World, page: Page, shot: Any
) -> None:
    """awaiting_payment for the whole window is never a failure."""
    bc = world.bcpay
    bc.status_replies["tokSlow0001"] = [bc.view("tokSlow0001")]
    world.store.page.attrs["data-poll-total-ms"] = "400"
    page.goto(f"{world.confirmation_url}#bcpay_token=tokSlow0001")
    wait_state(page, "pending")
    panel = page.locator(PANEL)
    expect(panel.locator("h2")).to_have_text("Still confirming")
    expect(panel.get_by_role("link")).to_have_attribute("href", f"{world.bcpay_url}/pay/tokSlow0001")
    assert "failed" not in snippet_state(page)["history"]
    shot(page, "still-confirming")


def test_unsigned_celerypay_status_hint_never_decides_the_outcome(world: World, page: Page) -> None:
    """celerypay_status=failed only changes the wording while bcpay says awaiting_payment."""
    bc = world.bcpay
    bc.status_replies["tokHint0001"] = [bc.view("tokHint0001")]
    page.goto(f"{world.confirmation_url}?bcpay_token=tokHint0001&celerypay_status=failed")  # a link made before
    expect(page.locator(PANEL)).to_contain_text("We are checking the payment status with OKCloud Pay.")
    assert page.url == f"{world.confirmation_url}?celerypay_status=failed"  # only the token is taken out
    expect(page.locator(f"{PANEL} h2")).to_have_text("Confirming your payment\u2026")
    bc.status_replies["tokHint0001"] = [bc.view("tokHint0001", "paid")]
    wait_state(page, "received")
    assert "failed" not in snippet_state(page)["history"]


def test_unknown_url_token_falls_back_to_the_order(world: World, page: Page) -> None:
    """A token bcpay does not know is ignored; the order decides as usual."""
    world.bcpay.start_replies = [(200, world.bcpay.view("tokFresh001"))]
    page.goto(f"{world.confirmation_url}#bcpay_token=tokUnknown1")
    wait_state(page, "pay")
    expect_pay_panel(page)
    assert len(world.bcpay.posts()) == 1


def test_a_url_token_of_another_order_is_ignored(world: World, page: Page) -> None:
    """A paid token passed around in a link never says "Payment received" on another order's page."""
    bc = world.bcpay
    bc.status_replies["tokOther001"] = [bc.view("tokOther001", "paid", order_id=ORDER_ID + 1)]
    bc.start_replies = [(200, bc.view("tokFresh001"))]
    page.goto(f"{world.confirmation_url}#bcpay_token=tokOther001")
    wait_state(page, "pay")
    expect_pay_panel(page)
    assert "received" not in snippet_state(page)["history"]
    assert len(bc.posts()) == 1


def test_snippet_loaded_twice_shows_one_panel_and_posts_once(world: World, page: Page) -> None:
    """The second copy finds window.bcpayOkcloud and does nothing."""
    world.store.page.copies = 2
    world.store.page.order_id_attr = None
    world.store.page.mode = "xhr"
    world.bcpay.start_replies = [(200, world.bcpay.view("tokTwice001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    expect(page.locator(PANEL)).to_have_count(1)
    assert page.locator("script[data-bcpay-url]").count() == 2
    assert snippet_state(page)["seen"].count({"via": "xhr", "id": ORDER_ID}) == 1
    assert len(world.bcpay.posts()) == 1 and len(world.store.own_calls()) == 1


def test_chinese_page_gets_chinese_texts(world: World, page: Page, shot: Any) -> None:
    """<html lang="zh-CN"> with data-lang="auto" picks Simplified Chinese."""
    world.store.page.lang = "zh-CN"
    world.bcpay.start_replies = [(200, world.bcpay.view("tokZh000001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    panel = page.locator(PANEL)
    expect(panel.locator("h2")).to_have_text("\u4f7f\u7528 OKCloud Pay \u5b8c\u6210\u4ed8\u6b3e")
    expect(panel).to_contain_text("\u5e94\u4ed8\u91d1\u989d\uff1a19.99 USD")
    expect(panel.get_by_role("button", name="\u7acb\u5373\u4ed8\u6b3e")).to_be_visible()
    assert snippet_state(page)["lang"] == "zh"
    shot(page, "pay-panel-zh")


def test_theme_and_installer_text_overrides_apply(world: World, page: Page) -> None:
    """data-texts JSON and window.bcpayOkcloudTexts (per language) replace default texts."""
    world.store.page.head_extra = (
        "<script>window.bcpayOkcloudTexts = {en: {pay_title: 'Finish paying with {method}'}};</script>")
    world.store.page.attrs["data-texts"] = json.dumps({"pay_button": "Pay it"}).replace('"', "&quot;")
    world.bcpay.start_replies = [(200, world.bcpay.view("tokText0001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    expect(page.locator(f"{PANEL} h2")).to_have_text("Finish paying with OKCloud Pay")
    expect(page.get_by_role("button", name="Pay it")).to_be_visible()


def test_works_under_a_strict_content_security_policy(world: World, page: Page) -> None:
    """No eval, no inline handlers, styles through the page's nonce: nothing is blocked."""
    world.store.page.strict_csp = True
    world.store.page.mode = "xhr"
    world.store.page.order_id_attr = None
    world.bcpay.start_replies = [(200, world.bcpay.view("tokCsp00001"))]
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    expect_pay_panel(page)
    expect(page.locator(PANEL)).to_have_css("border-left-width", "6px")  # our <style> applied
    assert page.evaluate("() => window.__violations") == []
    button = page.get_by_role("button", name="Pay now")
    button.focus()
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{world.cashier_url}/cashier/tokCsp00001")


def test_back_from_the_cashier_without_paying_offers_pay_now_and_check_again(world: World, page: Page) -> None:
    """Back from the cashier: not two minutes of "confirming" with nothing to press, and no second trip
    to the cashier by itself; Pay now goes there, Check again follows the payment."""
    token = "tokBack0001"
    bc = world.bcpay
    bc.start_replies = [(200, bc.view(token))]
    bc.status_replies[token] = [bc.view(token)]
    world.store.page.attrs["data-redirect-ms"] = "50"
    page.goto(world.confirmation_url)
    page.wait_for_url(f"{world.cashier_url}/cashier/{token}")
    page.go_back()
    page.wait_for_url(f"{world.confirmation_url}**")
    wait_state(page, "pay")
    panel = page.locator(PANEL)
    expect(panel.get_by_role("button", name="Pay now")).to_be_visible()
    expect(panel.get_by_role("button", name="Check again")).to_be_visible()
    page.wait_for_timeout(600)  # ten times the redirect delay: still here
    assert page.url.startswith(world.confirmation_url) and snippet_state(page)["state"] == "pay"
    assert "confirming" not in snippet_state(page)["history"]
    bc.status_replies[token] = [bc.view(token, "paid")]
    panel.get_by_role("button", name="Check again").click()
    wait_state(page, "received")
    panel.get_by_role("heading").wait_for()
    assert len(bc.posts()) == 1


def test_back_from_the_cashier_without_session_storage_is_not_a_trap(world: World, page: Page) -> None:
    """With sessionStorage refused, Back reloads the page and the same pending payment comes back:
    it is offered, never followed by itself, so Back leaves the cashier for good."""
    token = "tokTrap0001"
    bc = world.bcpay
    bc.start_replies = [(200, bc.view(token)), (200, bc.view(token))]
    world.store.page.attrs["data-redirect-ms"] = "50"
    page.add_init_script("Object.defineProperty(window, 'sessionStorage', {get() { throw new Error('denied'); }})")
    page.goto(world.confirmation_url)
    page.wait_for_url(f"{world.cashier_url}/cashier/{token}")
    page.go_back()
    page.wait_for_url(f"{world.confirmation_url}**")
    wait_state(page, "pay")
    page.wait_for_timeout(600)
    assert page.url.startswith(world.confirmation_url) and snippet_state(page)["state"] == "pay"
    expect(page.locator(PANEL).get_by_role("button", name="Pay now")).to_be_visible()


def test_a_url_token_of_another_order_is_ignored_on_a_page_without_the_order_attribute(
    world: World, page: Page
) -> None:
    """The theme did not fill data-order-id: the page's own order (from its storefront call) is found
    first, and a paid token of another order never says "Payment received" here. (A page that names
    its order nowhere at all leaves only the token to go by; it is followed as before.)"""
    bc = world.bcpay
    bc.status_replies["tokOther002"] = [bc.view("tokOther002", "paid", order_id=ORDER_ID + 1)]
    bc.start_replies = [(200, bc.view("tokFresh002"))]
    world.store.page.order_id_attr = None
    world.store.page.mode = "fetch"
    page.goto(f"{world.confirmation_url}#bcpay_token=tokOther002")
    wait_state(page, "pay")
    expect_pay_panel(page)
    assert "received" not in snippet_state(page)["history"]
    assert len(bc.posts()) == 1


def test_a_payment_under_review_shows_no_amount(world: World, page: Page) -> None:
    """Under review the capture did not match the order, so the order's amount is not shown as paid."""
    review = world.bcpay.view("tokRevw0001", "under_review")
    world.bcpay.start_replies = [(409, {"error": {"code": "already_paid", "message": "paid"}, "payment": review})]
    page.goto(world.confirmation_url)
    wait_state(page, "review")
    panel = page.locator(PANEL)
    expect(panel.locator("h2")).to_have_text("Payment received")
    expect(panel).not_to_contain_text("19.99")


def test_the_shopper_can_stop_the_trip_to_the_cashier(world: World, page: Page) -> None:
    """The automatic trip to the cashier can be stopped with one press; Pay now still goes there."""
    world.bcpay.start_replies = [(200, world.bcpay.view("tokStay0001"))]
    world.store.page.attrs["data-redirect-ms"] = "1500"
    page.goto(world.confirmation_url)
    wait_state(page, "pay")
    panel = page.locator(PANEL)
    expect(panel).to_contain_text("Taking you to OKCloud Pay")
    panel.get_by_role("button", name="Stay on this page").click()
    page.wait_for_timeout(2000)
    assert page.url == world.confirmation_url and snippet_state(page)["state"] == "pay"
    expect(panel).not_to_contain_text("Taking you to OKCloud Pay")
    expect(panel.get_by_role("button", name="Stay on this page")).to_have_count(0)
    panel.get_by_role("button", name="Pay now").click()
    page.wait_for_url(f"{world.cashier_url}/cashier/tokStay0001")
