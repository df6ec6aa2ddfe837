"""BigCommerce objects bcpay reads and writes, parsed strictly from JSON.

Field names follow the reference (sections 3, 4, 6, 7, 8) and the OpenAPI
files in /work/shared/reference/openapi. A parser raises :class:`Malformed`
on anything off-shape; the client turns it into
``UpstreamUnavailable(code="bad_upstream_response")``.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bcpay.config import Secret


class Malformed(ValueError):
    """A BigCommerce answer does not have the documented shape."""


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def _int(obj: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"{key} is not an integer")
    return value


def _str(
    obj: dict[str, Any], key: str, *, optional: bool = False, default: str | None = None
) -> Any:
    value = obj.get(key)
    if value is None:
        if default is not None:
            return default
        if optional:
            return None
    if not isinstance(value, str):
        raise Malformed(f"{key} is not a string")
    return value


def _bool(obj: dict[str, Any], key: str, *, default: bool | None = None) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise Malformed(f"{key} is not a boolean")
    return value


def _decimal(obj: dict[str, Any], key: str) -> Decimal:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Malformed(f"{key} is not a decimal string")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise Malformed(f"{key} is not a decimal string") from None
    if not amount.is_finite() or amount < 0:
        raise Malformed(f"{key} is not a finite, non-negative amount")
    return amount


def _rfc2822(obj: dict[str, Any], key: str, *, optional: bool = False) -> datetime | None:
    value = obj.get(key)
    if value in (None, "") and optional:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{key} is not an RFC 2822 date")
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise Malformed(f"{key} is not an RFC 2822 date") from None
    if parsed.tzinfo is None:
        raise Malformed(f"{key} has no time zone")
    return parsed


@dataclass(frozen=True)
class Order:
    """A v2 order, as far as payment is concerned (reference section 3).

    ``currency`` is ``default_currency_code``: the transactional currency the
    shopper pays ``total_inc_tax`` in. ``display_currency`` is ``currency_code``.
    """

    id: int
    status_id: int
    status: str
    total_inc_tax: Decimal
    currency: str
    display_currency: str
    payment_method: str
    payment_provider_id: str | None
    payment_status: str
    cart_id: str | None
    customer_id: int
    email: str | None
    date_created: datetime
    date_modified: datetime | None
    channel_id: int
    staff_notes: str

    @classmethod
    def from_json(cls, obj: Any) -> Order:
        """Parse a ``GET /v2/orders/{id}`` answer; raise :class:`Malformed`."""
        o = _obj(obj, "order")
        provider = o.get("payment_provider_id")
        # Documented as "string or number"; "" and null both mean "not set".
        if isinstance(provider, bool) or not isinstance(provider, (str, int, type(None))):
            raise Malformed("payment_provider_id is not a string or number")
        billing = o.get("billing_address")
        email_value = billing.get("email") if isinstance(billing, dict) else None
        date_created = _rfc2822(o, "date_created")
        assert date_created is not None
        return cls(
            id=_int(o, "id"),
            status_id=_int(o, "status_id"),
            status=_str(o, "status", default=""),
            total_inc_tax=_decimal(o, "total_inc_tax"),
            currency=_str(o, "default_currency_code"),
            display_currency=_str(o, "currency_code", default=o.get("default_currency_code") or ""),
            payment_method=_str(o, "payment_method", default=""),
            payment_provider_id=None if provider in (None, "") else str(provider),
            payment_status=_str(o, "payment_status", default=""),
            cart_id=_str(o, "cart_id", optional=True) or None,
            customer_id=_int(o, "customer_id"),
            email=email_value if isinstance(email_value, str) and email_value else None,
            date_created=date_created,
            date_modified=_rfc2822(o, "date_modified", optional=True),
            channel_id=_int(o, "channel_id", optional=True) or 1,
            staff_notes=_str(o, "staff_notes", default=""),
        )


@dataclass(frozen=True)
class OrderStatus:
    """One row of ``GET /v2/order_statuses``."""

    id: int
    name: str
    system_label: str
    custom_label: str

    @classmethod
    def from_json(cls, obj: Any) -> OrderStatus:
        """Parse one order status."""
        o = _obj(obj, "order status")
        return cls(
            id=_int(o, "id"),
            name=_str(o, "name"),
            system_label=_str(o, "system_label", default=""),
            custom_label=_str(o, "custom_label", default=""),
        )


@dataclass(frozen=True)
class PaymentMethod:
    """One row of ``GET /v2/payments/methods``."""

    code: str
    name: str
    test_mode: bool

    @classmethod
    def from_json(cls, obj: Any) -> PaymentMethod:
        """Parse one payment method."""
        o = _obj(obj, "payment method")
        return cls(
            code=_str(o, "code"),
            name=_str(o, "name"),
            test_mode=_bool(o, "test_mode", default=False),
        )


@dataclass(frozen=True)
class AppExtension:
    """One App Extension of this app on the store (GraphQL Admin API ``AppExtension``)."""

    id: str
    model: str
    context: str
    url: str
    label: str

    @classmethod
    def from_json(cls, obj: Any) -> AppExtension:
        """Parse one ``AppExtension`` node."""
        o = _obj(obj, "app extension")
        label = o.get("label")
        return cls(id=_str(o, "id"), model=_str(o, "model", default=""), context=_str(o, "context", default=""),
                   url=_str(o, "url", default=""),
                   label=_str(label, "defaultValue", default="") if isinstance(label, dict) else "")


@dataclass(frozen=True)
class AcceptedMethod:
    """One method ``GET /v3/payments/methods?order_id=`` says the order's checkout accepts
    (``paymentMethod_Full`` in payments_methods.v3.yml: ``id``, ``name``, ``type``, ``test_mode``)."""

    id: str
    name: str
    type: str
    test_mode: bool

    @property
    def offline(self) -> bool:
        """An offline method (checkout calls its type ``PAYMENT_TYPE_OFFLINE``)."""
        return "offline" in self.type.lower()

    @classmethod
    def from_json(cls, obj: Any) -> AcceptedMethod:
        """Parse one accepted method."""
        o = _obj(obj, "accepted payment method")
        return cls(id=_str(o, "id"), name=_str(o, "name"), type=_str(o, "type", default=""),
                   test_mode=_bool(o, "test_mode", default=False))


@dataclass(frozen=True)
class Metafield:
    """An order metafield (reference section 4)."""

    id: int
    namespace: str
    key: str
    value: str
    permission_set: str
    description: str

    @classmethod
    def from_json(cls, obj: Any) -> Metafield:
        """Parse one metafield."""
        o = _obj(obj, "metafield")
        return cls(
            id=_int(o, "id"),
            namespace=_str(o, "namespace"),
            key=_str(o, "key"),
            value=_str(o, "value"),
            permission_set=_str(o, "permission_set"),
            description=_str(o, "description", default=""),
        )


@dataclass(frozen=True)
class ScriptSpec:
    """What bcpay wants a Script Manager script to be (reference section 6)."""

    name: str
    kind: str = "src"
    src: str | None = None
    html: str | None = None
    description: str | None = None
    load_method: str = "default"
    location: str = "footer"
    visibility: str = "order_confirmation"
    auto_uninstall: bool = True
    consent_category: str = "essential"  # so cookie consent cannot block the redirect
    enabled: bool = True
    channel_id: int = 1
    integrity_hashes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The request body: only fields that apply to ``kind``."""
        body: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "load_method": self.load_method,
            "location": self.location,
            "visibility": self.visibility,
            "auto_uninstall": self.auto_uninstall,
            "consent_category": self.consent_category,
            "enabled": self.enabled,
            "channel_id": self.channel_id,
        }
        if self.description is not None:
            body["description"] = self.description
        if self.kind == "src":
            body["src"] = self.src or ""
            if self.integrity_hashes:
                body["integrity_hashes"] = list(self.integrity_hashes)
        else:
            body["html"] = self.html or ""
        return body


