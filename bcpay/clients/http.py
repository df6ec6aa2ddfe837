"""The retry policy and error helpers both API clients share.

Written policy (stripe-python ``_http_client.py``):

- :func:`should_retry` says whether one failed attempt may be tried again:
  429 always (the request was not processed); server faults and transport
  errors only when repeating the request cannot do the work twice.
- :func:`backoff` is "full jitter" exponential backoff with the random source
  injected, so tests pin it.
- :func:`call_with_retries` runs one logical call under that policy; each
  client passes its own ``decipher`` (the one function mapping a response to
  the error tree, gidgethub ``decipher_response`` style).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Container
from typing import Any

import httpx

from bcpay.errors import RateLimited, UpstreamError, UpstreamUnavailable

SERVER_ERRORS: Container[int] = range(500, 600)
MAX_BODY_TEXT = 500  # characters of a non-JSON error body kept for diagnosis
MAX_RATE_LIMIT_WAIT = 60.0  # seconds; a longer Retry-After is handed to the caller


def should_retry(
    status: int | None,
    exc: Exception | None,
    *,
    method_idempotent: bool,
    server_errors: Container[int] = SERVER_ERRORS,
) -> bool:
    """True when an attempt that ended with ``status`` (or ``exc``) may be repeated.

    ``method_idempotent`` means repeating the request cannot do the work twice
    (a GET/PUT/DELETE, or a POST carrying an Idempotency-Key).
    """
    if exc is not None:
        return method_idempotent and isinstance(exc, (httpx.TransportError, UpstreamUnavailable))
    if status == 429:
        return True
    if status is not None and status in server_errors:
        return method_idempotent
    return False


def backoff(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, jitter: Callable[[], float]
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): full jitter.

    ``jitter()`` returns a float in [0, 1); the delay is uniform in
    [0, min(cap, base * 2**attempt)).
    """
    ceiling = min(cap, base * float(2 ** min(attempt, 32)))
    return ceiling * jitter()


def response_body(response: httpx.Response) -> Any:
    """The parsed JSON body, else the text truncated for error messages."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text[:MAX_BODY_TEXT]


def request_id(response: httpx.Response) -> str | None:
    """The upstream's request id, when it sent one."""
    value = response.headers.get("x-request-id")
    return str(value) if value is not None else None


def parse_json(response: httpx.Response, *, service: str) -> Any:
    """The JSON body of a 2xx answer; malformed JSON means the upstream is broken."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UpstreamUnavailable(
            f"{service} answered {response.status_code} with a body that is not JSON",
            code="bad_upstream_response",
            service=service,
            status=response.status_code,
            body=response.text[:MAX_BODY_TEXT],
            request_id=request_id(response),
        ) from None


def bad_response(
    service: str, what: str, response: httpx.Response | None = None
) -> UpstreamUnavailable:
    """The error for a 2xx answer whose JSON does not have the promised shape."""
    return UpstreamUnavailable(
        f"{service} sent a malformed response: {what}",
        code="bad_upstream_response",
        service=service,
        status=None if response is None else response.status_code,
        request_id=None if response is None else request_id(response),
    )


def transport_error(service: str, exc: httpx.TransportError) -> UpstreamUnavailable:
    """The error for a timeout or connection failure (raise it ``from exc``)."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
    return UpstreamUnavailable(f"{service} {kind} ({type(exc).__name__})", service=service)


async def call_with_retries(
    send: Callable[[], Awaitable[httpx.Response]],
    *,
    decipher: Callable[[httpx.Response], None],
    service: str,
    idempotent: bool,
    max_retries: int,
    sleep: Callable[[float], Awaitable[None]],
    jitter: Callable[[], float],
    server_errors: Container[int] = SERVER_ERRORS,
    wait_on_rate_limit: bool = True,
) -> httpx.Response:
    """Run ``send`` until it gives a 2xx answer, or raise the deciphered error.

    ``send`` builds the request afresh on every attempt (so signatures and
    timestamps are fresh). ``decipher`` raises the error for a non-2xx answer.
    A 429 waits ``retry_after`` unless ``wait_on_rate_limit`` is false (a
    rate limiter then does the waiting for every task of the store).
    """
    attempt = 0
    while True:
        try:
            response = await send()
        except httpx.TransportError as exc:
            if attempt < max_retries and should_retry(
                None, exc, method_idempotent=idempotent, server_errors=server_errors
            ):
                await sleep(backoff(attempt, jitter=jitter))
                attempt += 1
                continue
            raise transport_error(service, exc) from exc
        if response.is_success:
            return response
        try:
            decipher(response)
        except UpstreamError as err:
            retry = attempt < max_retries and should_retry(
                response.status_code,
                None,
                method_idempotent=idempotent,
                server_errors=server_errors,
            )
            if not retry:
                raise
            if isinstance(err, RateLimited):
                if err.retry_after > MAX_RATE_LIMIT_WAIT:
                    raise
                if wait_on_rate_limit:
                    await sleep(err.retry_after)
            else:
                await sleep(backoff(attempt, jitter=jitter))
            attempt += 1
            continue
        # decipher must raise for every non-2xx status; reaching here is a bug.
        raise UpstreamUnavailable(
            f"{service} answered {response.status_code}",
            service=service,
            status=response.status_code,
        )
