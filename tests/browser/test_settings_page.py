"""The settings page in a real Chromium, framed by a "control panel" on another site.

Everything runs on loopback in threads: the real bcpay server (uvicorn, with
its lifespan), the fake BigCommerce API (+ /oauth2/token) and the fake
CeleryPay, and a tiny control-panel page at ``http://localhost:PORT`` that
frames ``http://127.0.0.1:PORT/bc/load?signed_payload_jwt=...``. localhost and
127.0.0.1 are different *sites*, so the session cookie really is a
third-party, ``SameSite=None; Secure; Partitioned`` cookie here, as in the
BigCommerce control panel. Chromium treats http://127.0.0.1 as potentially
trustworthy, so it keeps Secure cookies there (asserted below).
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from bcpay.config import load_settings
from bcpay.crypto import Vault, generate_key
from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.bigcommerce import create_bigcommerce_api
from bcpay.sandbox.celerypay import FakeCeleryPay
from bcpay.server.app import create_app
from bcpay.server.sessions import COOKIE_NAME
from tests.browser.e2e_helpers import keep
from tests.builders import bc_jwt

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
STORE_HASH = "abc123"
CLIENT_ID = "browser-test-client-id"
CLIENT_SECRET = "browser-test-client-secret-0123456789abcdef"
SCOPES = (
    "store_v2_orders store_v2_content store_v2_information_read_only store_payments_methods_read"
)
MERCHANT_ID = "mch_BrowserMerchant00001"
MERCHANT_SECRET = "browser-test-celerypay-secret-0123456789"


class Served:
    """An ASGI app on a fresh 127.0.0.1 port, uvicorn in a daemon thread (lifespan as asked)."""

    def __init__(self, app: ASGIApp, *, lifespan: str = "off") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.app = app
        self.lifespan = lifespan
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self, app: ASGIApp | None = None) -> None:
        """Serve (``app`` may replace the placeholder given at construction) and wait until ready."""
        config = uvicorn.Config(
            app or self.app,
            lifespan=self.lifespan,
            log_level="warning",
            access_log=False,
            ws="none",
            http="h11",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask uvicorn to exit (running the lifespan's shutdown) and wait for the thread."""
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=15)
        self.sock.close()


@dataclass
class ControlPanel:
    """The framing page: what BigCommerce's control panel does with the app's /load URL.

    Like BigCommerce, it signs a new ``signed_payload_jwt`` (new ``jti``) every
    time the page is rendered; ``src`` makes the iframe URL.
    """

    make_src: Callable[[], str] = lambda: ""

    async def page(self, request: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'><title>Control panel</title></head>"
            "<body style='margin:0;font-family:sans-serif'><p style='padding:8px;background:#1d2939;color:#fff'>"
            "Fake BigCommerce control panel</p>"
            f"<iframe id='app' title='OKCloud Pay' src='{self.make_src()}' style='width:100%;height:1700px;border:0'>"
            "</iframe></body></html>"
        )

    def app(self) -> ASGIApp:
        return Starlette(routes=[Route("/", self.page)])


@dataclass
class Stack:
    """The running servers and the handles the test needs."""

    bcpay: str
    control_panel: str
    db_path: Path
    vault: Vault
    panel: ControlPanel


