"""JSON endpoints: the snippet's payments API, CeleryPay notifications, health.

Handlers parse, call the library, render. Errors become
``{"error": {"code": ..., "message": ...}}`` in ``app.py``'s handler.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from bcpay import limits, notifications, order_reads, outbox, payflow
from bcpay import snippet as snippet_versions
from bcpay.errors import BcpayError, InvalidInputError, NotFoundError
from bcpay.metrics import Metrics
from bcpay.runtime import Runtime
from bcpay.snippet import asset

STORE_HASH = re.compile(r"[a-z0-9]{1,32}")
CART_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def runtime(request: Request) -> Runtime:
    """The process runtime opened in the lifespan."""
    rt: Runtime = request.app.state.runtime
    return rt


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a clear 400/415."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() not in ("application/json", "text/plain"):
        raise InvalidInputError("send JSON (Content-Type: application/json)", code="unsupported_media_type")
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[" nested 60,000 deep
        raise InvalidInputError("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidInputError("the body must be a JSON object", code="invalid_json")
    return data


async def check_origin(request: Request, store_hash: str) -> None:
    """A browser's origin may call bcpay for its own store only: each store's URL, its channels' sites and its
    extra origins (the CORS middleware lets any installed store's origin through, a preflight names no store)."""
    origin = request.headers.get("origin")
    if origin and not await request.app.state.origins.allowed_for(origin, store_hash):
        raise ForbiddenOrigin("this origin may not call bcpay for this store", code="origin_not_allowed")


class ForbiddenOrigin(BcpayError):
    """A store's page calling bcpay about another store."""

    http_status = 403


def store_hash_of(value: Any) -> str:
    """Validate a store hash from outside."""
    if not isinstance(value, str) or not STORE_HASH.fullmatch(value):
        raise InvalidInputError("store_hash is missing or malformed", code="invalid_store_hash")
    return value


async def start_payment(request: Request) -> Response:
    """POST /api/v1/payments {store_hash, order_id, cart_id}: start or resume payment."""
    data = await json_body(request)
    store_hash = store_hash_of(data.get("store_hash"))
    await check_origin(request, store_hash)
    order_id = payflow.order_number(data.get("order_id"))
    cart_id = data.get("cart_id")
    if not isinstance(cart_id, str) or not CART_ID.fullmatch(cart_id):
        raise InvalidInputError("cart_id is missing or malformed", code="invalid_cart_id")
    limiter = request.app.state.store_bucket
    wait = limiter.take(store_hash)
    if wait:
        return _too_many("too many requests for this store", wait)
    rt = runtime(request)
    # Every look-up of an order bcpay has not read lately spends the store's BigCommerce quota, which the
    # worker needs to mark orders paid. Failed look-ups (junk) are counted per client (IPv6: per /64), per
    # order and per store (bcpay.limits); a client past its budget waits alone, and past the store's far
    # larger one only orders bcpay already knows go on (a shopper resuming).
    guard: limits.LookupGuard = request.app.state.lookup_guard
    client = limits.client_key(request.client.host if request.client else None)
    wait = guard.client_wait(client)
    if wait:
        return _too_many("too many unknown orders from this client; try again", wait)
    wait = max(guard.order_wait(store_hash, order_id), guard.store_wait(store_hash))
    if wait and not await payflow.knows_order(rt, store_hash, order_id):
        return _too_many("too many unknown orders for this store; try again", wait)
    try:
        view = await payflow.start_payment(
            rt, store_hash, order_id, cart_id,
            admit=guard.read_admitter(store_hash, rt.limiters.for_store(store_hash)),
        )
    except NotFoundError as exc:
        if exc.code == "order_not_found":
            guard.failed(client, store_hash, order_id)
        raise
    except order_reads.StartsLimited as exc:
        return _too_many(exc.message, exc.retry_after)
    except payflow.AlreadyPaid as exc:
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}, "payment": exc.view.to_json()}, status_code=409
        )
    return JSONResponse(view.to_json(), status_code=200)


def _too_many(message: str, wait: float) -> Response:
    return JSONResponse({"error": {"code": "rate_limited", "message": message}}, status_code=429,
                        headers={"Retry-After": str(max(1, int(wait + 0.999)))})