@dataclass(frozen=True)
class Script:
    """A script as BigCommerce stores it."""

    uuid: str
    name: str
    kind: str
    src: str | None
    html: str | None
    visibility: str
    location: str
    enabled: bool
    channel_id: int | None
    integrity_hashes: tuple[str, ...]
    consent_category: str = "unknown"  # BigCommerce's default; merchants can change it in Script Manager
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> Script:
        """Parse one script."""
        o = _obj(obj, "script")
        hashes = o.get("integrity_hashes") or []
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            raise Malformed("integrity_hashes is not a list of strings")
        return cls(
            uuid=_str(o, "uuid"),
            name=_str(o, "name"),
            kind=_str(o, "kind"),
            src=_str(o, "src", optional=True),
            html=_str(o, "html", optional=True),
            visibility=_str(o, "visibility"),
            location=_str(o, "location", default=""),
            enabled=_bool(o, "enabled", default=True),
            channel_id=_int(o, "channel_id", optional=True),
            integrity_hashes=tuple(hashes),
            consent_category=_str(o, "consent_category", default="unknown"),
            raw=o,
        )


@dataclass(frozen=True)
class Hook:
    """A v3 webhook subscription (reference section 8).

    ``headers`` usually carry a shared secret, so they stay out of the repr.
    """

    id: int
    scope: str
    destination: str
    is_active: bool
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> Hook:
        """Parse one webhook."""
        o = _obj(obj, "webhook")
        headers = o.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise Malformed("headers is not a string map")
        return cls(
            id=_int(o, "id"),
            scope=_str(o, "scope"),
            destination=_str(o, "destination"),
            is_active=_bool(o, "is_active", default=True),
            headers=dict(headers),
        )


