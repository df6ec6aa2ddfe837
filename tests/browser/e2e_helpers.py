"""The shopper's steps through the sandbox storefront in Chromium, and what e2e tests read back.

A :class:`Shop` is one running sandbox (``SandboxThread``: bcpay, the fake
BigCommerce API + storefront + control panel, the fake CeleryPay, all on
loopback with free ports) and one browser page. Its methods are what a
shopper or a merchant does in the UI; everything else (``status_puts``,
``on_loop``, ``wait_until``) reads the fakes' logs or bcpay's own state for
assertions. Nothing here patches bcpay: the snippet runs with its production
timings (polls 1 s apart growing to 5 s, redirect after 1 s) because the storefront
renders the Script Manager tag exactly as ``install-script`` stored it.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Page, Request, Route, expect

from bcpay import outbox
from bcpay.sandbox.celerypay import FakeCeleryPay, FakeOptions
from bcpay.sandbox.celerypay_notify import Delivery
from bcpay.sandbox.runner import STORE_HASH, Sandbox, SandboxOptions, SandboxThread
from bcpay.storage.records import JobRecord
from tests.browser.conftest import ARTIFACTS

T = TypeVar("T")

PANEL = "section.bcpay-okcloud"
TITLE = "#bcpay-okcloud-title"
# Outbox turns fast enough for a browser test; every other setting is the shipped default.
FAST_OUTBOX: dict[str, Any] = {"backoff_base": 0.2, "backoff_cap": 1.0, "poll_interval": 0.2}
SHOPPER_EMAIL = "jane@example.com"
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# The README walkthrough and the handbook show these; they are refreshed only on request (they are committed).
UPDATE_DOCS_ENV = "BCPAY_UPDATE_SCREENSHOTS"


def wait_until(check: Callable[[], T], *, timeout: float, what: str) -> T:
    """Poll ``check`` every 50 ms until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def keep(path: Path, *, docs: bool) -> Path:
    """With ``docs`` and $BCPAY_UPDATE_SCREENSHOTS set, copy a screenshot to docs/screenshots/ (the handbook's)."""
    if docs and os.environ.get(UPDATE_DOCS_ENV):
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


