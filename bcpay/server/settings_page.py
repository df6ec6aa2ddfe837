"""The merchant settings page, rendered inside the BigCommerce control panel's iframe.

Shows and edits the CeleryPay credentials (the secret is write-only: shown as
set or not set, never echoed; an empty field keeps it) and the store's
payment settings; shows health at a glance (snippet, webhooks, payment
method with the control-panel fix steps, CeleryPay credentials, last
notification, dead jobs, anomalies) and recent payments with a link to each
order and a refund form that asks for confirmation first. Every handler
goes through :func:`bcpay.server.bcapp.viewer_of` (GET) or
:func:`bcpay.server.bcapp.posted` (POST, CSRF checked). Health checks call
BigCommerce and CeleryPay; a failing one shows in the panel instead of
breaking the page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bcpay import outbox, provisioning, refunds, roles, rules, settings_audit, stores, unpaid
from bcpay.errors import BcpayError, ConflictError, InvalidInputError, NotFoundError
from bcpay.money import format_amount, from_minor, to_minor
from bcpay.provisioning import Check
from bcpay.runtime import Runtime
from bcpay.server.bcapp import Handler, Viewer, bc_page, field, page, posted, runtime_of, viewer_of
from bcpay.storage import queries as q
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import payments
from bcpay.storage.schema import refunds as refund_rows

log = logging.getLogger("bcpay.settings_page")

ORDER_STATUSES = rules.STATUS_NAMES  # for the status pickers
DONE_MESSAGES = {
    "saved": "Settings saved.",
    "refunded": "Refund sent to CeleryPay.",
    "resolved": "Anomaly marked as resolved.",
    "provisioned": "Storefront snippet and webhooks are in place.",
    "old_secret_revoked": "The previous CeleryPay secret is no longer accepted.",
    "access_changed": "Who may change payment settings was updated.",
}
SHOWN_FIELDS = (
    "merchant_id",
    "environment",
    "method_name",
    "paid_status_id",
    "mismatch_status_id",
    "on_expired",
    "return_to",
    "unpaid_hold",
)  # kept after an error; never the secret
MAX_ROW_ID = 2**31 - 1  # primary keys are 32-bit integers
_REFUND_KEY = re.compile(r"settings-[A-Za-z0-9_-]{16,40}")


# --- what it shows -------------------------------------------------


@dataclass(frozen=True)
class PaymentRow:
    """One recent payment as the page lists it."""

    id: int
    order_id: int
    amount: str
    status: str
    created: str
    order_url: str
    refundable: str  # decimal text, '' when nothing can be refunded
    refunds: tuple[str, ...] = ()  # each with bcpay's number, CeleryPay's id and BigCommerce's (refunds.describe)


def order_url(store: StoreRecord, order_id: int) -> str:
    """The order in the control panel (``{control_panel_url}/manage/orders/{id}``)."""
    return f"{provisioning.control_panel_base(store)}/manage/orders/{order_id}"


async def _checked(name: str, run: Awaitable[Check]) -> Check:
    try:
        return await run
    except BcpayError as exc:
        return Check(name, False, f"could not check: {exc.message[:200]}")


async def _checked_all(name: str, run: Awaitable[list[Check]]) -> list[Check]:
    try:
        return await run
    except BcpayError as exc:
        return [Check(name, False, f"could not check: {exc.message[:200]}")]


async def health(rt: Runtime, store: StoreRecord) -> list[Check]:
    """The health panel: BigCommerce and CeleryPay checks, run together, failures shown."""
    per_channel, *others = await asyncio.gather(
        _checked_all("storefront channels", provisioning.check_channels(rt, store)),
        _checked("webhooks", provisioning.check_webhooks(rt, store)),
        _checked("CeleryPay credentials", provisioning.check_celerypay(rt, store)),
        _checked("stock of cancelled orders", provisioning.check_inventory(rt, store)),
    )
    return [*per_channel, *others]


async def _payment_rows(rt: Runtime, store: StoreRecord) -> list[PaymentRow]:
    rows = []
    async with rt.db.read() as conn:
        for p in await q.list_payments(conn, store_id=store.id, limit=25):
            left = await refunds.refundable(conn, p) if p.status in rules.PAID else 0
            rows.append(
                PaymentRow(
                    p.id,
                    p.order_id,
                    format_amount(p.amount, p.currency),
                    p.status,
                    f"{p.created_at:%Y-%m-%d %H:%M} UTC",
                    order_url(store, p.order_id),
                    str(from_minor(left, p.currency)) if left > 0 else "",
                    tuple(refunds.describe(dict(r)) for r in (await conn.execute(
                        select(refund_rows).where(refund_rows.c.payment_id == p.id).order_by(refund_rows.c.id)
                    )).mappings()),
                )
            )
    return rows


async def render_settings(
    request: Request,
    viewer: Viewer,
    *,
    error: str = "",
    status: int = 200,
    entered: dict[str, Any] | None = None,
    version: str | None = None,
) -> HTMLResponse:
    """The settings page; ``entered`` keeps what the merchant typed after an error, and ``version``
    the settings version that typing started from (else the store's current one)."""
    rt, store = runtime_of(request), viewer.store
    policy = rt.policy(store)
    checks = await health(rt, store)
    payments = await _payment_rows(rt, store)
    async with rt.db.read() as conn:
        anomalies = await q.list_anomalies(conn, store_id=store.id)
    dead = await outbox.list_jobs(rt.db, state=outbox.DEAD, store_id=store.id, limit=20)
    values: dict[str, Any] = {
        "merchant_id": store.merchant_id or "",
        "environment": store.environment,
        "method_name": policy.method_name,
        "paid_status_id": policy.paid_status_id,
        "mismatch_status_id": policy.mismatch_status_id,
        "on_expired": policy.on_expired,
        "return_to": policy.return_to,
        "unpaid_hold": policy.unpaid_hold,
    }
    values.update(entered or {})
    # What the button repairs: a snippet (on any channel: its fix is an install-script) or the webhooks.
    fixable = any(not c.ok and (c.name in ("storefront snippet", "webhooks")
                                or any(step.startswith("bcpay install-script") for step in c.fix)) for c in checks)
    return bc_page(
        request,
        "settings.html",
        status,
        store_hash=store.store_hash,
        store=store,
        user=viewer.user,
        csrf=viewer.csrf,
        values=values,
        version=version or stores.settings_version(store),
        checks=checks,
        fixable=fixable,
        secret_set=bool(store.celerypay_secret_enc),
        old_secret_until=(store.celerypay_old_secret_until
                          if store.celerypay_old_secret_enc and store.celerypay_old_secret_until
                          and store.celerypay_old_secret_until > rt.now() else None),
        payments=payments,
        emails=provisioning.email_steps(rt, store),
        instructions=provisioning.instructions_wording(rt, store),
        cancelled_unpaid=[
            {"order_id": c.order_id, "order_url": order_url(store, c.order_id),
             "at": f"{c.at:%Y-%m-%d %H:%M} UTC", "detail": c.detail}
            for c in await unpaid.recent(rt, store)
        ],
        dead_jobs=dead,
        anomalies=[
            {**a, "amount_text": format_amount(a["amount"], a["currency"])} for a in anomalies
        ],
        paid_statuses={k: v for k, v in ORDER_STATUSES.items() if k in rules.PAID_STATUSES},
        mismatch_statuses={k: v for k, v in ORDER_STATUSES.items() if k in rules.MISMATCH_STATUSES},
        done=DONE_MESSAGES.get(request.query_params.get("done", ""), ""),
        error=error,
        **await _roles_context(rt, viewer),
    )


async def _roles_context(rt: Runtime, viewer: Viewer) -> dict[str, Any]:
    """Read-only or not, the owner's list of who may act, the audit rows and the sandbox warning."""
    store = viewer.store
    return {
        "readonly": not roles.may_act(viewer.user),
        "team": await roles.team(rt, store) if viewer.user.is_owner else [],
        "audit": await settings_audit.recent(rt, store),
        "sandbox_warning": stores.sandbox_warning(rt.settings, store),
    }


def acting(handler: Handler) -> Handler:
    """Only for users who may act (:func:`bcpay.roles.may_act`): anyone else gets the page read-only,
    403 ``not_allowed``, and nothing changes."""

    async def endpoint(request: Request) -> Response:
        viewer = await viewer_of(request)
        if not roles.may_act(viewer.user):
            response = await render_settings(
                request, viewer, status=403,
                error="Only the store owner, or a user the owner allows, may change this. Nothing was changed.",
            )
            response.headers["X-Bcpay-Error"] = roles.NotAllowed.code
            return response
        return await handler(request)

    endpoint.__doc__ = handler.__doc__
    return endpoint


def _actor(viewer: Viewer) -> str:
    return settings_audit.user_actor(viewer.user)


def _done(what: str) -> Response:
    return RedirectResponse(f"/bc/settings?done={what}", status_code=303)


# --- routes ----------------------------------------------------------


@page
async def settings_page(request: Request) -> Response:
    """GET /bc/settings: health, settings, anomalies, recent payments."""
    return await render_settings(request, await viewer_of(request))


def settings_changes(form: FormData, rt: Runtime) -> dict[str, Any]:
    """Per-store overrides from the form; a value equal to the global default removes the override."""
    method = field(form, "method_name", 100)
    if not method:
        raise InvalidInputError(
            "The payment method name must not be empty.", code="invalid_setting"
        )
    wanted: dict[str, Any] = {"method_name": method}
    for key in ("paid_status_id", "mismatch_status_id"):
        text = field(form, key, 3)
        allowed = rules.PAID_STATUSES if key == "paid_status_id" else rules.MISMATCH_STATUSES
        if not (text.isascii() and text.isdigit()) or int(text) not in allowed:
            raise InvalidInputError(
                f"Choose an order status for {key.replace('_id', '').replace('_', ' ')}.",
                code="invalid_setting",
            )
        wanted[key] = int(text)
    for key, choices in (
        ("on_expired", ("keep", "cancel")),
        ("return_to", ("confirmation", "bcpay")),
    ):
        wanted[key] = field(form, key, 20)
        if wanted[key] not in choices:
            raise InvalidInputError(f"Choose one of: {', '.join(choices)}.", code="invalid_setting")
    hold = field(form, "unpaid_hold", 6)
    if "unpaid_hold" in form:  # absent from a page opened before this release: left as it is
        if not (hold.isascii() and hold.isdigit()) or int(hold) > 43200:
            raise InvalidInputError(
                "Enter the minutes an unpaid order is kept, 0 (keep it) to 43200.", code="invalid_setting"
            )
        wanted["unpaid_hold"] = int(hold)
    defaults = rt.settings.payments
    # The hold stays the store's own even at the global value: a merchant's 0 must not follow a later
    # global hold (a new store has its own hold from the start).
    return {k: (None if v == getattr(defaults, k) and k != "unpaid_hold" else v) for k, v in wanted.items()}


@page
@acting
async def settings_save(request: Request) -> Response:
    """POST /bc/settings: CeleryPay credentials (secret write-only) and payment settings."""
    viewer, form = await posted(request)
    rt, store = runtime_of(request), viewer.store
    merchant_id, secret = field(form, "merchant_id", 64), field(form, "api_secret", 1024)
    environment = field(form, "environment", 20)
    version = field(form, "version", 64)
    try:
        if version and version != stores.settings_version(store):
            # Someone saved since this form was shown: say so before judging the form against what is
            # stored now (a changed merchant id would otherwise read as "enter the API secret").
            raise ConflictError("the settings changed since the page was shown", code="settings_changed")
        if environment not in ("sandbox", "production"):
            raise InvalidInputError("Choose sandbox or production.", code="invalid_environment")
        if secret:
            stores.check_merchant(merchant_id, secret)
        elif merchant_id != (store.merchant_id or ""):
            raise InvalidInputError(
                "Enter the API secret of this merchant id.", code="missing_secret"
            )
        if not merchant_id and environment != store.environment:
            raise InvalidInputError(
                "Enter your CeleryPay merchant id first.", code="invalid_merchant_id"
            )
        if not secret and environment != store.environment and not store.celerypay_secret_enc:
            # Kept merchant id, no secret (cleared by an uninstall): configure_merchant would refuse.
            raise InvalidInputError(
                "Enter the API secret of this merchant id.", code="missing_secret"
            )
        changes = settings_changes(form, rt)
        if secret:  # CeleryPay must take them (unreachable: saved, and the health list says so after)
            await stores.verify_merchant(rt, store, merchant_id, secret, environment)
        # Everything is validated above, so neither call below can fail half-way. A form without a
        # version (a page opened before this release) saves as before.
        updated = await stores.update_settings(rt, store.store_hash, changes,
                                               expected_version=version or None)
        if secret or (merchant_id and environment != store.environment):
            await stores.configure_merchant(
                rt,
                store.store_hash,
                merchant_id=merchant_id,
                api_secret=secret or None,
                environment=environment,
            )
    except InvalidInputError as exc:
        entered: dict[str, Any] = {k: field(form, k, 100) for k in SHOWN_FIELDS}
        for key in ("paid_status_id", "mismatch_status_id"):
            entered[key] = int(entered[key]) if entered[key].isascii() and entered[key].isdigit() else None
        if "unpaid_hold" not in form:
            del entered["unpaid_hold"]
        return await render_settings(
            request, viewer, error=exc.message, status=400, entered=entered, version=version or None
        )
    except ConflictError:
        # Someone saved in between: show what is stored now, with its version, and write nothing.
        async with rt.db.read() as conn:
            current = await q.require_store(conn, store.store_hash)
        return await render_settings(
            request, dataclasses.replace(viewer, store=current), status=409,
            error="Someone changed these settings after you opened this page (another admin, or this "
                  "page in another tab). Nothing was saved: the page now shows the settings as stored; "
                  "make your change again.",
        )
    log.info("settings of %s changed by user %s", store.store_hash, viewer.user.user_id)
    await settings_audit.note(rt, store, actor=_actor(viewer), action="settings_saved",
                              detail=_what_changed(store, updated, merchant_id, bool(secret), environment))
    if rt.policy(updated).method_name != rt.policy(store).method_name:
        # The snippet carries the method name; a failure here shows as "outdated" with a Fix button.
        try:
            await provisioning.install_script(rt, updated)
        except BcpayError as exc:
            log.warning("could not update the snippet of %s: %r", store.store_hash, exc)
    return _done("saved")


def _what_changed(before: StoreRecord, after: StoreRecord, merchant_id: str, new_secret: bool,
                  environment: str) -> str:
    """The audit detail of a save: which fields changed (never a secret's value)."""
    parts = []
    if merchant_id != (before.merchant_id or ""):
        parts.append(f"merchant id {before.merchant_id or '-'} -> {merchant_id or '-'}")
    if new_secret:
        parts.append("new API secret")
    if environment != before.environment and merchant_id:
        parts.append(f"environment {before.environment} -> {environment}")
    for key in sorted(set(before.settings) | set(after.settings)):
        if before.settings.get(key) != after.settings.get(key):
            parts.append(f"{key} {before.settings.get(key, 'default')} -> {after.settings.get(key, 'default')}")
    return "; ".join(parts) or "no change"


async def _store_payment(rt: Runtime, store: StoreRecord, text: str) -> PaymentRecord:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ROW_ID:
        raise InvalidInputError("Choose a payment to refund.", code="invalid_payment")
    query = select(payments).where(payments.c.id == int(text), payments.c.store_id == store.id)
    async with rt.db.read() as conn:
        row = (await conn.execute(query)).mappings().first()
    if row is None:
        raise NotFoundError("That payment does not belong to this store.", code="unknown_payment")
    return PaymentRecord.from_row(row)


@page
@acting
async def refund(request: Request) -> Response:
    """POST /bc/settings/refund: first shows "Refund X of order N?", then (confirm=yes) refunds."""
    viewer, form = await posted(request)
    rt, store = runtime_of(request), viewer.store
    try:
        payment = await _store_payment(rt, store, field(form, "payment_id", 20))
        if payment.status not in rules.PAID:
            raise InvalidInputError(
                f"Order #{payment.order_id} has no captured payment to refund.",
                code="not_refundable",
            )
        async with rt.db.read() as conn:
            left = await refunds.refundable(conn, payment)
        text = field(form, "amount", 32)
        amount = to_minor(text, payment.currency) if text else left
        if amount <= 0 or amount > left:
            raise InvalidInputError(
                f"You can refund between 0 and {format_amount(max(left, 0), payment.currency)} "
                f"of order #{payment.order_id}.",
                code="over_refund",
            )
        reason = field(form, "reason", 200)
        if field(form, "confirm", 5) != "yes":
            return bc_page(
                request,
                "refund_confirm.html",
                store_hash=store.store_hash,
                payment=payment,
                amount_text=format_amount(amount, payment.currency),
                amount=str(from_minor(amount, payment.currency)),
                reason=reason,
                csrf=viewer.csrf(),
                key="settings-" + secrets.token_urlsafe(18),
            )
        key = field(form, "key", 64)
        if not _REFUND_KEY.fullmatch(key):
            raise InvalidInputError(
                "Start the refund again from the payments list.", code="invalid_refund_key"
            )
        await refunds.request_refund(
            rt,
            store,
            payment,
            amount=amount,
            key=key,
            reason=reason or f"refunded in the control panel by {viewer.user.email}",
        )
    except BcpayError as exc:
        return await render_settings(
            request, viewer, error=exc.message, status=min(exc.http_status, 502)
        )
    log.info("refund of order %s (%s) by user %s", payment.order_id, amount, viewer.user.user_id)
    await settings_audit.note(rt, store, actor=_actor(viewer), action="refund",
                              detail=f"order #{payment.order_id}: {format_amount(amount, payment.currency)}")
    return _done("refunded")


@page
@acting
async def resolve_anomaly(request: Request) -> Response:
    """POST /bc/settings/anomalies/{anomaly_id}/resolve: mark an open anomaly of this store resolved."""
    viewer, form = await posted(request)
    rt, store = runtime_of(request), viewer.store
    anomaly_id = int(request.path_params["anomaly_id"])
    note = field(form, "note", 200)
    refused: BcpayError | None = None
    async with rt.db.transaction() as conn:
        open_ids = {a["id"] for a in await q.list_anomalies(conn, store_id=store.id)}
        if anomaly_id not in open_ids:
            resolved = False
        else:
            detail = f"resolved in the control panel by {viewer.user.email}" + (
                f": {note}" if note else ""
            )
            try:
                resolved = await q.resolve_anomaly(conn, anomaly_id, rt.now(), detail)
                if resolved:
                    await settings_audit.record(conn, rt, store, actor=_actor(viewer), action="anomaly_resolved",
                                                detail=f"anomaly {anomaly_id}" + (f": {note}" if note else ""))
            except BcpayError as exc:  # a refund still in doubt: settled by refund-resolve, not here
                refused = exc
    if refused is not None:
        return await render_settings(request, viewer, error=refused.message, status=refused.http_status)
    if not resolved:
        return await render_settings(
            request, viewer, error="That anomaly is not open (or not of this store).", status=404
        )
    return _done("resolved")


@page
@acting
async def reprovision(request: Request) -> Response:
    """POST /bc/settings/provision: reinstall the snippet and (re-)activate the webhooks."""
    viewer, _ = await posted(request)
    rt, store = runtime_of(request), viewer.store
    try:
        await provisioning.install_script(rt, store)
        await provisioning.register_webhooks(rt, store)
    except BcpayError as exc:
        return await render_settings(
            request, viewer, error=f"BigCommerce refused: {exc.message[:300]}", status=502
        )
    await settings_audit.note(rt, store, actor=_actor(viewer), action="provisioned",
                              detail="snippet and webhooks reinstalled")
    return _done("provisioned")


@page
@acting
async def revoke_old_secret(request: Request) -> Response:
    """POST /bc/settings/revoke-old-secret: end the previous CeleryPay secret's grace now (after a leak)."""
    viewer, _ = await posted(request)
    rt, store = runtime_of(request), viewer.store
    if not await stores.revoke_old_secret(rt, store.store_hash):
        return await render_settings(request, viewer, error="No previous CeleryPay secret is accepted any more.",
                                     status=409)
    log.info("old CeleryPay secret of %s revoked by user %s", store.store_hash, viewer.user.user_id)
    await settings_audit.note(rt, store, actor=_actor(viewer), action="old_secret_revoked")
    return _done("old_secret_revoked")


@page
async def user_access(request: Request) -> Response:
    """POST /bc/settings/users/{user_id}/access: the owner allows (allowed=yes) or stops allowing a user to act."""
    viewer, form = await posted(request)
    rt = runtime_of(request)
    try:
        await roles.allow(rt, viewer.store, by=viewer.user, user_id=int(request.path_params["user_id"]),
                          allowed=field(form, "allowed", 5) == "yes")
    except BcpayError as exc:
        response = await render_settings(request, viewer, error=exc.message, status=exc.http_status)
        response.headers["X-Bcpay-Error"] = exc.code
        return response
    return _done("access_changed")
