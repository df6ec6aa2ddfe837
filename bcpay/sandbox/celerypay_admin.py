"""The control API of the fake CeleryPay, under ``/_fake/`` (not part of the contract).

For the sandbox and for tests that drive a fake running in another process:
add merchants, act as the shopper, expire, settle refunds, deliver
notifications, and read what was emitted and delivered. It is unauthenticated:
the fake only ever listens on a developer's loopback address.

    POST /_fake/merchants                       {merchant_id, api_secret, old_secret?}
    POST /_fake/payments/{id}/pay|decline|abandon   {amount?} / {code?}
    POST /_fake/expire                          -> {"expired": [ids]}
    POST /_fake/refunds/settle                  {refund_ids?, succeed?} -> {"data": [refunds]}
    POST /_fake/deliver                         -> {"attempts": n}
    GET  /_fake/payments | /_fake/events | /_fake/deliveries
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bcpay.errors import InvalidInputError
from bcpay.sandbox.celerypay_api import json_response
from bcpay.sandbox.celerypay_rules import ApiError, parse_json_object

if TYPE_CHECKING:
    from bcpay.sandbox.celerypay import FakeCeleryPay


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return parse_json_object(raw)
    except ApiError as exc:
        raise InvalidInputError(exc.message) from None


def _list(data: list[Any]) -> Response:
    return json_response(200, {"object": "list", "data": data})


def routes(fake: FakeCeleryPay) -> list[BaseRoute]:
    """The ``/_fake`` control endpoints, bound to ``fake``."""

    async def add_merchant(request: Request) -> Response:
        body = await _body(request)
        try:
            merchant_id, secret = str(body["merchant_id"]), str(body["api_secret"])
        except KeyError as exc:
            raise InvalidInputError(f"{exc.args[0]} is required") from None
        old = body.get("old_secret")
        fake.add_merchant(merchant_id, secret, old_secret=None if old is None else str(old))
        return json_response(201, {"merchant_id": merchant_id})

    async def shopper(request: Request) -> Response:
        payment_id, action = request.path_params["payment_id"], request.path_params["action"]
        body = await _body(request)
        if action == "pay":
            return json_response(200, await fake.pay(payment_id, amount=body.get("amount")))
        if action == "decline":
            return json_response(
                200, await fake.decline(payment_id, str(body.get("code", "card_declined")))
            )
        if action == "abandon":
            return json_response(200, await fake.abandon(payment_id))
        return json_response(404, ApiError(404, "not_found", f"no action {action!r}").body())

    async def expire(request: Request) -> Response:
        return json_response(200, {"expired": await fake.expire_due()})

    async def settle(request: Request) -> Response:
        body = await _body(request)
        refunds = await fake.settle_refunds(
            body.get("refund_ids"), succeed=bool(body.get("succeed", True))
        )
        return _list(refunds)

    async def deliver(request: Request) -> Response:
        return json_response(200, {"attempts": await fake.deliver_due()})

    async def payments(request: Request) -> Response:
        return _list(list(fake.payments.values()))

    async def events(request: Request) -> Response:
        return _list(fake.events)

    async def deliveries(request: Request) -> Response:
        return _list([d.as_json() for d in fake.deliveries])

    return [
        Route("/_fake/merchants", add_merchant, methods=["POST"]),
        Route("/_fake/payments/{payment_id}/{action}", shopper, methods=["POST"]),
        Route("/_fake/expire", expire, methods=["POST"]),
        Route("/_fake/refunds/settle", settle, methods=["POST"]),
        Route("/_fake/deliver", deliver, methods=["POST"]),
        Route("/_fake/payments", payments, methods=["GET"]),
        Route("/_fake/events", events, methods=["GET"]),
        Route("/_fake/deliveries", deliveries, methods=["GET"]),
    ]
