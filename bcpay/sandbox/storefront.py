"""A fake BigCommerce storefront and control-panel order view for one sandbox store.

``create_storefront(state, store_hash)`` serves, on its own origin: a product
page, ``/cart.php``, a one-page ``/checkout`` that places orders into the
shared :class:`~bcpay.sandbox.bc_state.FakeBigCommerce` (status 7 Awaiting
Payment for the offline method, 11 Awaiting Fulfillment for the test
gateway), the order-confirmation page with the store's Script Manager scripts
rendered as Stencil would, the Storefront Orders API
(``/api/storefront/orders/{id}``, orders.sf.yml), ``/manage/orders`` where
a status change fires ``store/order/statusUpdated`` and the Refund action records a refund in the
ledger (``bcpay.sandbox.bc_refunds``) and fires ``store/order/refund/created``, and the control panel's
settings pages (``bcpay.sandbox.control_panel``).

The storefront order API answers **404** for an order the caller's session did
not place (and without a session): order ids are sequential, so a 403 would
confirm to anyone that an order exists. BigCommerce documents only a
"same-origin session", so the exact refusal is our choice.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bcpay.errors import InvalidInputError
from bcpay.money import exponent
from bcpay.sandbox import bc_refunds
from bcpay.sandbox.bc_apps import signed_payload_jwt
from bcpay.sandbox.bc_state import JSON, ORDER_STATUSES, FakeApiError, FakeBigCommerce, Store
from bcpay.sandbox.control_panel import SettingsPages

SESSION_COOKIE = "SHOP_SESSION_TOKEN"  # the name third parties report for BC's shopper session
CART_COOKIE = "bc_cart_id"
_TEMPLATES = Path(__file__).parent / "templates" / "storefront"
_HANDLEBARS = re.compile(r"\{\{\{?\s*([\w.]+)\s*\}?\}\}")
_PAGE_VISIBILITY = {
    "storefront": ("storefront", "all_pages"),
    "checkout": ("checkout", "all_pages"),
    "order_confirmation": ("order_confirmation", "all_pages"),
}
_CURRENCIES = {"USD": ("US Dollar", "$"), "EUR": ("Euro", "€"), "GBP": ("British Pound", "£"),
               "JPY": ("Japanese Yen", "¥"), "CAD": ("Canadian Dollar", "$"),
               "AUD": ("Australian Dollar", "$"), "KWD": ("Kuwaiti Dinar", "KD")}

Variant = Literal["xhr", "fetch"]


@dataclass(frozen=True)
class Product:
    """A catalogue product; ``price`` is in the store's currency."""

    id: int
    name: str
    sku: str
    price: Decimal
    blurb: str


@dataclass
class Session:
    """What a shopper's session cookie unlocks."""

    order_ids: set[int] = field(default_factory=set)
    last_order_id: int | None = None


def decimal_places(currency: str) -> int:
    """ISO 4217 exponent, 2 for codes bcpay.money does not support."""
    try:
        return exponent(currency)
    except InvalidInputError:
        return 2


def catalogue(currency: str) -> list[Product]:
    """The two sandbox products, priced sensibly for ``currency``."""
    scale = Decimal(100) if decimal_places(currency) == 0 else Decimal(1)
    return [
        Product(77, "Orbit Terrarium", "OTS-77", Decimal("109.00") * scale,
                "A hand-blown glass terrarium for small succulents."),
        Product(86, "Canvas Laundry Cart", "CLC-86", Decimal("49.50") * scale,
                "Sturdy canvas on a powder-coated steel frame."),
    ]


def render_stencil_values(html: str, values: dict[str, str]) -> str:
    """Substitute ``{{checkout.order.id}}``-style values as Stencil's Handlebars does.

    Unknown values render empty, as Handlebars renders a missing context key.
    """
    return _HANDLEBARS.sub(lambda m: values.get(m.group(1), ""), html)


