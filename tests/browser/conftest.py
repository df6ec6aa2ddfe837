"""Playwright fixtures and loopback stand-ins for the storefront snippet's browser tests.

Three origins on 127.0.0.1, each a tiny Starlette app served by uvicorn in a thread:

- the store (``FakeStore``): a BigCommerce-like order confirmation page that embeds
  the Script Manager tag exactly as ``bcpay.snippet.script_tag`` makes it, and the
  storefront orders API read with the session cookie;
- bcpay (``FakeBcpay``): the real ``inject.js`` bytes (so SRI is checked for real),
  ``/api/v1/payments`` scripted per test with CORS for the store origin only, and
  the ``/pay/{token}/return`` hop back to the store;
- the cashier (CeleryPay's hosted page): one link that "pays" and comes back.

The same host with different ports means the store's cookie WOULD reach bcpay if the
snippet sent credentials, so "no Cookie at bcpay" is a real assertion.
Debian's chromium only; Playwright never downloads a browser here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bcpay.snippet import asset, script_tag

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PAGES = Path(__file__).parent / "pages"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
STORE_HASH = "abc123"
METHOD_NAME = "OKCloud Pay"
ORDER_ID = 101
CART_ID = "3f9c2a4e-7b1d-4c55-9a0e-5d2b8c1e6f70"
PAGE_NONCE = "c3RvcmUtcGFnZS1ub25jZQ"
# Fast but still real backoff for tests; production defaults are 1 s -> 5 s over ~2 min.
FAST = {"data-poll-ms": "20", "data-poll-max-ms": "40", "data-poll-total-ms": "5000",
        "data-redirect-ms": "600000", "data-order-wait-ms": "3000"}


def storefront_order(
    order_id: int = ORDER_ID, *, method: str = METHOD_NAME, status: str = "AWAITING_PAYMENT"
) -> dict[str, Any]:
    """GET /api/storefront/orders/{id}?include=payments as BigCommerce answers it."""
    return {
        "orderId": order_id, "cartId": CART_ID, "status": status, "isComplete": True,
        "currency": {"name": "US Dollar", "code": "USD", "symbol": "$", "decimalPlaces": 2},
        "orderAmount": 19.99, "orderAmountAsInteger": 1999, "baseAmount": 19.99, "customerId": 0,
        "billingAddress": {"firstName": "Jane", "email": "jane@example.com"},
        "payments": [{"providerId": "cod", "methodId": "cod", "description": method,
                      "amount": 19.99, "detail": {"step": "FINALIZE", "instructions": ""}}],
    }


class LoopbackServer:
    """An ASGI app on a free 127.0.0.1 port, served by uvicorn in a daemon thread."""

    def __init__(self, app: ASGIApp) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                ws="none", http="h11")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    @property
    def origin(self) -> str:
        """Scheme, host and port: the origin the browser sees."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start serving and wait until the socket accepts."""
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@dataclass
class PageSpec:
    """How the stand-in confirmation page is rendered for one test."""

    order_id_attr: str | None = str(ORDER_ID)  # None: Stencil left {{checkout.order.id}} raw
    mode: str = "none"  # the page's own order call: none | xhr | fetch | early (fetch in <head>)
    delay_ms: int = 50
    lang: str = "en"
    head_extra: str = ""
    attrs: dict[str, str] = field(default_factory=lambda: dict(FAST))
    copies: int = 1  # how many times the Script Manager tag appears
    strict_csp: bool = False  # nonce-only scripts and styles, no eval, connect-src limited


@dataclass
class StoreCall:
    """One request to the storefront orders API."""

    path: str
    query: str
    accept: str
    cookie: str
    body: bytes


