"""Operator helpers behind the CLI: lookups, simulated notifications, replays, doctor.

Everything here is library code (no printing, no Typer): ``bcpay/cli*.py``
renders what these functions return. The pieces, by what an operator asks:

- "which attempt is this?"  :func:`find_attempt`, :func:`payment_detail`;
- "show me the server handles a notification": :func:`build_notification`,
  :func:`simulate_notify`;
- "apply that stored event again": :func:`replay_event`;
- "what needs my attention?": anomalies, dead jobs, :func:`doctor`;
- housekeeping: :func:`prune_events`, :func:`parse_duration`, store add/remove.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from bcpay import notifications, provisioning, quota, settings_audit, stores
from bcpay.clients.celerypay import parse_event
from bcpay.config import unknown_env_names
from bcpay.errors import (
    BcpayError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from bcpay.money import to_minor
from bcpay.provisioning import Check
from bcpay.refunds import ledger_id
from bcpay.runtime import Runtime
from bcpay.signatures import sign_notification
from bcpay.storage import migrate
from bcpay.storage import queries as q
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import anomalies, audit_log, events, jobs, payments, refunds

# Raw events must outlive CeleryPay's retries (about 47 hours) with room to spare:
# dedupe by event id only works while the event is still stored (issue 11).
MIN_EVENT_RETENTION = timedelta(days=30)
SIMULATED_STATUSES = ("succeeded", "failed", "expired", "cancelled")
_DURATION = re.compile(r"([0-9]{1,6})\s*([smhdw])")  # ASCII digits: \d also takes other scripts' digits
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = timedelta(days=3650)  # "since" and "older than" reach back ten years at most


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` as a timedelta (a bare number is days; at most 10 years)."""
    value = (text or "").strip().lower()
    if value.isascii() and value.isdigit():
        value += "d"
    match = _DURATION.fullmatch(value)
    if not match:
        raise InvalidInputError(
            f"not a duration: {text!r} (expected e.g. 7d, 12h, 30m)", code="invalid_duration"
        )
    period = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if period > MAX_DURATION:
        raise InvalidInputError(f"a duration of at most 10 years (3650d), not {text!r}", code="invalid_duration")
    return period


def iso(moment: datetime | None) -> str | None:
    """A UTC timestamp as CeleryPay and our JSON output write it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


# --- stores -----------------------------------------------------------------------------


async def get_store(rt: Runtime, store_hash: str) -> StoreRecord:
    """The registered store, after checking the hash's shape (NotFoundError if unknown)."""
    stores.check_store_hash(store_hash)
    async with rt.db.read() as conn:
        return await q.require_store(conn, store_hash)


async def list_stores(rt: Runtime) -> list[StoreRecord]:
    """Every store bcpay knows, installed or not."""
    async with rt.db.read() as conn:
        return await q.list_stores(conn)


def parse_scopes(text: str) -> tuple[str, ...]:
    """A space- or comma-separated scope list as the API account page shows it."""
    return tuple(s for s in re.split(r"[\s,]+", text.strip()) if s)


def missing_scopes(scopes: tuple[str, ...]) -> list[str]:
    """The scopes bcpay needs that ``scopes`` does not give (a modify scope covers read-only)."""
    def has(needed: str) -> bool:
        base = needed.removesuffix("_read_only")
        return any(s in (needed, base) for s in scopes)

    return [s for s in stores.REQUIRED_SCOPES if not has(s)]


async def add_store(rt: Runtime, store_hash: str, *, access_token: str, scopes: tuple[str, ...]) -> StoreRecord:
    """Register a store-level API account: check scopes and token, then store it encrypted.

    A store-level token cannot list its own scopes through the API, so the
    operator states them (copied from the API account page); the token itself
    is proven by reading the store's information with it.
    """
    stores.check_store_hash(store_hash)
    missing = missing_scopes(scopes)
    if missing:
        raise InvalidInputError(
            f"the API account lacks scopes bcpay needs: {', '.join(missing)}", code="missing_scopes"
        )
    try:
        info = await stores.fetch_store_info(rt, store_hash, access_token)
    except UpstreamRejected as exc:
        # The token (or the store hash) the operator gave is wrong, as CeleryPay's refusal of a secret is
        # in stores.verify_merchant: bad input, not a failed operation.
        raise InvalidInputError(
            f"BigCommerce refused this access token for store {store_hash}: {exc.message}; nothing was saved",
            code="token_refused",
        ) from None
    return await stores.register(
        rt, store_hash, access_token=access_token, source="api_account", scopes=" ".join(scopes), info=info
    )


