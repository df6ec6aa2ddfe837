"""The hosted cashier page of the fake CeleryPay, and the return redirect.

``GET /cashier/{id}`` renders a plain, server-side "OKCloud Pay" page with
three buttons standing in for the shopper: Pay, Decline and Abandon. Each
POSTs back and is answered ``303`` to the payment's return_url with
``celerypay_payment_id`` and ``celerypay_status`` appended (contract, "Return
redirect"). A payment that can no longer be paid gets a page saying so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bcpay.errors import ConflictError, NotFoundError
from bcpay.sandbox.celerypay_rules import ISO_4217

if TYPE_CHECKING:
    from bcpay.sandbox.celerypay import FakeCeleryPay
    from bcpay.sandbox.celerypay_records import PaymentRecord

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥", "KRW": "₩", "INR": "₹"}
CLOSED_NOTICES = {
    "succeeded": "This payment has already been paid.",
    "partially_refunded": "This payment has already been paid.",
    "refunded": "This payment has already been paid.",
    "failed": "This payment failed. Return to the shop to try again.",
    "expired": "This payment has expired. Return to the shop to start a new one.",
    "cancelled": "This payment was cancelled by the merchant.",
}
CLOSED_TITLES = {
    "expired": "Payment expired",
    "cancelled": "Payment cancelled",
    "failed": "Payment failed",
}


def format_amount(minor: int, currency: str) -> str:
    """``$1,234.56 USD``, ``¥500 JPY``, ``1.234 KWD``: what the shopper reads."""
    exponent = ISO_4217.get(currency) or 0
    value = Decimal(minor).scaleb(-exponent)
    return f"{SYMBOLS.get(currency, '')}{value:,.{exponent}f} {currency}"


def return_redirect(return_url: str, payment_id: str, status: str) -> str:
    """``return_url`` with the two (unsigned) celerypay_ parameters appended to its query."""
    parts = urlsplit(return_url)
    extra = urlencode({"celerypay_payment_id": payment_id, "celerypay_status": status})
    query = f"{parts.query}&{extra}" if parts.query.rstrip("&") else extra
    return urlunsplit(parts._replace(query=query))


def _page(status: int, **context: Any) -> HTMLResponse:
    context.setdefault("payment", None)
    context.setdefault("amount", "")
    context.setdefault("notice", "")
    context.setdefault("payable", False)
    context.setdefault("back_url", "")
    context.setdefault("action_base", "")
    return HTMLResponse(_TEMPLATES.get_template("cashier.html").render(**context), status)


def _payment_page(request: Request, payment: PaymentRecord, status: int = 200) -> HTMLResponse:
    payable = payment.status == "pending"
    return _page(
        status,
        title="Checkout" if payable else CLOSED_TITLES.get(payment.status, "Payment completed"),
        payment=payment.as_json(),
        amount=format_amount(payment.amount, payment.currency),
        payable=payable,
        notice="" if payable else CLOSED_NOTICES[payment.status],
        back_url="" if payable else return_redirect(payment.return_url, payment.id, payment.status),
        action_base=f"{request.scope.get('root_path', '')}/cashier/{payment.id}",
    )


def _not_found() -> HTMLResponse:
    return _page(404, title="Payment not found", notice="There is no payment at this address.")


def routes(fake: FakeCeleryPay) -> list[BaseRoute]:
    """The cashier page and its three buttons, bound to ``fake``."""

    async def show(request: Request) -> Response:
        try:
            payment = fake.payment_record(request.path_params["payment_id"])
        except NotFoundError:
            return _not_found()
        with suppress(ConflictError):
            fake.payable_payment(payment.id)  # expires it on the spot if its time is up
        return _payment_page(request, payment)

    async def act(request: Request) -> Response:
        payment_id = request.path_params["payment_id"]
        actions: dict[str, Callable[[str], Awaitable[dict[str, Any]]]] = {
            "pay": fake.pay,
            "decline": fake.decline,
            "abandon": fake.abandon,
        }
        action = actions.get(request.path_params["action"])
        if action is None:
            return _not_found()
        try:
            result = await action(payment_id)
        except NotFoundError:
            return _not_found()
        except ConflictError:
            return _payment_page(request, fake.payment_record(payment_id), status=409)
        url = return_redirect(result["return_url"], result["id"], result["status"])
        return RedirectResponse(url, status_code=303)

    return [
        Route("/cashier/{payment_id}", show, methods=["GET"]),
        Route("/cashier/{payment_id}/{action:str}", act, methods=["POST"]),
    ]