@dataclass(frozen=True)
class StoreInfo:
    """``GET /v2/store``: who the store is."""

    id: str
    domain: str
    secure_url: str
    name: str
    currency: str
    control_panel_base_url: str
    default_channel_id: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> StoreInfo:
        """Parse the store information."""
        o = _obj(obj, "store")
        store_id = o.get("id")
        if isinstance(store_id, bool) or not isinstance(store_id, (str, int)):
            raise Malformed("id is not a string")
        return cls(
            id=str(store_id),
            domain=_str(o, "domain"),
            secure_url=_str(o, "secure_url"),
            name=_str(o, "name"),
            currency=_str(o, "currency"),
            control_panel_base_url=_str(o, "control_panel_base_url", default=""),
            default_channel_id=_int(o, "default_channel_id", optional=True),
            raw=o,
        )


@dataclass(frozen=True)
class OAuthToken:
    """The answer to the OAuth code exchange (reference section 1)."""

    access_token: Secret
    scope: str
    context: str
    store_hash: str
    user_id: int
    user_email: str
    owner_id: int | None
    owner_email: str | None
    account_uuid: str | None

    @classmethod
    def from_json(cls, data: Any) -> OAuthToken:
        """Parse the token endpoint's answer; raise :class:`Malformed`."""
        if not isinstance(data, dict):
            raise Malformed("not an object")
        token, context = data.get("access_token"), data.get("context")
        if not isinstance(token, str) or not token:
            raise Malformed("no access_token")
        if not isinstance(context, str):
            raise Malformed("context is not stores/{hash}")
        match = re.fullmatch(r"stores/([a-z0-9]{1,32})", context)
        if match is None:
            raise Malformed("context is not stores/{hash}")
        user = data.get("user")
        if (
            not isinstance(user, dict)
            or isinstance(user.get("id"), bool)
            or not isinstance(user.get("id"), int)
        ):
            raise Malformed("no user id")
        owner_value = data.get("owner")
        owner: dict[str, Any] = owner_value if isinstance(owner_value, dict) else {}
        owner_id, owner_email = owner.get("id"), owner.get("email")
        scope, account_uuid = data.get("scope"), data.get("account_uuid")
        return OAuthToken(
            access_token=Secret(token),
            scope=scope if isinstance(scope, str) else "",
            context=context,
            store_hash=match.group(1),
            user_id=user["id"],
            user_email=str(user.get("email") or ""),
            owner_id=owner_id
            if isinstance(owner_id, int) and not isinstance(owner_id, bool)
            else None,
            owner_email=owner_email if isinstance(owner_email, str) else None,
            account_uuid=account_uuid if isinstance(account_uuid, str) else None,
        )