async def remove_store(rt: Runtime, store_hash: str) -> list[str]:
    """Take bcpay off a store: delete its snippet and hooks (best effort), then forget its secrets."""
    store = await get_store(rt, store_hash)
    notes: list[str] = []
    if store.access_token_enc:
        try:
            notes.append(f"snippet: {await provisioning.install_script(rt, store, remove=True)}")
            notes.append(f"webhooks: {await provisioning.remove_webhooks(rt, store)} removed")
            if store.source == "app":
                notes.append(f"order page panel: {await provisioning.remove_app_extension(rt, store)} removed")
        except BcpayError as exc:
            notes.append(f"could not clean up the store ({exc.message}); remove the script by hand")
    await stores.remove(rt, store_hash)
    return notes


async def ensure_schema(rt: Runtime) -> None:
    """Migrate SQLite on start (one file, one host); PostgreSQL must be migrated by the operator."""
    await migrate.ready_schema(rt.db)


# --- payments -----------------------------------------------------------------------------


async def find_attempt(rt: Runtime, ref: str, store_hash: str | None = None) -> tuple[StoreRecord, PaymentRecord]:
    """The attempt named by a CeleryPay payment id, an order id (latest attempt) or a pay token."""
    ref = (ref or "").strip()
    async with rt.db.read() as conn:
        store = await q.require_store(conn, stores.check_store_hash(store_hash)) if store_hash else None
        attempt: PaymentRecord | None = None
        if ref.startswith("pay_"):
            attempt = await q.find_payment(conn, celerypay_id=ref)
        elif ref.isascii() and ref.isdigit() and len(ref) <= 18:  # a BIGINT holds any 18 digits
            query = select(payments).where(payments.c.order_id == int(ref))
            if store is not None:
                query = query.where(payments.c.store_id == store.id)
            rows = [PaymentRecord.from_row(r) for r in (await conn.execute(query.order_by(payments.c.id))).mappings()]
            if len({r.store_id for r in rows}) > 1:
                raise InvalidInputError(f"order {ref} exists in several stores: give --store", code="ambiguous_order")
            attempt = rows[-1] if rows else None
        elif 0 < len(ref) <= 64:
            attempt = await q.get_payment_by_token(conn, ref)
        if attempt is None or (store is not None and attempt.store_id != store.id):
            raise NotFoundError(f"no payment attempt found for {ref!r}", code="payment_not_found")
        return store or await q.get_store_by_id(conn, attempt.store_id), attempt


def attempt_json(store: StoreRecord, p: PaymentRecord) -> dict[str, Any]:
    """An attempt as the CLI shows it (no token, no cashier URL: they let anyone pay)."""
    return {
        "id": p.id, "store_hash": store.store_hash, "order_id": p.order_id, "attempt": p.attempt_no,
        "merchant_order_no": p.merchant_order_no, "celerypay_id": p.celerypay_id, "status": p.status,
        "outcome": p.outcome, "amount": p.amount, "currency": p.currency, "paid_amount": p.paid_amount,
        "refunded_amount": p.refunded_amount, "failure_code": p.failure_code,
        "expires_at": iso(p.expires_at), "created_at": iso(p.created_at), "updated_at": iso(p.updated_at),
    }


