"""Shopper-facing HTML: the ``/pay/{token}`` page and the cashier return hop.

The pay page is the fallback when the snippet could not run and the link ops
send to a shopper who closed the tab. Possession of the token (192 random
bits) is what authorises it, like a password-reset link.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bcpay import channels, order_reads, payflow, rules
from bcpay.errors import BcpayError, NotFoundError
from bcpay.runtime import Runtime
from bcpay.storage import queries as q

templates = Environment(
    loader=PackageLoader("bcpay.server", "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)


def render_page(
    name: str,
    status: int = 200,
    *,
    form_action: str,
    frame_ancestors: str,
    scripts: bool,
    **context: object,
) -> HTMLResponse:
    """Render a template with a nonce-based CSP and the no-store, no-referrer headers every page gets."""
    nonce = secrets.token_urlsafe(16)
    body = templates.get_template(name).render(nonce=nonce, **context)
    script_src = f" script-src 'nonce-{nonce}';" if scripts else ""
    csp = (
        f"default-src 'none'; style-src 'nonce-{nonce}';{script_src} img-src 'self' data:; "
        f"form-action {form_action}; frame-ancestors {frame_ancestors}; base-uri 'none'"
    )
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


def html_page(name: str, status: int = 200, **context: object) -> HTMLResponse:
    """A shopper page: never framed; its forms may lead on to the (https or local sandbox) cashier."""
    return render_page(
        name, status, form_action="'self' https: http://127.0.0.1:* http://localhost:*",
        frame_ancestors="'none'", scripts=True, **context,
    )


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def _load(rt: Runtime, token: str) -> tuple[payflow.PaymentView, str, str]:
    view = await payflow.payment_status(rt, token)
    async with rt.db.read() as conn:
        store = await q.require_store(conn, view.store_hash)
        attempt = await q.get_payment_by_token(conn, token)
    # The site of the order's storefront channel (multi-storefront), the store's own for older attempts.
    name, url = channels.site_of(await channels.known(rt, store), attempt.channel_id if attempt else None, store)
    return view, name, url


VIA_PAGE_COOKIE = "bcpay_via_page"

# What the pay page says when starting a payment failed (``?error=<code>``, set by ``pay_now``). Only these
# texts are shown: the query string is anyone's to write, and the page is on bcpay's host.
PAY_ERRORS = {
    "try_again": "We could not start the payment. Please try again in a moment.",
    "order_not_awaiting_payment": "This order no longer awaits payment, so it cannot be paid here.",
    "wrong_payment_method": "This order is not paid with OKCloud Pay.",
    "order_too_old": "This order is too old to be paid online. Please contact the store.",
    "nothing_to_pay": "This order has nothing to pay.",
    "currency_not_supported": "OKCloud Pay does not take this order's currency. Please contact the store.",
    "gateway_rejected": "OKCloud Pay could not start this payment. Please contact the store.",
    "store_not_configured": "This store cannot take OKCloud Pay payments yet. Please contact the store.",
}


# An order bcpay cancelled for non-payment, in the shopper's language: said plainly, with the store's link and
# never a cashier (the order cannot be paid any more; a new order can).
CANCELLED_TEXTS = {
    "en": {
        "title": "Order #{order} was cancelled",
        "body": "This order was not paid in time, so it was cancelled. No payment was taken. "
                "To buy these items, please place a new order at {store}.",
        "link": "Go to {store}",
    },
    "zh": {
        "title": "订单 #{order} 已取消",
        "body": "此订单未在规定时间内付款，已被取消，未收取任何款项。如需购买，请在 {store} 重新下单。",
        "link": "前往 {store}",
    },
}


def shopper_lang(request: Request) -> str:
    """``zh`` or ``en``: the page's ``?lang=``, else the browser's first Accept-Language, as the snippet picks."""
    wanted = request.query_params.get("lang") or request.headers.get("accept-language", "")
    first = wanted.split(",", 1)[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


async def _cancelled_unpaid(rt: Runtime, view: payflow.PaymentView) -> bool:
    """Was the order of this (unpaid) attempt cancelled by the unpaid hold, and is it still cancelled?"""
    if view.state in ("paid", "refunded", "under_review"):
        return False
    async with rt.db.read() as conn:
        store = await q.require_store(conn, view.store_hash)
    if not await payflow.cancelled_unpaid(rt, store, view.order_id):
        return False
    try:  # a merchant may have put the order back to Awaiting Payment: then it can be paid again
        order = await order_reads.read_order(rt, store, view.order_id)
    except BcpayError:
        return True  # unknown now: the safe answer offers no cashier
    return order.status_id != rules.STATUS_AWAITING_PAYMENT


def _error_text(code: str) -> str:
    """The fixed text for ``?error=<code>``: a known code's own, any other the generic one."""
    return PAY_ERRORS.get(code, PAY_ERRORS["try_again"]) if code else ""


