"""The one exception tree of bcpay.

Named by what the caller does next::

    BcpayError
    ├── ConfigError              fix the configuration, then start again
    ├── SignatureError           reject the request (401); never retry
    ├── NotFoundError            answer 404 / tell the operator
    ├── ConflictError            the state forbids it (409); look, don't retry
    ├── InvalidInputError        the caller sent bad data (400)
    └── UpstreamError            an API call failed (carries status, code, body, request id)
        ├── UpstreamRejected     4xx: the request itself is wrong; do not retry
        │   ├── UpstreamNotFound     404 upstream
        │   └── UpstreamConflict     409 upstream (duplicate, invalid_state, ...)
        ├── RateLimited          429: wait ``retry_after`` seconds, then retry
        └── UpstreamUnavailable  5xx, timeouts, connection errors: retry later

Every error has a stable ``code`` that the server puts in its JSON answers and
the CLI prints.
"""

from __future__ import annotations

from typing import Any


class BcpayError(Exception):
    """Root of every error bcpay raises on purpose."""

    code = "error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConfigError(BcpayError):
    """The configuration is invalid; the message names the field path."""

    code = "config_error"


class SignatureError(BcpayError):
    """A signature, token or JWT did not verify."""

    code = "invalid_signature"
    http_status = 401


class NotFoundError(BcpayError):
    """The thing asked for does not exist (or must look as if it did not)."""

    code = "not_found"
    http_status = 404


class ConflictError(BcpayError):
    """The current state forbids the operation."""

    code = "conflict"
    http_status = 409


class InvalidInputError(BcpayError):
    """The caller sent malformed or unacceptable input."""

    code = "invalid_request"
    http_status = 400


class UpstreamError(BcpayError):
    """A call to BigCommerce or CeleryPay failed."""

    code = "upstream_error"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        service: str = "",
        status: int | None = None,
        body: Any = None,
        request_id: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.service = service
        self.status = status
        self.body = body
        self.request_id = request_id
        self.param = param

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(service={self.service!r}, status={self.status!r}, "
            f"code={self.code!r}, request_id={self.request_id!r}, message={self.message!r})"
        )


class UpstreamRejected(UpstreamError):
    """The upstream refused the request (4xx other than 429): do not retry."""

    code = "upstream_rejected"


class UpstreamNotFound(UpstreamRejected):
    """The upstream answered 404."""

    code = "upstream_not_found"


class UpstreamConflict(UpstreamRejected):
    """The upstream answered 409 (duplicate order number, invalid state, ...)."""

    code = "upstream_conflict"

    def __init__(self, message: str, *, payment_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.payment_id = payment_id


class RateLimited(UpstreamError):
    """The upstream answered 429; ``retry_after`` is in seconds."""

    code = "rate_limited"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """5xx, timeout or connection failure: safe to retry later."""

    code = "upstream_unavailable"
    http_status = 503