def script_tags(store: Store, page: str, values: dict[str, str], channel_id: int = 1) -> dict[str, list[Markup]]:
    """The enabled Script Manager scripts of the channel for ``page``, by location (head/footer), as HTML."""
    visible = _PAGE_VISIBILITY[page]
    placed: dict[str, list[Markup]] = {"head": [], "footer": []}
    for script in store.scripts.values():
        if not script["enabled"] or script["visibility"] not in visible or script["channel_id"] != channel_id:
            continue
        # With the consent banner on, only `essential` scripts load before consent.
        if store.cookie_consent_banner and script["consent_category"] != "essential":
            continue
        if script["kind"] == "script_tag":
            tag = render_stencil_values(script["html"], values)
        else:
            attrs = f' src="{escape(script["src"])}"'
            if script["load_method"] != "default":
                attrs += f" {script['load_method']}"
            if script["integrity_hashes"]:
                attrs += (f' integrity="{escape(" ".join(script["integrity_hashes"]))}"'
                          ' crossorigin="anonymous"')
            tag = f"<script{attrs}></script>"
        placed[script["location"]].append(Markup(tag))  # verbatim on purpose: BC does not escape it
    return placed


def storefront_order(state: FakeBigCommerce, store: Store, order_id: int,
                     include: set[str]) -> JSON:
    """The Storefront Orders API body (orders.sf.yml `Order`, plus SDK `payments`)."""
    order = state.order(store.store_hash, order_id)
    code = order["default_currency_code"]
    places = decimal_places(code)
    total = Decimal(order["total_inc_tax"])
    name, symbol = _CURRENCIES.get(code, (code, code))
    # The storefront API answers JavaScript numbers; converting at the wire is the only float use.
    amount = float(total)
    billing = order["billing_address"]
    body: JSON = {
        "orderId": order["id"], "cartId": order["cart_id"],
        "currency": {"name": name, "code": code, "symbol": symbol, "decimalPlaces": places},
        "isTaxIncluded": False, "baseAmount": amount, "discountAmount": 0,
        "giftWrappingCostTotal": 0, "orderAmount": amount,
        "orderAmountAsInteger": int(total.scaleb(places).to_integral_value()),
        "coupons": [], "customerId": order["customer_id"],
        "status": ORDER_STATUSES[order["status_id"]][0].upper().replace(" ", "_"),
        "hasDigitalItems": False, "isDownloadable": False,
        "isComplete": order["status_id"] != 0,
        "customerMessage": order["customer_message"], "shippingCostTotal": 0,
        "shippingCostBeforeDiscount": 0, "handlingCostTotal": 0, "customerCanBeCreated": True,
        "taxes": [], "taxTotal": 0, "channelId": order["channel_id"],
        "billingAddress": {
            "firstName": billing["first_name"], "lastName": billing["last_name"],
            "email": billing["email"], "company": billing["company"],
            "address1": billing["street_1"], "address2": billing["street_2"],
            "city": billing["city"], "stateOrProvince": billing["state"],
            "stateOrProvinceCode": "TX", "country": billing["country"],
            "countryCode": billing["country_iso2"], "postalCode": billing["zip"],
            "phone": billing["phone"], "customFields": []},
        # BC answers an object of item lists here although orders.sf.yml says array.
        "lineItems": {"physicalItems": [
            {"id": n + 1, "productId": item.get("product_id", 0), "sku": item["sku"],
             "name": item["name"], "quantity": item["quantity"],
             "listPrice": float(Decimal(item["price"])), "salePrice": float(Decimal(item["price"])),
             "extendedSalePrice": float(Decimal(item["price"]) * item["quantity"]),
             "isTaxable": True, "type": "physical", "discounts": [], "discountAmount": 0}
            for n, item in enumerate(store.order_items.get(order_id, []))],
            "digitalItems": [], "giftCertificates": [], "customItems": []},
        "consignments": {"shipping": []},
    }
    if "payments" in include:
        method = store.method_named(order["payment_method"])
        body["payments"] = [{
            "providerId": method.code if method else "", "gatewayId": None, "methodId": None,
            "description": order["payment_method"], "amount": amount,
            "detail": {"step": "ACKNOWLEDGE", "instructions": method.instructions if method else ""},
        }]
    return body


