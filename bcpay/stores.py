"""Stores: registering, configuring, uninstalling. Used by the CLI, the app and the sandbox.

Access tokens and CeleryPay secrets are sealed with the vault before they
reach the database; nothing here returns or logs them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete

from bcpay import outbox, rules
from bcpay.clients.bigcommerce import BigCommerceClient, StoreInfo
from bcpay.clients.celerypay import CeleryPayClient
from bcpay.config import Settings
from bcpay.errors import (
    BcpayError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UpstreamError,
    UpstreamRejected,
)
from bcpay.runtime import STORE_OVERRIDES, Runtime
from bcpay.scopes import REQUIRED_SCOPES as REQUIRED_SCOPES  # re-exported for callers
from bcpay.storage import queries as q
from bcpay.storage.records import StoreRecord
from bcpay.storage.schema import store_users

log = logging.getLogger("bcpay.stores")

MERCHANT_ID = re.compile(r"mch_[A-Za-z0-9]{16,32}")
STORE_HASH = re.compile(r"[a-z0-9]{1,32}")
ROTATION_WINDOW = timedelta(hours=24)  # CeleryPay signs with both secrets for at most 24 h



ACCESS_TOKEN = re.compile(r"[\x21-\x7e]{1,512}")


def check_access_token(value: str) -> None:
    """Refuse a token that cannot go into an HTTP header (CR/LF, spaces, non-ASCII), before any call."""
    if not value:
        raise InvalidInputError("an access token is required", code="missing_token")
    if not ACCESS_TOKEN.fullmatch(value):
        raise InvalidInputError("an access token is printable ASCII without spaces", code="invalid_token")


def check_store_hash(value: str) -> str:
    """Validate a store hash (lower-case letters and digits)."""
    if not STORE_HASH.fullmatch(value or ""):
        raise InvalidInputError(f"not a store hash: {value!r} (expected e.g. abc123xyz)", code="invalid_store_hash")
    return value


def check_merchant(merchant_id: str, api_secret: str) -> None:
    """Validate CeleryPay credentials by the contract's formats (the secret is never echoed)."""
    if not MERCHANT_ID.fullmatch(merchant_id or ""):
        raise InvalidInputError(
            "merchant id must be mch_ followed by 16 to 32 letters or digits", code="invalid_merchant_id"
        )
    if len(api_secret) < 32 or not all(32 <= ord(c) < 127 for c in api_secret):
        raise InvalidInputError(
            "the CeleryPay API secret must be at least 32 printable ASCII characters", code="invalid_secret"
        )


async def fetch_store_info(rt: Runtime, store_hash: str, access_token: str) -> StoreInfo:
    """Check a token against the API and read the store's name, URL and currency."""
    check_access_token(access_token)
    client = BigCommerceClient(
        rt.http,
        api_url=rt.settings.bigcommerce.api_url,
        store_hash=store_hash,
        access_token=access_token,
        limiter=rt.limiters.for_store(store_hash),
        max_retries=rt.settings.bigcommerce.max_retries,
    )
    return await client.store_info()


async def register(
    rt: Runtime,
    store_hash: str,
    *,
    access_token: str,
    source: str,
    scopes: str = "",
    owner_email: str = "",
    info: StoreInfo | None = None,
) -> StoreRecord:
    """Create or refresh a store with its (encrypted) token; reads store info if not given."""
    check_store_hash(store_hash)
    check_access_token(access_token)
    info = info or await fetch_store_info(rt, store_hash, access_token)
    async with rt.db.transaction() as conn:
        existing = await q.get_store(conn, store_hash)
        values: dict[str, Any] = {
            "name": info.name,
            "store_url": info.secure_url.rstrip("/"),
            "control_panel_url": info.control_panel_base_url.rstrip("/"),
            "currency": info.currency,
            "source": source,
            "access_token_enc": rt.vault.seal(access_token),
            "scopes": scopes,
            "owner_email": owner_email,
            "installed": True,
            "uninstalled_at": None,
        }
        if existing is None or not existing.webhook_secret_enc:
            values["webhook_secret_enc"] = rt.vault.seal(secrets.token_urlsafe(32))
        if existing is None and not rt.settings.payments.unpaid_hold:
            # A new store holds unpaid orders for the payment's expiry plus a margin, then cancels them; a
            # store bcpay already served keeps its orders until someone chooses a hold (docs: unpaid orders).
            values["settings_json"] = json.dumps({"unpaid_hold": default_unpaid_hold(rt.settings)})
        if existing is not None and not existing.installed:
            values["installed_at"] = rt.now()
            await outbox.resume_store_jobs(conn, existing.id, rt.now())
        return await q.upsert_store(conn, store_hash, rt.now(), **values)