@contextmanager
def running_stack(tmp_path: Path, *, offline_method_name: str = "OKCloud Pay") -> Iterator[Stack]:
    """bcpay, the fakes and the control panel on loopback; the store installed through /bc/auth.

    ``offline_method_name``: the display name the store's offline payment method has.
    """
    bc = FakeBigCommerce()
    bc.add_store(STORE_HASH, secure_url="https://shop.example.com", name="Browser Shop",
                 offline_method_name=offline_method_name)
    cp = FakeCeleryPay()
    cp.add_merchant(MERCHANT_ID, MERCHANT_SECRET)
    panel = ControlPanel()
    bc_srv, cp_srv, panel_srv = (
        Served(create_bigcommerce_api(bc)),
        Served(cp.app),
        Served(panel.app()),
    )
    bcpay_srv = Served(Starlette(), lifespan="on")
    bcpay_url = f"http://127.0.0.1:{bcpay_srv.port}"
    panel_url = f"http://localhost:{panel_srv.port}"  # another site than 127.0.0.1
    secret_key, db_path = generate_key(), tmp_path / "bcpay.db"
    settings = load_settings(
        environ={},
        overrides={
            "app": {
                "public_url": bcpay_url,
                "secret_key": secret_key,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "control_panel_origins": ["https://store-*.mybigcommerce.com", panel_url],
            },
            "database": {"url": f"sqlite:///{db_path}"},
            "bigcommerce": {
                "api_url": f"http://127.0.0.1:{bc_srv.port}",
                "login_url": f"http://127.0.0.1:{bc_srv.port}",
                "max_retries": 0,
            },
            "celerypay": {
                "api_url": f"http://127.0.0.1:{cp_srv.port}",
                "sandbox_api_url": f"http://127.0.0.1:{cp_srv.port}",
                "max_retries": 0,
            },
            "server": {"run_worker": False},
        },
    )
    for srv in (bc_srv, cp_srv, panel_srv):
        srv.start()
    bcpay_srv.start(create_app(settings))
    try:
        code = bc.issue_oauth_code(
            STORE_HASH,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri=f"{bcpay_url}/bc/auth",
            scope=SCOPES,
        )
        installed = httpx.get(
            f"{bcpay_url}/bc/auth",
            params={"code": code, "scope": SCOPES, "context": f"stores/{STORE_HASH}"},
        )
        assert installed.status_code == 303, installed.text
        yield Stack(bcpay_url, panel_url, db_path, Vault(secret_key), panel)
    finally:
        for srv in (bcpay_srv, panel_srv, cp_srv, bc_srv):
            srv.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The stack with the store's offline method already named "OKCloud Pay"."""
    with running_stack(tmp_path) as running:
        yield running


@contextmanager
def control_panel_page(stack: Stack, browser: Browser) -> Iterator[Page]:
    """A browser page on the control panel, whose iframe opens the app through a freshly signed /bc/load URL."""

    def load_url() -> str:
        # The store owner: only the owner, and users the owner allows, may change settings (bcpay.roles).
        jwt = bc_jwt(secret=CLIENT_SECRET, aud=CLIENT_ID, sub=f"stores/{STORE_HASH}", now=int(time.time()),
                     owner={"id": 42, "email": "clerk@example.com"})
        return f"{stack.bcpay}/bc/load?signed_payload_jwt={jwt}"

    stack.panel.make_src = load_url
    context = browser.new_context(viewport={"width": 1200, "height": 1750})
    context.set_default_timeout(10000)
    try:
        page = context.new_page()
        page.goto(f"{stack.control_panel}/")
        yield page
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    """Save tests/artifacts/<name>: the control panel down to the end of the app's page (not of its tall frame).

    With $BCPAY_UPDATE_SCREENSHOTS the handbook's copy is refreshed too.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    frame = page.locator("#app").bounding_box()
    assert frame is not None
    content = page.frame_locator("#app").locator("body").evaluate(
        "body => Math.max(...[...body.children].map(e => e.getBoundingClientRect().bottom))")
    clip = {"x": 0, "y": 0, "width": page.viewport_size["width"] if page.viewport_size else 1200,
            "height": frame["y"] + min(frame["height"], content) + 16}
    page.screenshot(path=str(ARTIFACTS / name), clip=clip)
    keep(ARTIFACTS / name, docs=True)


def credentials(stack: Stack) -> tuple[str | None, str | None]:
    """The store's CeleryPay merchant id and (opened) secret, read from the database file."""
    with sqlite3.connect(stack.db_path) as db:
        merchant, sealed = db.execute(
            "SELECT celerypay_merchant_id, celerypay_secret_enc FROM stores WHERE store_hash = ?",
            (STORE_HASH,),
        ).fetchone()
    return merchant, stack.vault.open(sealed) if sealed else None