class FakeStore:
    """The store origin: order confirmation page and storefront orders API."""

    def __init__(self) -> None:
        self.bcpay_url = ""
        self.reset()

    def reset(self) -> None:
        """Fresh page spec, one awaiting-payment order, no recorded calls."""
        self.page = PageSpec()
        self.orders: dict[int, dict[str, Any]] = {ORDER_ID: storefront_order()}
        self.calls: list[StoreCall] = []

    def snippet_html(self) -> str:
        """The installed tag, as Stencil renders it on this page."""
        tag = script_tag(self.bcpay_url, STORE_HASH, METHOD_NAME, "auto")
        if self.page.order_id_attr is not None:
            tag = tag.replace("{{checkout.order.id}}", self.page.order_id_attr)
        extra = "".join(f' {k}="{v}"' for k, v in self.page.attrs.items())
        tag = tag.replace(" async></script>", f"{extra} async></script>")
        return "\n".join([tag] * self.page.copies)

    async def confirmation(self, request: Request) -> Response:
        spec = self.page
        config = {"mode": spec.mode, "orderId": ORDER_ID, "delayMs": spec.delay_ms}
        body = ((PAGES / "order-confirmation.html").read_text(encoding="utf-8")
                .replace("__LANG__", spec.lang)
                .replace("__PAGE_CONFIG__", json.dumps(config))
                .replace("__HEAD_EXTRA__", spec.head_extra)
                .replace("__SNIPPET__", self.snippet_html())
                .replace("__NONCE__", PAGE_NONCE))
        headers = {"Cache-Control": "no-store"}
        if spec.strict_csp:
            headers["Content-Security-Policy"] = (
                f"default-src 'none'; script-src 'nonce-{PAGE_NONCE}' {self.bcpay_url}/static/; "
                f"style-src 'nonce-{PAGE_NONCE}'; connect-src 'self' {self.bcpay_url}; "
                "img-src 'self'; base-uri 'none'")
        response = HTMLResponse(body, headers=headers)
        response.set_cookie("SHOP_SESSION_TOKEN", "sess-jane", path="/", samesite="lax")
        return response

    async def order(self, request: Request) -> Response:
        order = self.orders.get(int(request.path_params["order_id"]))
        raw = json.dumps(order).encode() if order else b'{"title":"Order not found","status":404}'
        self.calls.append(StoreCall(
            path=request.url.path, query=request.url.query,
            accept=request.headers.get("accept", ""), cookie=request.headers.get("cookie", ""), body=raw))
        return Response(raw, status_code=200 if order else 404, media_type="application/json")

    async def missing(self, request: Request) -> Response:
        return Response("nope", status_code=404)

    def own_calls(self) -> list[StoreCall]:
        """The snippet's own order reads (the page never asks for payments only)."""
        return [c for c in self.calls if c.query == "include=payments"]

    def app(self) -> ASGIApp:
        return Starlette(routes=[
            Route("/checkout/order-confirmation", self.confirmation),
            Route("/api/storefront/orders/{order_id:int}", self.order),
            Route("/api/storefront/order/{order_id:int}", self.order),
            Route("/missing", self.missing),
        ])


@dataclass
class BcpayHit:
    """One request that reached the stand-in bcpay API (preflights included)."""

    method: str
    path: str
    origin: str
    cookie: str
    content_type: str
    body: Any = None