def screenshot(page: Page, name: str, *, docs: bool = False, navigating: bool = False) -> Path:
    """Save ``tests/artifacts/e2e-<name>.png``; with $BCPAY_UPDATE_SCREENSHOTS also refresh docs/screenshots/.

    ``navigating``: a navigation is pending (held back on purpose); Playwright's own
    screenshot would wait for it, so Chromium is asked directly for what it shows.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"e2e-{name}.png"
    if navigating:
        # Not detached: detaching waits for the held navigation; the session ends with the page.
        session = page.context.new_cdp_session(page)
        shot = session.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
    else:
        page.screenshot(path=str(path), full_page=True)
    return keep(path, docs=docs)


@dataclass
class Shop:
    """One sandbox and one browser page on its storefront."""

    thread: SandboxThread
    sandbox: Sandbox
    page: Page
    requests: list[Request] = field(default_factory=list)
    channel_url: str = ""  # the storefront the shopper uses (channel 1's when empty)

    @property
    def storefront(self) -> str:
        """The shopper's storefront: channel 1's, or the one set in ``channel_url``."""
        return self.channel_url or self.sandbox.urls.storefront

    # --- reading the sandbox ---------------------------------------------------------------

    def on_loop(self, factory: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
        """Run a coroutine on the sandbox's event loop (where bcpay's runtime and the fakes live)."""
        return self.thread.call(factory, timeout=timeout)

    def order(self, order_id: int) -> dict[str, Any]:
        """The fake BigCommerce's stored v2 order."""
        return self.sandbox.bc.order(STORE_HASH, order_id)

    def status_puts(self, order_id: int) -> list[dict[str, Any]]:
        """Bodies of every accepted PUT /v2/orders/{id} that set a status."""
        return [body for _, oid, body in list(self.sandbox.bc.put_log)
                if oid == order_id and "status_id" in body]

    def wait_for_status_puts(self, order_id: int, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        """Wait until the order has had ``count`` status PUTs, and return them."""
        wait_until(lambda: len(self.status_puts(order_id)) >= count, timeout=timeout,
                   what=f"{count} status PUT(s) on order {order_id}")
        return self.status_puts(order_id)

    def deliveries(self, payment_id: str) -> list[Delivery]:
        """Every notification attempt the fake CeleryPay made about one payment."""
        return [d for d in list(self.sandbox.celerypay.deliveries) if d.payment_id == payment_id]

    def payments(self) -> list[dict[str, Any]]:
        """Every payment the fake CeleryPay holds, in creation order."""
        return list(self.sandbox.celerypay.payments.values())

    def jobs(self, kind: str | None = None) -> list[JobRecord]:
        """bcpay's outbox jobs (newest first), optionally of one kind."""
        found = self.on_loop(lambda: outbox.list_jobs(self.sandbox.runtime.db, limit=500))
        return [j for j in found if kind is None or j.kind == kind]

    def wait_for_idle_outbox(self, timeout: float = 15) -> None:
        """Wait until bcpay has no queued job left (every effect applied or given up)."""
        wait_until(lambda: not any(j.state == outbox.QUEUED for j in self.jobs()), timeout=timeout,
                   what="an idle outbox")

    def bcpay_requests(self) -> list[Request]:
        """Requests the page sent to the bcpay origin."""
        return [r for r in self.requests if r.url.startswith(self.sandbox.urls.bcpay + "/")]

    # --- the shopper ----------------------------------------------------------------------

    def place_order(self, method: str = "OKCloud Pay", product_id: int = 77, *, shot: str | None = None,
                    docs: bool = False) -> int:
        """Product page -> Add to cart -> Check out -> email and payment method -> Place order.

        With ``shot``, the checkout page is photographed with the method chosen, before the order is placed.
        """
        home = self.storefront
        self.page.goto(home + "/")
        self.page.locator(f"#add-{product_id}").click()
        self.page.wait_for_url(home + "/cart.php")
        self.page.locator("#checkout-link").click()
        self.page.wait_for_url(home + "/checkout")
        self.page.get_by_label("Email address").fill(SHOPPER_EMAIL)
        self.page.get_by_role("radio", name=method).check()
        if shot is not None:
            screenshot(self.page, shot, docs=docs)
        self.page.get_by_role("button", name="Place order").click()
        self.page.wait_for_url(re.compile(re.escape(home) + r"/checkout/order-confirmation/\d+$"))
        return int(self.page.url.rsplit("/", 1)[1])

    def pay_an_order(self) -> tuple[int, str]:
        """Place an order, pay it at the cashier and wait for bcpay's status PUT; (order id, payment id)."""
        order_id = self.place_order()
        payment_id = self.reach_cashier()
        self.press("Pay")
        self.expect_title("Payment received")
        self.wait_for_status_puts(order_id)
        return order_id, payment_id

    def expect_title(self, text: str, timeout: float = 15) -> None:
        """The snippet's panel shows ``text`` as its heading."""
        expect(self.page.locator(TITLE)).to_have_text(text, timeout=timeout * 1000)

    def expect_order_loaded(self, order_id: int) -> None:
        """The page's own checkout script rendered the order (the snippet left the page working)."""
        expect(self.page.locator("html")).to_have_attribute("data-order-loaded", str(order_id))

    def snippet(self) -> dict[str, Any]:
        """The data part of ``window.bcpayOkcloud`` (state, history, token, order source)."""
        found: dict[str, Any] = self.page.evaluate("() => JSON.parse(JSON.stringify(window.bcpayOkcloud || null))")
        return found

    def reach_cashier(self, *, shot: str | None = None, docs: bool = False) -> str:
        """Wait for the panel's automatic redirect to the cashier; the CeleryPay payment id.

        With ``shot``, the cashier's answer is held back while the confirmation page is
        photographed, so the picture never races the redirect.
        """
        cashier = self.sandbox.urls.celerypay + "/cashier/"
        if shot is None:
            self.page.wait_for_url(cashier + "**", timeout=15000)
        else:
            held: list[Route] = []
            self.page.route(cashier + "**", lambda route: held.append(route))
            self.page.wait_for_function("() => window.bcpayOkcloud && window.bcpayOkcloud.state === 'redirecting'",
                                        timeout=15000)
            deadline = time.monotonic() + 5
            while not held:  # page.wait_for_timeout lets Playwright dispatch the route handler
                assert time.monotonic() < deadline, "the snippet never requested the cashier"
                self.page.wait_for_timeout(20)
            screenshot(self.page, shot, docs=docs, navigating=True)
            held[0].continue_()
            self.page.unroute(cashier + "**")
            self.page.wait_for_url(cashier + "**")
        expect(self.page.get_by_role("button", name="Pay", exact=True)).to_be_visible()
        return self.page.url.rsplit("/", 1)[1]

    def press(self, button: str) -> None:
        """Press Pay, Decline or Abandon on the cashier and land back on the confirmation page."""
        self.page.get_by_role("button", name=button, exact=True).click()
        self.page.wait_for_url(self.storefront + "/checkout/order-confirmation**",
                               timeout=10000)

    # --- the merchant ----------------------------------------------------------------------

    def control_panel(self, order_id: int, *, shot: str | None = None, docs: bool = False) -> tuple[str, str]:
        """The merchant opens /manage/orders in another tab; the order's (status, staff notes).

        Another tab, so the shopper's confirmation page keeps running meanwhile.
        """
        tab = self.page.context.new_page()
        try:
            tab.goto(self.sandbox.urls.control_panel)
            row = tab.locator(f'tr[data-order-id="{order_id}"]')
            expect(row).to_be_visible()
            if shot is not None:
                screenshot(tab, shot, docs=docs)
            cells = row.locator("td")
            return cells.nth(5).inner_text(), cells.nth(6).inner_text()
        finally:
            tab.close()


@contextmanager
def open_shop(page: Page, options: SandboxOptions, *, celerypay: FakeOptions | None = None) -> Iterator[Shop]:
    """Start a sandbox with ``options`` and record the page's requests.

    ``celerypay`` replaces the fake gateway's options (duplicates, reordering...)
    before anything starts; ``bcpay sandbox --chaos`` offers only a fixed mix.
    """
    thread = SandboxThread(options)
    if celerypay is not None:
        thread.sandbox.celerypay = FakeCeleryPay(celerypay, http=thread.sandbox.http)
    sandbox = thread.__enter__()
    try:
        shop = Shop(thread, sandbox, page)
        page.on("request", lambda request: shop.requests.append(request))
        yield shop
    finally:
        with suppress(Exception):  # stop the snippet's polling before its server goes away
            page.goto("about:blank")
        thread.__exit__(None, None, None)


def options(**overrides: Any) -> SandboxOptions:
    """SandboxOptions on free ports with the fast outbox; ``settings`` sections merge over it."""
    settings: dict[str, dict[str, Any]] = {"outbox": dict(FAST_OUTBOX)}
    for section, values in overrides.pop("settings", {}).items():
        settings.setdefault(section, {}).update(values)
    return SandboxOptions(port_base=0, settings=settings, **overrides)
