"""The CeleryPay Merchant API v1 client (async, signed, retried).

Follows /work/shared/reference/celerypay-api.md to the letter:

- every request is signed over ``{timestamp}.{METHOD}.{path_with_query}.{body}``
  where path_with_query is the request target exactly as sent, including the
  base URL's own path prefix ("Request signing");
- the body bytes are built once, signed and sent as they are;
- each attempt gets a fresh timestamp and signature, while a POST keeps the
  same Idempotency-Key and body on every retry, which makes every CeleryPay
  call safe to repeat ("Idempotency");
- 429 waits ``Retry-After``; 5xx and transport errors back off and retry; other
  4xx never retry. :func:`decipher` maps answers to :mod:`bcpay.errors`;
- notify_url and return_url are "https, or http on a loopback address in
  sandbox" ("POST /v1/payments"): :func:`callback_url_problem` is that rule,
  which ``bcpay doctor`` applies to ``app.public_url`` as well.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx

from bcpay.clients.celerypay_models import (
    CURRENCY,
    ORDER_NO,
    PAYMENT_ID,
    REFUND_ID,
    Event,
    Payment,
    Refund,
    parse_event,
)
from bcpay.clients.http import (
    bad_response,
    call_with_retries,
    parse_json,
    request_id,
    response_body,
)
from bcpay.config import Secret
from bcpay.errors import (
    InvalidInputError,
    RateLimited,
    UpstreamConflict,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from bcpay.signatures import sign_request

__all__ = [
    "CeleryPayClient",
    "Event",
    "Payment",
    "Refund",
    "callback_url_problem",
    "decipher",
    "is_loopback",
    "parse_event",
]

SERVICE = "celerypay"
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
T = TypeVar("T")
PING_ORDER_NO = "bcpay-ping"  # never used for a real payment (ours look like hash-id-n)
ENVIRONMENTS = ("sandbox", "production")


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return 1.0
    return seconds if 0 <= seconds < float("inf") else 1.0


def decipher(response: httpx.Response) -> None:
    """Raise the error a non-2xx CeleryPay answer stands for (the one mapping).

    404 -> UpstreamNotFound, 409 -> UpstreamConflict (``payment_id`` of a
    ``duplicate_order_no``), 429 -> RateLimited, other 4xx -> UpstreamRejected,
    anything else -> UpstreamUnavailable.
    """
    status = response.status_code
    if response.is_success:
        return
    body = response_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    param = error.get("param") if isinstance(error.get("param"), str) else None
    method = response.request.method
    path = response.request.url.path
    text = f"CeleryPay {method} {path}: {status} {code or ''} {message}".rstrip()
    common: dict[str, Any] = {
        "service": SERVICE,
        "status": status,
        "body": body,
        "request_id": request_id(response),
        "param": param,
        "code": code,
    }
    if status == 404:
        raise UpstreamNotFound(text, **common)
    if status == 409:
        pid = error.get("payment_id")
        raise UpstreamConflict(text, payment_id=pid if isinstance(pid, str) else None, **common)
    if status == 429:
        raise RateLimited(text, retry_after=_retry_after(response), **common)
    if 400 <= status < 500:
        if status == 401 and code is None:
            common["code"] = "invalid_signature"
        raise UpstreamRejected(text, **common)
    raise UpstreamUnavailable(text, **common)


def _check(condition: bool, message: str, param: str) -> None:
    """Refuse input the contract would refuse, before any call is made."""
    if not condition:
        raise InvalidInputError(message, code="invalid_request")


def _check_idempotency_key(key: str) -> None:
    _check(
        isinstance(key, str) and bool(IDEMPOTENCY_KEY.fullmatch(key)),
        "idempotency_key must be 1 to 64 characters [A-Za-z0-9_-]",
        "idempotency_key",
    )


def _check_payment_id(payment_id: str) -> None:
    # Also what keeps a hostile id from changing the request path.
    _check(
        isinstance(payment_id, str) and bool(PAYMENT_ID.fullmatch(payment_id)),
        "payment_id must be pay_ followed by 24 letters or digits",
        "payment_id",
    )


def _check_order_no(value: str, name: str) -> None:
    _check(
        isinstance(value, str) and bool(ORDER_NO.fullmatch(value)),
        f"{name} must be 1 to 64 characters [A-Za-z0-9_:.-]",
        name,
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def callback_url_problem(url: object, param: str, *, sandbox: bool) -> str | None:
    """Why CeleryPay would refuse ``url`` as ``param`` (notify_url or return_url), or None.

    Contract, "POST /v1/payments": "https, or http on a loopback address in
    sandbox". Credentials in the URL are refused too: the contract is silent on
    them, and its strictest reading is "no".
    """
    if not isinstance(url, str) or not url:
        return f"{param} is required"
    if any(c.isspace() or not c.isprintable() for c in url):
        return f"{param} is not a valid URL"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        return f"{param} is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"{param} must be an absolute https URL with a host"
    if parts.username is not None or parts.password is not None:
        return f"{param} must not carry a user name or password"
    if parts.scheme == "https" or (sandbox and is_loopback(host)):
        return None
    rule = "https (http only on a loopback address)"
    if not sandbox:
        rule = "https in production (http only on a loopback address in sandbox)"
    return f"{param} must use {rule}, not {parts.scheme} on {host}"


def _check_callback_url(url: str, param: str, *, sandbox: bool) -> None:
    problem = callback_url_problem(url, param, sandbox=sandbox)
    _check(problem is None, problem or "", param)


def _check_amount(amount: int) -> None:
    _check(
        isinstance(amount, int) and not isinstance(amount, bool) and amount > 0,
        "amount must be a positive integer in minor units",
        "amount",
    )


class CeleryPayClient:
    """One merchant's view of the CeleryPay API."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        merchant_id: str,
        api_secret: Secret | str,
        max_retries: int = 4,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        environment: Literal["sandbox", "production"] = "sandbox",
    ) -> None:
        """Bind the shared HTTP client to one merchant's credentials and base URL.

        ``environment`` is the merchant's CeleryPay environment (the store's
        ``environment``): only ``sandbox`` accepts http callback URLs, and
        only on a loopback address.
        """
        parts = urlsplit(base_url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise InvalidInputError(f"CeleryPay base URL is not an http(s) URL: {base_url!r}")
        if environment not in ENVIRONMENTS:
            raise InvalidInputError(
                f"CeleryPay environment must be sandbox or production, got {environment!r}"
            )
        self._sandbox = environment == "sandbox"
        self._http = http
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path.rstrip("/")
        self._merchant_id = merchant_id
        self._secret = api_secret if isinstance(api_secret, Secret) else Secret(api_secret)
        self._max_retries = max_retries
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter

    def __repr__(self) -> str:
        base = self._origin + self._prefix
        return f"CeleryPayClient(base_url={base!r}, merchant_id={self._merchant_id!r})"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send one signed call (with retries) and return its parsed JSON."""
        target = self._prefix + path + ("?" + urlencode(query) if query else "")
        # Built once: the exact bytes that are signed are the bytes sent, every attempt.
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")

        async def send() -> httpx.Response:
            request = self._http.build_request(
                method, self._origin + target, content=content or None
            )
            # Sign the target httpx will actually put on the wire.
            sent_target = request.url.raw_path.decode("ascii")
            timestamp = int(self._clock())
            request.headers["CeleryPay-Merchant"] = self._merchant_id
            request.headers["CeleryPay-Timestamp"] = str(timestamp)
            request.headers["CeleryPay-Signature"] = sign_request(
                self._secret.get(), timestamp, method, sent_target, content
            )
            request.headers["Accept"] = "application/json"
            if content:
                request.headers["Content-Type"] = "application/json"
            if idempotency_key is not None:
                request.headers["Idempotency-Key"] = idempotency_key
            return await self._http.send(request)

        response = await call_with_retries(
            send,
            decipher=decipher,
            service=SERVICE,
            idempotent=True,  # GETs, and POSTs that carry an Idempotency-Key
            max_retries=self._max_retries,
            sleep=self._sleep,
            jitter=self._jitter,
        )
        return parse_json(response, service=SERVICE), response

    async def _payment(self, method: str, path: str, **kwargs: Any) -> Payment:
        data, response = await self._call(method, path, **kwargs)
        return _parsed(Payment.from_json, data, response)

    async def _refund(self, method: str, path: str, **kwargs: Any) -> Refund:
        data, response = await self._call(method, path, **kwargs)
        return _parsed(Refund.from_json, data, response)

    async def create_payment(
        self,
        *,
        merchant_order_no: str,
        amount: int,
        currency: str,
        notify_url: str,
        return_url: str,
        idempotency_key: str,
        description: str | None = None,
        expires_in: int | None = None,
        customer: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Payment:
        """``POST /v1/payments``: create a pending payment and its cashier page."""
        _check_order_no(merchant_order_no, "merchant_order_no")
        _check_amount(amount)
        _check(
            isinstance(currency, str) and bool(CURRENCY.fullmatch(currency)),
            "currency must be three upper-case letters",
            "currency",
        )
        _check_callback_url(notify_url, "notify_url", sandbox=self._sandbox)
        _check_callback_url(return_url, "return_url", sandbox=self._sandbox)
        _check_idempotency_key(idempotency_key)
        body: dict[str, Any] = {
            "merchant_order_no": merchant_order_no,
            "amount": amount,
            "currency": currency,
            "notify_url": notify_url,
            "return_url": return_url,
        }
        if description is not None:
            _check(
                isinstance(description, str) and len(description) <= 255,
                "description must be at most 255 characters",
                "description",
            )
            body["description"] = description
        if expires_in is not None:
            _check(
                isinstance(expires_in, int)
                and not isinstance(expires_in, bool)
                and 300 <= expires_in <= 86400,
                "expires_in must be 300 to 86400 seconds",
                "expires_in",
            )
            body["expires_in"] = expires_in
        if customer is not None:
            _check(
                isinstance(customer, dict)
                and set(customer) <= {"email", "name"}
                and all(isinstance(v, str) for v in customer.values()),
                "customer may only have string email and name",
                "customer",
            )
            body["customer"] = dict(customer)
        if metadata is not None:
            _check(
                isinstance(metadata, dict) and len(metadata) <= 20,
                "metadata has more than 20 keys",
                "metadata",
            )
            for key, value in metadata.items():
                _check(
                    isinstance(key, str) and 0 < len(key) <= 40,
                    "metadata keys must be 1 to 40 characters",
                    "metadata",
                )
                _check(
                    isinstance(value, str) and len(value) <= 500,
                    "metadata values must be strings of at most 500 characters",
                    "metadata",
                )
            body["metadata"] = dict(metadata)
        return await self._payment(
            "POST", "/v1/payments", body=body, idempotency_key=idempotency_key
        )

    async def get_payment(self, payment_id: str) -> Payment:
        """``GET /v1/payments/{id}``; UpstreamNotFound when CeleryPay has no such payment."""
        _check_payment_id(payment_id)
        return await self._payment("GET", f"/v1/payments/{payment_id}")

    async def find_payment(self, merchant_order_no: str) -> Payment | None:
        """``GET /v1/payments?merchant_order_no=``: the payment with that number, or None."""
        _check_order_no(merchant_order_no, "merchant_order_no")
        data, response = await self._call(
            "GET", "/v1/payments", query={"merchant_order_no": merchant_order_no}
        )
        if (
            not isinstance(data, dict)
            or data.get("object") != "list"
            or not isinstance(data.get("data"), list)
        ):
            raise bad_response(SERVICE, "payment search is not a list object", response)
        items = data["data"]
        if len(items) > 1:
            raise bad_response(SERVICE, "payment search returned more than one payment", response)
        if not items:
            return None
        payment = _parsed(Payment.from_json, items[0], response)
        if payment.merchant_order_no != merchant_order_no:
            raise bad_response(SERVICE, "payment search returned another order's payment", response)
        return payment

    async def cancel_payment(self, payment_id: str, *, idempotency_key: str) -> Payment:
        """``POST /v1/payments/{id}/cancel``; UpstreamConflict ``invalid_state`` if not pending."""
        _check_payment_id(payment_id)
        _check_idempotency_key(idempotency_key)
        return await self._payment(
            "POST", f"/v1/payments/{payment_id}/cancel", body={}, idempotency_key=idempotency_key
        )

    async def create_refund(
        self,
        payment_id: str,
        *,
        amount: int,
        merchant_refund_no: str,
        idempotency_key: str,
        reason: str | None = None,
    ) -> Refund:
        """``POST /v1/payments/{id}/refunds``: refund ``amount`` minor units."""
        _check_payment_id(payment_id)
        _check_amount(amount)
        _check_order_no(merchant_refund_no, "merchant_refund_no")
        _check_idempotency_key(idempotency_key)
        body: dict[str, Any] = {"amount": amount, "merchant_refund_no": merchant_refund_no}
        if reason is not None:
            _check(
                isinstance(reason, str) and len(reason) <= 500,
                "reason must be at most 500 characters",
                "reason",
            )
            body["reason"] = reason
        return await self._refund(
            "POST", f"/v1/payments/{payment_id}/refunds", body=body, idempotency_key=idempotency_key
        )

    async def get_refund(self, payment_id: str, refund_id: str) -> Refund:
        """``GET /v1/payments/{id}/refunds/{refund_id}``."""
        _check_payment_id(payment_id)
        _check(
            isinstance(refund_id, str) and bool(REFUND_ID.fullmatch(refund_id)),
            "refund_id must be ref_ followed by letters or digits",
            "refund_id",
        )
        return await self._refund("GET", f"/v1/payments/{payment_id}/refunds/{refund_id}")

    async def ping(self) -> None:
        """Prove the credentials work with a harmless signed search.

        A wrong secret answers UpstreamRejected with code ``invalid_signature``.
        """
        await self.find_payment(PING_ORDER_NO)


def _parsed(parse: Callable[[Any], T], data: Any, response: httpx.Response) -> T:
    """Run a strict parser on an answer; a malformed object means CeleryPay is broken."""
    try:
        return parse(data)
    except InvalidInputError as exc:
        raise bad_response(SERVICE, exc.message, response) from None