class _Shop:
    """Handlers of one store's storefront and control panel."""

    def __init__(self, state: FakeBigCommerce, store_hash: str, variant: Variant, delay_ms: int,
                 http: httpx.AsyncClient | None, channel_id: int = 1) -> None:
        self.state = state
        self.store_hash = store_hash
        self.channel_id = channel_id
        # Each channel has its own domain on BigCommerce; on loopback the ports share cookies, so the
        # names carry the channel instead.
        suffix = "" if channel_id == 1 else f"_{channel_id}"
        self.session_cookie, self.cart_cookie = SESSION_COOKIE + suffix, CART_COOKIE + suffix
        self.variant = variant
        self.delay_ms = delay_ms
        self.http = http
        self.sessions: dict[str, Session] = {}
        self.env = Environment(loader=FileSystemLoader(_TEMPLATES),
                               autoescape=select_autoescape(default=True))

    @property
    def store(self) -> Store:
        return self.state.store(self.store_hash)

    def _page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        store = self.store
        context.setdefault("scripts", {"head": [], "footer": []})
        html = self.env.get_template(name).render(store=store, currency=store.currency, **context)
        return HTMLResponse(html, status_code=status)

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(self.session_cookie, ""))

    def _cart(self, request: Request) -> JSON | None:
        return self.store.carts.get(request.cookies.get(self.cart_cookie, ""))

    def _cart_lines(self, cart: JSON | None) -> tuple[list[JSON], Decimal]:
        products = {p.id: p for p in catalogue(self.store.currency)}
        lines = [{"product": products[pid], "quantity": qty,
                  "total": products[pid].price * qty}
                 for pid, qty in (cart or {}).get("items", {}).items() if pid in products]
        return lines, sum((line["total"] for line in lines), Decimal(0))

    def _webhooks(self, events: list[tuple[str, JSON]]) -> BackgroundTasks | None:
        if self.http is None:
            return None
        tasks = BackgroundTasks()
        for scope, data in events:
            tasks.add_task(self.state.fire_webhook, self.http, self.store_hash, scope, data)
        return tasks

    # --- shopper pages -------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return self._page("home.html", products=catalogue(self.store.currency),
                          scripts=script_tags(self.store, "storefront", {}, self.channel_id))

    async def cart(self, request: Request) -> Response:
        if request.method == "POST" or request.query_params.get("action") == "add":
            source = await request.form() if request.method == "POST" else request.query_params
            return self._add_to_cart(request, str(source.get("product_id", "")),
                                     str(source.get("qty", "1")))
        lines, total = self._cart_lines(self._cart(request))
        return self._page("cart.html", lines=lines, total=total,
                          scripts=script_tags(self.store, "storefront", {}, self.channel_id))

    def _add_to_cart(self, request: Request, product_id: str, qty: str) -> Response:
        if not product_id.isdigit() or int(product_id) not in {
                p.id for p in catalogue(self.store.currency)}:
            return self._page("cart.html", status=400, lines=[], total=Decimal(0),
                              error="That product does not exist.")
        quantity = max(1, min(int(qty) if qty.isdigit() else 1, 99))
        cart = self._cart(request)
        if cart is None:
            cart = {"id": str(uuid.uuid4()), "items": {}, "channel_id": self.channel_id}
            self.store.carts[cart["id"]] = cart
        cart["items"][int(product_id)] = cart["items"].get(int(product_id), 0) + quantity
        response = RedirectResponse("/cart.php", status_code=302)
        response.set_cookie(self.cart_cookie, cart["id"], httponly=True, samesite="lax")
        return response

    async def checkout(self, request: Request) -> Response:
        cart = self._cart(request)
        lines, total = self._cart_lines(cart)
        if cart is None or not lines:
            return RedirectResponse("/cart.php", status_code=302)
        methods = [m for m in self.store.payment_methods if m.on_channel(self.channel_id)]
        if request.method == "GET":
            return self._checkout_page(lines, total, methods, {}, None)
        form = {k: str(v).strip() for k, v in (await request.form()).items()}
        method = next((m for m in methods if m.code == form.get("payment_method")), None)
        if "@" not in form.get("email", "") or method is None:
            error = "Enter a valid email address." if method else "Choose a payment method."
            return self._checkout_page(lines, total, methods, form, error)
        order = self.state.create_order(
            self.store_hash, total=total, currency=self.store.currency,
            payment_method=method.name, status_id=7 if method.offline else 11,
            email=form["email"], cart_id=cart["id"], channel_id=self.channel_id,
            first_name=form.get("first_name") or "Jane", last_name=form.get("last_name") or "Doe",
            customer_message=form.get("customer_message", ""),
            line_items=[{"product_id": line["product"].id, "sku": line["product"].sku,
                         "name": line["product"].name, "quantity": line["quantity"],
                         "price": f"{line['product'].price:.4f}"} for line in lines])
        del self.store.carts[cart["id"]]
        token = request.cookies.get(self.session_cookie, "")
        session = self.sessions.get(token)
        if session is None:
            token = secrets.token_urlsafe(24)
            session = self.sessions[token] = Session()
        session.order_ids.add(order["id"])
        session.last_order_id = order["id"]
        response = RedirectResponse(f"/checkout/order-confirmation/{order['id']}", status_code=302,
                                    background=self._webhooks([
                                        ("store/order/created", {"type": "order", "id": order["id"]}),
                                        ("store/cart/converted", {"type": "cart", "id": cart["id"],
                                                                  "orderId": order["id"]})]))
        response.set_cookie(self.session_cookie, token, httponly=True, samesite="lax")
        response.delete_cookie(self.cart_cookie)
        return response

    def _checkout_page(self, lines: list[JSON], total: Decimal, methods: list[Any],
                       form: dict[str, str], error: str | None) -> Response:
        return self._page("checkout.html", status=400 if error else 200, lines=lines, total=total,
                          methods=methods, form=form, error=error,
                          scripts=script_tags(self.store, "checkout", {}, self.channel_id))

    async def confirmation(self, request: Request) -> Response:
        session = self._session(request)
        order_id = request.path_params.get("order_id")
        if order_id is None and session is not None:
            order_id = session.last_order_id
        if session is None or order_id is None or order_id not in session.order_ids:
            return self._page("not_found.html", status=404)
        order = self.state.order(self.store_hash, order_id)
        variant = request.query_params.get("variant", self.variant)
        values = {"checkout.order.id": str(order_id), "checkout.id": order["cart_id"]}
        return self._page(
            "order_confirmation.html", order=order,
            checkout_config={"containerId": "checkout-app", "orderId": order_id,
                             "checkoutId": order["cart_id"]},
            sandbox={"variant": "xhr" if variant == "xhr" else "fetch",
                     "delayMs": self.delay_ms},
            scripts=script_tags(self.store, "order_confirmation", values, self.channel_id))

    async def confirmation_js(self, request: Request) -> Response:
        return Response((_TEMPLATES / "order-confirmation.js").read_text(encoding="utf-8"),
                        media_type="text/javascript")

    async def api_order(self, request: Request) -> Response:
        session = self._session(request)
        order_id = request.path_params["order_id"]
        if session is None or order_id not in session.order_ids:
            return JSONResponse({"status": 404, "title": "Order not found",
                                 "type": "https://developer.bigcommerce.com/api-docs/"
                                         "getting-started/api-status-codes"}, status_code=404)
        include = {part.strip() for part in request.query_params.get("include", "").split(",")}
        return JSONResponse(storefront_order(self.state, self.store, order_id, include))

    # --- control panel -----------------------------------------------------------------

    async def manage_orders(self, request: Request) -> Response:
        orders = sorted(self.store.orders.values(), key=lambda o: -int(o["id"]))
        return self._page("manage_orders.html", orders=orders)

    async def manage_order(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        try:
            order = self.state.order(self.store_hash, order_id)
        except FakeApiError:
            return self._page("not_found.html", status=404)
        if request.method == "POST":
            form = await request.form()
            raw = str(form.get("status_id", ""))
            if not raw.isdigit() or int(raw) not in ORDER_STATUSES:
                return self._manage_page(order, "Choose a valid status.")
            previous = self.state.set_order_status(self.store_hash, order_id, int(raw))
            tasks = None
            if previous != int(raw):
                tasks = self._webhooks([("store/order/statusUpdated", {
                    "type": "order", "id": order_id,
                    "status": {"previous_status_id": previous, "new_status_id": int(raw)}})])
            return RedirectResponse(f"/manage/orders/{order_id}", status_code=303, background=tasks)
        return self._manage_page(order, None)

    async def manage_refund(self, request: Request) -> Response:
        """The order's Refund action: an order-level amount through a refund method the quote offers.

        As BigCommerce's, it goes through the refund ledger (quote, then refund; one at a time) and fires
        ``store/order/refund/created`` (and the status change).
        """
        order_id = request.path_params["order_id"]
        try:
            order = self.state.order(self.store_hash, order_id)
        except FakeApiError:
            return self._page("not_found.html", status=404)
        form = await request.form()
        amount, provider = str(form.get("amount", "")).strip(), str(form.get("provider_id", ""))
        items = [{"item_type": "ORDER", "item_id": order_id, "amount": amount,
                  "reason": str(form.get("reason", "")).strip()[:1000]}]
        try:
            quote = bc_refunds.quote(self.state, self.store_hash, order_id, {"items": items})
            option = next((o for m in quote["refund_methods"] for o in m if o["provider_id"] == provider), None)
            if option is None:
                return self._manage_page(order, "Choose a refund method.")
            payment = {"provider_id": provider, "amount": amount, "offline": option["offline"]}
            async with bc_refunds.one_at_a_time(self.state, self.store_hash, order_id):
                previous, refund = bc_refunds.create_refund(self.state, self.store_hash, order_id,
                                                            {"items": items, "payments": [payment]}, user_id=1)
        except FakeApiError as exc:
            return self._manage_page(order, exc.title)
        return RedirectResponse(f"/manage/orders/{order_id}?refunded={refund['id']}", status_code=303,
                                background=self._webhooks(bc_refunds.webhook_events(order, previous, refund)))

    def _manage_page(self, order: JSON, error: str | None) -> Response:
        metafields = [m for m in self.store.metafields.values() if m["resource_id"] == order["id"]]
        refunds = bc_refunds.list_refunds(self.store, order_ids={order["id"]})
        left = bc_refunds.refundable(order)
        methods = bc_refunds.refund_methods(self.store, order, left) if left > 0 else []
        return self._page("manage_order.html", status=400 if error else 200, order=order,
                          statuses=ORDER_STATUSES, metafields=metafields, error=error, refunds=refunds,
                          refundable=f"{left:.2f}" if left > 0 else "", methods=[o for m in methods for o in m],
                          paid=int(order["status_id"]) in bc_refunds.PAID_STATUSES, panels=self._panels(order["id"]))

    def _panels(self, order_id: int) -> list[JSON]:
        """The Orders page's App Extension panels, as BigCommerce opens one: an iframe on the app's load
        callback with a fresh ``signed_payload_jwt`` whose ``url`` is the extension's, order id filled in."""
        found = []
        for ext in self.store.app_extensions.values():
            load = self.state.app_load_urls.get(ext["client_id"])
            if ext["model"] != "ORDERS" or ext["context"] != "PANEL" or load is None:
                continue
            url = ext["url"].replace("${id}", str(order_id))
            token = signed_payload_jwt(self.state, self.store_hash, ext["client_id"], url=url)
            found.append({"id": ext["id"], "label": ext["label"]["defaultValue"],
                          "src": f"{load}?{urlencode({'signed_payload_jwt': token})}"})
        return found


def create_storefront(state: FakeBigCommerce, store_hash: str, *,
                      confirmation_variant: Variant = "fetch", storefront_delay_ms: int = 300,
                      http: httpx.AsyncClient | None = None, channel_id: int = 1) -> Starlette:
    """Build the storefront (+ control-panel view) of ``store_hash`` on storefront channel ``channel_id``.

    ``confirmation_variant`` picks how the confirmation page's own script reads
    the order (XMLHttpRequest or fetch; ``?variant=`` overrides per request)
    and ``storefront_delay_ms`` how long it waits first. With ``http``, placed
    orders and control-panel status changes fire the store's webhooks. Each
    channel's storefront renders only its own channel's scripts, offers the
    methods enabled on it and places orders with its ``channel_id``.
    """
    state.store(store_hash)  # fail fast on an unknown store
    shop = _Shop(state, store_hash, confirmation_variant, storefront_delay_ms, http, channel_id)
    return Starlette(routes=[
        Route("/", shop.home),
        Route("/cart.php", shop.cart, methods=["GET", "POST"]),
        Route("/checkout", shop.checkout, methods=["GET", "POST"]),
        Route("/checkout/order-confirmation", shop.confirmation),
        Route("/checkout/order-confirmation/{order_id:int}", shop.confirmation),
        Route("/assets/js/order-confirmation.js", shop.confirmation_js),
        Route("/api/storefront/orders/{order_id:int}", shop.api_order),
        Route("/api/storefront/order/{order_id:int}", shop.api_order),
        Route("/manage/orders", shop.manage_orders),
        Route("/manage/orders/{order_id:int}", shop.manage_order, methods=["GET", "POST"]),
        Route("/manage/orders/{order_id:int}/refund", shop.manage_refund, methods=["POST"]),
        *SettingsPages(state, store_hash, shop._page).routes(),
    ])


__all__ = ["create_storefront", "render_stencil_values", "script_tags", "storefront_order"]