async def configure_merchant(
    rt: Runtime,
    store_hash: str,
    *,
    merchant_id: str,
    api_secret: str | None,
    environment: str | None = None,
) -> StoreRecord:
    """Set CeleryPay credentials. A new secret keeps the old one valid for 24 h (rotation)."""
    if environment is not None and environment not in ("sandbox", "production"):
        raise InvalidInputError("environment must be sandbox or production", code="invalid_environment")
    async with rt.db.transaction() as conn:
        # Locked: two admins saving at once must not each write over the other's change.
        store = await q.require_store(conn, store_hash, lock=True)
        values: dict[str, Any] = {"celerypay_merchant_id": merchant_id}
        if api_secret is None:
            if not store.celerypay_secret_enc:
                raise InvalidInputError("the CeleryPay API secret is required", code="missing_secret")
            check_merchant(merchant_id, "x" * 32)
        else:
            check_merchant(merchant_id, api_secret)
            values["celerypay_secret_enc"] = rt.vault.seal(api_secret)
            same_merchant = store.merchant_id == merchant_id
            if store.celerypay_secret_enc and same_merchant and rt.vault.open(store.celerypay_secret_enc) != api_secret:
                values["celerypay_old_secret_enc"] = store.celerypay_secret_enc
                values["celerypay_old_secret_until"] = rt.now() + ROTATION_WINDOW
            elif not same_merchant:
                values["celerypay_old_secret_enc"] = None
                values["celerypay_old_secret_until"] = None
        if environment is not None:
            values["celerypay_environment"] = environment
        await q.update_store(conn, store.id, rt.now(), **values)
        return await q.require_store(conn, store_hash)


async def revoke_old_secret(rt: Runtime, store_hash: str) -> bool:
    """End the rotated-out CeleryPay secret's 24 h grace now; False when none was in its grace.

    For a secret that leaked: until then, notifications signed with it are still accepted.
    """
    async with rt.db.transaction() as conn:
        store = await q.require_store(conn, store_hash, lock=True)
        live = bool(store.celerypay_old_secret_enc) and (
            store.celerypay_old_secret_until is None or store.celerypay_old_secret_until > rt.now())
        if store.celerypay_old_secret_enc:
            await q.update_store(conn, store.id, rt.now(), celerypay_old_secret_enc=None,
                                 celerypay_old_secret_until=None)
    if live:
        log.info("the old CeleryPay secret of store %s was revoked before its grace ended", store_hash)
    return live


async def verify_merchant(rt: Runtime, store: StoreRecord, merchant_id: str, api_secret: str,
                          environment: str | None = None) -> bool:
    """Ask CeleryPay whether it takes these credentials before they are saved (a signed, harmless search).

    Refused (wrong secret, unknown merchant): InvalidInputError, nothing is saved. Unreachable: False,
    the caller saves and says it could not check (``bcpay doctor`` asks again later).
    """
    env = environment or store.environment
    cfg = rt.settings.celerypay
    client = CeleryPayClient(
        rt.http, base_url=cfg.api_url if env == "production" else cfg.sandbox_api_url, merchant_id=merchant_id,
        api_secret=api_secret, max_retries=0, environment="production" if env == "production" else "sandbox",
    )
    try:
        await client.ping()
    except UpstreamRejected as exc:
        raise InvalidInputError(
            f"CeleryPay refused these credentials ({exc.code}) in its {env} environment; nothing was saved",
            code="credentials_refused",
        ) from None
    except UpstreamError:
        return False
    return True


UNPAID_MARGIN_MINUTES = 30  # a new store's hold: the cashier's expiry, then this long for a late return


