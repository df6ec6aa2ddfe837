"""The contract endpoints of the fake CeleryPay (``/v1/...``) and the gate in front of them.

The gate does, in order, what the contract puts before any work: request
signing (401), the per-merchant rate limit (429 + Retry-After), the
Content-Type and Idempotency-Key rules (400) and idempotent replay (same key
and body: the first response again; same key, other body: 409). Route
handlers then parse, call :class:`~bcpay.sandbox.celerypay.FakeCeleryPay`, and
answer JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bcpay.errors import BcpayError, ConflictError, NotFoundError
from bcpay.sandbox.celerypay_rules import (
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_TTL,
    ApiError,
    check_request_signature,
    invalid,
    parse_json_object,
    parse_payment_request,
    parse_refund_request,
)

if TYPE_CHECKING:
    from bcpay.sandbox.celerypay import FakeCeleryPay

Operation = Callable[[str, Request, bytes], tuple[int, Any]]
"""(merchant_id, request, raw body) -> (status, JSON payload)."""


def json_bytes(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as every answer of the fake is written."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer with exactly ``payload``."""
    return Response(json_bytes(payload), status, headers=headers, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    """The contract's error shape with the error's status and headers."""
    return json_response(exc.status, exc.body(), exc.headers)


def request_target(scope: Mapping[str, Any]) -> str:
    """The request target as the client sent (and signed) it: prefix, raw path, raw query.

    ``raw_path`` keeps percent-encoding untouched (``%3A`` stays ``%3A``). When
    a proxy stripped the mount prefix, the server knows it only as
    ``root_path``; the client signed it, so it is put back.
    """
    root = str(scope.get("root_path", ""))
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope["path"])
    if root and path != root and not path.startswith(root + "/"):
        path = root + path
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def cashier_base(request: Request) -> str:
    """``scheme://host[:port]{mount prefix}``: where this fake is reachable for the shopper."""
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"


@dataclass
class _Saved:
    fingerprint: str
    status: int
    body: bytes
    at: float


@dataclass
class _Fault:
    status: int
    after_work: bool


class Gate:
    """Authentication, rate limit, idempotency and injected faults for the contract endpoints."""

    def __init__(self, fake: FakeCeleryPay) -> None:
        self.fake = fake
        self._saved: dict[tuple[str, str], _Saved] = {}
        self._hits: dict[str, deque[float]] = {}
        self._faults: deque[_Fault] = deque()

    def fail_next(self, count: int, *, status: int, after_work: bool) -> None:
        """Queue ``count`` 5xx answers (see FakeCeleryPay.fail_next)."""
        if not 500 <= status <= 599:
            raise ValueError("a CeleryPay fault is a 5xx status")
        self._faults.extend(_Fault(status, after_work) for _ in range(count))

    def authenticate(self, request: Request, body: bytes) -> str:
        """The merchant_id of a correctly signed, fresh request; 401 otherwise."""
        merchant = self.fake.merchants.get(request.headers.get("celerypay-merchant", ""))
        if merchant is None:
            # The contract has two 401 codes; an unknown merchant cannot have signed correctly.
            raise ApiError(401, "invalid_signature", "unknown CeleryPay-Merchant")
        # Only the current secret signs requests: rotation covers notifications only.
        check_request_signature(
            secret=merchant.api_secret,
            timestamp=request.headers.get("celerypay-timestamp"),
            signature=request.headers.get("celerypay-signature"),
            method=request.method,
            target=request_target(request.scope),
            body=body,
            now=self.fake.clock(),
        )
        return merchant.merchant_id

    def rate_limit(self, merchant_id: str) -> None:
        """Sliding one-second window per merchant; 429 with Retry-After past the limit."""
        now = self.fake.clock()
        hits = self._hits.setdefault(merchant_id, deque())
        while hits and hits[0] <= now - 1.0:
            hits.popleft()
        if len(hits) >= self.fake.options.rate_limit_per_second:
            retry_after = max(1, math.ceil(hits[0] + 1.0 - now))
            raise ApiError(
                429,
                "rate_limited",
                "too many requests for this merchant",
                headers={"Retry-After": str(retry_after)},
            )
        hits.append(now)

    def _replay(self, merchant_id: str, key: str, fingerprint: str) -> Response | None:
        saved = self._saved.get((merchant_id, key))
        if saved is None or self.fake.clock() - saved.at > IDEMPOTENCY_TTL:
            return None
        if saved.fingerprint != fingerprint:
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request",
                param="Idempotency-Key",
            )
        return Response(
            saved.body,
            saved.status,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )

    async def handle(self, request: Request, operation: Operation) -> Response:
        """Run ``operation`` behind every contract check."""
        body = await request.body()
        try:
            merchant_id = self.authenticate(request, body)
            self.rate_limit(merchant_id)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if body and content_type != "application/json":
                raise invalid("Content-Type", "a request body must be application/json")
            key, fingerprint = None, ""
            if request.method == "POST":
                key = request.headers.get("idempotency-key")
                if key is None or not IDEMPOTENCY_KEY.fullmatch(key):
                    raise invalid(
                        "Idempotency-Key", "Idempotency-Key must be 1 to 64 [A-Za-z0-9_-]"
                    )
                digest = hashlib.sha256(body).hexdigest()
                fingerprint = f"{request.method} {request.url.path}?{request.url.query} {digest}"
                replay = self._replay(merchant_id, key, fingerprint)
                if replay is not None:
                    return replay
            fault = self._faults.popleft() if self._faults else None
            if fault is not None and not fault.after_work:
                raise ApiError(fault.status, "internal_error", "injected CeleryPay fault")
        except ApiError as exc:
            return error_response(exc)
        status, payload = self._run(operation, merchant_id, request, body)
        content = json_bytes(payload)
        # Every first answer is kept, errors included ("returns the first response
        # again"), except faults: a 5xx must stay safe to retry.
        if key is not None and status < 500:
            self._saved[(merchant_id, key)] = _Saved(
                fingerprint, status, content, self.fake.clock()
            )
        if fault is not None:
            return error_response(
                ApiError(fault.status, "internal_error", "injected CeleryPay fault")
            )
        return Response(content, status, media_type="application/json")

    @staticmethod
    def _run(
        operation: Operation, merchant_id: str, request: Request, body: bytes
    ) -> tuple[int, Any]:
        try:
            return operation(merchant_id, request, body)
        except ApiError as exc:
            return exc.status, exc.body()
        except NotFoundError as exc:
            return 404, ApiError(404, "not_found", exc.message).body()
        except ConflictError as exc:
            return 409, ApiError(409, exc.code, exc.message).body()