async def list_attempts(
    rt: Runtime, *, store_hash: str | None = None, status: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Recent attempts, newest first, as JSON-ready dicts."""
    async with rt.db.read() as conn:
        store = await q.require_store(conn, store_hash) if store_hash else None
        found = await q.list_payments(
            conn, store_id=store.id if store else None, status=[status] if status else None, limit=limit
        )
        by_id = {s.id: s for s in await q.list_stores(conn)}
    return [attempt_json(by_id[p.store_id], p) for p in found]


async def payment_detail(rt: Runtime, ref: str, store_hash: str | None = None) -> dict[str, Any]:
    """One attempt with its refunds, stored events and the order's audit log."""
    store, attempt = await find_attempt(rt, ref, store_hash)
    async with rt.db.read() as conn:
        refund_rows = (await conn.execute(
            select(refunds).where(refunds.c.payment_id == attempt.id).order_by(refunds.c.id)
        )).mappings().all()
        event_rows = (await conn.execute(
            select(events.c.event_id, events.c.type, events.c.outcome, events.c.received_at)
            .where(events.c.celerypay_payment_id == attempt.celerypay_id).order_by(events.c.id)
        )).mappings().all() if attempt.celerypay_id else []
        audit_rows = (await conn.execute(
            select(audit_log).where(audit_log.c.store_id == store.id, audit_log.c.order_id == attempt.order_id)
            .order_by(audit_log.c.id)
        )).mappings().all()
    detail = attempt_json(store, attempt)
    detail["refunds"] = [
        {"merchant_refund_no": r["merchant_refund_no"], "celerypay_id": r["celerypay_id"], "amount": r["amount"],
         "currency": r["currency"], "status": r["status"], "reason": r["reason"],
         "bigcommerce_refund_id": ledger_id(dict(r))} for r in refund_rows
    ]
    detail["events"] = [{**dict(e), "received_at": iso(e["received_at"])} for e in event_rows]
    detail["audit"] = [
        {"action": a["action"], "from_status_id": a["from_status_id"], "to_status_id": a["to_status_id"],
         "detail": a["detail"], "at": iso(a["created_at"])} for a in audit_rows
    ]
    return detail


# --- simulated notifications -------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """A notification ready to POST: the exact body and its headers."""

    event_id: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Answer:
    """What the server said to one delivery."""

    status: int
    body: str


def build_notification(
    rt: Runtime,
    store: StoreRecord,
    attempt: PaymentRecord,
    *,
    status: str = "succeeded",
    amount: str | None = None,
    currency: str | None = None,
    bad_signature: bool = False,
    timestamp: int | None = None,
) -> Notification:
    """A CeleryPay ``payment.<status>`` event for a real attempt, signed like CeleryPay signs it.

    ``amount``/``currency`` change what the event claims was paid (the server
    applies CeleryPay's own figures, not these); ``bad_signature`` signs with
    a random secret instead.
    """
    if store.environment == "production":
        # Signed with the real secret, a simulated capture would mark a real order paid with no money taken.
        raise ConflictError(
            f"store {store.store_hash} takes real payments (CeleryPay production): "
            "simulate-notify is for sandbox stores only", code="production_store",
        )
    if status not in SIMULATED_STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(SIMULATED_STATUSES)}", code="invalid_status")
    if not attempt.celerypay_id:
        raise ConflictError(
            f"attempt {attempt.merchant_order_no} never reached CeleryPay (no payment id); open its pay link first",
            code="not_created",
        )
    if not (store.merchant_id and store.celerypay_secret_enc):
        raise ConflictError(f"store {store.store_hash} has no CeleryPay credentials", code="store_not_configured")
    cur = currency or attempt.currency
    paid = (to_minor(amount, cur) if amount is not None else attempt.amount) if status == "succeeded" else None
    now = rt.now()
    payment = {
        "id": attempt.celerypay_id, "object": "payment", "merchant_order_no": attempt.merchant_order_no,
        "amount": attempt.amount, "currency": cur, "status": status, "paid_amount": paid,
        "refunded_amount": 0,
        "cashier_url": attempt.cashier_url or f"{rt.celerypay_url(store)}/cashier/{attempt.celerypay_id}",
        "return_url": rt.public_url(f"/pay/{attempt.token}/return"),
        "notify_url": rt.public_url(f"/notify/celerypay/{store.store_hash}"),
        "description": f"Order #{attempt.order_id}",
        "metadata": {"store_hash": store.store_hash, "order_id": str(attempt.order_id),
                     "attempt": str(attempt.attempt_no)},
        "failure_code": "card_declined" if status == "failed" else None,
        "failure_message": "The card was declined." if status == "failed" else None,
        "created_at": iso(attempt.created_at), "expires_at": iso(attempt.expires_at),
        "paid_at": iso(now) if status == "succeeded" else None, "updated_at": iso(now),
    }
    event_id = "evt_" + secrets.token_hex(12)
    event = {"id": event_id, "object": "event", "type": f"payment.{status}", "created_at": iso(now), "data": payment}
    body = json.dumps(event, separators=(",", ":")).encode("utf-8")
    ts = int(rt.wall()) if timestamp is None else timestamp
    secret = secrets.token_urlsafe(32) if bad_signature else rt.vault.open(store.celerypay_secret_enc)
    headers = {
        "Content-Type": "application/json",
        "CeleryPay-Merchant": store.merchant_id,
        "CeleryPay-Timestamp": str(ts),
        "CeleryPay-Signature": sign_notification(secret, ts, body),
    }
    return Notification(event_id, body, headers)