def default_unpaid_hold(settings: Settings) -> int:
    """A new store's ``unpaid_hold``: ``payments.expires_in`` in whole minutes plus :data:`UNPAID_MARGIN_MINUTES`."""
    return -(-settings.payments.expires_in // 60) + UNPAID_MARGIN_MINUTES


def check_settings(changes: dict[str, Any]) -> None:
    """Refuse a bad per-store setting before anything is written (``None`` removes an override)."""
    for key, value in changes.items():
        if value is not None:
            _check_override(key, value)


def _check_override(key: str, value: Any) -> Any:
    expected = STORE_OVERRIDES.get(key)
    if expected is None:
        raise InvalidInputError(f"unknown store setting {key!r}", code="invalid_setting")
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidInputError(f"{key}: expected integer", code="invalid_setting")
    if expected is list:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InvalidInputError(f"{key}: expected a list of strings", code="invalid_setting")
    elif not isinstance(value, expected):
        raise InvalidInputError(f"{key}: expected {expected.__name__}", code="invalid_setting")
    choices = {"on_expired": ("keep", "cancel"), "return_to": ("confirmation", "bcpay"),
               "refund_duplicates": ("manual", "auto")}
    if key in choices and value not in choices[key]:
        raise InvalidInputError(f"{key}: expected one of {', '.join(choices[key])}", code="invalid_setting")
    if key == "paid_status_id" and value not in rules.PAID_STATUSES:
        raise InvalidInputError(rules.status_choice_error(value, 12) or key, code="invalid_setting")
    if key == "mismatch_status_id" and value not in rules.MISMATCH_STATUSES:
        raise InvalidInputError(rules.status_choice_error(11, value) or key, code="invalid_setting")
    if key == "expires_in" and not 300 <= value <= 86400:
        raise InvalidInputError("expires_in: CeleryPay accepts 300 to 86400 seconds", code="invalid_setting")
    if key == "unpaid_hold" and not 0 <= value <= 43200:
        raise InvalidInputError("unpaid_hold: 0 (keep unpaid orders) to 43200 minutes", code="invalid_setting")
    if key == "method_name" and not value.strip():
        raise InvalidInputError("method_name must not be empty", code="invalid_setting")
    return value


RESET_ALL = "all"


def reset_changes(names: list[str]) -> dict[str, None]:
    """The changes that drop these overrides (``all``: every one), for :func:`update_settings`.

    Names as in ``bcpay.toml`` (``paid_status_id``; ``paid-status-id`` as the CLI spells options);
    an unknown one is refused with the list of valid ones.
    """
    wanted: dict[str, None] = {}
    for name in names:
        key = name.replace("-", "_")
        if key not in STORE_OVERRIDES and key != RESET_ALL:
            shown = repr(name[:40] + ("…" if len(name) > 40 else ""))
            raise InvalidInputError(
                f"unknown store setting {shown}: expected {RESET_ALL} or one of {', '.join(STORE_OVERRIDES)}",
                code="invalid_setting")
        wanted[key] = None
    return dict.fromkeys(STORE_OVERRIDES) if RESET_ALL in wanted else wanted


def effective_settings(rt: Runtime, store: StoreRecord) -> dict[str, tuple[Any, bool]]:
    """Each setting a store may override: the value in force, and whether it is the store's own."""
    policy = rt.policy(store)
    return {key: (getattr(policy, key), key in store.settings) for key in STORE_OVERRIDES}


def settings_version(store: StoreRecord) -> str:
    """A short digest of what the settings page shows and saves: it changes when any of it does."""
    shown = json.dumps([store.settings, store.merchant_id, store.environment], sort_keys=True, default=str)
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


async def update_settings(
    rt: Runtime, store_hash: str, changes: dict[str, Any], *, expected_version: str | None = None
) -> StoreRecord:
    """Change per-store payment settings (``None`` removes an override).

    ``expected_version`` (:func:`settings_version` of what the editor saw) makes
    the save refuse, writing nothing, when someone else saved in between:
    otherwise the second of two open settings pages would silently put back
    every value the first one changed.
    """
    async with rt.db.transaction() as conn:
        store = await q.require_store(conn, store_hash, lock=True)  # a read-modify-write of settings_json
        if expected_version is not None and settings_version(store) != expected_version:
            raise ConflictError(
                f"the settings of {store_hash} were changed since they were read", code="settings_changed"
            )
        merged = dict(store.settings)
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = _check_override(key, value)
        await q.update_store(conn, store.id, rt.now(), settings_json=json.dumps(merged, sort_keys=True))
        return await q.require_store(conn, store_hash)


CONFIRM_UNINSTALL = "confirm_uninstall"  # the outbox job that asks BigCommerce again
CONFIRM_FIRST_DELAY = 60.0  # seconds before the first new question; then the outbox's backoff


def token_mark(rt: Runtime, store: StoreRecord) -> str:
    """A short digest naming the store's current token (never the token): a re-install makes another."""
    assert store.access_token_enc is not None
    return hashlib.sha256(rt.vault.open(store.access_token_enc).encode()).hexdigest()[:16]


async def token_revoked(rt: Runtime, store: StoreRecord) -> bool:
    """True when BigCommerce answers 401 to a cheap read (``GET /v2/store``) with the store's token.

    Any other refusal (403: a scope is missing) means the token still works;
    BigCommerce down or rate limiting raises :class:`UpstreamError`.
    """
    try:
        await rt.bigcommerce(store).store_info()
    except UpstreamRejected as exc:
        return exc.status == 401
    return False


async def uninstall_confirmed(rt: Runtime, store: StoreRecord, *, reason: str) -> bool:
    """Forget the store (:func:`uninstall`) if BigCommerce confirms its token no longer works.

    An uninstall callback or webhook is only a claim: a replayed or forged one
    must not wipe a working store's token and CeleryPay secrets. When
    BigCommerce still takes the token (or cannot be asked), everything is
    kept, the reason is logged (never a secret), and a ``confirm_uninstall``
    job asks again later, with the outbox's backoff. True when forgotten now.
    """
    if not store.installed or not store.access_token_enc:
        return False
    try:
        revoked = await token_revoked(rt, store)
        why = "BigCommerce still accepts the store's API token"
    except UpstreamError as exc:
        revoked, why = False, f"BigCommerce could not be asked whether the token still works ({exc.code})"
    if revoked:
        await uninstall(rt, store.store_hash)
        log.info("store %s uninstalled (%s; BigCommerce refuses its token)", store.store_hash, reason)
        return True
    mark = token_mark(rt, store)
    async with rt.db.transaction() as conn:
        await outbox.enqueue(conn, CONFIRM_UNINSTALL, {"token": mark}, now=rt.now(), store_id=store.id,
                             dedupe_key=f"{CONFIRM_UNINSTALL}:{store.id}:{mark}", delay=CONFIRM_FIRST_DELAY)
    log.warning("%s for store %s, but %s: its token and secrets are kept, and BigCommerce is asked again later",
                reason, store.store_hash, why)
    return False


async def confirm_uninstall(rt: Runtime, store_id: int, mark: str) -> str:
    """The ``confirm_uninstall`` job: forget the store once its token is refused, else raise to retry later.

    ``skipped`` when the store was uninstalled meanwhile or holds another
    token (installed again since).
    """
    async with rt.db.read() as conn:
        store = await q.get_store_by_id(conn, store_id)
    if not store.installed or not store.access_token_enc or token_mark(rt, store) != mark:
        return "skipped"
    if not await token_revoked(rt, store):
        raise BcpayError(f"BigCommerce still accepts the token of store {store.store_hash}: its secrets are kept",
                         code="token_still_valid")
    await uninstall(rt, store.store_hash)
    log.info("store %s uninstalled: BigCommerce now refuses its token", store.store_hash)
    return "uninstalled"


async def uninstall(rt: Runtime, store_hash: str) -> StoreRecord:
    """Forget the token and merchant secrets, stop the store's jobs; payment history stays.

    Callers acting on an uninstall notice go through :func:`uninstall_confirmed`.
    """
    async with rt.db.transaction() as conn:
        store = await q.get_store(conn, store_hash)
        if store is None:
            raise NotFoundError(f"unknown store {store_hash!r}", code="unknown_store")
        now = rt.now()
        await q.update_store(
            conn, store.id, now,
            installed=False, uninstalled_at=now, access_token_enc=None, celerypay_secret_enc=None,
            celerypay_old_secret_enc=None, celerypay_old_secret_until=None, webhook_secret_enc=None,
            script_uuid=None, script_hash=None,
        )
        # A running confirmation (the caller, maybe) finishes on its own: the store is gone by then.
        await outbox.cancel_store_jobs(conn, store.id, now, keep_kind=CONFIRM_UNINSTALL)
        # Its users' sessions end too, whichever way the uninstall came (callback or webhook).
        await conn.execute(delete(store_users).where(store_users.c.store_id == store.id))
        return await q.require_store(conn, store_hash)


async def remove(rt: Runtime, store_hash: str) -> None:
    """Uninstall a store registered by hand (``bcpay stores remove``): same as the app's uninstall."""
    await uninstall(rt, store_hash)


SANDBOX_NOTE = "CeleryPay sandbox: no money moved"  # starts the staff note of every order such a store marks paid


def sandbox_warning(settings: Settings, store: StoreRecord) -> str | None:
    """A warning when a store takes payments on CeleryPay's sandbox in a deployment not in sandbox mode.

    Its orders are marked paid although no money moved (the sandbox cashier
    pays anything). ``bcpay doctor``, the settings page and ``bcpay stores
    list`` show it; each order it marks paid gets a staff note starting
    :data:`SANDBOX_NOTE`.
    """
    if store.environment != "sandbox" or settings.app.sandbox:
        return None
    return (f"store {store.store_hash} uses the CeleryPay sandbox environment: its orders are marked paid but no "
            "money moves; switch it to production before taking real orders")