class FakeBcpay:
    """bcpay as the snippet sees it: the asset, the payments API, the return hop."""

    def __init__(self) -> None:
        self.store_url = ""
        self.public_url = ""
        self.cashier_url = ""
        self.reset()

    def reset(self) -> None:
        """Up, no delay, nothing scripted, nothing recorded."""
        self.up = True
        self.script_delay = 0.0
        self.start_replies: list[tuple[int, dict[str, Any]]] = []
        self.status_replies: dict[str, list[dict[str, Any]]] = {}
        self.hits: list[BcpayHit] = []

    def view(self, token: str, state: str = "awaiting_payment", **overrides: Any) -> dict[str, Any]:
        """The public payment view (``PaymentView.to_json``)."""
        view = {
            "token": token, "store_hash": STORE_HASH, "order_id": ORDER_ID, "state": state,
            "status": {"awaiting_payment": "pending", "paid": "succeeded"}.get(state, state),
            "amount": 1999, "amount_display": "19.99 USD", "currency": "USD",
            "cashier_url": f"{self.cashier_url}/cashier/{token}" if state == "awaiting_payment" else None,
            "expires_at": "2030-01-01T00:00:00Z", "pay_url": f"{self.public_url}/pay/{token}",
            "failure_message": None,
        }
        view.update(overrides)
        return view

    def posts(self) -> list[BcpayHit]:
        """POST /api/v1/payments requests that got an answer."""
        return [h for h in self.hits if h.method == "POST" and h.body is not None]

    def api_hits(self) -> list[BcpayHit]:
        """Every request to /api/, preflights and refused ones included."""
        return [h for h in self.hits if h.path.startswith("/api/")]

    async def snippet(self, request: Request) -> Response:
        if self.script_delay:
            await asyncio.sleep(self.script_delay)
        return Response(asset().body, media_type="text/javascript; charset=utf-8",
                        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"})

    async def start_payment(self, request: Request) -> Response:
        request.state.hit.body = json.loads(await request.body())
        if not self.start_replies:
            return JSONResponse({"error": {"code": "internal", "message": "not scripted"}}, 500)
        status, body = self.start_replies.pop(0) if len(self.start_replies) > 1 else self.start_replies[0]
        return JSONResponse(body, status)

    async def payment_status(self, request: Request) -> Response:
        replies = self.status_replies.get(request.path_params["token"])
        if not replies:
            return JSONResponse({"error": {"code": "not_found", "message": "unknown token"}}, 404)
        view = replies.pop(0) if len(replies) > 1 else replies[0]
        return JSONResponse(view, headers={"Cache-Control": "no-store"})

    async def pay_page(self, request: Request) -> Response:
        return HTMLResponse(f"<h1>bcpay pay page {request.path_params['token']}</h1>")

    async def pay_return(self, request: Request) -> Response:
        query = urlencode({"bcpay_token": request.path_params["token"]})
        return RedirectResponse(f"{self.store_url}/checkout/order-confirmation#{query}", 303)

    def app(self) -> ASGIApp:
        inner = Starlette(routes=[
            Route("/static/inject.{hash}.js", self.snippet),
            Route("/api/v1/payments", self.start_payment, methods=["POST"]),
            Route("/api/v1/payments/{token}", self.payment_status),
            Route("/pay/{token}", self.pay_page),
            Route("/pay/{token}/return", self.pay_return),
        ])
        cors = CORSMiddleware(inner, allow_origins=[self.store_url], allow_methods=["GET", "POST", "OPTIONS"],
                              allow_headers=["Content-Type", "X-Request-Id"], max_age=0)
        fake = self

        async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                hit = BcpayHit(scope["method"], scope["path"], headers.get("origin", ""),
                               headers.get("cookie", ""), headers.get("content-type", ""))
                fake.hits.append(hit)
                scope.setdefault("state", {})["hit"] = hit
                if not fake.up and scope["path"].startswith("/api/"):
                    # Down: a bare 503 without CORS headers is a network error to the page.
                    await send({"type": "http.response.start", "status": 503, "headers": []})
                    await send({"type": "http.response.body", "body": b""})
                    return
            await cors(scope, receive, send)

        return recorder


class FakeCashier:
    """CeleryPay's hosted cashier: a Pay link that returns through bcpay."""

    def __init__(self) -> None:
        self.bcpay_url = ""

    async def cashier(self, request: Request) -> Response:
        token = request.path_params["token"]
        back = f"{self.bcpay_url}/pay/{token}/return?" + urlencode(
            {"celerypay_payment_id": f"cp_{token}", "celerypay_status": "succeeded"})
        return HTMLResponse(f'<h1>OKCloud Pay cashier</h1><p>Order token {token}</p><a id="pay" href="{back}">Pay</a>')

    def app(self) -> ASGIApp:
        return Starlette(routes=[Route("/cashier/{token}", self.cashier)])


@dataclass
class World:
    """The three stand-ins and their origins."""

    store: FakeStore
    bcpay: FakeBcpay
    store_url: str
    bcpay_url: str
    cashier_url: str

    @property
    def confirmation_url(self) -> str:
        """Where BigCommerce's checkout lands after placing the order."""
        return f"{self.store_url}/checkout/order-confirmation"


@pytest.fixture(scope="module")
def servers() -> Iterator[World]:
    """Start the store, bcpay and cashier stand-ins once per module."""
    store, bcpay, cashier = FakeStore(), FakeBcpay(), FakeCashier()
    store_srv, cashier_srv = LoopbackServer(store.app()), LoopbackServer(cashier.app())
    # bcpay's CORS list is fixed when its app is built, so the store's port comes first.
    bcpay.store_url, bcpay.cashier_url = store_srv.origin, cashier_srv.origin
    bcpay_srv = LoopbackServer(bcpay.app())
    bcpay.public_url = store.bcpay_url = cashier.bcpay_url = bcpay_srv.origin
    for srv in (store_srv, bcpay_srv, cashier_srv):
        srv.start()
    yield World(store, bcpay, store_srv.origin, bcpay_srv.origin, cashier_srv.origin)
    for srv in (store_srv, bcpay_srv, cashier_srv):
        srv.stop()


@pytest.fixture
def world(servers: World) -> World:
    """The stand-ins, reset for this test."""
    servers.store.reset()
    servers.bcpay.reset()
    return servers


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian chromium, headless, one per module."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context (cookies, sessionStorage, cache); the host page must never throw."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(5000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], f"uncaught errors on the page: {errors}"


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Any:
    """Save a screenshot of a key state under tests/artifacts/ (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(pg: Page, name: str) -> None:
        pg.screenshot(path=str(ARTIFACTS / f"snippet-{name}.png"), full_page=True)

    return take
