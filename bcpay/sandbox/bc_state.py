"""In-memory state of the fake BigCommerce shared by the REST API and the storefront.

One :class:`FakeBigCommerce` holds every sandbox store (orders, statuses,
payment methods, metafields, scripts, hooks, carts, access tokens), the OAuth
codes of login.bigcommerce.com, the runtime knobs (:class:`Quota`,
:class:`Chaos`) and the logs tests assert on (``requests``, ``put_log``,
``webhook_deliveries``). The rules that both faces need live here too: order
creation and the PUT whitelist, order-status names, webhook payloads. Shapes
follow ``shared/reference/openapi/*.yml`` and ``bigcommerce-api.md``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import format_datetime
from typing import Any

import httpx

JSON = dict[str, Any]

# GET /v2/order_statuses; ids and names from orders.v2.oas2.yml. `order` is the
# control-panel sort position from the spec example (only 0-4 are shown there;
# the rest keep their id).
ORDER_STATUSES: dict[int, tuple[str, str]] = {
    0: ("Incomplete", "An incomplete order happens when a shopper reached the payment page, but did not complete the transaction."),
    1: ("Pending", "Customer started the checkout process, but did not complete it."),
    2: ("Shipped", "Order has been shipped, but receipt has not been confirmed; seller has used the Ship Items action."),
    3: ("Partially Shipped", "Only some items in the order have been shipped, due to some products being pre-order only or other reasons."),
    4: ("Refunded", "Seller has used the Refund action."),
    5: ("Cancelled", "Seller has cancelled an order, due to a stock inconsistency or other reasons."),
    6: ("Declined", "Seller has marked the order as declined for lack of manual payment, or other reasons."),
    7: ("Awaiting Payment", "Customer has completed checkout process, but payment has yet to be confirmed."),
    8: ("Awaiting Pickup", "Order has been pulled, and is awaiting customer pickup from a seller-specified location."),
    9: ("Awaiting Shipment", "Order has been pulled and packaged, and is awaiting collection from a shipping provider."),
    10: ("Completed", "Client has paid for their digital product and their file(s) are available for download."),
    11: ("Awaiting Fulfillment", "Customer has completed the checkout process and payment has been confirmed."),
    12: ("Manual Verification Required", "Order is on hold while some aspect needs to be manually confirmed."),
    13: ("Disputed", "Customer has initiated a dispute resolution process for the PayPal transaction that paid for the order."),
    14: ("Partially Refunded", "Seller has partially refunded the order."),
}
_STATUS_SORT = {0: 0, 1: 1, 2: 8, 3: 6, 4: 11}

# Scopes a default sandbox token carries: everything bcpay's app profile asks for.
DEFAULT_SCOPES = frozenset({
    "store_v2_orders", "store_v2_content", "store_content_checkout",
    "store_v2_information_read_only", "store_payments_methods_read",
    "store_v2_transactions_read_only", "store_channel_settings_read_only", "store_sites_read_only",
    "store_app_extensions_manage",
})

# PUT /v2/orders/{id}: the scalar fields of `order_Put` the fake stores.
ORDER_WRITABLE = frozenset({
    "status_id", "payment_provider_id", "payment_method", "staff_notes", "customer_message",
    "external_order_id", "is_deleted", "customer_id", "channel_id", "external_source",
    "external_merchant_id", "ebay_order_id", "customer_locale", "ip_address", "ip_address_v6",
    "geoip_country", "geoip_country_iso2", "order_is_digital", "tax_provider_id", "date_created",
    "billing_address", "discount_amount", "refunded_amount", "items_total", "items_shipped",
    "total_ex_tax", "total_inc_tax", "subtotal_ex_tax", "subtotal_inc_tax",
})
# Writable in the spec but not modelled here; refusing beats silently dropping them.
ORDER_UNSUPPORTED = frozenset({"products", "consignments", "shipping_addresses", "fees"})
_ORDER_DECIMALS = frozenset({"total_ex_tax", "total_inc_tax", "subtotal_ex_tax", "subtotal_inc_tax",
                             "discount_amount", "refunded_amount"})
_MAX_STAFF_NOTES = 65535


class FakeApiError(Exception):
    """A refusal the HTTP faces render in the v2 (list) or v3 (object) error shape."""

    def __init__(self, status: int, title: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or {}


def rfc2822(moment: datetime) -> str:
    """``Tue, 05 Mar 2019 21:40:11 +0000``, the v2 date format."""
    return format_datetime(moment.astimezone(UTC))


def iso8601(moment: datetime) -> str:
    """``2022-06-16T18:39:00+00:00``, the v3 date format."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def _four_places(value: Decimal | str) -> str:
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise FakeApiError(400, f"not a decimal amount: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise FakeApiError(400, f"not a valid amount: {value!r}")
    return f"{amount:.4f}"


@dataclass(frozen=True)
class TokenGrant:
    """An access token the store accepts: who holds it and what it may do."""

    client_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """True when the grant has ``scope`` (a modify scope implies its read-only twin)."""
        if scope in self.scopes:
            return True
        return scope.endswith("_read_only") and scope.removesuffix("_read_only") in self.scopes


@dataclass
class PaymentMethod:
    """A payment method enabled on the store (offline or the test gateway)."""

    code: str
    name: str
    offline: bool
    test_mode: bool = False
    enabled: bool = True
    instructions: str = ""
    # The storefront channels it is enabled on (None: every channel; per-channel methods since 2025).
    channels: set[int] | None = None

    def on_channel(self, channel_id: int) -> bool:
        """Enabled, and offered at checkout on this channel."""
        return self.enabled and (self.channels is None or channel_id in self.channels)


@dataclass
class Store:
    """One sandbox store and everything in it."""

    store_hash: str
    store_id: str
    name: str
    secure_url: str
    currency: str
    tokens: dict[str, TokenGrant] = field(default_factory=dict)
    orders: dict[int, JSON] = field(default_factory=dict)
    order_items: dict[int, list[JSON]] = field(default_factory=dict)
    payment_methods: list[PaymentMethod] = field(default_factory=list)
    metafields: dict[int, JSON] = field(default_factory=dict)
    scripts: dict[str, JSON] = field(default_factory=dict)
    hooks: dict[int, JSON] = field(default_factory=dict)
    carts: dict[str, JSON] = field(default_factory=dict)
    cookie_consent_banner: bool = False
    # Settings > Order Notifications: the statuses whose change e-mails the customer (none until ticked).
    status_emails: set[int] = field(default_factory=set)
    # Every e-mail the store sent a customer, oldest first: {"order_id", "to", "subject", "body"}.
    emails: list[JSON] = field(default_factory=list)
    # Multi-storefront (channels.v3.yml): channel id -> ChannelWithoutCurrencies, and -> its Site.
    channels: dict[int, JSON] = field(default_factory=dict)
    sites: dict[int, JSON] = field(default_factory=dict)
    # Settings > Inventory (settings.v3.yml InventorySettings): the global values, and per channel the fields
    # a storefront overrides (the others are null: inherited). Stock returns on cancel unless changed.
    inventory: JSON = field(default_factory=lambda: {
        "product_out_of_stock_behavior": "do_nothing", "option_out_of_stock_behavior": "do_nothing",
        "update_stock_behavior": "order_placed", "edit_order_stock_adjustment": True,
        "refund_order_stock_adjustment": True, "stock_level_display": "dont_show",
        "default_out_of_stock_message": "", "hide_in_product_filtering": False,
        "show_pre_order_stock_levels": False, "show_out_of_stock_message": False,
    })
    channel_inventory: dict[int, JSON] = field(default_factory=dict)
    # App Extensions (GraphQL Admin API), id -> extension with the client_id of the app that made it.
    app_extensions: dict[str, JSON] = field(default_factory=dict)
    # The refund ledger (orders.v3.yml `Refund`) by refund id; orders with a refund being made now.
    refunds: dict[int, JSON] = field(default_factory=dict)
    refunding: set[int] = field(default_factory=set)
    # False: refund quotes offer no offline option (a store where BigCommerce cannot record one).
    offline_refunds: bool = True

    def method_named(self, name: str) -> PaymentMethod | None:
        """The enabled method whose display name or code is ``name``."""
        for method in self.payment_methods:
            if method.enabled and name in (method.name, method.code):
                return method
        return None


@dataclass(frozen=True)
class OAuthCode:
    """A one-time grant issued to an installing app (``/auth`` callback ``code``)."""

    store_hash: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str


@dataclass(frozen=True)
class RecordedRequest:
    """One call to the REST API, for assertions."""

    method: str
    path: str
    query: str
    status: int


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook POST attempt and its outcome (status 0 = transport error)."""

    hook_id: int
    destination: str
    payload: JSON
    status: int


@dataclass
class Quota:
    """BigCommerce's per-store request quota over a fixed window (rate-limits doc).

    Always reported in the X-Rate-Limit-* headers; only refused (429) when
    ``enforce`` is set. ``clock`` returns seconds (monotonic by default).
    """

    requests: int = 150
    window_ms: int = 30000
    enforce: bool = False
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)

    def hit(self, key: str) -> tuple[bool, dict[str, str]]:
        """Count one request for ``key``; answer (allowed, rate-limit headers)."""
        now_ms = self.clock() * 1000.0
        start, count = self._windows.get(key, (now_ms, 0))
        if now_ms >= start + self.window_ms:
            start, count = now_ms, 0
        count += 1
        self._windows[key] = (start, count)
        reset_ms = max(int(start + self.window_ms - now_ms), 0)
        headers = {
            "X-Rate-Limit-Time-Window-Ms": str(self.window_ms),
            "X-Rate-Limit-Time-Reset-Ms": str(reset_ms),
            "X-Rate-Limit-Requests-Quota": str(self.requests),
            "X-Rate-Limit-Requests-Left": str(max(self.requests - count, 0)),
        }
        return (not self.enforce or count <= self.requests), headers


@dataclass
class Chaos:
    """Injected failures for reliability tests; every field may change at runtime.

    ``error_rate`` is the fraction of calls answered 503 (seeded RNG);
    ``burst_429_every`` = N answers every Nth call 429 as BigCommerce answers
    platform load: with none of the X-Rate-Limit-* headers (reference section
    9, "429 without these headers = platform load, retry later"; only a 429 for
    the exhausted quota carries them); ``latency`` (seconds) delays every call
    through ``sleep`` (inject a recorder to keep tests instant).
    """

    error_rate: float = 0.0
    burst_429_every: int = 0
    seed: int = 0
    latency: float = 0.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _calls: int = field(default=0, repr=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def decide(self) -> int | None:
        """The status to fail this call with (503 or 429), or None to serve it."""
        self._calls += 1
        if self.burst_429_every and self._calls % self.burst_429_every == 0:
            return 429
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            return 503
        return None


def _scope_matches(subscribed: str, scope: str) -> bool:
    """A hook's scope covers the event: the same, or a ``/*`` wildcard over it (``store/order/*``)."""
    if subscribed == scope:
        return True
    return subscribed.endswith("/*") and scope.startswith(subscribed[:-1])


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FakeBigCommerce:
    """Every sandbox store plus the knobs and logs of the fake platform."""

    def __init__(self, *, clock: Callable[[], datetime] = _utcnow,
                 strict_destinations: bool = False) -> None:
        self.clock = clock
        # Real BC wants https on port 443; the sandbox delivers to loopback http.
        self.strict_destinations = strict_destinations
        self.stores: dict[str, Store] = {}
        self.quota = Quota()
        self.chaos = Chaos()
        self.requests: list[RecordedRequest] = []
        self.put_log: list[tuple[str, int, JSON]] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        # Apps by client id -> client secret. Hooks an app made are signed as Standard Webhooks with
        # its secret (reference section 8); API-account hooks are not signed.
        self.apps: dict[str, str] = {}
        self.app_load_urls: dict[str, str] = {}
        # When set, every delivery is signed with this key instead (a test of a wrong app secret).
        self.webhook_signing_key: bytes | None = None
        self.rate_limited = 0
        self.oauth_codes: dict[str, OAuthCode] = {}
        self._next_order_id = 100
        self._next_id = 1
        self._next_refund_id = 0
        # Seconds a refund takes to be made (refunds of one order are made one at a time, bc_refunds).
        self.refund_delay = 0.0

    def next_id(self) -> int:
        """A fresh integer id for metafields and hooks."""
        self._next_id += 1
        return self._next_id

    def next_refund_id(self) -> int:
        """A fresh refund id (refund ids are global, as ``GET /v3/orders/payment_actions/refunds/{id}`` needs)."""
        self._next_refund_id += 1
        return self._next_refund_id

    def add_store(self, store_hash: str, *, secure_url: str, name: str = "Sandbox Store",
                  currency: str = "USD", access_token: str = "sandbox-access-token",
                  scopes: frozenset[str] | set[str] = DEFAULT_SCOPES,
                  client_id: str = "sandbox-client-id",
                  offline_method_name: str = "OKCloud Pay") -> Store:
        """Create a store whose API accepts ``access_token`` with ``scopes``."""
        store = Store(store_hash=store_hash, store_id=str(1000000 + len(self.stores)), name=name,
                      secure_url=secure_url.rstrip("/"), currency=currency)
        store.payment_methods = [
            PaymentMethod(code="bankdeposit", name=offline_method_name, offline=True,
                          instructions=f"You will be taken to {offline_method_name} to pay."),
            PaymentMethod(code="testgateway", name="Test Payment Gateway", offline=False,
                          test_mode=True),
        ]
        store.tokens[access_token] = TokenGrant(client_id, frozenset(scopes))
        self.stores[store_hash] = store
        from bcpay.sandbox.bc_channels import add_channel

        add_channel(self, store_hash, name=store.name, url=store.secure_url, channel_id=1)
        return store

    def store(self, store_hash: str) -> Store:
        """The store, or FakeApiError 404."""
        try:
            return self.stores[store_hash]
        except KeyError:
            raise FakeApiError(404, "Store not found") from None

    def add_token(self, store_hash: str, token: str, *, client_id: str,
                  scopes: frozenset[str] | set[str]) -> None:
        """Make the store accept another token (another app, fewer scopes...)."""
        self.store(store_hash).tokens[token] = TokenGrant(client_id, frozenset(scopes))

    # --- OAuth (login.bigcommerce.com) ----------------------------------------

    def register_app(self, client_id: str, client_secret: str, *, load_url: str | None = None) -> None:
        """Know an app (Developer Portal): its hooks' deliveries and its callbacks are signed with its secret;
        ``load_url`` is its load callback (the control panel opens the app and its App Extensions there)."""
        self.apps[client_id] = client_secret
        if load_url is not None:
            self.app_load_urls[client_id] = load_url

    def issue_oauth_code(self, store_hash: str, *, client_id: str, client_secret: str,
                         redirect_uri: str, scope: str) -> str:
        """Register a single-use ``code`` as BC sends it to the app's /auth callback."""
        self.store(store_hash)
        self.register_app(client_id, client_secret)
        code = secrets.token_urlsafe(18)
        self.oauth_codes[code] = OAuthCode(store_hash, client_id, client_secret, redirect_uri, scope)
        return code

    def exchange_oauth_code(self, form: dict[str, str]) -> JSON:
        """POST /oauth2/token: check every field, burn the code, mint a token."""
        required = ("client_id", "client_secret", "code", "scope", "grant_type", "redirect_uri", "context")
        missing = [name for name in required if not form.get(name)]
        if missing:
            raise FakeApiError(400, f"Missing required parameter(s): {', '.join(missing)}")
        if form["grant_type"] != "authorization_code":
            raise FakeApiError(400, "Invalid grant_type")
        grant = self.oauth_codes.get(form["code"])
        if grant is None:
            raise FakeApiError(400, "Invalid authorization code")
        if form["client_id"] != grant.client_id or not secrets.compare_digest(
                form["client_secret"], grant.client_secret):
            raise FakeApiError(401, "Invalid client credentials")
        if form["redirect_uri"] != grant.redirect_uri:
            raise FakeApiError(400, "redirect_uri does not match the registered callback")
        if form["context"] != f"stores/{grant.store_hash}":
            raise FakeApiError(400, "Invalid context")
        if set(form["scope"].split()) != set(grant.scope.split()):
            raise FakeApiError(400, "Invalid scope")
        del self.oauth_codes[form["code"]]  # single use, only once it succeeded
        token = secrets.token_hex(16)
        self.add_token(grant.store_hash, token, client_id=grant.client_id,
                       scopes=frozenset(grant.scope.split()))
        user = {"id": 24654, "username": "merchant@example.com", "email": "merchant@example.com"}
        return {"access_token": token, "scope": grant.scope, "user": user, "owner": dict(user),
                "context": f"stores/{grant.store_hash}",
                "account_uuid": "5b2e6b4b-7f6b-4f4e-9a53-0f1c7f0f0a11"}

    # --- orders ---------------------------------------------------------------

    def create_order(self, store_hash: str, *, total: Decimal | str, currency: str = "USD",
                     payment_method: str = "OKCloud Pay", status_id: int = 7,
                     email: str = "shopper@example.com", cart_id: str | None = None,
                     created: datetime | None = None, display_currency: str | None = None,
                     first_name: str = "Jane", last_name: str = "Doe", customer_message: str = "",
                     order_source: str = "www", line_items: list[JSON] | None = None,
                     channel_id: int = 1) -> JSON:
        """Create an order as checkout would and return its v2 JSON."""
        store = self.store(store_hash)
        if status_id not in ORDER_STATUSES:
            raise FakeApiError(400, f"unknown status_id {status_id}")
        amount = _four_places(total)
        moment = created or self.clock()
        self._next_order_id += 1
        order_id = self._next_order_id
        method = store.method_named(payment_method)
        captured = method is not None and not method.offline and status_id not in (0, 1)
        order: JSON = {
            "id": order_id, "customer_id": 0,
            "date_created": rfc2822(moment), "date_modified": rfc2822(moment), "date_shipped": "",
            "status_id": status_id, "status": ORDER_STATUSES[status_id][0],
            "custom_status": ORDER_STATUSES[status_id][0],
            "subtotal_ex_tax": amount, "subtotal_inc_tax": amount, "subtotal_tax": "0.0000",
            "base_shipping_cost": "0.0000", "shipping_cost_ex_tax": "0.0000",
            "shipping_cost_inc_tax": "0.0000", "shipping_cost_tax": "0.0000",
            "shipping_cost_tax_class_id": 0, "base_handling_cost": "0.0000",
            "handling_cost_ex_tax": "0.0000", "handling_cost_inc_tax": "0.0000",
            "handling_cost_tax": "0.0000", "handling_cost_tax_class_id": 0,
            "base_wrapping_cost": "0.0000", "wrapping_cost_ex_tax": "0.0000",
            "wrapping_cost_inc_tax": "0.0000", "wrapping_cost_tax": "0.0000",
            "wrapping_cost_tax_class_id": 0,
            "total_ex_tax": amount, "total_inc_tax": amount, "total_tax": "0.0000",
            "is_tax_inclusive_pricing": False, "items_total": 1, "items_shipped": 0,
            "payment_method": payment_method, "payment_provider_id": "",
            "payment_status": "captured" if captured else "",
            "refunded_amount": "0.0000", "order_is_digital": False,
            "store_credit_amount": "0.0000", "gift_certificate_amount": "0.0000",
            "ip_address": "127.0.0.1", "ip_address_v6": "", "geoip_country": "United States",
            "geoip_country_iso2": "US",
            "currency_id": 1, "currency_code": display_currency or currency,
            "currency_exchange_rate": "1.0000000000",
            "default_currency_id": 1, "default_currency_code": currency,
            "store_default_currency_code": store.currency,
            "store_default_to_transactional_exchange_rate": "1.0000000000",
            "staff_notes": "", "customer_message": customer_message,
            "discount_amount": "0.0000", "coupon_discount": "0.0000",
            "shipping_address_count": 1, "is_deleted": False, "ebay_order_id": "0",
            "cart_id": cart_id or str(uuid.uuid4()),
            "billing_address": {
                "first_name": first_name, "last_name": last_name, "company": "",
                "street_1": "555 East Street", "street_2": "", "city": "Austin", "state": "Texas",
                "zip": "78108", "country": "United States", "country_iso2": "US",
                "phone": "", "email": email, "form_fields": [],
            },
            "is_email_opt_in": False, "credit_card_type": None, "order_source": order_source,
            "channel_id": channel_id, "external_source": None, "external_id": None,
            "external_merchant_id": None, "tax_provider_id": "BasicTaxProvider",
            "customer_locale": "en", "external_order_id": "",
            "products": self._sub_resource(store_hash, order_id, "products"),
            "shipping_addresses": self._sub_resource(store_hash, order_id, "shippingaddresses"),
            "coupons": self._sub_resource(store_hash, order_id, "coupons"),
        }
        store.orders[order_id] = order
        instructions = method.instructions if method is not None and method.offline else ""
        store.emails.append({"order_id": order_id, "to": email,
                             "subject": f"Thank you for your order #{order_id}",
                             "body": f"Payment method: {payment_method}\n{instructions}".strip()})
        store.order_items[order_id] = line_items or [
            {"name": "Sandbox item", "sku": "SBX-1", "quantity": 1, "price": amount}]
        return copy.deepcopy(order)

    @staticmethod
    def _sub_resource(store_hash: str, order_id: int, name: str) -> dict[str, str]:
        return {"url": f"https://api.bigcommerce.com/stores/{store_hash}/v2/orders/{order_id}/{name}",
                "resource": f"/orders/{order_id}/{name}"}

    def order(self, store_hash: str, order_id: int) -> JSON:
        """The stored v2 order (live object), or FakeApiError 404."""
        try:
            return self.store(store_hash).orders[order_id]
        except KeyError:
            raise FakeApiError(404, "The requested resource was not found.") from None

    def apply_order_put(self, store_hash: str, order_id: int, body: object) -> tuple[int, JSON]:
        """PUT /v2/orders/{id}: refuse read-only fields, apply the rest; (old status, order)."""
        order = self.order(store_hash, order_id)
        if not isinstance(body, dict) or not body:
            raise FakeApiError(400, "The request body must be a non-empty JSON object.")
        for key in body:
            if key in ORDER_UNSUPPORTED:
                raise FakeApiError(400, f"The field '{key}' is not supported by the sandbox.")
            if key not in ORDER_WRITABLE:
                raise FakeApiError(400, f"The field '{key}' cannot be written.")
        changes = dict(body)
        if "status_id" in changes and (isinstance(changes["status_id"], bool)
                                       or changes["status_id"] not in ORDER_STATUSES):
            raise FakeApiError(400, "The field 'status_id' is invalid.")
        notes = changes.get("staff_notes")
        if notes is not None and (not isinstance(notes, str) or len(notes) > _MAX_STAFF_NOTES):
            raise FakeApiError(400, "The field 'staff_notes' is invalid.")
        for key in _ORDER_DECIMALS & changes.keys():
            changes[key] = _four_places(str(changes[key]))
        if "billing_address" in changes:
            if not isinstance(changes["billing_address"], dict):
                raise FakeApiError(400, "The field 'billing_address' is invalid.")
            changes["billing_address"] = {**order["billing_address"], **changes["billing_address"]}
        previous = int(order["status_id"])
        self.put_log.append((store_hash, order_id, copy.deepcopy(body)))
        order.update(changes)
        if "status_id" in changes:
            self._set_status_fields(order, int(changes["status_id"]))
            self._status_email(store_hash, order, previous)
        order["date_modified"] = rfc2822(self.clock())
        return previous, order

    def set_order_status(self, store_hash: str, order_id: int, status_id: int) -> int:
        """Change the status as a merchant would in the control panel; the old status id."""
        order = self.order(store_hash, order_id)
        if status_id not in ORDER_STATUSES:
            raise FakeApiError(400, f"unknown status_id {status_id}")
        previous = int(order["status_id"])
        self._set_status_fields(order, status_id)
        self._status_email(store_hash, order, previous)
        order["date_modified"] = rfc2822(self.clock())
        return previous

    def _status_email(self, store_hash: str, order: JSON, previous: int) -> None:
        """E-mail the customer about a new status, when the store ticked it in Order Notifications."""
        store = self.store(store_hash)
        status_id = int(order["status_id"])
        if status_id != previous and status_id in store.status_emails:
            store.emails.append({"order_id": order["id"], "to": order["billing_address"]["email"],
                                 "subject": f"Order #{order['id']}: {ORDER_STATUSES[status_id][0]}",
                                 "body": f"Your order #{order['id']} is now {ORDER_STATUSES[status_id][0]}."})

    @staticmethod
    def _set_status_fields(order: JSON, status_id: int) -> None:
        order["status_id"] = status_id
        order["status"] = order["custom_status"] = ORDER_STATUSES[status_id][0]

    @staticmethod
    def order_statuses() -> list[JSON]:
        """GET /v2/order_statuses body."""
        return [{"id": sid, "name": name, "system_label": name, "custom_label": name,
                 "system_description": text, "order": _STATUS_SORT.get(sid, sid)}
                for sid, (name, text) in ORDER_STATUSES.items()]

    # --- webhooks ---------------------------------------------------------------

    def webhook_payload(self, store_hash: str, scope: str, data: JSON) -> JSON:
        """The callback body BC POSTs (webhooks.v3.yml `webhook_callback_base`)."""
        store = self.store(store_hash)
        created_at = int(self.clock().timestamp())
        body = {"scope": scope, "store_id": store.store_id, "data": data, "created_at": created_at}
        digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return {"scope": scope, "store_id": store.store_id, "producer": f"stores/{store_hash}",
                "hash": digest, "created_at": created_at, "data": data}

    def _signing_key(self, client_id: str) -> bytes | None:
        """The key a hook's deliveries are signed with: its app's client secret (None: an API account's)."""
        if self.webhook_signing_key is not None:
            return self.webhook_signing_key
        secret = self.apps.get(client_id)
        return secret.encode() if secret is not None else None

    def _standard_webhook_headers(self, key: bytes, body: bytes) -> dict[str, str]:
        """``webhook-id``, ``-timestamp`` and ``-signature`` (v1: base64 HMAC-SHA256 of id.timestamp.body)."""
        msg_id = f"msg_{uuid.uuid4().hex}"
        timestamp = str(int(self.clock().timestamp()))
        mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
        return {"webhook-id": msg_id, "webhook-timestamp": timestamp,
                "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode()}

    async def fire_webhook(self, http: httpx.AsyncClient, store_hash: str, scope: str,
                           data: JSON, *, client_id: str | None = None) -> list[WebhookDelivery]:
        """POST the event to every active hook of ``scope`` (or a ``/*`` wildcard over it), of ``client_id`` if given."""
        payload = self.webhook_payload(store_hash, scope, data)
        deliveries = []
        for hook in list(self.store(store_hash).hooks.values()):
            if not hook["is_active"] or not _scope_matches(str(hook["scope"]), scope):
                continue
            if client_id is not None and hook["client_id"] != client_id:
                continue
            headers = {"Content-Type": "application/json", **(hook["headers"] or {})}
            body = json.dumps(payload).encode()
            key = self._signing_key(hook["client_id"])
            if key is not None:
                headers.update(self._standard_webhook_headers(key, body))
            try:
                response = await http.post(hook["destination"], content=body, headers=headers)
                status = response.status_code
            except httpx.HTTPError:
                status = 0  # BC counts timeouts and refused connections as failures too
            delivery = WebhookDelivery(hook["id"], hook["destination"], payload, status)
            self.webhook_deliveries.append(delivery)
            deliveries.append(delivery)
        return deliveries