async def pay_page(request: Request) -> Response:
    """GET /pay/{token}: order, amount, status, a Pay now button, a link back."""
    rt = _rt(request)
    try:
        view, store_name, store_url = await _load(rt, request.path_params["token"])
    except NotFoundError:
        return html_page("pay_missing.html", status=404)
    if view.status in ("failed", "expired", "cancelled"):
        # A later attempt paid this order: its page is the one to show, not "try again" (nor "Pay now" for
        # an attempt given up as never created, which reads as unpaid).
        paid = await payflow.paid_attempt_of(rt, view.token)
        if paid is not None:
            return RedirectResponse(f"/pay/{paid.token}", status_code=303)
    if await _cancelled_unpaid(rt, view):
        lang = shopper_lang(request)
        texts = {k: v.format(order=view.order_id, store=store_name) for k, v in CANCELLED_TEXTS[lang].items()}
        return html_page("pay_cancelled.html", lang=lang, texts=texts, store_url=store_url)
    return html_page(
        "pay.html",
        view=view,
        store_name=store_name,
        store_url=store_url,
        error=_error_text(request.query_params.get("error", "")),
        can_pay=view.state in ("awaiting_payment", "failed", "expired", "cancelled"),
        token=view.token,
    )


async def pay_now(request: Request) -> Response:
    """POST /pay/{token}: resume the open attempt or start a new one, then go to the cashier."""
    rt = _rt(request)
    token = request.path_params["token"]
    try:
        view = await payflow.resume_by_token(rt, token)
    except payflow.AlreadyPaid as exc:
        return RedirectResponse(f"/pay/{exc.view.token}", status_code=303)
    except NotFoundError:
        return html_page("pay_missing.html", status=404)
    except BcpayError as exc:
        return RedirectResponse(f"/pay/{token}?" + urlencode({"error": exc.code}), status_code=303)
    if view.cashier_url:
        go = RedirectResponse(view.cashier_url, status_code=303)
        # This shopper came through bcpay's own page (a pay link, perhaps on another device, with no
        # BigCommerce session): the return hop brings them back here, not to a confirmation page that
        # cannot show their order. Only sent to this token's paths; nothing secret in it.
        go.set_cookie(VIA_PAGE_COOKIE, view.token, max_age=86_400, path=f"/pay/{view.token}", httponly=True,
                      samesite="lax", secure=request.url.scheme == "https")
        return go
    return RedirectResponse(f"/pay/{view.token}", status_code=303)


async def pay_return(request: Request) -> Response:
    """GET /pay/{token}/return: where CeleryPay sends the shopper back.

    The ``celerypay_*`` query parameters are not signed: they are ignored here.
    ``payments.return_to`` decides where the shopper lands; it is read now, not
    when the payment was created, so changing it affects payments in flight.
    """
    rt = _rt(request)
    token = request.path_params["token"]
    async with rt.db.read() as conn:
        attempt = await q.get_payment_by_token(conn, token) if payflow.is_token(token) else None
        store = await q.get_store_by_id(conn, attempt.store_id) if attempt else None
    if attempt is None or store is None:
        return html_page("pay_missing.html", status=404)
    policy = rt.policy(store)
    via_page = request.cookies.get(VIA_PAGE_COOKIE) == token
    # Back to the checkout domain of the order's storefront channel (multi-storefront): where the shopper's
    # session and confirmation page are. An attempt older code opened has no channel: the store's URL.
    base = (channels.checkout_base(await channels.known(rt, store), attempt.channel_id, store)
            if attempt.channel_id is not None else store.store_url.rstrip("/"))
    if policy.return_to == "bcpay" or not base or via_page:
        return RedirectResponse(f"/pay/{token}", status_code=303)
    # A fragment, not a query: never sent to the store's server nor recorded by its analytics.
    target = f"{base}/checkout/order-confirmation#" + urlencode({"bcpay_token": token})
    return RedirectResponse(target, status_code=303)

