"""The Starlette app factory: routes, middleware, lifespan. No import-time effects.

``create_app(settings)`` builds everything; the lifespan opens the runtime
(database engine, one shared ``httpx.AsyncClient``), migrates SQLite
databases, and runs the outbox worker as a background task unless
``server.run_worker`` is false.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bcpay import channels, refund_ledger, snippet
from bcpay.config import Settings
from bcpay.effects import Worker
from bcpay.errors import BcpayError, SignatureError
from bcpay.limits import LookupGuard
from bcpay.metrics import Metrics
from bcpay.runtime import Runtime, open_runtime, settle_heap
from bcpay.server import api, bcapp, order_panel, pages, settings_page
from bcpay.server.middleware import BodyLimit, RateLimit, RequestContext, StoreCors, TokenBucket, route_name
from bcpay.storage import channel_queries, migrate
from bcpay.storage import queries as q

log = logging.getLogger("bcpay.server")
SHUTDOWN_GRACE = 10.0  # seconds the in-process worker's running jobs get to finish at shutdown


class OriginCache:
    """Which browser origins may call ``/api/v1``, and for which store: each installed store's URL, its
    storefront channels' site origins (multi-storefront) and its extras; an origin counts for its own store only."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self.runtime: Runtime | None = None
        self._origins: dict[str, frozenset[str]] = {}
        self._loaded = 0.0

    async def _fresh(self, origin: str) -> str:
        now = time.monotonic()
        origin = origin.rstrip("/").lower()
        if now - self._loaded > self.ttl or (origin not in self._origins and now - self._loaded > 2.0):
            await self.refresh()
        return origin

    async def allowed(self, origin: str) -> bool:
        """True when ``origin`` belongs to some installed store (the preflight, which names no store)."""
        return await self._fresh(origin) in self._origins

    async def allowed_for(self, origin: str, store_hash: str) -> bool:
        """True when ``origin`` belongs to the store ``store_hash`` (refreshed every ``ttl`` s)."""
        return store_hash in self._origins.get(await self._fresh(origin), frozenset())

    async def refresh(self) -> None:
        """Reload the origins from the database."""
        if self.runtime is None:
            return
        async with self.runtime.db.read() as conn:
            stores = await q.list_stores(conn, installed_only=True)
            known = await channel_queries.installed_channels(conn)
        found: dict[str, set[str]] = {}
        for store in stores:
            mine = {o.rstrip("/").lower() for o in self.runtime.policy(store).extra_origins}
            if store.store_url:
                mine.add(store.store_url.rstrip("/").lower())
                mine.add(channels.origin_of(store.store_url))
            for origin in mine:
                found.setdefault(origin, set()).add(store.store_hash)
        for store_hash, channel in known:
            if channel.status in channels.GONE:
                continue
            for origin in channels.origins(channel):
                found.setdefault(origin, set()).add(store_hash)
        found.pop("", None)
        self._origins = {origin: frozenset(hashes) for origin, hashes in found.items()}
        self._loaded = time.monotonic()


async def _bcpay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BcpayError)
    status = exc.http_status
    if status >= 500:  # the route template, never the raw path: /pay/{token} and the like carry a token
        log.warning("%s on %s %s: %r", exc.code, request.method, route_name(request.scope), exc)
    headers = {"WWW-Authenticate": "CeleryPay-Signature"} if isinstance(exc, SignatureError) else None
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, route_name(request.scope))  # no raw path: tokens
    return JSONResponse({"error": {"code": "internal_error", "message": "internal error"}}, status_code=500)


