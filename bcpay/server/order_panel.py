"""The OKCloud Pay panel on BigCommerce's own order page (an App Extension, reference section 14).

BigCommerce opens the app through ``/bc/load`` with the extension's URL in the
JWT's ``url`` claim (``/orders/{id}/okcloud-pay``); the callback starts the
same session the settings page uses and sends the user here. The panel shows
the order's CeleryPay payments (amount, state, ids, times), their refunds and
open anomalies, and offers what the user may do: refund part or all, show
the pay link to send the shopper, look the payment up at CeleryPay now.
Every action is a POST with the session's CSRF token, allowed only to users
:func:`bcpay.roles.may_act` allows (others see the panel read-only), and is
an audit row. English and Chinese, from the control-panel user's locale.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bcpay import payflow, refunds, roles, rules, settings_audit
from bcpay.errors import BcpayError, InvalidInputError, NotFoundError
from bcpay.money import format_amount, from_minor, to_minor
from bcpay.runtime import Runtime
from bcpay.server.bcapp import Viewer, bc_page, field, page, posted, runtime_of, viewer_of
from bcpay.storage import queries as q
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import refunds as refunds_table

log = logging.getLogger("bcpay.order_panel")

URL_CLAIM = re.compile(r"/orders/(\d{1,12})/okcloud-pay")
MAX_ORDER_ID = 10**12
_KEY = re.compile(r"panel-[A-Za-z0-9_-]{16,40}")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "OKCloud Pay payment", "order": "Order", "none": "No OKCloud Pay payment for this order yet.",
        "payment": "Payment", "amount": "Amount", "state": "State", "celerypay_id": "CeleryPay id",
        "created": "Started", "updated": "Last change", "paid": "Paid", "refunded": "Refunded",
        "refunds": "Refunds", "refund_no": "bcpay refund", "bc_refund": "BigCommerce refund",
        "anomalies": "Open anomalies", "refund": "Refund", "amount_hint": "empty: all that is left",
        "confirm": "Refund {amount} of order #{order}? CeleryPay returns it to the shopper; this cannot be undone.",
        "yes": "Refund {amount}", "cancel": "Cancel", "lookup": "Look up at CeleryPay now",
        "pay_link": "Show the pay link", "pay_link_is": "Send the shopper this link to pay:",
        "readonly": "Only the store owner, or a user the owner allows, may act on this payment.",
        "refunded_done": "Refund sent to CeleryPay.", "looked_up": "CeleryPay was asked; the panel shows its answer.",
        "settings": "OKCloud Pay settings",
    },
    "zh": {
        "title": "OKCloud Pay 付款", "order": "订单", "none": "此订单还没有 OKCloud Pay 付款。",
        "payment": "付款", "amount": "金额", "state": "状态", "celerypay_id": "CeleryPay 编号",
        "created": "开始时间", "updated": "最近更新", "paid": "已付", "refunded": "已退款",
        "refunds": "退款", "refund_no": "bcpay 退款号", "bc_refund": "BigCommerce 退款",
        "anomalies": "未处理的异常", "refund": "退款", "amount_hint": "留空：退还全部剩余金额",
        "confirm": "确认退还订单 #{order} 的 {amount}？CeleryPay 会将款项退给顾客，此操作无法撤销。",
        "yes": "退款 {amount}", "cancel": "取消", "lookup": "立即向 CeleryPay 查询",
        "pay_link": "显示付款链接", "pay_link_is": "把这个链接发给顾客付款：",
        "readonly": "只有店主或店主允许的用户可以操作此付款。",
        "refunded_done": "退款已发送到 CeleryPay。", "looked_up": "已向 CeleryPay 查询，面板显示其结果。",
        "settings": "OKCloud Pay 设置",
    },
}


def lang_of(locale: str | None) -> str:
    """The panel's language for a control-panel locale (``zh-CN`` -> zh; anything else English)."""
    return "zh" if (locale or "").lower().startswith("zh") else "en"


def order_of_url(url: str) -> int | None:
    """The order id in an App Extension load URL (the JWT's ``url`` claim), or None."""
    match = URL_CLAIM.fullmatch((url or "").split("?", 1)[0])
    return int(match.group(1)) if match and 0 < int(match.group(1)) < MAX_ORDER_ID else None


def _lang(request: Request) -> str:
    value = request.query_params.get("lang", "")
    return value if value in TEXT else "en"


def _order_id(request: Request) -> int:
    order_id = int(request.path_params["order_id"])
    if not 0 < order_id < MAX_ORDER_ID:
        raise InvalidInputError("not an order id", code="invalid_order_id")
    return order_id


async def _rows(rt: Runtime, store: StoreRecord, order_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order_id)
        shown = []
        for p in attempts:
            found = (await conn.execute(select(refunds_table).where(refunds_table.c.payment_id == p.id)
                                        .order_by(refunds_table.c.id))).mappings().all()
            left = await refunds.refundable(conn, p) if p.status in rules.PAID else 0
            shown.append({
                "p": p, "amount": format_amount(p.amount, p.currency),
                "paid": format_amount(p.paid_amount, p.currency) if p.paid_amount else "",
                "refunded": format_amount(p.refunded_amount, p.currency) if p.refunded_amount else "",
                "left": str(from_minor(left, p.currency)) if left > 0 else "",
                "refunds": [{**dict(r), "amount_text": format_amount(r["amount"], r["currency"])} for r in found],
            })
        anomalies = [a for a in await q.list_anomalies(conn, store_id=store.id) if a["order_id"] == order_id]
    return shown, [{**a, "amount_text": format_amount(a["amount"], a["currency"])} for a in anomalies]