def test_settings_page_in_a_cross_site_iframe_saves_credentials_and_refuses_csrf(
    stack: Stack, browser: Browser
) -> None:
    """Open via a signed /bc/load URL inside the control panel, save credentials, see them work."""
    with control_panel_page(stack, browser) as page:
        context = page.context
        app = page.frame_locator("#app")
        expect(app.locator("h1")).to_have_text("OKCloud Pay")
        expect(app.get_by_text("signed in as clerk@example.com")).to_be_visible()
        expect(app.locator("#secret-state")).to_have_text("not set")
        expect(app.get_by_text("Storefront snippet: installed and current")).to_be_visible()
        expect(app.get_by_text("Webhooks: 5 active")).to_be_visible()
        shot(page, "settings-installed.png")  # what the merchant sees first, right after the install

        cookies = [c for c in context.cookies(stack.bcpay) if c["name"] == COOKIE_NAME]
        assert len(cookies) == 1, context.cookies()
        cookie = cookies[0]
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "None"
        assert cookie.get("partitionKey") == "http://localhost"  # CHIPS: kept per top-level site

        app.locator("#merchant_id").fill(MERCHANT_ID)
        app.locator("#api_secret").fill(MERCHANT_SECRET)
        app.locator("#on_expired").select_option("cancel")
        app.get_by_role("button", name="Save settings").click()
        expect(app.get_by_role("status")).to_have_text("Settings saved.")
        expect(app.locator("#secret-state")).to_have_text("set")
        expect(app.locator("#api_secret")).to_have_value("")
        expect(
            app.get_by_text(f"{MERCHANT_ID} accepted (sandbox)")
        ).to_be_visible()  # CeleryPay took them
        assert MERCHANT_SECRET not in page.frame_locator("#app").locator("body").inner_html()
        assert credentials(stack) == (MERCHANT_ID, MERCHANT_SECRET)

        shot(page, "settings-saved.png")

        # The same browser session, a forged form without the token: refused, nothing changes.
        # 403 (not 401) shows the session cookie did go along: only the CSRF check refused it.
        forged = page.request.post(
            f"{stack.bcpay}/bc/settings",
            form={
                "merchant_id": "mch_AttackerMerchant0001",
                "api_secret": "x" * 40,
                "environment": "production",
                "method_name": "Evil",
                "paid_status_id": "10",
                "mismatch_status_id": "12",
                "on_expired": "keep",
                "return_to": "bcpay",
            },
        )
        assert forged.status == 403, forged.text()
        assert "Nothing was changed" in forged.text()
        assert credentials(stack) == (MERCHANT_ID, MERCHANT_SECRET)
        page.reload()
        expect(page.frame_locator("#app").locator("#merchant_id")).to_have_value(MERCHANT_ID)


def test_a_store_whose_offline_method_is_not_renamed_is_shown_the_control_panel_steps(
    tmp_path: Path, browser: Browser
) -> None:
    """No API renames an offline method: the health list says which name it wants and how to set it."""
    with running_stack(tmp_path, offline_method_name="Pay in Store") as stack, \
            control_panel_page(stack, browser) as page:
        app = page.frame_locator("#app")
        check = app.locator("li.check", has_text="Offline payment method")
        expect(check).to_contain_text('Needs attention')
        expect(check).to_contain_text('no enabled payment method is named "OKCloud Pay"')
        expect(check.locator("ol li")).to_have_text([
            "Open https://shop.example.com/manage/settings/payment (Settings > Payments).",  # the fake: secure_url/manage
            "Under Offline payment methods, enable one method, e.g. Pay in Store.",
            'Set its display name to exactly "OKCloud Pay" and save.',
            "Run this check again.",
        ])
        shot(page, "settings-method-steps.png")