def _object_body(body: bytes, *, required: bool) -> dict[str, Any]:
    if not body:
        if required:
            raise invalid(None, "a JSON body is required")
        return {}
    return parse_json_object(body)


def routes(fake: FakeCeleryPay) -> list[BaseRoute]:
    """The six contract endpoints, bound to ``fake``."""
    gate = fake.gate

    def create(merchant_id: str, request: Request, body: bytes) -> tuple[int, Any]:
        data = _object_body(body, required=True)
        parsed = parse_payment_request(data, sandbox=fake.options.sandbox)
        return 201, fake.create_payment(merchant_id, parsed, cashier_base(request)).as_json()

    def find(merchant_id: str, request: Request, body: bytes) -> tuple[int, Any]:
        pairs = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        for name, _ in pairs:
            if name != "merchant_order_no":
                raise invalid(name, f"unknown query parameter {name!r}")
        values = [value for _, value in pairs]
        if len(values) != 1:
            raise invalid("merchant_order_no", "give merchant_order_no exactly once")
        found = fake.find_by_order_no(merchant_id, values[0])
        return 200, {"object": "list", "data": [] if found is None else [found.as_json()]}

    def get(merchant_id: str, request: Request, body: bytes) -> tuple[int, Any]:
        return 200, fake.payment_record(request.path_params["payment_id"], merchant_id).as_json()

    def cancel(merchant_id: str, request: Request, body: bytes) -> tuple[int, Any]:
        for name in _object_body(body, required=False):
            raise invalid(name, f"unknown parameter {name!r}")
        return 200, fake.cancel(merchant_id, request.path_params["payment_id"]).as_json()

    def refund(merchant_id: str, request: Request, body: bytes) -> tuple[int, Any]:
        parsed = parse_refund_request(_object_body(body, required=True))
        created = fake.create_refund(merchant_id, request.path_params["payment_id"], parsed)
        answer = created.as_json()  # the 201 shows the refund as created: pending
        if fake.options.refund_auto:
            fake.settle_refund(created)
        return 201, answer

    def get_refund(merchant_id: str, request: Request, body: bytes) -> tuple[int, Any]:
        params = request.path_params
        return 200, fake.refund_record(
            merchant_id, params["payment_id"], params["refund_id"]
        ).as_json()

    def endpoint(operation: Operation) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            return await gate.handle(request, operation)

        return run

    return [
        Route("/v1/payments", endpoint(create), methods=["POST"]),
        Route("/v1/payments", endpoint(find), methods=["GET"]),
        Route("/v1/payments/{payment_id}", endpoint(get), methods=["GET"]),
        Route("/v1/payments/{payment_id}/cancel", endpoint(cancel), methods=["POST"]),
        Route("/v1/payments/{payment_id}/refunds", endpoint(refund), methods=["POST"]),
        Route(
            "/v1/payments/{payment_id}/refunds/{refund_id}", endpoint(get_refund), methods=["GET"]
        ),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "invalid_request")
    return error_response(ApiError(status, code, "no such endpoint" if status == 404 else str(exc)))


async def _bcpay_error(request: Request, exc: Exception) -> Response:
    # Control endpoints raise the bcpay error tree; answer it in the contract's shape.
    assert isinstance(exc, BcpayError)
    return error_response(ApiError(exc.http_status, exc.code, exc.message))


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Any]] = {
    404: _http_error,
    405: _http_error,
    BcpayError: _bcpay_error,
}
