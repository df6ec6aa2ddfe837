"""ASGI middleware: request ids and access logs, body limits, rate limits, CORS.

Pure ASGI (no BaseHTTPMiddleware) so that streaming and the lifespan stay
untouched and the per-request cost stays small on the hot paths.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bcpay.limits import client_key
from bcpay.metrics import Metrics

log = logging.getLogger("bcpay.access")


async def send_json_error(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    """Answer a JSON error directly from middleware."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def route_name(scope: Scope) -> str:
    """A low-cardinality route label for metrics (path templates, not raw paths)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestContext:
    """Request id, one access-log line and the request counter per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if incoming.isalnum() and 8 <= len(incoming) <= 64 else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_name(scope)
            self.metrics.inc("bcpay_http_requests_total", route=route, status=str(status))
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %s",
                    scope["method"],
                    route,
                    status,
                    extra={"fields": {
                        "request_id": request_id,
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                    }},
                )


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (by header, and while streaming)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not (length.isascii() and length.isdigit()) or int(length) > self.max_bytes):
            await send_json_error(send, 413, "body_too_large", f"request body over {self.max_bytes} bytes")
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_json_error(send, 413, "body_too_large", f"request body over {self.max_bytes} bytes")


class BodyTooLarge(Exception):
    """Raised inside the app when the streamed body passes the limit."""


class TokenBucket:
    """A per-key token bucket: ``rate`` requests per minute, bursts up to ``rate``."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def peek(self, key: str) -> float:
        """0 when a request would be allowed now, else seconds until one would (nothing taken)."""
        tokens, last = self._buckets.get(key, (self.capacity, self.clock()))
        tokens = min(self.capacity, tokens + (self.clock() - last) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, key: str) -> float:
        """0 when allowed, else seconds until a request would be allowed."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1:
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._buckets.clear()  # bounded memory under a flood of distinct keys
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


class RateLimit:
    """Per-client-IP limit on the public endpoints (``/api/``, ``/pay/``) and ``/metrics`` (database counts)."""

    PREFIXES = ("/api/", "/pay/", "/metrics")

    def __init__(self, app: ASGIApp, bucket: TokenBucket) -> None:
        self.app = app
        self.bucket = bucket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.PREFIXES) and scope["method"] != "OPTIONS":
            client = scope.get("client")
            wait = self.bucket.take(client_key(client[0] if client else None))  # IPv6: per /64
            if wait:
                retry = str(max(1, int(wait + 0.999)))
                await send_json_error(send, 429, "rate_limited", "too many requests", {"Retry-After": retry})
                return
        await self.app(scope, receive, send)


OriginCheck = Callable[[str], Awaitable[bool]]


class StoreCors:
    """CORS for ``/api/v1/*``: only origins of installed stores (and their extras)."""

    ALLOW_METHODS = "GET, POST, OPTIONS"
    ALLOW_HEADERS = "Content-Type, X-Request-Id"

    def __init__(self, app: ASGIApp, allowed: OriginCheck) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/v1/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        ok = bool(origin) and len(origin) < 256 and await self.allowed(origin)
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            if not ok:
                await send_json_error(send, 403, "origin_not_allowed", "this origin may not call bcpay")
                return
            await send({
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", origin.encode()),
                    (b"access-control-allow-methods", self.ALLOW_METHODS.encode()),
                    (b"access-control-allow-headers", self.ALLOW_HEADERS.encode()),
                    (b"access-control-max-age", b"600"),
                    (b"vary", b"Origin"),
                ],
            })
            await send({"type": "http.response.body", "body": b""})
            return
        if origin and not ok:
            await send_json_error(send, 403, "origin_not_allowed", "this origin may not call bcpay")
            return

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start" and origin:
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", origin.encode()),
                    (b"access-control-expose-headers", b"Retry-After, X-Request-Id"),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, cors_send)


def scope_state(scope: Scope) -> dict[str, Any]:
    """The per-request state dict our middleware fills."""
    state: dict[str, Any] = scope.setdefault("state", {})
    return state