async def payment_status(request: Request) -> Response:
    """GET /api/v1/payments/{token}: the real status, asking CeleryPay when pending."""
    view = await payflow.payment_status(runtime(request), request.path_params["token"])
    await check_origin(request, view.store_hash)
    return JSONResponse(view.to_json(), headers={"Cache-Control": "no-store"})


async def celerypay_notification(request: Request) -> Response:
    """POST /notify/celerypay/{store_hash}: verify, record once, apply; 2xx after commit."""
    store_hash = store_hash_of(request.path_params["store_hash"])
    body = await request.body()
    rt = runtime(request)
    received = await notifications.receive(
        rt,
        store_hash,
        body,
        merchant=request.headers.get("celerypay-merchant"),
        timestamp=request.headers.get("celerypay-timestamp"),
        signature=request.headers.get("celerypay-signature"),
    )
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wakeup.set()
    return JSONResponse({"received": True, "event_id": received.event_id, "outcome": received.outcome})


async def bigcommerce_webhook(request: Request) -> Response:
    """POST /webhooks/bigcommerce/{store_hash}: authenticated, deduplicated, queued."""
    from bcpay import bcwebhooks

    store_hash = store_hash_of(request.path_params["store_hash"])
    body = await request.body()
    await bcwebhooks.receive(runtime(request), store_hash, body, request.headers)
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wakeup.set()
    return Response(status_code=200)


async def healthz(request: Request) -> Response:
    """GET /healthz: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """GET /readyz: the database answers."""
    ok = await runtime(request).db.ping()
    return JSONResponse({"status": "ok" if ok else "database unreachable"}, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text format; only for ``server.metrics_token`` as a Bearer token, unless
    none is set and the server listens on loopback."""
    rt = runtime(request)
    token = rt.settings.server.metrics_token.get()
    if not token and not rt.settings.server.on_loopback():  # `serve` refuses this; other starts land here
        return JSONResponse({"error": {"code": "unauthorized", "message": "set server.metrics_token"}},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8")):
            return JSONResponse({"error": {"code": "unauthorized", "message": "send the metrics token"}},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
    stats = await outbox.stats(rt.db, rt.now())
    readings = {"bcpay_outbox_depth": stats["depth"], "bcpay_outbox_oldest_age_seconds": stats["oldest_age"],
                "bcpay_outbox_dead": stats["dead"]}
    gauges = {name: (Metrics.GAUGES[name], reading) for name, reading in readings.items()}
    return PlainTextResponse(rt.metrics.render(gauges), media_type="text/plain; version=0.0.4")


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the OpenAPI document of this API."""
    from bcpay.server.openapi import document

    return JSONResponse(document())


def _snippet_response(request: Request, *, immutable: bool, short_hash: str | None = None,
                      body: bytes | None = None) -> Response:
    current = asset()
    etag = f'"{short_hash or current.short_hash}"'
    headers = {
        "ETag": etag,
        "Access-Control-Allow-Origin": "*",  # SRI with crossorigin="anonymous" needs CORS
        "Cache-Control": "public, max-age=31536000, immutable" if immutable else "public, max-age=300",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(current.body if body is None else body, media_type="text/javascript; charset=utf-8",
                    headers=headers)


SNIPPET_HASH = re.compile(r"[0-9a-f]{16}")


async def snippet(request: Request) -> Response:
    """GET /static/inject.js (short cache) and /static/inject.{hash}.js (immutable): this server's version,
    or any earlier one a bcpay server served (stores' tags may still name it after a release)."""
    wanted = request.path_params.get("hash")
    if wanted is None or wanted == asset().short_hash:
        return _snippet_response(request, immutable=wanted is not None)
    body = None
    if SNIPPET_HASH.fullmatch(wanted):
        body = await snippet_versions.stored_version(runtime(request), wanted)
    if body is None:
        return JSONResponse({"error": {"code": "not_found", "message": "no such snippet version"}}, status_code=404)
    return _snippet_response(request, immutable=True, short_hash=wanted, body=body)