# --- multi-storefront (reference section 11; channels.v3.yml, sites.v3.yml) ---------------------------

CHANNEL_STATUSES = frozenset({
    "active", "prelaunch", "inactive", "connected", "disconnected", "archived", "deleted", "terminated"})


@dataclass(frozen=True)
class Channel:
    """One row of ``GET /v3/channels`` (``ChannelWithoutCurrencies``: ``id`` and ``name`` required)."""

    id: int
    name: str
    type: str
    platform: str
    status: str

    @classmethod
    def from_json(cls, obj: Any) -> Channel:
        """Parse one channel; an unknown status is kept as it came (BigCommerce adds values)."""
        o = _obj(obj, "channel")
        channel_id = _int(o, "id")
        if channel_id < 1:
            raise Malformed("channel id is not positive")
        return cls(
            id=channel_id,
            name=_str(o, "name"),
            type=_str(o, "type", default=""),
            platform=_str(o, "platform", default=""),
            status=_str(o, "status", default="active"),
        )


SITE_URL_TYPES = frozenset({"primary", "canonical", "checkout"})


@dataclass(frozen=True)
class Site:
    """``GET /v3/channels/{id}/site``: the channel's domain(s).

    ``url`` is the primary URL; ``urls`` the typed ones (``primary``, ``canonical``,
    ``checkout``). ``checkout_customized`` is ``is_checkout_url_customized``: when
    false, checkout "falls back to the default channel's primary URL".
    """

    id: int
    channel_id: int
    url: str
    urls: tuple[tuple[str, str], ...]  # (type, url)
    checkout_customized: bool | None

    def url_of(self, kind: str) -> str | None:
        """The first URL of ``kind`` (primary, canonical, checkout), if the site has one."""
        return next((u for t, u in self.urls if t == kind), None)

    @classmethod
    def from_json(cls, obj: Any) -> Site:
        """Parse a site; URLs must be http(s)."""
        o = _obj(obj, "site")
        urls: list[tuple[str, str]] = []
        raw_urls = o.get("urls") or []
        if not isinstance(raw_urls, list):
            raise Malformed("urls is not a list")
        for item in raw_urls:
            u = _obj(item, "site url")
            kind, value = _str(u, "type", default=""), _str(u, "url")
            if kind in SITE_URL_TYPES:
                urls.append((kind, _http_url(value)))
        customized = o.get("is_checkout_url_customized")
        if customized is not None and not isinstance(customized, bool):
            raise Malformed("is_checkout_url_customized is not a boolean")
        return cls(
            id=_int(o, "id", optional=True) or 0,
            channel_id=_int(o, "channel_id"),
            url=_http_url(_str(o, "url")),
            urls=tuple(urls),
            checkout_customized=customized,
        )


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s]*)?", value) or len(value) > 512:
        raise Malformed("site url is not an http(s) URL")
    return value


def _number(obj: dict[str, Any], key: str) -> Decimal:
    """A v3 amount (a JSON number, sometimes a string) as an exact Decimal, never negative."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Malformed(f"{key} is not a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise Malformed(f"{key} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise Malformed(f"{key} is not a finite, non-negative amount")
    return amount


@dataclass(frozen=True)
class RefundOption:
    """One payment option of a refund quote's refund method (``PaymentOption``, orders.v3.yml)."""

    provider_id: str
    amount: Decimal
    offline: bool

    @classmethod
    def from_json(cls, obj: Any) -> RefundOption:
        """Parse one payment option."""
        o = _obj(obj, "refund option")
        return cls(provider_id=_str(o, "provider_id"), amount=_number(o, "amount"),
                   offline=_bool(o, "offline", default=False))


