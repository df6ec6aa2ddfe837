"""The fake BigCommerce's refund ledger (reference section 12, ``openapi/orders.v3.yml``).

``POST /v3/orders/{id}/payment_actions/refund_quotes`` checks a
``RefundQuote_Post`` body and answers ``RefundQuote_Full``: the amount and the
``refund_methods`` (each an array of payment options) open for it. The order's
own offline method is offered as an offline provider (``offline: true``, the
option a merchant picks as "refund through a third-party provider"), next to
"custom"; an online gateway is offered as itself. ``POST .../refunds`` checks a
``RefundRequest_Post`` body against the same rules (the payments must add up to
the items and use an offered option), records the refund, raises the order's
``refunded_amount`` and sets it Partially Refunded or Refunded. Refunds of one
order are made one at a time ("processing multiple concurrent refunds on the
same order is not yet supported"): a second one while the first is being made is
refused with 409. ``GET .../refunds``, ``GET /v3/orders/payment_actions/refunds``
and ``.../refunds/{id}`` read them back. The control panel's Refund button goes
through :func:`create_refund` too, so both fire ``store/order/refund/created``
with ``data: {type: "order", id, refund: {refund_id}}``.

What the docs leave open is decided here, and said so: the order must be in a
paid status (Troubleshooting: "You must receive payment of the order before you
can issue a refund"); ``reason`` on the refund is the first item's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from starlette.background import BackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bcpay.sandbox.bc_rules import paginate
from bcpay.sandbox.bc_state import JSON, ORDER_STATUSES, FakeApiError, iso8601

if TYPE_CHECKING:
    import httpx

    from bcpay.sandbox.bc_state import FakeBigCommerce, Store

REFUNDED, PARTIALLY_REFUNDED = 4, 14
# Statuses of an order whose payment was received: Shipped, Partially Shipped, Awaiting Pickup,
# Awaiting Shipment, Completed, Awaiting Fulfillment, Partially Refunded.
PAID_STATUSES = frozenset({2, 3, 8, 9, 10, 11, PARTIALLY_REFUNDED})
QUANTITY_TYPES = frozenset({"PRODUCT", "GIFT_WRAPPING"})
AMOUNT_TYPES = frozenset({"ORDER", "SHIPPING", "HANDLING", "TAX", "FEE"})
OFFLINE_REASON = "This is an offline payment provider."
CENT = Decimal("0.01")
_MAX_REASON = 1000


def _amount(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FakeApiError(422, f"{where} must be a number.", {where: "not a number"})
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise FakeApiError(422, f"{where} must be a number.", {where: "not a number"}) from None
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(CENT):
        raise FakeApiError(422, f"{where} must be a positive amount with at most 2 decimal places.",
                           {where: "invalid amount"})
    return amount


def _order(state: FakeBigCommerce, store_hash: str, order_id: int) -> JSON:
    order = state.order(store_hash, order_id)
    if int(order["status_id"]) not in PAID_STATUSES:
        name = ORDER_STATUSES[int(order["status_id"])][0]
        raise FakeApiError(422, f"The order is not in a refundable state ({name}): it must be paid first.",
                           {"order_id": "order not paid"})
    return order


def refundable(order: JSON) -> Decimal:
    """What is left to refund on the order."""
    return Decimal(order["total_inc_tax"]) - Decimal(order["refunded_amount"])


def _items(state: FakeBigCommerce, store: Store, order: JSON, items: object) -> list[JSON]:
    """``ItemsRefund`` entries checked and priced: each gains its ``requested_amount`` (a Decimal)."""
    if not isinstance(items, list) or not items:
        raise FakeApiError(422, "items must be a non-empty array.", {"items": "required"})
    lines = store.order_items.get(int(order["id"]), [])
    priced = []
    for n, item in enumerate(items):
        where = f"items[{n}]"
        if not isinstance(item, dict):
            raise FakeApiError(422, f"{where} must be an object.", {where: "not an object"})
        kind, item_id = item.get("item_type"), item.get("item_id")
        if kind not in QUANTITY_TYPES | AMOUNT_TYPES:
            raise FakeApiError(422, f"{where}.item_type is not one of the refund item types.",
                               {f"{where}.item_type": "invalid"})
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            raise FakeApiError(422, f"{where}.item_id must be an integer.", {f"{where}.item_id": "required"})
        reason = item.get("reason", "")
        if not isinstance(reason, str) or len(reason) > _MAX_REASON:
            raise FakeApiError(422, f"{where}.reason must be a string of at most 1000 characters.",
                               {f"{where}.reason": "invalid"})
        if kind in QUANTITY_TYPES:
            quantity = item.get("quantity")
            if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
                raise FakeApiError(422, f"{where}.quantity must be a positive integer.",
                                   {f"{where}.quantity": "required"})
            if kind == "GIFT_WRAPPING" or not 1 <= item_id <= len(lines):
                raise FakeApiError(422, f"{where}: order product {item_id} was not found.",
                                   {f"{where}.item_id": "unknown order product"})
            line = lines[item_id - 1]
            if quantity > int(line["quantity"]):
                raise FakeApiError(422, f"{where}.quantity is more than was ordered.",
                                   {f"{where}.quantity": "too many"})
            amount = Decimal(line["price"]) * quantity
        else:
            if kind == "ORDER" and item_id != order["id"]:
                raise FakeApiError(422, f"{where}.item_id must be the order id for an ORDER refund.",
                                   {f"{where}.item_id": "not this order"})
            amount = _amount(item.get("amount"), f"{where}.amount")
        priced.append({"item_type": kind, "item_id": item_id, "reason": reason,
                       **({"quantity": item["quantity"]} if kind in QUANTITY_TYPES else {}),
                       "requested_amount": amount.quantize(CENT)})
    return priced


def _total(state: FakeBigCommerce, store: Store, order: JSON, body: object) -> tuple[Decimal, list[JSON]]:
    """The amount a quote or refund body asks for, and its priced items; refused past what is left."""
    if not isinstance(body, dict):
        raise FakeApiError(422, "The request body must be a JSON object.")
    if "tax_adjustment_amount" in body and "items" not in body:
        total, items = _amount(body["tax_adjustment_amount"], "tax_adjustment_amount"), []
    else:
        items = _items(state, store, order, body.get("items"))
        total = sum((i["requested_amount"] for i in items), Decimal(0))
    left = refundable(order)
    if total > left:
        raise FakeApiError(422, f"The refund amount {total} is more than the {left:.2f} left to refund.",
                           {"amount": "exceeds the refundable amount"})
    return total, items


def refund_methods(store: Store, order: JSON, amount: Decimal) -> list[list[JSON]]:
    """The ``refund_methods`` a quote offers for ``amount`` of this order."""
    method = store.method_named(str(order["payment_method"]))
    options: list[list[JSON]] = []
    if method is not None and (not method.offline or store.offline_refunds):
        options.append([{"provider_id": method.code, "provider_description": method.name,
                         "amount": float(amount), "offline": method.offline,
                         "offline_provider": method.offline,
                         "offline_reason": OFFLINE_REASON if method.offline else ""}])
    if store.offline_refunds:
        options.append([{"provider_id": "custom", "provider_description": "Custom", "amount": float(amount),
                         "offline": True, "offline_provider": True, "offline_reason": OFFLINE_REASON}])
    return options


def quote(state: FakeBigCommerce, store_hash: str, order_id: int, body: object) -> JSON:
    """``POST .../refund_quotes``: the ``RefundQuote_Full`` for this body."""
    store = state.store(store_hash)
    order = _order(state, store_hash, order_id)
    total, _items_ = _total(state, store, order, body)
    return {"order_id": order_id, "total_refund_amount": float(total), "total_refund_tax_amount": 0,
            "order_level_refund_amount": float(sum((i["requested_amount"] for i in _items_
                                                    if i["item_type"] == "ORDER"), Decimal(0))),
            "rounding": 0, "adjustment": 0, "tax_inclusive": False,
            "refund_methods": refund_methods(store, order, total)}


def _payments(body: JSON, offered: list[list[JSON]], total: Decimal) -> list[JSON]:
    payments = body.get("payments")
    if not isinstance(payments, list) or not payments:
        raise FakeApiError(422, "payments must be a non-empty array.", {"payments": "required"})
    checked = []
    for n, payment in enumerate(payments):
        where = f"payments[{n}]"
        if not isinstance(payment, dict) or not isinstance(payment.get("provider_id"), str):
            raise FakeApiError(422, f"{where}.provider_id is required.", {f"{where}.provider_id": "required"})
        offline = payment.get("offline", False)
        if not isinstance(offline, bool):
            raise FakeApiError(422, f"{where}.offline must be a boolean.", {f"{where}.offline": "invalid"})
        checked.append({"provider_id": payment["provider_id"], "offline": offline,
                        "amount": _amount(payment.get("amount"), f"{where}.amount")})
    if sum((p["amount"] for p in checked), Decimal(0)) != total:
        raise FakeApiError(422, "The payments do not add up to the refund amount.",
                           {"payments": "amounts must match the refund quote"})
    options = {(o["provider_id"], o["offline"]) for method in offered for o in method}
    for p in checked:
        if (p["provider_id"], p["offline"]) not in options:
            raise FakeApiError(422, f"Payment provider {p['provider_id']!r} (offline {p['offline']}) is not a "
                                    "refund method of this order.", {"payments": "not an offered refund method"})
    return checked


@contextlib.asynccontextmanager
async def one_at_a_time(state: FakeBigCommerce, store_hash: str, order_id: int) -> AsyncIterator[None]:
    """Make one refund of the order, taking ``state.refund_delay`` seconds; another meanwhile is refused (409)."""
    store = state.store(store_hash)
    state.order(store_hash, order_id)
    if order_id in store.refunding:
        raise FakeApiError(409, "A refund of this order is already being processed; refunds of one order "
                                "must be made one after another.", {"order_id": "refund in progress"})
    store.refunding.add(order_id)
    try:
        if state.refund_delay > 0:
            await asyncio.sleep(state.refund_delay)
        yield
    finally:
        store.refunding.discard(order_id)


def create_refund(state: FakeBigCommerce, store_hash: str, order_id: int, body: object,
                  *, user_id: int = 0) -> tuple[int, JSON]:
    """``POST .../refunds``: record the refund, move the order; (previous status id, the ``Refund``)."""
    store = state.store(store_hash)
    order = _order(state, store_hash, order_id)
    if not isinstance(body, dict):
        raise FakeApiError(422, "The request body must be a JSON object.")
    total, items = _total(state, store, order, body)
    payments = _payments(body, refund_methods(store, order, total), total)
    refund_id = state.next_refund_id()
    refund: JSON = {
        "id": refund_id, "order_id": order_id, "user_id": user_id, "created": iso8601(state.clock()),
        "reason": next((i["reason"] for i in items if i["reason"]), ""),
        "total_amount": float(total), "total_tax": 0, "uses_merchant_override_values": False,
        "items": [{**i, "requested_amount": f"{i['requested_amount']:.2f}"} for i in items],
        "payments": [{"id": state.next_id(), "provider_id": p["provider_id"], "amount": float(p["amount"]),
                      "offline": p["offline"], "is_declined": False, "declined_message": ""} for p in payments],
    }
    store.refunds[refund_id] = refund
    refunded = Decimal(order["refunded_amount"]) + total
    order["refunded_amount"] = f"{refunded:.4f}"
    previous = int(order["status_id"])
    state.set_order_status(store_hash, order_id,
                           REFUNDED if refunded >= Decimal(order["total_inc_tax"]) else PARTIALLY_REFUNDED)
    return previous, refund


def webhook_events(order: JSON, previous: int, refund: JSON) -> list[tuple[str, JSON]]:
    """What a new refund fires: ``store/order/refund/created``, and the status change it made."""
    events: list[tuple[str, JSON]] = [("store/order/refund/created", {
        "type": "order", "id": order["id"], "refund": {"refund_id": refund["id"]}})]
    if previous != int(order["status_id"]):
        events.append(("store/order/statusUpdated", {
            "type": "order", "id": order["id"],
            "status": {"previous_status_id": previous, "new_status_id": int(order["status_id"])}}))
    return events


def list_refunds(store: Store, *, order_ids: set[int] | None = None,
                 refund_ids: set[int] | None = None) -> list[JSON]:
    """Refunds in ascending id order, optionally of some orders or with some ids."""
    return [r for rid, r in sorted(store.refunds.items())
            if (order_ids is None or r["order_id"] in order_ids) and (refund_ids is None or rid in refund_ids)]


def id_set(raw: str | None, name: str) -> set[int] | None:
    """A comma-separated ``...:in`` filter as a set of ids."""
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise FakeApiError(400, f"{name} must be a comma-separated list of integers.")
    return {int(p) for p in parts}


def get_refund(store: Store, refund_id: int) -> JSON:
    """One refund, or 404."""
    refund = store.refunds.get(refund_id)
    if refund is None:
        raise FakeApiError(404, "The requested refund was not found.")
    return refund


# --- the HTTP handlers (bigcommerce.py routes them behind its gate) ---------------------------


async def _body(request: Request) -> object:
    try:
        return await request.json()
    except ValueError:
        raise FakeApiError(400, "The request body is not valid JSON.") from None


async def post_quote(request: Request, state: FakeBigCommerce, store: Store) -> Response:
    """``POST /v3/orders/{order_id}/payment_actions/refund_quotes`` (201)."""
    order_id = request.path_params["order_id"]
    return JSONResponse({"data": quote(state, store.store_hash, order_id, await _body(request)), "meta": {}},
                        status_code=201)


async def post_refund(request: Request, state: FakeBigCommerce, store: Store,
                      webhook_client: httpx.AsyncClient | None) -> Response:
    """``POST /v3/orders/{order_id}/payment_actions/refunds`` (201); fires the refund's webhooks."""
    order_id = request.path_params["order_id"]
    body = await _body(request)
    async with one_at_a_time(state, store.store_hash, order_id):
        previous, refund = create_refund(state, store.store_hash, order_id, body)
    return JSONResponse({"data": refund, "meta": {}}, status_code=201,
                        background=fire(state, store.store_hash, webhook_client, previous, refund))