async def render(request: Request, viewer: Viewer, order_id: int, *, status: int = 200, error: str = "",
                 **extra: Any) -> Response:
    """The panel for one order of the session's store."""
    rt, store, lang = runtime_of(request), viewer.store, _lang(request)
    shown, anomalies = await _rows(rt, store, order_id)
    done = {"refunded": "refunded_done", "looked_up": "looked_up"}.get(request.query_params.get("done", ""))
    return bc_page(request, "order_panel.html", status, store_hash=store.store_hash, store=store, user=viewer.user,
                   order_id=order_id, payments=shown, anomalies=anomalies, t=TEXT[lang], lang=lang,
                   csrf=viewer.csrf, readonly=not roles.may_act(viewer.user), error=error,
                   done=TEXT[lang][done] if done else "", **extra)


def _back(order_id: int, lang: str, done: str) -> Response:
    return RedirectResponse(f"/bc/orders/{order_id}?lang={lang}&done={done}", status_code=303)


@page
async def panel(request: Request) -> Response:
    """GET /bc/orders/{order_id}: the order's OKCloud Pay payments, refunds, anomalies and actions."""
    viewer = await viewer_of(request)
    try:
        order_id = _order_id(request)
    except BcpayError as exc:
        return await render(request, viewer, 1, status=400, error=exc.message)
    return await render(request, viewer, order_id)


async def _acting(request: Request) -> tuple[Viewer, Any, int] | Response:
    """A panel POST: session, CSRF, role; or the panel read-only with 403 and nothing changed."""
    viewer, form = await posted(request)
    order_id = _order_id(request)
    if not roles.may_act(viewer.user):
        response = await render(request, viewer, order_id, status=403, error=TEXT[_lang(request)]["readonly"])
        response.headers["X-Bcpay-Error"] = roles.NotAllowed.code
        return response
    return viewer, form, order_id


async def _payment_of(rt: Runtime, store: StoreRecord, order_id: int, raw: str) -> PaymentRecord:
    """An attempt of this order of this store, by its row id from the form."""
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order_id)
    found = next((p for p in attempts if raw.isdigit() and p.id == int(raw)), None)
    if found is None:
        raise NotFoundError("That payment is not one of this order's.", code="payment_not_found")
    return found


@page
async def refund(request: Request) -> Response:
    """POST /bc/orders/{order_id}/refund: "Refund X of order N?" first, then (confirm=yes) the refund."""
    checked = await _acting(request)
    if isinstance(checked, Response):
        return checked
    viewer, form, order_id = checked
    rt, store, lang = runtime_of(request), viewer.store, _lang(request)
    try:
        payment = await _payment_of(rt, store, order_id, field(form, "payment_id", 20))
        if payment.status not in rules.PAID:
            raise InvalidInputError(f"Order #{order_id} has no captured payment to refund.", code="not_refundable")
        async with rt.db.read() as conn:
            left = await refunds.refundable(conn, payment)
        text = field(form, "amount", 32)
        amount = to_minor(text, payment.currency) if text else left
        if amount <= 0 or amount > left:
            raise InvalidInputError(f"You can refund between 0 and {format_amount(max(left, 0), payment.currency)} "
                                    f"of order #{order_id}.", code="over_refund")
        amount_text = format_amount(amount, payment.currency)
        if field(form, "confirm", 5) != "yes":
            return await render(request, viewer, order_id, confirm={
                "payment_id": payment.id, "amount": str(from_minor(amount, payment.currency)),
                "text": TEXT[lang]["confirm"].format(amount=amount_text, order=order_id),
                "button": TEXT[lang]["yes"].format(amount=amount_text), "key": "panel-" + secrets.token_urlsafe(18)})
        key = field(form, "key", 64)
        if not _KEY.fullmatch(key):
            raise InvalidInputError("Start the refund again from the panel.", code="invalid_refund_key")
        await refunds.request_refund(rt, store, payment, amount=amount, key=key,
                                     reason=f"refunded on the order page by {viewer.user.email}")
    except BcpayError as exc:
        return await render(request, viewer, order_id, status=min(exc.http_status, 502), error=exc.message)
    await settings_audit.note(rt, store, actor=settings_audit.user_actor(viewer.user), action="refund",
                              detail=f"order #{order_id}: {amount_text} (order page)")
    return _back(order_id, lang, "refunded")


@page
async def lookup(request: Request) -> Response:
    """POST /bc/orders/{order_id}/lookup: ask CeleryPay about the order's open payments now."""
    checked = await _acting(request)
    if isinstance(checked, Response):
        return checked
    viewer, _, order_id = checked
    rt, store = runtime_of(request), viewer.store
    async with rt.db.read() as conn:
        attempts = await q.order_attempts(conn, store.id, order_id)
    try:
        for attempt in attempts:
            await payflow.refresh(rt, store, attempt, force=True)
    except BcpayError as exc:
        return await render(request, viewer, order_id, status=502, error=f"CeleryPay: {exc.message[:300]}")
    return _back(order_id, _lang(request), "looked_up")


@page
async def pay_link(request: Request) -> Response:
    """POST /bc/orders/{order_id}/pay-link: the /pay link to send the shopper (shown, not e-mailed)."""
    checked = await _acting(request)
    if isinstance(checked, Response):
        return checked
    viewer, _, order_id = checked
    rt, store = runtime_of(request), viewer.store
    try:
        link = await payflow.pay_link(rt, store.store_hash, order_id)
    except BcpayError as exc:
        return await render(request, viewer, order_id, status=min(exc.http_status, 502), error=exc.message)
    await settings_audit.note(rt, store, actor=settings_audit.user_actor(viewer.user), action="pay_link",
                              detail=f"order #{order_id}")
    return await render(request, viewer, order_id, link=link)
