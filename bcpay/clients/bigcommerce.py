"""The BigCommerce REST client (v2 orders and store, v3 metafields, refunds, scripts, hooks).

``{api_url}/stores/{store_hash}/v2|v3/...`` with ``X-Auth-Token`` (reference
section 2). Retry policy (section 9 and :mod:`bcpay.clients.http`): a 429 waits
``X-Rate-Limit-Time-Reset-Ms`` and retries, for every method (the request was
not processed); a 429 without it is platform load, not the quota, and backs
off (:class:`~bcpay.clients.ratelimit.RateLimiter`; ``X-Retry-After`` when
sent); 502/503/504 and transport errors retry GET/PUT/DELETE, which are
idempotent here, but never a POST that creates something (a retry could
create it twice); other 4xx never retry. :func:`decipher` is the one mapping
from answers to :mod:`bcpay.errors`.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from bcpay.clients.bigcommerce_models import (
    AcceptedMethod,
    AppExtension,
    Channel,
    Hook,
    InventorySettings,
    LedgerRefund,
    Malformed,
    Metafield,
    OAuthToken,
    Order,
    OrderStatus,
    PaymentMethod,
    RefundQuote,
    Script,
    ScriptSpec,
    Site,
    StoreInfo,
)
from bcpay.clients.http import (
    bad_response,
    call_with_retries,
    parse_json,
    request_id,
    response_body,
    transport_error,
)
from bcpay.clients.ratelimit import RateLimiter, reset_seconds, retry_after_seconds
from bcpay.config import Secret
from bcpay.errors import (
    InvalidInputError,
    RateLimited,
    UpstreamConflict,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)

__all__ = [
    "AcceptedMethod",
    "AppExtension",
    "BigCommerceClient",
    "Channel",
    "Hook",
    "InventorySettings",
    "LedgerRefund",
    "Metafield",
    "OAuthToken",
    "Order",
    "OrderStatus",
    "PaymentMethod",
    "RefundQuote",
    "Script",
    "ScriptSpec",
    "Site",
    "StoreInfo",
    "decipher",
    "exchange_oauth_code",
]

SERVICE = "bigcommerce"
STORE_HASH = re.compile(r"[a-z0-9]{1,32}")
RETRY_STATUSES = frozenset({502, 503, 504})
HOOK_FIELDS = frozenset({"scope", "destination", "is_active", "headers"})
T = TypeVar("T")


_EXTENSION_FIELDS = "id model context url label { defaultValue locales { value localeCode } }"
_APP_EXTENSIONS_QUERY = "query { store { appExtensions { edges { node { " + _EXTENSION_FIELDS + " } } } } }"
_CREATE_APP_EXTENSION = (
    "mutation AddExtension($input: CreateAppExtensionInput!) "
    "{ appExtension { createAppExtension(input: $input) { appExtension { " + _EXTENSION_FIELDS + " } } } }")
_DELETE_APP_EXTENSION = (
    "mutation RemoveExtension($input: DeleteAppExtensionInput!) "
    "{ appExtension { deleteAppExtension(input: $input) { deletedAppExtensionId } } }")


def decipher(response: httpx.Response) -> None:
    """Raise the error a non-2xx BigCommerce answer stands for (the one mapping)."""
    status = response.status_code
    if response.is_success:
        return
    body = response_body(response)
    title = body.get("title") if isinstance(body, dict) else None
    if title is None and isinstance(body, list) and body and isinstance(body[0], dict):
        title = body[0].get("message")  # v2 errors are [{"status": .., "message": ..}]
    text = f"BigCommerce {response.request.method} {_redact(response.request.url)}: {status}"
    if isinstance(title, str):
        text += f" {title[:200]}"
    common: dict[str, Any] = {
        "service": SERVICE,
        "status": status,
        "body": body,
        "request_id": request_id(response),
    }
    if status == 404:
        raise UpstreamNotFound(text, **common)
    if status == 409:
        raise UpstreamConflict(text, **common)
    if status == 429:
        # The quota's reset; without it platform load (section 9), which older docs give an X-Retry-After.
        wait = reset_seconds(response)
        if wait is None:
            wait = retry_after_seconds(response)
        raise RateLimited(text, retry_after=1.0 if wait is None else wait, **common)
    if 400 <= status < 500:
        raise UpstreamRejected(text, **common)
    raise UpstreamUnavailable(text, **common)


def _redact(url: httpx.URL) -> str:
    return url.path  # paths carry no secrets; queries may carry emails, so drop them


def _format_date(value: datetime) -> str:
    if value.tzinfo is None:
        raise InvalidInputError("dates for BigCommerce filters must be timezone-aware")
    return email.utils.format_datetime(value.astimezone(UTC), usegmt=True)


def _check_id(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative integer")


def _parse(parse: Callable[[Any], T], data: Any, response: httpx.Response | None = None) -> T:
    try:
        return parse(data)
    except Malformed as exc:
        raise bad_response(SERVICE, str(exc), response) from None


class BigCommerceClient:
    """One store's BigCommerce API, through the process's shared HTTP pool."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_url: str,
        store_hash: str,
        access_token: Secret | str,
        limiter: RateLimiter | None = None,
        max_retries: int = 5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        on_response: Callable[[httpx.Response], None] | None = None,
    ) -> None:
        """Bind the shared HTTP client to one store; ``on_response`` sees every answer (metrics)."""
        if not isinstance(store_hash, str) or not STORE_HASH.fullmatch(store_hash):
            raise InvalidInputError(f"not a BigCommerce store hash: {store_hash!r}")
        self._http = http
        self._base = f"{api_url.rstrip('/')}/stores/{store_hash}"
        self.store_hash = store_hash
        self._token = access_token if isinstance(access_token, Secret) else Secret(access_token)
        self._limiter = limiter
        self._max_retries = max_retries
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock  # kept for callers timing calls; the limiter has its own clock
        self._on_response = on_response

    def __repr__(self) -> str:
        return f"BigCommerceClient(store_hash={self.store_hash!r})"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """Send one call under the retry policy and the store's rate limiter."""
        headers = {"X-Auth-Token": self._token.get(), "Accept": "application/json"}
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        limiter = self._limiter

        async def send() -> httpx.Response:
            if limiter is not None:
                await limiter.acquire()
            response: httpx.Response | None = None
            try:
                response = await self._http.request(
                    method, self._base + path, params=params, json=json_body, headers=headers
                )
            finally:
                if limiter is not None:
                    limiter.record(response)
            if self._on_response is not None:
                self._on_response(response)
            return response

        return await call_with_retries(
            send,
            decipher=decipher,
            service=SERVICE,
            idempotent=method != "POST",
            max_retries=self._max_retries,
            sleep=self._sleep,
            jitter=self._jitter,
            server_errors=RETRY_STATUSES,
            wait_on_rate_limit=limiter is None,
        )

    async def _json(self, method: str, path: str, **kwargs: Any) -> tuple[Any, httpx.Response]:
        response = await self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None, response
        return parse_json(response, service=SERVICE), response

    async def _v3(self, method: str, path: str, **kwargs: Any) -> tuple[Any, httpx.Response]:
        """A v3 call whose answer is ``{"data": ..., "meta": ...}``; returns ``data``."""
        body, response = await self._json(method, "/v3" + path, **kwargs)
        if not isinstance(body, dict) or "data" not in body:
            raise bad_response(SERVICE, f"{path}: no data envelope", response)
        return body["data"], response

    async def _v3_list(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a v3 list, following ``meta.pagination`` through all pages."""
        items: list[Any] = []
        page = 1
        while True:
            query = {**(params or {}), "page": page, "limit": 250}
            body, response = await self._json("GET", "/v3" + path, params=query)
            if body is None:  # 204: nothing at all
                return items
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise bad_response(SERVICE, f"{path}: no data list", response)
            items.extend(body["data"])
            pagination = (
                (body.get("meta") or {}).get("pagination")
                if isinstance(body.get("meta"), dict)
                else None
            )
            total_pages = pagination.get("total_pages") if isinstance(pagination, dict) else None
            if not isinstance(total_pages, int) or page >= total_pages or not body["data"]:
                return items
            page += 1

    # --- orders (v2) ---------------------------------------------------------------

    async def get_order(self, order_id: int) -> Order:
        """``GET /v2/orders/{id}``; UpstreamNotFound when there is no such order."""
        _check_id(order_id, "order_id")
        data, response = await self._json("GET", f"/v2/orders/{order_id}")
        return _parse(Order.from_json, data, response)

    async def update_order(
        self,
        order_id: int,
        *,
        status_id: int | None = None,
        payment_provider_id: str | None = None,
        staff_notes: str | None = None,
        payment_method: str | None = None,
    ) -> Order:
        """``PUT /v2/orders/{id}`` with only the given fields (omitted ones stay unchanged)."""
        _check_id(order_id, "order_id")
        body: dict[str, Any] = {}
        if status_id is not None:
            _check_id(status_id, "status_id")
            body["status_id"] = status_id
        if payment_provider_id is not None:
            body["payment_provider_id"] = payment_provider_id
        if staff_notes is not None:
            if len(staff_notes) > 65535:
                raise InvalidInputError("staff_notes must be at most 65535 characters")
            body["staff_notes"] = staff_notes
        if payment_method is not None:
            body["payment_method"] = payment_method
        if not body:
            raise InvalidInputError("update_order needs at least one field")
        data, response = await self._json("PUT", f"/v2/orders/{order_id}", json_body=body)
        return _parse(Order.from_json, data, response)

    async def iter_orders(
        self,
        *,
        status_id: int | None = None,
        min_date_created: datetime | None = None,
        max_date_created: datetime | None = None,
        min_id: int | None = None,
        payment_method: str | None = None,
        page_size: int = 250,
    ) -> AsyncIterator[Order]:
        """Every matching order, id ascending, page by page.

        v2 lists have no totals: a 204 (empty page) or a page shorter than
        ``page_size`` is the end (reference section 3).
        """
        if not 1 <= page_size <= 250:
            raise InvalidInputError("page_size must be 1 to 250")
        params: dict[str, Any] = {"limit": page_size, "sort": "id:asc"}
        if status_id is not None:
            params["status_id"] = status_id
        if min_date_created is not None:
            params["min_date_created"] = _format_date(min_date_created)
        if max_date_created is not None:
            params["max_date_created"] = _format_date(max_date_created)
        if min_id is not None:
            params["min_id"] = min_id
        if payment_method is not None:
            params["payment_method"] = payment_method
        page = 1
        while True:
            data, response = await self._json("GET", "/v2/orders", params={**params, "page": page})
            if data is None:
                return
            if not isinstance(data, list):
                raise bad_response(SERVICE, "order list is not a list", response)
            orders = [_parse(Order.from_json, item, response) for item in data]
            del data, response
            for order in orders:
                yield order
            if len(orders) < page_size:
                return
            page += 1

    async def order_statuses(self) -> list[OrderStatus]:
        """``GET /v2/order_statuses``."""
        data, response = await self._json("GET", "/v2/order_statuses")
        if not isinstance(data, list):
            raise bad_response(SERVICE, "order statuses are not a list", response)
        return [_parse(OrderStatus.from_json, s, response) for s in data]

    async def payment_methods(self) -> list[PaymentMethod]:
        """``GET /v2/payments/methods`` (deprecated, may omit providers; offline methods absent)."""
        data, response = await self._json("GET", "/v2/payments/methods")
        if data is None:
            return []
        if not isinstance(data, list):
            raise bad_response(SERVICE, "payment methods are not a list", response)
        return [_parse(PaymentMethod.from_json, m, response) for m in data]

    async def latest_order_id(self, *, channel_id: int) -> int | None:
        """The newest order placed on a channel (``GET /v2/orders?channel_id=&sort=id:desc&limit=1``)."""
        _check_id(channel_id, "channel_id")
        data, response = await self._json("GET", "/v2/orders", params={
            "channel_id": channel_id, "sort": "id:desc", "limit": 1, "page": 1})
        if data is None:
            return None
        if not isinstance(data, list):
            raise bad_response(SERVICE, "order list is not a list", response)
        if not data:
            return None
        return _parse(Order.from_json, data[0], response).id

    async def accepted_methods(self, order_id: int) -> list[AcceptedMethod]:
        """``GET /v3/payments/methods?order_id=``: what the order's checkout (its channel) accepts."""
        _check_id(order_id, "order_id")
        data, response = await self._v3("GET", "/payments/methods", params={"order_id": order_id})
        if not isinstance(data, list):
            raise bad_response(SERVICE, "accepted payment methods are not a list", response)
        return [_parse(AcceptedMethod.from_json, m, response) for m in data]

    # --- App Extensions (GraphQL Admin API, reference section 14) -----------------------

    async def _graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /graphql``; GraphQL's ``errors`` (answered with 200) become :class:`UpstreamRejected`."""
        body, response = await self._json("POST", "/graphql", json_body={"query": query, "variables": variables or {}})
        if not isinstance(body, dict):
            raise bad_response(SERVICE, "GraphQL answer is not an object", response)
        errors = body.get("errors")
        if errors:
            first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
            raise UpstreamRejected(f"BigCommerce GraphQL: {str(first.get('message') or errors)[:300]}",
                                   service=SERVICE, status=response.status_code, request_id=request_id(response))
        data = body.get("data")
        if not isinstance(data, dict):
            raise bad_response(SERVICE, "GraphQL answer has no data", response)
        return data

    async def list_app_extensions(self) -> list[AppExtension]:
        """The store's App Extensions of this app (``store.appExtensions``)."""
        data = await self._graphql(_APP_EXTENSIONS_QUERY)
        try:
            edges = data["store"]["appExtensions"]["edges"]
            return [_parse(AppExtension.from_json, e["node"]) for e in edges]
        except (KeyError, TypeError):
            raise bad_response(SERVICE, "appExtensions is not a list of edges") from None

    async def create_app_extension(self, *, model: str, context: str, url: str, label: str,
                                   locales: dict[str, str]) -> AppExtension:
        """``createAppExtension``: a menu item on the ``model`` page that opens ``url`` in ``context``."""
        variables = {"input": {"model": model, "context": context, "url": url, "label": {
            "defaultValue": label, "locales": [{"value": v, "localeCode": k} for k, v in sorted(locales.items())]}}}
        data = await self._graphql(_CREATE_APP_EXTENSION, variables)
        try:
            return _parse(AppExtension.from_json, data["appExtension"]["createAppExtension"]["appExtension"])
        except (KeyError, TypeError):
            raise bad_response(SERVICE, "createAppExtension answered no appExtension") from None

    async def delete_app_extension(self, extension_id: str) -> None:
        """``deleteAppExtension``."""
        await self._graphql(_DELETE_APP_EXTENSION, {"input": {"id": extension_id}})

    async def store_info(self) -> StoreInfo:
        """``GET /v2/store``."""
        data, response = await self._json("GET", "/v2/store")
        return _parse(StoreInfo.from_json, data, response)

    # --- order metafields (v3) ----------------------------------------------------------

    async def list_order_metafields(self, order_id: int, **filters: str) -> list[Metafield]:
        """Every metafield of the order visible to this app (``namespace``/``key`` filter)."""
        _check_id(order_id, "order_id")
        items = await self._v3_list(f"/orders/{order_id}/metafields", filters or None)
        return [_parse(Metafield.from_json, m) for m in items]

    async def upsert_order_metafield(
        self,
        order_id: int,
        *,
        namespace: str,
        key: str,
        value: str,
        permission_set: str = "app_only",
        description: str | None = None,
    ) -> Metafield:
        """Create the (namespace, key) metafield, or PUT the existing one."""
        _check_id(order_id, "order_id")
        if not (1 <= len(namespace) <= 64 and 1 <= len(key) <= 64 and 1 <= len(value) <= 65535):
            raise InvalidInputError(
                "metafield namespace/key must be 1-64 and value 1-65535 characters"
            )
        body: dict[str, Any] = {
            "permission_set": permission_set,
            "namespace": namespace,
            "key": key,
            "value": value,
        }
        if description is not None:
            body["description"] = description
        # Create first: the common case (a new order) costs one call. A 409 means it
        # exists (a rerun, or created concurrently): find it and PUT the value.
        try:
            data, response = await self._v3("POST", f"/orders/{order_id}/metafields", json_body=body)
            return _parse(Metafield.from_json, data, response)
        except UpstreamConflict:
            pass
        for m in await self.list_order_metafields(order_id, namespace=namespace, key=key):
            if m.namespace == namespace and m.key == key:
                data, response = await self._v3("PUT", f"/orders/{order_id}/metafields/{m.id}", json_body=body)
                return _parse(Metafield.from_json, data, response)
        raise UpstreamConflict(
            "BigCommerce reported a duplicate metafield it then did not list", service=SERVICE, status=409
        )

    # --- scripts (v3) ---------------------------------------------------------------------

    async def list_scripts(self) -> list[Script]:
        """This app's scripts (BigCommerce shows each client only its own)."""
        return [_parse(Script.from_json, s) for s in await self._v3_list("/content/scripts")]

    async def create_script(self, spec: ScriptSpec) -> Script:
        """``POST /v3/content/scripts``."""
        data, response = await self._v3("POST", "/content/scripts", json_body=spec.to_json())
        return _parse(Script.from_json, data, response)

    async def update_script(self, uuid: str, spec: ScriptSpec) -> Script:
        """``PUT /v3/content/scripts/{uuid}``."""
        data, response = await self._v3(
            "PUT", f"/content/scripts/{_uuid(uuid)}", json_body=spec.to_json()
        )
        return _parse(Script.from_json, data, response)

    async def delete_script(self, uuid: str) -> None:
        """``DELETE /v3/content/scripts/{uuid}`` (204)."""
        await self._request("DELETE", f"/v3/content/scripts/{_uuid(uuid)}")

    # --- channels and sites (v3, reference section 11) ----------------------------------------

    async def list_channels(self) -> list[Channel]:
        """``GET /v3/channels`` (every page): the store's channels, channel 1 always among them."""
        return [_parse(Channel.from_json, c) for c in await self._v3_list("/channels")]

    async def channel_site(self, channel_id: int) -> Site | None:
        """``GET /v3/channels/{id}/site``; None when the channel has no site (404)."""
        _check_id(channel_id, "channel_id")
        try:
            data, response = await self._v3("GET", f"/channels/{channel_id}/site")
        except UpstreamNotFound:
            return None
        if data is None or data == {}:
            return None
        return _parse(Site.from_json, data, response)

    # --- refunds (v3, reference section 12) ------------------------------------------------

    async def refund_quote(self, order_id: int, items: list[dict[str, Any]]) -> RefundQuote:
        """``POST /v3/orders/{id}/payment_actions/refund_quotes``: the amount and the methods open for it."""
        _check_id(order_id, "order_id")
        data, response = await self._v3("POST", f"/orders/{order_id}/payment_actions/refund_quotes",
                                        json_body={"items": items})
        return _parse(RefundQuote.from_json, data, response)

    async def create_refund(
        self, order_id: int, items: list[dict[str, Any]], payments: list[dict[str, Any]]
    ) -> LedgerRefund:
        """``POST /v3/orders/{id}/payment_actions/refunds`` (never retried: it could refund twice)."""
        _check_id(order_id, "order_id")
        data, response = await self._v3("POST", f"/orders/{order_id}/payment_actions/refunds",
                                        json_body={"items": items, "payments": payments})
        return _parse(LedgerRefund.from_json, data, response)

    async def get_refund(self, refund_id: int) -> LedgerRefund:
        """``GET /v3/orders/payment_actions/refunds/{id}``; UpstreamNotFound when there is none."""
        _check_id(refund_id, "refund_id")
        data, response = await self._v3("GET", f"/orders/payment_actions/refunds/{refund_id}")
        return _parse(LedgerRefund.from_json, data, response)

    async def order_refunds(self, order_id: int) -> list[LedgerRefund]:
        """``GET /v3/orders/{id}/payment_actions/refunds`` (every page), oldest first."""
        _check_id(order_id, "order_id")
        return [_parse(LedgerRefund.from_json, r) for r in
                await self._v3_list(f"/orders/{order_id}/payment_actions/refunds")]

    # --- settings (v3, reference section 13) ----------------------------------------------------

    async def inventory_settings(self, channel_id: int | None = None) -> InventorySettings:
        """``GET /v3/settings/inventory``: the global settings, or one channel's (``None`` fields: inherited)."""
        params: dict[str, Any] = {}
        if channel_id is not None:
            _check_id(channel_id, "channel_id")
            params["channel_id"] = channel_id
        data, response = await self._v3("GET", "/settings/inventory", params=params or None)
        return _parse(InventorySettings.from_json, data, response)

    # --- webhooks (v3) ---------------------------------------------------------------------

    async def list_hooks(self) -> list[Hook]:
        """This app's webhooks."""
        return [_parse(Hook.from_json, h) for h in await self._v3_list("/hooks")]

    async def create_hook(
        self, *, scope: str, destination: str, headers: dict[str, str], is_active: bool = True
    ) -> Hook:
        """``POST /v3/hooks``."""
        body = {
            "scope": scope,
            "destination": destination,
            "is_active": is_active,
            "headers": dict(headers),
        }
        data, response = await self._v3("POST", "/hooks", json_body=body)
        return _parse(Hook.from_json, data, response)

    async def update_hook(self, hook_id: int, **fields: Any) -> Hook:
        """``PUT /v3/hooks/{id}`` with any of scope, destination, is_active, headers."""
        _check_id(hook_id, "hook_id")
        unknown = set(fields) - HOOK_FIELDS
        if unknown or not fields:
            raise InvalidInputError(f"update_hook takes only {sorted(HOOK_FIELDS)}")
        data, response = await self._v3("PUT", f"/hooks/{hook_id}", json_body=fields)
        return _parse(Hook.from_json, data, response)

    async def delete_hook(self, hook_id: int) -> None:
        """``DELETE /v3/hooks/{id}``."""
        _check_id(hook_id, "hook_id")
        await self._request("DELETE", f"/v3/hooks/{hook_id}")


_UUID = re.compile(r"[0-9a-fA-F-]{1,64}")


def _uuid(value: str) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise InvalidInputError("script uuid must be hex digits and dashes")
    return value


async def exchange_oauth_code(
    http: httpx.AsyncClient,
    *,
    login_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    scope: str,
    context: str,
    redirect_uri: str,
) -> OAuthToken:
    """Trade the ``/auth`` callback's one-time code for the store's access token.

    ``POST {login_url}/oauth2/token`` with a JSON body (reference section 1).
    Never retried: the code is single-use.
    """
    body = {
        "client_id": client_id,
        "client_secret": client_secret,
        "code": code,
        "scope": scope,
        "context": context,
        "grant_type": "authorization_code",
        "redirect_uri": redirect_uri,
    }
    try:
        response = await http.post(
            login_url.rstrip("/") + "/oauth2/token",
            json=body,
            headers={"Accept": "application/json"},
        )
    except httpx.TransportError as exc:
        raise transport_error(SERVICE, exc) from exc
    decipher(response)
    data = parse_json(response, service=SERVICE)
    try:
        return OAuthToken.from_json(data)
    except Malformed as exc:
        raise bad_response(SERVICE, f"token answer: {exc}", response) from None