async def post_notification(rt: Runtime, url: str, note: Notification, *, repeat: int = 1) -> list[Answer]:
    """POST the same event ``repeat`` times (as CeleryPay retries do), each freshly timestamped."""
    if repeat < 1:
        raise InvalidInputError("repeat must be at least 1", code="invalid_repeat")
    answers: list[Answer] = []
    for _ in range(repeat):
        try:
            response = await rt.http.post(url, content=note.body, headers=note.headers, timeout=10.0)
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"could not reach {url} ({type(exc).__name__}); is `bcpay serve` running?",
                                      service="bcpay") from exc
        answers.append(Answer(response.status_code, response.text[:500]))
    return answers


async def simulate_notify(
    rt: Runtime, ref: str, *, store_hash: str | None = None, status: str = "succeeded", amount: str | None = None,
    currency: str | None = None, url: str | None = None, repeat: int = 1, bad_signature: bool = False,
) -> tuple[Notification, list[Answer]]:
    """Build a notification for the attempt ``ref`` names and deliver it to the server."""
    store, attempt = await find_attempt(rt, ref, store_hash)
    note = build_notification(rt, store, attempt, status=status, amount=amount, currency=currency,
                              bad_signature=bad_signature)
    target = url or rt.public_url(f"/notify/celerypay/{store.store_hash}")
    return note, await post_notification(rt, target, note, repeat=repeat)


# --- events ----------------------------------------------------------------------------------


def event_json(row: dict[str, Any], store_hash: str, *, body: bool = False) -> dict[str, Any]:
    """A stored event as the CLI shows it."""
    out = {"event_id": row["event_id"], "store_hash": store_hash, "type": row["type"],
           "celerypay_payment_id": row["celerypay_payment_id"], "outcome": row["outcome"],
           "received_at": iso(row["received_at"])}
    if body:
        out["body"] = json.loads(row["raw_body"])
    return out