def routes() -> list[Route]:
    """Every route; the paths are part of the product (see README)."""
    return [
        Route("/api/v1/payments", api.start_payment, methods=["POST"]),
        Route("/api/v1/payments/{token}", api.payment_status, methods=["GET"]),
        Route("/pay/{token}", pages.pay_page, methods=["GET"]),
        Route("/pay/{token}", pages.pay_now, methods=["POST"]),
        Route("/pay/{token}/return", pages.pay_return, methods=["GET"]),
        Route("/notify/celerypay/{store_hash}", api.celerypay_notification, methods=["POST"]),
        Route("/webhooks/bigcommerce/{store_hash}", api.bigcommerce_webhook, methods=["POST"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/static/inject.js", api.snippet, methods=["GET"]),
        Route("/static/inject.{hash:str}.js", api.snippet, methods=["GET"]),
        Route("/bc/auth", bcapp.auth, methods=["GET"]),
        Route("/bc/load", bcapp.load, methods=["GET"]),
        Route("/bc/uninstall", bcapp.uninstall, methods=["GET"]),
        Route("/bc/remove_user", bcapp.remove_user, methods=["GET"]),
        Route("/bc/settings", settings_page.settings_page, methods=["GET"]),
        Route("/bc/settings", settings_page.settings_save, methods=["POST"]),
        Route("/bc/settings/refund", settings_page.refund, methods=["POST"]),
        Route("/bc/settings/anomalies/{anomaly_id:int}/resolve", settings_page.resolve_anomaly, methods=["POST"]),
        Route("/bc/settings/provision", settings_page.reprovision, methods=["POST"]),
        Route("/bc/settings/revoke-old-secret", settings_page.revoke_old_secret, methods=["POST"]),
        Route("/bc/settings/users/{user_id:int}/access", settings_page.user_access, methods=["POST"]),
        Route("/bc/orders/{order_id:int}", order_panel.panel, methods=["GET"]),
        Route("/bc/orders/{order_id:int}/refund", order_panel.refund, methods=["POST"]),
        Route("/bc/orders/{order_id:int}/lookup", order_panel.lookup, methods=["POST"]),
        Route("/bc/orders/{order_id:int}/pay-link", order_panel.pay_link, methods=["POST"]),
    ]


def create_app(
    settings: Settings,
    *,
    http: httpx.AsyncClient | None = None,
    clock: Callable[[], datetime] | None = None,
    run_worker: bool | None = None,
    long_lived: bool = False,
) -> Starlette:
    """Build the bcpay server for ``settings`` (``http``/``clock`` are for tests).

    ``long_lived`` (``bcpay serve``) freezes the start-up heap once the
    lifespan has opened everything (:func:`bcpay.runtime.settle_heap`).
    """
    settings.require_secret_key()
    origins = OriginCache()
    want_worker = settings.server.run_worker if run_worker is None else run_worker

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (open_runtime(settings, http=http, clock=clock, metrics=metrics) as rt,
                    rt.db.background_checkpoints()):
            await migrate.ready_schema(rt.db)
            await refund_ledger.warn_deprecated(rt)
            await snippet.keep_current(rt)  # so that every host serves this version too
            app.state.runtime = rt
            origins.runtime = rt
            stop = asyncio.Event()
            task: asyncio.Task[Any] | None = None
            if want_worker:
                app.state.worker = Worker(rt)
                task = asyncio.create_task(app.state.worker.run_forever(stop), name="bcpay-worker")
            if long_lived:
                settle_heap()
            try:
                yield
            finally:
                if long_lived:
                    gc.unfreeze()
                stop.set()
                if task is not None:
                    app.state.worker.wakeup.set()
                    try:
                        await asyncio.wait_for(task, timeout=SHUTDOWN_GRACE)
                    except TimeoutError:  # 3.11's wait_for raises it; the task is cancelled by then
                        log.warning("jobs still running at shutdown were stopped; their leases run out and "
                                    "another worker takes them (the effects are idempotent)")
                    except asyncio.CancelledError:
                        pass

    metrics = Metrics()
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(RequestContext, metrics=metrics),
            Middleware(BodyLimit, max_bytes=settings.server.max_body_bytes),
            # CORS outside the rate limit: a 429 must carry the CORS headers, or the snippet cannot read
            # its status and Retry-After and shows "could not reach" instead of backing off.
            Middleware(StoreCors, allowed=origins.allowed),
            Middleware(RateLimit, bucket=TokenBucket(settings.server.rate_limit_per_ip)),
        ],
        exception_handlers={
            BcpayError: _bcpay_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.origins = origins
    app.state.store_bucket = TokenBucket(settings.server.rate_limit_per_store)
    app.state.lookup_guard = LookupGuard(
        per_client=settings.server.failed_lookups_per_client, per_order=settings.server.failed_lookups_per_order,
        per_store=settings.server.failed_lookups_per_minute,
    )
    app.state.install_attempts = TokenBucket(settings.server.install_attempts_per_minute)
    return app
