"""The fake BigCommerce REST API (api.bigcommerce.com) and OAuth token endpoint.

``create_bigcommerce_api(state)`` builds a Starlette app serving
``/stores/{store_hash}/v2|v3/...`` with ``X-Auth-Token`` auth and scope checks,
the X-Rate-Limit-* headers of every real answer (and of the quota's 429; not
of a platform-load 429), an optional enforced :class:`Quota` and injected
:class:`Chaos`, plus ``POST /oauth2/token`` as
login.bigcommerce.com answers it. Errors keep BigCommerce's two shapes: v2
answers a list ``[{"status", "message"}]``, v3 an object
``{"status", "title", "type", "errors"}``.

Every call passes through one gate, in this order: count against the quota
(429 past it), chaos (latency, 503, 429 bursts), token (401), scope (403),
then the handler.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bcpay.sandbox import bc_channels, bc_graphql, bc_refunds, bc_settings
from bcpay.sandbox.bc_rules import (
    hook_matches,
    int_param,
    order_filters,
    order_sort_key,
    paginate,
    validate_hook,
    validate_metafield,
    validate_script,
)
from bcpay.sandbox.bc_state import (
    JSON,
    Chaos,
    FakeApiError,
    FakeBigCommerce,
    Quota,
    RecordedRequest,
    Store,
    TokenGrant,
    iso8601,
)

__all__ = ["Chaos", "Quota", "create_bigcommerce_api"]

ERROR_TYPE = "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"
_MAX_V2_LIMIT = 250  # documented v2 collection maximum (bigcommerce-api.md section 3)
_MAX_SCRIPTS_PER_CLIENT = 10
_MAX_METAFIELDS = 250


@dataclass(frozen=True)
class _Ctx:
    store: Store
    grant: TokenGrant


Handler = Callable[[Request, _Ctx], Awaitable[Response]]


def v3_error(status: int, title: str, errors: dict[str, str] | None = None) -> JSONResponse:
    """A v3-shaped error body."""
    body: dict[str, Any] = {"status": status, "title": title, "type": ERROR_TYPE}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status)


def v2_error(status: int, message: str) -> JSONResponse:
    """A v2-shaped error body (a list of one error)."""
    return JSONResponse([{"status": status, "message": message}], status_code=status)


def _error(exc: FakeApiError, v2: bool) -> JSONResponse:
    return v2_error(exc.status, exc.title) if v2 else v3_error(exc.status, exc.title, exc.errors)


class _Gate:
    """Quota, chaos, auth and scope in front of every handler; logs each call."""

    def __init__(self, state: FakeBigCommerce) -> None:
        self.state = state

    def route(self, path: str, methods: dict[str, tuple[Handler, str | None]], *,
              v2: bool) -> Route:
        async def endpoint(request: Request) -> Response:
            handler, scope = methods[request.method]
            response = await self._serve(request, handler, scope, v2)
            self.state.requests.append(RecordedRequest(
                request.method, request.url.path, request.url.query, response.status_code))
            return response
        return Route(path, endpoint, methods=list(methods))

    async def _serve(self, request: Request, handler: Handler, scope: str | None,
                     v2: bool) -> Response:
        state = self.state
        store_hash = request.path_params["store_hash"]
        allowed, headers = state.quota.hit(store_hash)
        if not allowed:
            state.rate_limited += 1
            response: Response = v3_error(429, "Too many requests")
        else:
            response = await self._guarded(request, handler, scope, v2)
            if response.status_code == 429:
                # Chaos's platform-load 429: BigCommerce sends it without the quota's headers (section 9).
                return response
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    async def _guarded(self, request: Request, handler: Handler, scope: str | None,
                       v2: bool) -> Response:
        state = self.state
        chaos = state.chaos
        if chaos.latency > 0:
            await chaos.sleep(chaos.latency)
        failure = chaos.decide()
        if failure == 503:
            return v3_error(503, "Service Unavailable")
        if failure == 429:
            state.rate_limited += 1
            return v3_error(429, "Too many requests")  # platform load: no X-Rate-Limit-* headers
        store = state.stores.get(request.path_params["store_hash"])
        token = request.headers.get("x-auth-token", "")
        grant = store.tokens.get(token) if store is not None and token else None
        if store is None or grant is None:
            # Same answer for unknown store and unknown token: nothing leaks either way.
            return v3_error(401, "You are not authorized to access this resource. "
                                 "The X-Auth-Token header is missing or invalid.")
        if scope is not None and not grant.allows(scope):
            return v3_error(403, "You don't have a required scope to access the endpoint")
        try:
            return await handler(request, _Ctx(store, grant))
        except FakeApiError as exc:
            return _error(exc, v2)


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise FakeApiError(400, "The request body is not valid JSON.") from None


class _Api:
    """The route handlers; each gets the request and the authenticated store."""

    def __init__(self, state: FakeBigCommerce, webhook_client: httpx.AsyncClient | None) -> None:
        self.state = state
        self.webhook_client = webhook_client

    # --- v2 -------------------------------------------------------------------

    async def get_order(self, request: Request, ctx: _Ctx) -> Response:
        return JSONResponse(self.state.order(ctx.store.store_hash, request.path_params["order_id"]))

    async def put_order(self, request: Request, ctx: _Ctx) -> Response:
        body = await _json_body(request)
        order_id = request.path_params["order_id"]
        previous, order = self.state.apply_order_put(ctx.store.store_hash, order_id, body)
        task = None
        if self.webhook_client is not None and previous != order["status_id"]:
            task = BackgroundTask(
                self.state.fire_webhook, self.webhook_client, ctx.store.store_hash,
                "store/order/statusUpdated",
                {"type": "order", "id": order_id,
                 "status": {"previous_status_id": previous, "new_status_id": order["status_id"]}})
        return JSONResponse(order, background=task)

    async def list_orders(self, request: Request, ctx: _Ctx) -> Response:
        matches = order_filters(request)
        key, reverse = order_sort_key(request)
        page = int_param(request, "page", 1) or 1
        limit = min(int_param(request, "limit", 50) or 50, _MAX_V2_LIMIT)
        if page < 1 or limit < 1:
            raise FakeApiError(400, "page and limit must be positive.")
        matching = sorted((o for o in ctx.store.orders.values() if matches(o)),
                          key=key, reverse=reverse)
        window = matching[(page - 1) * limit: page * limit]
        if not window:
            return Response(status_code=204)  # v2 answers an empty page with no body at all
        return JSONResponse(window)

    async def order_statuses(self, request: Request, ctx: _Ctx) -> Response:
        return JSONResponse(self.state.order_statuses())

    async def payment_methods(self, request: Request, ctx: _Ctx) -> Response:
        return JSONResponse(sorted(
            ({"code": m.code, "name": m.name, "test_mode": m.test_mode}
             for m in ctx.store.payment_methods if m.enabled),
            key=lambda m: str(m["name"]).lower()))

    async def accepted_methods(self, request: Request, ctx: _Ctx) -> Response:
        """GET /v3/payments/methods: ``order_id`` or ``checkout_id`` required; the methods of that
        order's (or cart's) channel, as paymentMethod_Full."""
        order_id, checkout_id = int_param(request, "order_id"), request.query_params.get("checkout_id")
        if order_id is None and not checkout_id:
            raise FakeApiError(400, "Request has been rejected: order_id or checkout_id is required.")
        if order_id is not None:
            order = ctx.store.orders.get(order_id)
            if order is None:
                raise FakeApiError(404, "The order was not found.")
            channel_id = int(order.get("channel_id") or 1)
        else:
            cart = ctx.store.carts.get(str(checkout_id))
            if cart is None:
                raise FakeApiError(404, "The checkout was not found.")
            channel_id = int(cart.get("channel_id") or 1)
        data: list[JSON] = [{"id": f"{'offline' if m.offline else 'testgateway'}.{m.code}", "name": m.name,
                 "test_mode": m.test_mode, "type": "PAYMENT_TYPE_OFFLINE" if m.offline else "card",
                 "supported_instruments": [], "stored_instruments": []}
                for m in ctx.store.payment_methods if m.on_channel(channel_id)]
        return JSONResponse({"data": data, "meta": {}})

    async def graphql(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_graphql.endpoint(request, ctx.store, ctx.grant.client_id)

    async def store_info(self, request: Request, ctx: _Ctx) -> Response:
        store = ctx.store
        domain = store.secure_url.split("://", 1)[-1]
        return JSONResponse({
            "id": store.store_hash, "account_uuid": "5b2e6b4b-7f6b-4f4e-9a53-0f1c7f0f0a11",
            "domain": domain, "secure_url": store.secure_url,
            "control_panel_base_url": f"{store.secure_url}/manage", "status": "live",
            "name": store.name, "first_name": "Jane", "last_name": "Doe",
            "address": "555 East Street, Austin, Texas 78108", "country": "United States",
            "country_code": "US", "infrastructure_region": "us-central1", "phone": "",
            "admin_email": "merchant@example.com", "order_email": "orders@example.com",
            "favicon_url": None, "timezone": {"name": "Etc/UTC", "raw_offset": 0, "dst_offset": 0,
                                              "dst_correction": False,
                                              "date_format": {"display": "jS M Y",
                                                              "export": "M jS Y",
                                                              "extended_display": "M jS Y @ g:i A"}},
            "language": "en", "currency": store.currency, "currency_symbol": store.currency,
            "decimal_separator": ".", "thousands_separator": ",", "decimal_places": 2,
            "currency_symbol_location": "left", "weight_units": "Ounces",
            "dimension_units": "Inches", "dimension_decimal_places": 2,
            "dimension_decimal_token": ".", "dimension_thousands_token": ",",
            "plan_name": "Sandbox", "plan_level": "Sandbox", "plan_is_trial": False,
            "industry": "Technology", "logo": [], "is_price_entered_with_tax": False,
            "store_id": int(store.store_id), "default_channel_id": 1, "default_site_id": 1000,
            "active_comparison_modules": [],
            "features": {"stencil_enabled": True, "sitewidehttps_enabled": True,
                         "checkout_type": "optimized", "wishlists_enabled": False,
                         "graphql_storefront_api_enabled": True,
                         "shopper_consent_tracking_enabled": store.cookie_consent_banner,
                         "multi_storefront_enabled": True},
        })

    # --- v3 order metafields ------------------------------------------------------

    def _metafields(self, ctx: _Ctx, order_id: int) -> list[dict[str, Any]]:
        self.state.order(ctx.store.store_hash, order_id)
        # `app_only` fields are private to their creator; the rest are readable by all.
        return [m for m in ctx.store.metafields.values() if m["resource_id"] == order_id
                and (m["owner_client_id"] == ctx.grant.client_id or m["permission_set"] != "app_only")]

    def _metafield(self, ctx: _Ctx, request: Request) -> dict[str, Any]:
        order_id, mid = request.path_params["order_id"], request.path_params["metafield_id"]
        for field in self._metafields(ctx, order_id):
            if field["id"] == mid:
                return field
        raise FakeApiError(404, "A metafield was not found with this query.")

    def _check_metafield_unique(self, ctx: _Ctx, order_id: int, body: dict[str, Any],
                                own_id: int | None) -> None:
        for other in ctx.store.metafields.values():
            if (other["resource_id"] == order_id and other["id"] != own_id
                    and other["owner_client_id"] == ctx.grant.client_id
                    and (other["namespace"], other["key"]) == (body["namespace"], body["key"])):
                raise FakeApiError(409, "Metafield with the same namespace and key already exists.",
                                   {"key": "duplicate namespace and key for this client and order"})

    async def list_metafields(self, request: Request, ctx: _Ctx) -> Response:
        fields = self._metafields(ctx, request.path_params["order_id"])
        q = request.query_params
        for name in ("key", "namespace"):
            if name in q:
                fields = [f for f in fields if f[name] == q[name]]
        return JSONResponse(paginate(fields, request))

    async def create_metafield(self, request: Request, ctx: _Ctx) -> Response:
        order_id = request.path_params["order_id"]
        existing = self._metafields(ctx, order_id)
        body = validate_metafield(await _json_body(request))
        self._check_metafield_unique(ctx, order_id, body, None)
        if sum(f["owner_client_id"] == ctx.grant.client_id for f in existing) >= _MAX_METAFIELDS:
            raise FakeApiError(422, "The maximum of 250 metafields per order and client is reached.")
        now = iso8601(self.state.clock())
        field = {"id": self.state.next_id(), **body, "resource_type": "order",
                 "resource_id": order_id, "date_created": now, "date_modified": now,
                 "owner_client_id": ctx.grant.client_id}
        field.setdefault("description", "")
        ctx.store.metafields[field["id"]] = field
        return JSONResponse({"data": field, "meta": {}})

    async def get_metafield(self, request: Request, ctx: _Ctx) -> Response:
        return JSONResponse({"data": self._metafield(ctx, request), "meta": {}})

    async def put_metafield(self, request: Request, ctx: _Ctx) -> Response:
        field = self._metafield(ctx, request)
        if field["owner_client_id"] != ctx.grant.client_id and field["permission_set"] not in (
                "write", "write_and_sf_access"):
            raise FakeApiError(403, "This metafield is read-only for your client.")
        body = validate_metafield(await _json_body(request))
        self._check_metafield_unique(ctx, field["resource_id"], body, field["id"])
        field.update(body, date_modified=iso8601(self.state.clock()))
        return JSONResponse({"data": field, "meta": {}})

    async def delete_metafield(self, request: Request, ctx: _Ctx) -> Response:
        field = self._metafield(ctx, request)
        if field["owner_client_id"] != ctx.grant.client_id:
            raise FakeApiError(403, "Only the creator can delete this metafield.")
        del ctx.store.metafields[field["id"]]
        return Response(status_code=204)

    # --- v3 scripts -------------------------------------------------------------

    def _own_scripts(self, ctx: _Ctx) -> list[dict[str, Any]]:
        return [s for s in ctx.store.scripts.values() if s["api_client_id"] == ctx.grant.client_id]

    def _script(self, ctx: _Ctx, request: Request) -> dict[str, Any]:
        script = ctx.store.scripts.get(request.path_params["uuid"])
        if script is None or script["api_client_id"] != ctx.grant.client_id:
            raise FakeApiError(404, "The requested script was not found.")
        return script

    def _check_checkout_scope(self, ctx: _Ctx, script: dict[str, Any]) -> None:
        if script["visibility"] in ("checkout", "all_pages") and not ctx.grant.allows(
                "store_content_checkout"):
            raise FakeApiError(403, "The store_content_checkout scope is required for "
                                    f"visibility '{script['visibility']}'.")

    async def list_scripts(self, request: Request, ctx: _Ctx) -> Response:
        scripts = self._own_scripts(ctx)
        q = request.query_params
        sort = q.get("sort", "date_created")
        if sort not in ("name", "description", "date_created", "date_modified"):
            raise FakeApiError(422, "The sort parameter is invalid.", {"sort": "invalid value"})
        scripts.sort(key=lambda s: str(s.get(sort) or ""), reverse=q.get("direction") == "desc")
        if q.get("channel_id:in"):
            channels = {int(c) for c in q["channel_id:in"].split(",") if c.strip().isdigit()}
            scripts = [s for s in scripts if s["channel_id"] in channels]
        return JSONResponse(paginate(scripts, request))

    async def create_script(self, request: Request, ctx: _Ctx) -> Response:
        script = validate_script(await _json_body(request), None)
        self._check_checkout_scope(ctx, script)
        bc_channels.check_script_channel(ctx.store, script)
        if len(self._own_scripts(ctx)) >= _MAX_SCRIPTS_PER_CLIENT:
            raise FakeApiError(422, "Each app can have at most 10 scripts installed.",
                               {"scripts": "limit of 10 scripts per app reached"})
        now = iso8601(self.state.clock())
        script.update(uuid=_new_uuid(), api_client_id=ctx.grant.client_id,
                      date_created=now, date_modified=now)
        ctx.store.scripts[script["uuid"]] = script
        return JSONResponse({"data": script, "meta": {}})

    async def get_script(self, request: Request, ctx: _Ctx) -> Response:
        return JSONResponse({"data": self._script(ctx, request), "meta": {}})

    async def put_script(self, request: Request, ctx: _Ctx) -> Response:
        script = self._script(ctx, request)
        updated = validate_script(await _json_body(request), script)
        self._check_checkout_scope(ctx, updated)
        if updated.get("channel_id", 1) not in ctx.store.channels:
            raise FakeApiError(422, "Channel does not exist.", {"channel_id": "invalid channel"})
        script.clear()
        script.update(updated, date_modified=iso8601(self.state.clock()))
        return JSONResponse({"data": script, "meta": {}})

    async def delete_script(self, request: Request, ctx: _Ctx) -> Response:
        del ctx.store.scripts[self._script(ctx, request)["uuid"]]
        return Response(status_code=204)

    # --- v3 channels and sites -----------------------------------------------------

    async def list_channels(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_channels.list_channels(request, ctx.store)

    async def get_channel_site(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_channels.get_channel_site(request, ctx.store)

    async def get_inventory_settings(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_settings.get_inventory(request, ctx.store)

    # --- v3 refunds (bc_refunds) ---------------------------------------------------

    async def refund_quote(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_refunds.post_quote(request, self.state, ctx.store)

    async def create_refund(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_refunds.post_refund(request, self.state, ctx.store, self.webhook_client)

    async def order_refunds(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_refunds.order_refunds(request, self.state, ctx.store)

    async def all_refunds(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_refunds.all_refunds(request, self.state, ctx.store)

    async def one_refund(self, request: Request, ctx: _Ctx) -> Response:
        return await bc_refunds.one_refund(request, self.state, ctx.store)

    # --- v3 hooks -----------------------------------------------------------------

    def _own_hooks(self, ctx: _Ctx) -> list[dict[str, Any]]:
        return [h for h in ctx.store.hooks.values() if h["client_id"] == ctx.grant.client_id]

    def _hook(self, ctx: _Ctx, request: Request) -> dict[str, Any]:
        hook = ctx.store.hooks.get(request.path_params["hook_id"])
        if hook is None or hook["client_id"] != ctx.grant.client_id:
            raise FakeApiError(404, "The requested webhook was not found.")
        return hook

    def _check_hook_rules(self, ctx: _Ctx, hook: dict[str, Any]) -> None:
        others = [h for h in self._own_hooks(ctx) if h["id"] != hook.get("id")]
        if any(h["scope"] == hook["scope"] and h["destination"] == hook["destination"]
               for h in others):
            raise FakeApiError(422, "A webhook with this scope and destination already exists.",
                               {"destination": "duplicate scope and destination"})
        if sum(h["scope"] == hook["scope"] for h in others) >= 10:
            raise FakeApiError(422, "At most 10 webhooks per scope are allowed.",
                               {"scope": "limit of 10 webhooks per scope reached"})

    async def list_hooks(self, request: Request, ctx: _Ctx) -> Response:
        hooks = sorted(self._own_hooks(ctx), key=lambda h: int(h["id"]))
        return JSONResponse(paginate([h for h in hooks if hook_matches(h, request)], request))

    async def create_hook(self, request: Request, ctx: _Ctx) -> Response:
        hook = validate_hook(await _json_body(request), None,
                             strict=self.state.strict_destinations)
        self._check_hook_rules(ctx, hook)
        now = int(self.state.clock().timestamp())
        hook.update(id=self.state.next_id(), client_id=ctx.grant.client_id,
                    store_hash=ctx.store.store_hash, created_at=now, updated_at=now)
        ctx.store.hooks[hook["id"]] = hook
        return JSONResponse({"data": hook, "meta": {}})

    async def get_hook(self, request: Request, ctx: _Ctx) -> Response:
        return JSONResponse({"data": self._hook(ctx, request), "meta": {}})

    async def put_hook(self, request: Request, ctx: _Ctx) -> Response:
        hook = self._hook(ctx, request)
        updated = validate_hook(await _json_body(request), hook,
                                strict=self.state.strict_destinations)
        self._check_hook_rules(ctx, updated)
        hook.update(updated, updated_at=int(self.state.clock().timestamp()))
        return JSONResponse({"data": hook, "meta": {}})

    async def delete_hook(self, request: Request, ctx: _Ctx) -> Response:
        hook = self._hook(ctx, request)
        del ctx.store.hooks[hook["id"]]
        return JSONResponse({"data": hook, "meta": {}})  # BC answers 200 with the deleted hook


def _new_uuid() -> str:
    return str(uuid.uuid4())


def _oauth_endpoint(state: FakeBigCommerce) -> Callable[[Request], Awaitable[Response]]:
    async def token(request: Request) -> Response:
        # The docs send JSON; bigcommerce-api-python sends a form. Accept both.
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                raw = await request.json()
            except ValueError:
                return JSONResponse({"error": "The request body is not valid JSON."}, status_code=400)
            if not isinstance(raw, dict):
                return JSONResponse({"error": "The request body must be an object."}, status_code=400)
            form = {str(k): str(v) for k, v in raw.items() if v is not None}
        else:
            form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            return JSONResponse(state.exchange_oauth_code(form))
        except FakeApiError as exc:
            return JSONResponse({"error": exc.title}, status_code=exc.status)
    return token


def create_bigcommerce_api(state: FakeBigCommerce, *, quota: Quota | None = None,
                           chaos: Chaos | None = None,
                           webhook_client: httpx.AsyncClient | None = None) -> Starlette:
    """Build the fake api.bigcommerce.com (+ ``/oauth2/token``) over ``state``.

    ``quota`` and ``chaos`` replace the state's knobs (which stay mutable at
    runtime through ``state.quota`` / ``state.chaos``). With ``webhook_client``,
    a status change made by ``PUT /v2/orders/{id}`` fires
    ``store/order/statusUpdated`` after the response, and a refund
    ``store/order/refund/created`` (:mod:`bcpay.sandbox.bc_refunds`).
    """
    if quota is not None:
        state.quota = quota
    if chaos is not None:
        state.chaos = chaos
    gate, api = _Gate(state), _Api(state, webhook_client)
    orders_r, orders_w = "store_v2_orders_read_only", "store_v2_orders"
    content_r, content_w = "store_v2_content_read_only", "store_v2_content"
    base = "/stores/{store_hash}"
    routes = [
        gate.route(base + "/v2/orders/{order_id:int}", {
            "GET": (api.get_order, orders_r), "PUT": (api.put_order, orders_w)}, v2=True),
        gate.route(base + "/v2/orders", {"GET": (api.list_orders, orders_r)}, v2=True),
        gate.route(base + "/v2/order_statuses", {"GET": (api.order_statuses, orders_r)}, v2=True),
        gate.route(base + "/v2/payments/methods", {
            "GET": (api.payment_methods, "store_payments_methods_read")}, v2=True),
        gate.route(base + "/v3/payments/methods", {
            "GET": (api.accepted_methods, "store_payments_methods_read")}, v2=False),
        gate.route(base + "/graphql", {"POST": (api.graphql, bc_graphql.SCOPE)}, v2=False),
        gate.route(base + "/v2/store", {
            "GET": (api.store_info, "store_v2_information_read_only")}, v2=True),
        gate.route(base + "/v3/orders/{order_id:int}/metafields", {
            "GET": (api.list_metafields, orders_r), "POST": (api.create_metafield, orders_w)},
            v2=False),
        gate.route(base + "/v3/orders/{order_id:int}/metafields/{metafield_id:int}", {
            "GET": (api.get_metafield, orders_r), "PUT": (api.put_metafield, orders_w),
            "DELETE": (api.delete_metafield, orders_w)}, v2=False),
        gate.route(base + "/v3/orders/{order_id:int}/payment_actions/refund_quotes", {
            "POST": (api.refund_quote, orders_w)}, v2=False),
        gate.route(base + "/v3/orders/{order_id:int}/payment_actions/refunds", {
            "GET": (api.order_refunds, orders_r), "POST": (api.create_refund, orders_w)}, v2=False),
        gate.route(base + "/v3/orders/payment_actions/refunds", {"GET": (api.all_refunds, orders_r)}, v2=False),
        gate.route(base + "/v3/orders/payment_actions/refunds/{refund_id:int}", {
            "GET": (api.one_refund, orders_r)}, v2=False),
        gate.route(base + "/v3/content/scripts", {
            "GET": (api.list_scripts, content_r), "POST": (api.create_script, content_w)},
            v2=False),
        gate.route(base + "/v3/content/scripts/{uuid}", {
            "GET": (api.get_script, content_r), "PUT": (api.put_script, content_w),
            "DELETE": (api.delete_script, content_w)}, v2=False),
        gate.route(base + "/v3/channels", {
            "GET": (api.list_channels, "store_channel_settings_read_only")}, v2=False),
        gate.route(base + "/v3/channels/{channel_id:int}/site", {
            "GET": (api.get_channel_site, "store_sites_read_only")}, v2=False),
        gate.route(base + "/v3/settings/inventory", {
            "GET": (api.get_inventory_settings, "store_v2_information_read_only")}, v2=False),
        # Webhooks need no OAuth scope, only a valid token.
        gate.route(base + "/v3/hooks", {
            "GET": (api.list_hooks, None), "POST": (api.create_hook, None)}, v2=False),
        gate.route(base + "/v3/hooks/{hook_id:int}", {
            "GET": (api.get_hook, None), "PUT": (api.put_hook, None),
            "DELETE": (api.delete_hook, None)}, v2=False),
        Route("/oauth2/token", _oauth_endpoint(state), methods=["POST"]),
    ]
    return Starlette(routes=routes)