async def list_events(rt: Runtime, *, store_hash: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Recent raw notifications, newest first."""
    async with rt.db.read() as conn:
        store = await q.require_store(conn, store_hash) if store_hash else None
        rows = await q.list_events(conn, store_id=store.id if store else None, limit=limit)
        by_id = {s.id: s.store_hash for s in await q.list_stores(conn)}
    return [event_json(r, by_id[r["store_id"]]) for r in rows]


async def _event_row(conn: Any, event_id: str, store_hash: str | None) -> dict[str, Any]:
    """The one stored event with this id (of this store, if given)."""
    store_id = (await q.require_store(conn, store_hash)).id if store_hash else None
    rows = await q.find_events(conn, event_id, store_id=store_id)
    if not rows:
        raise NotFoundError(f"no stored event {event_id!r}", code="event_not_found")
    if len(rows) > 1:
        by_id = {s.id: s.store_hash for s in await q.list_stores(conn)}
        raise InvalidInputError(
            f"event {event_id!r} was received by several stores ({', '.join(by_id[r['store_id']] for r in rows)}): "
            "give --store", code="ambiguous_event")
    return rows[0]


async def get_event(rt: Runtime, event_id: str, store_hash: str | None = None) -> dict[str, Any]:
    """One stored event with its raw body."""
    async with rt.db.read() as conn:
        row = await _event_row(conn, event_id, store_hash)
        store = await q.get_store_by_id(conn, row["store_id"])
    return event_json(row, store.store_hash, body=True)


async def replay_event(rt: Runtime, event_id: str, store_hash: str | None = None) -> str:
    """Check a stored (already verified) event again with CeleryPay, at once; returns the outcome.

    Idempotent like a second delivery: a state already applied is ``stale``
    and queues nothing new. As for a delivery, the event's own data is not
    applied: CeleryPay's answer about its payment is.
    """
    async with rt.db.read() as conn:
        row = await _event_row(conn, event_id, store_hash)
        store = await q.get_store_by_id(conn, row["store_id"])
    event = parse_event(row["raw_body"].encode("utf-8"))
    return await notifications.check_event(
        rt, store, event_id=event.id, celerypay_id=event.payment.id,
        refund_id=event.refund.id if event.refund is not None else None,
    )


async def prune_events(rt: Runtime, older_than: timedelta) -> int:
    """Delete raw events older than ``older_than`` (never less than 30 days); returns how many."""
    if older_than < MIN_EVENT_RETENTION:
        raise InvalidInputError(
            "events must be kept at least 30 days (CeleryPay retries for about 2 days and dedupe needs them)",
            code="retention_too_short",
        )
    async with rt.db.transaction() as conn:
        return await q.prune_events(conn, rt.now() - older_than)


# --- anomalies and jobs ------------------------------------------------------------------------


async def list_anomalies(
    rt: Runtime, *, store_hash: str | None = None, include_resolved: bool = False
) -> list[dict[str, Any]]:
    """Money taken that the order must not keep (double or late payments, mismatches)."""
    async with rt.db.read() as conn:
        store = await q.require_store(conn, store_hash) if store_hash else None
        rows = await q.list_anomalies(conn, store_id=store.id if store else None,
                                      state=None if include_resolved else "open")
        by_id = {s.id: s.store_hash for s in await q.list_stores(conn)}
        celerypay_ids = {
            r["id"]: r["celerypay_id"] for r in (await conn.execute(
                select(payments.c.id, payments.c.celerypay_id).where(payments.c.id.in_([a["payment_id"] for a in rows]))
            )).mappings()
        } if rows else {}
    return [
        {"id": a["id"], "store_hash": by_id[a["store_id"]], "order_id": a["order_id"], "kind": a["kind"],
         "amount": a["amount"], "currency": a["currency"], "state": a["state"], "detail": a["detail"],
         "celerypay_id": celerypay_ids.get(a["payment_id"]), "created_at": iso(a["created_at"]),
         "resolved_at": iso(a["resolved_at"])}
        for a in rows
    ]


async def resolve_anomaly(rt: Runtime, anomaly_id: int, note: str, *, actor: str | None = None) -> None:
    """Mark an open anomaly resolved with the operator's note (an audit row names ``actor`` when given)."""
    async with rt.db.transaction() as conn:
        if not await q.resolve_anomaly(conn, anomaly_id, rt.now(), note or "resolved by operator"):
            raise NotFoundError(f"no open anomaly with id {anomaly_id}", code="anomaly_not_found")
        if actor is not None:
            query = select(anomalies.c.store_id).where(anomalies.c.id == anomaly_id)
            store_id: int = (await conn.execute(query)).scalar_one()
            await settings_audit.record(conn, rt, int(store_id), actor=actor, action="anomaly_resolved",
                                        detail=f"anomaly {anomaly_id}" + (f": {note}" if note else ""))


async def store_id_of(rt: Runtime, store_hash: str | None) -> int | None:
    """The primary key of a store given by hash (None for None)."""
    if store_hash is None:
        return None
    return (await get_store(rt, store_hash)).id


# --- doctor ----------------------------------------------------------------------------------------


async def _guard(name: str, check: Any) -> Check:
    """Run one check; an error becomes a failed line instead of ending the report."""
    try:
        result: Check = await check
        return result
    except BcpayError as exc:
        return Check(name, False, exc.message)


async def _guard_all(name: str, checks: Any) -> list[Check]:
    """:func:`_guard` for a check that answers several lines."""
    try:
        result: list[Check] = await checks
        return result
    except BcpayError as exc:
        return [Check(name, False, exc.message)]


async def check_public_url(rt: Runtime, timeout: float = 3.0) -> Check:
    """The server answers ``GET {public_url}/healthz`` (through the proxy, as BigCommerce sees it)."""
    url = rt.public_url("/healthz")
    fix = ["Start the server (`bcpay serve`) and check app.public_url and the reverse proxy."]
    try:
        response = await rt.http.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return Check("public URL", False, f"{url} unreachable ({type(exc).__name__})", fix)
    if response.status_code != 200:
        return Check("public URL", False, f"{url} answered {response.status_code}", fix)
    return Check("public URL", True, f"{url} answers")


async def _count(rt: Runtime, table: Any, *conds: Any) -> int:
    async with rt.db.read() as conn:
        return await q.count(conn, table, *conds)


async def store_checks(rt: Runtime, store: StoreRecord) -> list[Check]:
    """Every per-store check of ``bcpay doctor``."""
    h = store.store_hash
    if not store.installed or not store.access_token_enc:
        return [Check("installed", False, "the store is uninstalled or has no API token",
                      [f"Install the app again, or `bcpay stores add {h}`."])]
    found = [
        await _guard("API token", provisioning.check_token(rt, store)),
        *await _guard_all("storefront channels", provisioning.check_channels(rt, store)),
        await _guard("webhooks", provisioning.check_webhooks(rt, store)),
        await _guard("CeleryPay credentials", provisioning.check_celerypay(rt, store)),
        await _guard("stock of cancelled orders", provisioning.check_inventory(rt, store)),
        provisioning.email_steps(rt, store),
    ]
    dead = await _count(rt, jobs, jobs.c.store_id == store.id, jobs.c.state == "dead")
    found.append(Check("outbox", dead == 0, f"{dead} dead job(s)" if dead else "no dead jobs",
                       ["Look with `bcpay jobs list --state dead`, then `bcpay jobs retry --all`."] if dead else []))
    open_ = await _count(rt, anomalies, anomalies.c.store_id == store.id, anomalies.c.state == "open")
    found.append(Check("anomalies", open_ == 0, f"{open_} open anomaly(ies)" if open_ else "none open",
                       [f"Review with `bcpay anomalies list --store {h}`."] if open_ else []))
    return found


def secret_key_check(rt: Runtime, installed: list[StoreRecord]) -> Check:
    """Stored secrets sealed with bcpay's public sandbox key are for local use only."""
    if rt.settings.app.secret_key:
        return Check("app.secret_key", True, "set")
    production = [s.store_hash for s in installed if s.environment == "production"]
    if not production:
        return Check("app.secret_key", True, "empty (app.sandbox): the public sandbox key, for local use only")
    return Check(
        "app.secret_key", False,
        f"empty (app.sandbox), so the tokens and secrets of {', '.join(production)} (CeleryPay production) are "
        "sealed with bcpay's public sandbox key",
        ["bcpay keygen > new.key && BCPAY_NEW_KEY=\"$(cat new.key)\" bcpay rotate-key --new-key-env BCPAY_NEW_KEY",
         "Then set app.secret_key to that key, turn app.sandbox off and restart bcpay."])


def metrics_check(rt: Runtime) -> Check:
    """``/metrics`` answers without a token only on loopback; elsewhere ``serve`` refuses to start without one."""
    server = rt.settings.server
    if server.metrics_token:
        return Check("metrics", True, "/metrics wants server.metrics_token")
    if server.on_loopback():
        return Check("metrics", True, f"/metrics is open to this machine only (server.host {server.host})")
    return Check(
        "metrics", False,
        f"server.host {server.host} is not a loopback address and server.metrics_token is empty: "
        "`bcpay serve` refuses to start",
        ["Set server.metrics_token (BCPAY_SERVER_METRICS_TOKEN) and give it to the scraper as a Bearer token, "
         "or listen on 127.0.0.1 behind the proxy."])


def webhook_destination_check(rt: Runtime) -> Check:
    """BigCommerce takes only https on port 443 as a webhook destination (bigcommerce-api.md, Webhooks v3).

    A BigCommerce on loopback is a local fake, which delivers to loopback as well.
    """
    from bcpay.clients.celerypay import is_loopback

    public_url = rt.settings.app.public_url
    try:
        public = httpx.URL(public_url)
        local_bc = is_loopback(httpx.URL(rt.settings.bigcommerce.api_url).host)
    except httpx.InvalidURL:
        public, local_bc = httpx.URL(), False
    ok = bool(public.host) and (
        (public.scheme == "https" and public.port in (None, 443)) or (local_bc and is_loopback(public.host)))
    if ok:
        return Check("webhook destination", True, f"{public_url} is accepted by BigCommerce")
    return Check(
        "webhook destination", False,
        f"BigCommerce accepts only https on port 443 as a webhook destination, not {public_url}",
        ["Serve bcpay over TLS on port 443 (e.g. behind a reverse proxy), set app.public_url "
         "to that https:// address, then run `bcpay provision STORE` again."])


def callback_url_check(rt: Runtime, store: StoreRecord) -> Check:
    """CeleryPay takes notify_url and return_url as "https, or http on a loopback address in sandbox"."""
    from bcpay.clients.celerypay import callback_url_problem

    environment = "production" if store.environment == "production" else "sandbox"
    problem = callback_url_problem(rt.public_url(f"/notify/celerypay/{store.store_hash}"), "notify_url",
                                   sandbox=environment == "sandbox")
    if problem is None:
        return Check("CeleryPay callback URLs", True, f"notify_url and return_url accepted by CeleryPay {environment}")
    return Check(
        "CeleryPay callback URLs", False, f"CeleryPay {environment} would refuse every payment: {problem}",
        ["Set app.public_url to bcpay's https:// address (CeleryPay accepts http "
         "only on a loopback address, and only in sandbox)."])


def environment_check(environ: Mapping[str, str]) -> Check:
    """``BCPAY_*`` variables loading ignores, by name only (their values may be secrets).

    A passing check with a warning mark and its fix, not a failure: a deploy gate running
    ``bcpay doctor`` must not fail on a variable the fleet sets for something else
    (a deploy tool's own image tag), as ``serve`` and ``worker`` do not refuse to start for it.
    """
    unknown = unknown_env_names(environ)
    if not unknown:
        return Check("environment", True, "no unknown BCPAY_* variables")
    return Check("environment", True, "; ".join(unknown),
                 ["Rename each to the setting it was meant for, or unset it: settings are read from "
                  "BCPAY_<SECTION>_<KEY> (bcpay.toml.example lists every section and key)."])


def schema_check(status: migrate.SchemaStatus) -> Check:
    """The database schema against this version; a newer schema that accepts this code passes."""
    if status.state == "current":
        return Check("schema", True, "current")
    if status.state == "newer_compatible":
        return Check("schema", True, f"newer but compatible: {status.revision} is from a newer bcpay and accepts "
                                     f"this one ({status.head}) from revision {status.oldest_code} on; upgrade "
                                     "this host when you can")
    if status.state == "newer":
        return Check("schema", False, f"from a newer bcpay: {status.revision} needs a newer bcpay than this one "
                                      f"({status.head})",
                     ["Run the bcpay release that migrated the database."])
    return Check("schema", False, "not migrated", ["Run `bcpay db upgrade`."])


def quota_check(rt: Runtime) -> Check:
    """How this process paces its BigCommerce calls: with every other process, or alone (informational)."""
    if quota.shared(rt.settings, rt.db):
        return Check("BigCommerce quota", True, "shared by every bcpay process through the database")
    why = "bigcommerce.shared_quota = \"off\"" if rt.settings.bigcommerce.shared_quota == "off" else "SQLite"
    return Check("BigCommerce quota", True,
                 f"paced by each process alone ({why}): several processes calling BigCommerce for one store "
                 "would overrun its quota together; set bigcommerce.shared_quota = \"on\" if they do")


async def doctor(
    rt: Runtime, store_hash: str | None = None, *, environ: Mapping[str, str] | None = None
) -> list[tuple[str, Check]]:
    """One report of what works and what to fix: (section, check) pairs; all ok means healthy.

    ``environ`` is where the settings were read from (default: this process's environment).
    """
    report: list[tuple[str, Check]] = [("bcpay", Check("configuration", True, "valid")),
                                       ("bcpay", environment_check(os.environ if environ is None else environ)),
                                       ("bcpay", metrics_check(rt))]
    if not await rt.db.ping():
        report.append(("bcpay", Check("database", False, "unreachable", ["Check database.url."])))
        return report
    report.append(("bcpay", Check("database", True, f"{rt.db.dialect} reachable")))
    schema = schema_check(await migrate.schema_status(rt.db))
    report.append(("bcpay", schema))
    if not schema.ok:
        return report
    report.append(("bcpay", await check_public_url(rt)))
    report.append(("bcpay", webhook_destination_check(rt)))
    report.append(("bcpay", quota_check(rt)))
    installed = [s for s in await list_stores(rt) if s.installed]
    report.append(("bcpay", secret_key_check(rt, installed)))
    chosen = [await get_store(rt, store_hash)] if store_hash is not None else installed
    for store in chosen:
        report.extend((store.store_hash, c) for c in await store_checks(rt, store))
        report.append((store.store_hash, callback_url_check(rt, store)))
        warning = stores.sandbox_warning(rt.settings, store)
        if warning:
            # A warning (passing, with advice: "!" in the report), not a failure: a test store may mean it.
            report.append((store.store_hash, Check(
                "CeleryPay environment", True, warning,
                [f"bcpay stores configure {store.store_hash} --merchant-id MERCHANT --environment production "
                 "(with the production merchant's secret), or the environment on the settings page."])))
    return report
