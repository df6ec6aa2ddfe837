"""BigCommerce webhooks: authenticate, deduplicate on ``hash``, queue the work.

Each hook is registered with a per-store random secret in its custom headers
(``X-Bcpay-Secret``); a call without it is refused. For a store that
installed the app, the Standard Webhooks signature (reference section 8) is
required as well; an uninstall notice is confirmed with BigCommerce before
anything is forgotten. The payload is only a hint: the job re-reads the
order before acting.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Mapping
from typing import Any

from bcpay import order_reads, outbox, refund_ledger, rules
from bcpay.errors import InvalidInputError, SignatureError, UpstreamNotFound
from bcpay.provisioning import WEBHOOK_SECRET_HEADER
from bcpay.runtime import Runtime
from bcpay.signatures import verify_standard_webhook
from bcpay.storage import queries as q
from bcpay.stores import uninstall_confirmed

MAX_BODY = 64 * 1024
CHANNEL_SCOPES = frozenset({"store/channel/created", "store/channel/updated"})
REFUND_SCOPE = "store/order/refund/created"


async def receive(rt: Runtime, store_hash: str, body: bytes, headers: Mapping[str, str]) -> str:
    """Handle one webhook delivery; returns what happened (for logs and tests)."""
    if len(body) > MAX_BODY:
        raise InvalidInputError("webhook body too large", code="body_too_large")
    async with rt.db.read() as conn:
        store = await q.get_store(conn, store_hash)
    if store is None or not store.webhook_secret_enc:
        raise SignatureError("unknown store or no webhook secret")
    expected = rt.vault.open(store.webhook_secret_enc)
    given = headers.get(WEBHOOK_SECRET_HEADER.lower(), "")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise SignatureError("missing or wrong webhook secret header")
    # Our own secret header above authenticates every delivery. For an app install BigCommerce signs
    # every callback as Standard Webhooks with the app's client secret (reference section 8; the
    # "HTTPS webhooks" docs): there the signature is required, and a delivery without it is refused.
    # Hooks made with a store's API account are signed (if at all) with that account's secret, which
    # bcpay never sees ("unconfirmed" in the reference): the secret header alone authenticates them.
    if store.source == "app":
        if not rt.settings.app.client_secret:
            raise SignatureError("no app.client_secret to check this app store's webhook signature",
                                 code="secret_missing")
        secret = rt.settings.app.client_secret.get().encode("utf-8")
        verify_standard_webhook(body, headers, secret=secret, now=rt.wall())
    payload = _parse(body)
    if payload.get("producer") not in (None, f"stores/{store_hash}"):
        raise InvalidInputError("webhook is for another store", code="wrong_store")
    scope = str(payload["scope"])
    async with rt.db.transaction() as conn:
        fresh = await q.record_webhook(conn, hash_=str(payload["hash"])[:128], store_id=store.id, scope=scope,
                                       now=rt.now())
        if not fresh:
            return "duplicate"
        if scope == "store/order/statusUpdated":
            data = payload.get("data") or {}
            order_id = data.get("id")
            if not isinstance(order_id, int) or isinstance(order_id, bool) or not 0 < order_id < 10**12:
                raise InvalidInputError("webhook data.id is not an order id", code="invalid_webhook")
            await order_reads.forget(conn, store.id, order_id)
            await outbox.enqueue(conn, "order_status_changed", {"order_id": order_id}, now=rt.now(),
                                 store_id=store.id)
            return "queued"
        if scope == REFUND_SCOPE:
            # A refund in BigCommerce's ledger (reference section 12): the job reads it and, if it is not
            # bcpay's own, makes it at CeleryPay. One job per refund id, however often it is delivered.
            data = payload.get("data") or {}
            order_id = data.get("id") if isinstance(data, dict) else None
            refund = data.get("refund") if isinstance(data, dict) else None
            refund_id = refund.get("refund_id") if isinstance(refund, dict) else None
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 10**12
                       for v in (order_id, refund_id)):
                raise InvalidInputError("webhook data lacks the order and refund ids", code="invalid_webhook")
            assert isinstance(order_id, int) and isinstance(refund_id, int)
            await refund_ledger.queue(conn, rt, store, order_id, refund_id)
            return "queued"
        if scope in CHANNEL_SCOPES:
            # A storefront created, renamed, switched on or off (channels.mdx): read the channels and fix
            # the snippets. The payload names only the channel; the job reads them all (a hint, like any).
            data = payload.get("data") or {}
            channel_id = data.get("id") if isinstance(data, dict) else None
            if not isinstance(channel_id, int) or isinstance(channel_id, bool) or not 0 < channel_id < 10**9:
                raise InvalidInputError("webhook data.id is not a channel id", code="invalid_webhook")
            await outbox.enqueue(conn, "refresh_channels", {"channel_id": channel_id}, now=rt.now(),
                                 store_id=store.id)
            return "queued"
    if scope == "store/app/uninstalled":
        # A claim like any payload: forgotten only once BigCommerce refuses the token.
        done = await uninstall_confirmed(rt, store, reason="the store/app/uninstalled webhook")
        return "uninstalled" if done else "uninstall pending"
    return "ignored"


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInputError("webhook body is not JSON", code="invalid_json") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("scope"), str) or not payload.get("hash"):
        raise InvalidInputError("webhook body lacks scope or hash", code="invalid_webhook")
    return payload


async def order_status_changed(rt: Runtime, store_id: int, order_id: int) -> str:
    """Re-read the order; cancel its open payment if cancelled, refund if refunded (deprecated opt-in)."""
    from bcpay import payflow, refunds

    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, store_id)
        attempts = await q.order_attempts(conn, store_id, order_id)
    if not attempts:
        return "not ours"
    try:
        order = await rt.bigcommerce(store).get_order(order_id)
    except UpstreamNotFound:
        return "order gone"
    if order.status_id == rules.STATUS_CANCELLED:
        open_ = [a for a in attempts if a.status in rules.OPEN]
        for attempt in open_:
            await payflow.cancel_attempt(rt, store, attempt, reason="order cancelled in BigCommerce")
        return "cancelled payment" if open_ else "nothing open"
    policy = rt.policy(store)
    if order.status_id == rules.STATUS_REFUNDED and policy.refund_on_status and policy.refund_from_bigcommerce:
        return "no action"  # the refund that set it Refunded comes through store/order/refund/created
    if order.status_id == rules.STATUS_REFUNDED and policy.refund_on_status:
        paid = await refunds.paid_attempt(rt, store, order_id)
        try:  # everything left, decided under the order's lock; the key makes a retried job resume it
            await refunds.request_refund(rt, store, paid, reason="order set to Refunded in BigCommerce",
                                         key=f"status-refund-{paid.id}")
        except InvalidInputError as exc:
            if exc.code != "over_refund":
                raise
            return "no action"  # nothing left to refund
        return "refunded"
    return "no action"


def standard_webhook_secret(client_secret: str) -> str:
    """The ``whsec_`` form of the app secret, as BigCommerce's docs feed it to standardwebhooks."""
    return "whsec_" + base64.b64encode(client_secret.encode("utf-8")).decode("ascii")