@dataclass(frozen=True)
class RefundQuote:
    """``POST /v3/orders/{id}/payment_actions/refund_quotes`` (``RefundQuote_Full``, reference section 12).

    ``refund_methods`` is a list of methods, each a list of payment options that together refund the amount.
    """

    total: Decimal
    refund_methods: tuple[tuple[RefundOption, ...], ...]

    @classmethod
    def from_json(cls, obj: Any) -> RefundQuote:
        """Parse a quote."""
        o = _obj(obj, "refund quote")
        methods = o.get("refund_methods") or []
        if not isinstance(methods, list) or not all(isinstance(m, list) for m in methods):
            raise Malformed("refund_methods is not a list of lists")
        return cls(total=_number(o, "total_refund_amount"),
                   refund_methods=tuple(tuple(RefundOption.from_json(p) for p in m) for m in methods))

    def offline_option(self) -> RefundOption | None:
        """The first method made of one offline option for the whole amount (how an offline payment is recorded)."""
        for method in self.refund_methods:
            if len(method) == 1 and method[0].offline and method[0].amount == self.total:
                return method[0]
        return None


@dataclass(frozen=True)
class RefundPayment:
    """One payment of a recorded refund: the provider, its amount, whether it was offline."""

    provider_id: str
    amount: Decimal
    offline: bool
    declined: bool = False


@dataclass(frozen=True)
class LedgerRefund:
    """A refund in BigCommerce's own ledger (``Refund``, orders.v3.yml; reference section 12)."""

    id: int
    order_id: int
    reason: str
    total_amount: Decimal
    payments: tuple[RefundPayment, ...]

    @classmethod
    def from_json(cls, obj: Any) -> LedgerRefund:
        """Parse a refund."""
        o = _obj(obj, "refund")
        raw = o.get("payments") or []
        if not isinstance(raw, list):
            raise Malformed("payments is not a list")
        payments = []
        for item in raw:
            p = _obj(item, "refund payment")
            payments.append(RefundPayment(provider_id=_str(p, "provider_id"), amount=_number(p, "amount"),
                                          offline=_bool(p, "offline", default=False),
                                          declined=_bool(p, "is_declined", default=False)))
        return cls(id=_int(o, "id"), order_id=_int(o, "order_id"), reason=_str(o, "reason", default=""),
                   total_amount=_number(o, "total_amount"), payments=tuple(payments))

    @property
    def offline_amount(self) -> Decimal:
        """What the refund's offline payments (not declined) add up to: money BigCommerce did not move."""
        return sum((p.amount for p in self.payments if p.offline and not p.declined), Decimal(0))


STOCK_BEHAVIORS = ("order_placed", "order_completed_or_shipped")


@dataclass(frozen=True)
class InventorySettings:
    """``GET /v3/settings/inventory`` (settings.v3.yml, ``InventorySettings``), the fields bcpay reads.

    ``update_stock_behavior``: when stock is taken (``order_placed`` or
    ``order_completed_or_shipped``); ``refund_order_stock_adjustment``: whether a
    refund or cancellation returns it. Asked per channel, ``None`` means "not
    set on this channel": the global value applies.
    """

    update_stock_behavior: str | None
    refund_order_stock_adjustment: bool | None

    @classmethod
    def from_json(cls, obj: Any) -> InventorySettings:
        """Parse the ``data`` object; unknown fields are ignored, a wrong type is Malformed."""
        o = _obj(obj, "inventory settings")
        behavior = _str(o, "update_stock_behavior", optional=True)
        if behavior is not None and behavior not in STOCK_BEHAVIORS:
            raise Malformed(f"update_stock_behavior {behavior[:40]!r} is not one of {', '.join(STOCK_BEHAVIORS)}")
        refund = o.get("refund_order_stock_adjustment")
        if refund is not None and not isinstance(refund, bool):
            raise Malformed("refund_order_stock_adjustment is not a boolean")
        return cls(behavior, refund)

    def over(self, base: InventorySettings) -> InventorySettings:
        """These channel settings with what the channel leaves unset taken from ``base`` (the global ones)."""
        return InventorySettings(
            self.update_stock_behavior if self.update_stock_behavior is not None else base.update_stock_behavior,
            self.refund_order_stock_adjustment if self.refund_order_stock_adjustment is not None
            else base.refund_order_stock_adjustment,
        )