def fire(state: FakeBigCommerce, store_hash: str, http: httpx.AsyncClient | None, previous: int,
         refund: JSON) -> BackgroundTasks | None:
    """The background tasks delivering a new refund's webhooks (none without an HTTP client)."""
    if http is None:
        return None
    tasks = BackgroundTasks()
    for scope, data in webhook_events(state.order(store_hash, refund["order_id"]), previous, refund):
        tasks.add_task(state.fire_webhook, http, store_hash, scope, data)
    return tasks


async def order_refunds(request: Request, state: FakeBigCommerce, store: Store) -> Response:
    """``GET /v3/orders/{order_id}/payment_actions/refunds``."""
    order_id = request.path_params["order_id"]
    state.order(store.store_hash, order_id)
    return JSONResponse(paginate(list_refunds(store, order_ids={order_id}), request))


async def all_refunds(request: Request, state: FakeBigCommerce, store: Store) -> Response:
    """``GET /v3/orders/payment_actions/refunds`` (``order_id:in``, ``id:in``)."""
    q = request.query_params
    found = list_refunds(store, order_ids=id_set(q.get("order_id:in"), "order_id:in"),
                         refund_ids=id_set(q.get("id:in"), "id:in"))
    return JSONResponse(paginate(found, request))


async def one_refund(request: Request, state: FakeBigCommerce, store: Store) -> Response:
    """``GET /v3/orders/payment_actions/refunds/{refund_id}``."""
    return JSONResponse({"data": get_refund(store, request.path_params["refund_id"]), "meta": {}})


__all__ = ["create_refund", "get_refund", "list_refunds", "one_at_a_time", "quote", "refund_methods", "refundable"]
