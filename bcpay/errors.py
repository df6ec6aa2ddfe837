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

Every error has a stable ``code`` that the server puts in its JSON answers;
:data:`CODES` lists each one with its meaning and HTTP statuses (the handbook's
error reference is generated from it, and tests/test_errors.py holds every code
in the source to it).
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


class ErrorCode:
    """One stable ``code``: what it means to the caller, and the HTTP statuses the server answers it with.

    The CLI prints the message, not the code, and exits 2 for a 400 code (the input is wrong), 1 otherwise.
    """

    __slots__ = ("meaning", "statuses")

    def __init__(self, meaning: str, *statuses: int) -> None:
        self.meaning = meaning
        self.statuses = statuses

    def __repr__(self) -> str:
        return f"ErrorCode({self.meaning!r}, {', '.join(map(str, self.statuses))})"


# Every ``code`` bcpay raises or answers (tests/test_errors.py finds each one in the source and holds
# it, and the status it comes with, to this list; docs/reference/errors.md is generated from it).
# Codes an upstream sent are passed on in ``UpstreamError.code`` as the upstream spelled them.
CODES: dict[str, ErrorCode] = {
    # the tree's own codes
    "error": ErrorCode("An error with no more specific code.", 500),
    "config_error": ErrorCode("The configuration is invalid; the message names the setting.", 500),
    "invalid_signature": ErrorCode(
        "A signature, token or JWT did not verify (CeleryPay notification, /bc/load link, webhook secret); "
        "nothing was done.", 401),
    "not_found": ErrorCode("No such thing (also the answer for a wrong cart id, so orders cannot be probed).", 404),
    "conflict": ErrorCode("The current state forbids the operation.", 409),
    "invalid_request": ErrorCode("The input is malformed; nothing was done.", 400),
    "upstream_error": ErrorCode("A call to BigCommerce or CeleryPay failed.", 502),
    "upstream_rejected": ErrorCode("BigCommerce or CeleryPay refused the request (a 4xx): retrying will not help.",
                                   502),
    "upstream_not_found": ErrorCode("BigCommerce or CeleryPay answered 404.", 502),
    "upstream_conflict": ErrorCode("BigCommerce or CeleryPay answered 409 (duplicate, invalid state).", 502),
    "rate_limited": ErrorCode(
        "Too many requests: 429 from bcpay's own limits (per client address, per store, unknown orders; see "
        "Retry-After), 503 when BigCommerce or CeleryPay rate-limited bcpay.", 429, 503),
    "upstream_unavailable": ErrorCode("BigCommerce or CeleryPay is down, slow or unreachable: retry later.", 503),
    "bad_upstream_response": ErrorCode("BigCommerce or CeleryPay answered with a body bcpay cannot read.", 503),
    # the server's own answers
    "internal_error": ErrorCode("A bug: the log has the traceback (with the request id).", 500),
    "method_not_allowed": ErrorCode("The path exists, but not for this HTTP method.", 405),
    "http_error": ErrorCode("Another HTTP-level refusal (the message says which).", 400),
    "unsupported_media_type": ErrorCode("The body must be sent as application/json.", 400),
    "invalid_json": ErrorCode("The body is not a JSON object.", 400),
    "body_too_large": ErrorCode(
        "The body is over server.max_body_bytes (413), or over the limit of notifications or webhooks (400).",
        400, 413),
    "origin_not_allowed": ErrorCode(
        "A browser on an origin that is no installed store's, or another store's than the request names, called "
        "the API.", 403),
    "unauthorized": ErrorCode("/metrics wants server.metrics_token as a Bearer token.", 401),
    # starting and following a payment
    "invalid_store_hash": ErrorCode("store_hash is missing or is not a store hash.", 400),
    "invalid_order_id": ErrorCode("order_id must be a positive integer.", 400),
    "invalid_cart_id": ErrorCode("cart_id is missing or malformed.", 400),
    "unknown_store": ErrorCode("No store with this hash is registered with bcpay.", 404),
    "store_not_configured": ErrorCode(
        "The store has no CeleryPay merchant yet (settings page, or `bcpay stores configure`).", 409),
    "store_not_installed": ErrorCode(
        "The store has no API token: the app was uninstalled (409), or is not installed for this /bc/load (404).",
        404, 409),
    "order_not_found": ErrorCode("No such order in this store, or the cart id is not the order's.", 404),
    "wrong_payment_method": ErrorCode("The order is not paid with the OKCloud Pay method (payments.accepted_methods).",
                                      422),
    "order_not_awaiting_payment": ErrorCode("The order is no longer Awaiting Payment.", 422),
    "order_too_old": ErrorCode("The order is older than payments.max_order_age.", 422),
    "cancelled_unpaid": ErrorCode(
        "bcpay cancelled the order because it was not paid within the store's payments.unpaid_hold: no pay link; "
        "the shopper places a new order.", 422),
    "nothing_to_pay": ErrorCode("The order's total is zero.", 422),
    "currency_not_supported": ErrorCode(
        "CeleryPay takes no payment in this currency (its minor unit is not 0, 2 or 3 decimals).", 400, 422),
    "gateway_rejected": ErrorCode("CeleryPay refused to create the payment; the attempt is recorded failed.", 422),
    "already_paid": ErrorCode("The order is paid already; the answer carries the paid payment.", 409),
    "try_again": ErrorCode("Another request was opening a payment for the same order at the same moment.", 409),
    "payment_not_found": ErrorCode("No payment attempt has this token, order or CeleryPay id.", 404),
    # the BigCommerce app and the settings page
    "invalid_context": ErrorCode("The install callback's context is not stores/{hash}.", 400),
    "missing_code": ErrorCode("The install callback carries no code.", 400),
    "app_not_configured": ErrorCode(
        "This server is not set up as a BigCommerce app (app.client_id and app.client_secret are empty).", 404),
    "wrong_store": ErrorCode("BigCommerce answered, or a webhook came, for another store than the URL names.", 400),
    "jwt_replayed": ErrorCode("This /bc/load link was used already (its jti is kept until it expires).", 401),
    "secret_missing": ErrorCode(
        "No secret to check against: the store's CeleryPay secret, the app's client secret or the webhook secret "
        "is not set, or the server has no secret key to sign sessions with.", 401),
    "csrf_failed": ErrorCode("A settings-page form without its CSRF token, or with another session's.", 401),
    "settings_changed": ErrorCode(
        "The store's settings changed since they were read (another save, or a reset): nothing was saved.", 409),
    "invalid_setting": ErrorCode("A store setting is unknown or its value is not allowed (the message says why).",
                                 400),
    "invalid_environment": ErrorCode("The CeleryPay environment must be sandbox or production.", 400),
    "invalid_merchant_id": ErrorCode("A CeleryPay merchant id is mch_ followed by 16 to 32 letters or digits.", 400),
    "missing_secret": ErrorCode("A new merchant id needs its CeleryPay API secret.", 400),
    "invalid_secret": ErrorCode("A CeleryPay API secret is at least 32 printable ASCII characters.", 400),
    "credentials_refused": ErrorCode("CeleryPay refused these credentials; nothing was saved.", 400),
    "invalid_payment": ErrorCode("The refund form names no payment.", 400),
    "unknown_payment": ErrorCode("The payment does not belong to this store.", 404),
    "invalid_refund_key": ErrorCode("The refund form's key is malformed: start the refund again.", 400),
    "not_allowed": ErrorCode(
        "Only the store owner, or a user the owner allows on the settings page, may change CeleryPay credentials, "
        "the environment or payment settings, provision, refund or resolve anomalies (bcpay.roles).", 403),
    "unknown_user": ErrorCode("That control-panel user has not opened OKCloud Pay in this store.", 404),
    # webhooks
    "invalid_webhook": ErrorCode("The BigCommerce webhook body lacks scope, hash or an order id.", 400),
    "no_webhook_secret": ErrorCode("The store has no webhook secret: run `bcpay webhooks register`.", 500),
    # refunds
    "nothing_to_refund": ErrorCode("The order has no OKCloud Pay payment to refund.", 404),
    "not_refundable": ErrorCode("The payment was not captured, so there is nothing to refund.", 400, 409),
    "invalid_amount": ErrorCode("An amount is malformed, negative, a float, or has more decimals than its currency.",
                                400),
    "invalid_currency": ErrorCode("Not an ISO 4217 currency code.", 400),
    "over_refund": ErrorCode("More than what is left to refund on the payment.", 400),
    "refund_repeated": ErrorCode("The same amount was refunded on this order minutes ago: use --again if meant.",
                                 409),
    "refund_key_reused": ErrorCode("A refund key was used before for another amount.", 400),
    "refund_rejected": ErrorCode("CeleryPay refused the refund.", 409),
    "refund_in_doubt": ErrorCode(
        "A refund of this payment is in doubt, so its amount is held: settle it with `bcpay refund-resolve`.", 409),
    "refund_not_in_doubt": ErrorCode("No refund in doubt has this number (404), or it was settled meanwhile (409).",
                                     404, 409),
    "refund_mismatch": ErrorCode("The CeleryPay refund given with --made has another number or amount.", 400),
    "refund_maybe_made": ErrorCode(
        "--not-made refused: CeleryPay shows refunds bcpay cannot account for (it may be this one).", 409),
    "refund_still_in_doubt": ErrorCode(
        "A refund_in_doubt anomaly is resolved by `bcpay refund-resolve`, not by hand.", 409),
    "invalid_celerypay_object": ErrorCode("A refund or payment from CeleryPay lacks fields bcpay needs.", 400),
    # operations (CLI)
    "db_unreachable": ErrorCode("The database does not answer: check database.url.", 500),
    "db_outdated": ErrorCode("The schema is older than this release: run `bcpay db upgrade`.", 500),
    "db_newer": ErrorCode("The schema is newer than this release and not compatible with it: run the newer release.",
                          500),
    "ambiguous_order": ErrorCode("Several stores have this order id: give --store.", 400),
    "anomaly_not_found": ErrorCode("No open anomaly has this id.", 404),
    "event_not_found": ErrorCode("No stored notification has this id.", 404),
    "ambiguous_event": ErrorCode("Several stores received a notification with this id: give --store.", 400),
    "token_still_valid": ErrorCode(
        "An uninstall notice BigCommerce does not confirm yet (the store's token still works): its secrets are "
        "kept and the confirm_uninstall job asks again later.", 500),
    "invalid_duration": ErrorCode("Not a duration like 7d, 12h or 30m (at most 10 years).", 400),
    "retention_too_short": ErrorCode("Notifications are kept at least 30 days (dedupe needs them).", 400),
    "invalid_concurrency": ErrorCode("Concurrency must be at least 1.", 400),
    "invalid_repeat": ErrorCode("--repeat must be at least 1.", 400),
    "invalid_status": ErrorCode("simulate-notify takes succeeded, failed, expired or cancelled.", 400),
    "production_store": ErrorCode("simulate-notify is for stores in CeleryPay's sandbox environment only.", 409),
    "not_created": ErrorCode("The attempt never reached CeleryPay (no payment id yet).", 409),
    "missing_token": ErrorCode("`bcpay stores add` needs the API account's access token.", 400),
    "invalid_token": ErrorCode("An access token is printable ASCII without spaces.", 400),
    "missing_scopes": ErrorCode("The API account lacks scopes bcpay needs (the message lists them).", 400),
    "token_refused": ErrorCode("BigCommerce refused this access token; nothing was saved.", 400),
    "same_key": ErrorCode("rotate-key: the new key is the current key.", 400),
    # multi-storefront (channels)
    "unknown_channel": ErrorCode("The store has no storefront channel with this id (as bcpay last read them).", 404),
    "invalid_channel_setting": ErrorCode("A channel setting is unknown or its value is not allowed.", 400),
    "script_limit": ErrorCode(
        "BigCommerce allows 10 scripts per app and they are all in use: no channel could get the snippet.", 502),
}
