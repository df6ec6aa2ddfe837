"""The single-click app's lifecycle: install from the OAuth callback, its users, uninstall.

``install_from_oauth`` is all or nothing. It trades the ``/bc/auth`` code for
a token, registers the store (token sealed by the vault), installs the
storefront snippet and the webhooks; if any step fails it puts everything
back as it was: the store row is deleted (or restored, on a re-install), and
what this attempt created at BigCommerce is removed, so a failed install
never leaves a half-installed store (reference section 1; issue "BigCommerce
app").

The users are the control-panel users BigCommerce sent to ``/bc/load`` (the
``store_users`` table); ``/bc/remove_user`` forgets one, uninstalling forgets
them all. A settings-page session is valid only while its user is known here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from bcpay import channels, provisioning, stores
from bcpay.clients.bigcommerce import exchange_oauth_code
from bcpay.errors import (
    BcpayError,
    InvalidInputError,
    NotFoundError,
    SignatureError,
    UpstreamError,
    UpstreamRejected,
)
from bcpay.runtime import Runtime
from bcpay.signatures import JWT_LEEWAY, BcClaims
from bcpay.storage import queries as q
from bcpay.storage.db import Conn
from bcpay.storage.records import StoreRecord
from bcpay.storage.schema import store_users
from bcpay.storage.schema import stores as stores_table

log = logging.getLogger("bcpay.install")

AUTH_PATH = "/bc/auth"  # the registered auth callback: redirect_uri must equal it exactly
_CONTEXT = re.compile(r"stores/([a-z0-9]{1,32})")


@dataclass(frozen=True)
class AppUser:
    """A control-panel user of one store who opened the app."""

    store_id: int
    user_id: int
    email: str
    is_owner: bool
    may_act: bool = False  # allowed by the owner to change money settings (bcpay.roles)


@dataclass(frozen=True)
class Installation:
    """What a successful install produced: the store and the user who installed it."""

    store: StoreRecord
    user: AppUser


def store_hash_of_context(context: str) -> str:
    """The store hash in a callback ``context`` (``stores/{hash}``)."""
    match = _CONTEXT.fullmatch(context or "")
    if match is None:
        raise InvalidInputError(
            "the install callback has no valid context (stores/{hash})", code="invalid_context"
        )
    return match.group(1)


class InstallFailed(BcpayError):
    """An install step failed; everything was rolled back. ``cause`` is the step's error."""

    def __init__(self, step: str, cause: BcpayError, *, status: int | None = None) -> None:
        super().__init__(f"installation failed while {step}: {cause.message}", code=cause.code)
        self.step = step
        self.cause = cause
        self.http_status = status or (
            502 if isinstance(cause, UpstreamError) else cause.http_status
        )


async def install_from_oauth(rt: Runtime, *, code: str, scope: str, context: str) -> Installation:
    """Exchange the ``/bc/auth`` code, register and provision the store; all or nothing.

    Raises :class:`InstallFailed` naming the failing step, after rolling back.
    """
    store_hash = store_hash_of_context(context)
    if not code or len(code) > 512:
        raise InvalidInputError("the install callback has no code", code="missing_code")
    app = rt.settings.app
    if not (app.client_id and app.client_secret):
        # Not a crash: this server simply is not set up as an app (store API accounts only).
        raise NotFoundError(
            "this bcpay server is not set up as a BigCommerce app (app.client_id and app.client_secret)",
            code="app_not_configured",
        )
    step = "exchanging the installation code with BigCommerce"
    try:
        token = await exchange_oauth_code(
            rt.http,
            login_url=rt.settings.bigcommerce.login_url,
            client_id=app.client_id,
            client_secret=app.client_secret.get(),
            code=code,
            scope=scope,
            context=context,
            redirect_uri=rt.public_url(AUTH_PATH),
        )
    except BcpayError as exc:
        # BigCommerce refusing the code means the callback we got was bad (used, expired, forged).
        if (
            isinstance(exc, UpstreamError)
            and isinstance(exc.body, dict)
            and isinstance(exc.body.get("error"), str)
        ):
            exc.message += " " + exc.body["error"][:200]  # the OAuth answer says why in "error"
        raise InstallFailed(
            step, exc, status=400 if isinstance(exc, UpstreamRejected) else None
        ) from exc
    if token.store_hash != store_hash:
        raise InstallFailed(
            step, InvalidInputError("BigCommerce answered for another store", code="wrong_store")
        )
    async with rt.db.read() as conn:
        before = await _row(conn, store_hash)
    try:
        step = "reading the store's information"
        store = await stores.register(
            rt,
            store_hash,
            access_token=token.access_token.get(),
            source="app",
            scopes=token.scope,
            owner_email=token.owner_email or token.user_email,
        )
        step = "reading the storefront channels"
        await channels.refresh(rt, store)
        step = "installing the storefront snippet"
        if "limit" in await provisioning.install_script(rt, store):
            raise UpstreamRejected(
                f"BigCommerce allows {provisioning.SCRIPTS_PER_APP} scripts per app and this app's are all in "
                "use: remove one in Script Manager and install again", service="bigcommerce", status=422,
                code="script_limit")
        step = "registering the webhooks"
        await provisioning.register_webhooks(rt, store)
        await provisioning.extension_check(rt, store)  # the order page's panel: an extra, never fatal
        step = "saving the installing user"
        is_owner = token.owner_id is None or token.owner_id == token.user_id
        user = await remember_user(
            rt, store, user_id=token.user_id, email=token.user_email, is_owner=is_owner
        )
        async with rt.db.read() as conn:
            store = await q.require_store(conn, store_hash)
    except Exception as exc:
        await _roll_back(rt, store_hash, before)
        if isinstance(exc, BcpayError):
            raise InstallFailed(step, exc) from exc
        raise
    log.info("installed store %s (scopes: %s)", store_hash, token.scope)
    return Installation(store, user)


async def _row(conn: Conn, store_hash: str) -> dict[str, Any] | None:
    row = (
        (await conn.execute(select(stores_table).where(stores_table.c.store_hash == store_hash)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def _roll_back(rt: Runtime, store_hash: str, before: dict[str, Any] | None) -> None:
    """Undo a failed install: BigCommerce side first (needs the new token), then the row."""
    async with rt.db.read() as conn:
        now_store = await q.get_store(conn, store_hash)
    if now_store is None:
        return
    # A store that was installed before keeps its snippet and hooks (the same
    # app client owns them); otherwise remove what this attempt may have made.
    if not (before and before["installed"]) and now_store.access_token_enc:
        try:
            await provisioning.install_script(rt, now_store, remove=True)
            await provisioning.remove_webhooks(rt, now_store)
        except BcpayError as exc:
            log.warning(
                "install of %s failed and its cleanup at BigCommerce failed too: %r",
                store_hash,
                exc,
            )
    async with rt.db.transaction() as conn:
        if before is None:
            await conn.execute(delete(store_users).where(store_users.c.store_id == now_store.id))
            await conn.execute(delete(stores_table).where(stores_table.c.id == now_store.id))
        else:
            values = {k: v for k, v in before.items() if k != "id"}
            if before["installed"] and before["source"] == "app":
                # BigCommerce revoked this app's old token when it issued the new one (a
                # re-authorisation): putting it back would break every call. Keep the new one.
                del values["access_token_enc"], values["scopes"]
            await conn.execute(
                update(stores_table).where(stores_table.c.id == now_store.id).values(**values)
            )
    log.info("install of %s rolled back", store_hash)


async def use_once(rt: Runtime, claims: BcClaims) -> None:
    """Accept a verified callback JWT once, in every process sharing the database, or raise SignatureError.

    BigCommerce signs a new JWT, with a new ``jti``, for every callback: a
    ``/bc/load`` link sits in the iframe URL and the browser history for its
    24 hours, and without this anyone who saw one could replay it to
    ``/bc/uninstall`` or ``/bc/remove_user``. Each ``jti`` is remembered (the
    ``used_jwts`` table) for as long as the JWT is accepted: until exp plus
    the leeway, not just exp.
    """
    if claims.jti is None:
        raise SignatureError("JWT has no jti")
    expires_at = datetime.fromtimestamp(claims.expires + JWT_LEEWAY, UTC)
    async with rt.db.transaction() as conn:
        if not await q.use_jwt_once(conn, claims.jti, expires_at, rt.now()):
            raise SignatureError("this link was already used", code="jwt_replayed")


async def open_app(rt: Runtime, claims: BcClaims) -> tuple[StoreRecord, AppUser]:
    """A verified ``/bc/load``: the installed store and its (remembered) user; each link opens the app once."""
    store = await installed_store(rt, claims.store_hash)
    await use_once(rt, claims)
    user = await remember_user(
        rt,
        store,
        user_id=claims.user_id,
        email=claims.user_email,
        is_owner=claims.user_id == claims.owner_id,
    )
    await channels.queue_refresh(rt, store)  # a merchant opening the app may have changed a storefront
    return store, user


async def installed_store(rt: Runtime, store_hash: str) -> StoreRecord:
    """The store if the app is installed on it, else :class:`NotFoundError`."""
    async with rt.db.read() as conn:
        store = await q.get_store(conn, store_hash)
    if store is None or not store.installed:
        raise NotFoundError(
            f"OKCloud Pay is not installed on store {store_hash}", code="store_not_installed"
        )
    return store


async def uninstall_app(rt: Runtime, claims: BcClaims) -> str:
    """A verified ``/bc/uninstall``: forget secrets, jobs and users once BigCommerce confirms it.

    The JWT is used once (:func:`use_once`). The store is forgotten only when
    its token no longer works at BigCommerce (:func:`bcpay.stores.uninstall_confirmed`);
    else everything is kept and asked again later. Returns ``uninstalled``,
    ``already uninstalled`` or ``pending``. Unknown stores raise
    :class:`NotFoundError`. Payments history stays.
    """
    await use_once(rt, claims)
    async with rt.db.read() as conn:
        store = await q.get_store(conn, claims.store_hash)
    if store is None:
        raise NotFoundError(f"unknown store {claims.store_hash!r}", code="unknown_store")
    # The store/app/uninstalled webhook may have got here first: nothing to redo.
    if not store.installed:
        async with rt.db.transaction() as conn:
            await conn.execute(delete(store_users).where(store_users.c.store_id == store.id))
        return "already uninstalled"
    done = await stores.uninstall_confirmed(rt, store, reason="the /bc/uninstall callback")
    return "uninstalled" if done else "pending"


async def remember_user(
    rt: Runtime, store: StoreRecord, *, user_id: int, email: str, is_owner: bool
) -> AppUser:
    """Record (or refresh) a user who opened the app."""
    values = {"email": email[:255], "is_owner": is_owner, "last_seen_at": rt.now()}
    where = (store_users.c.store_id == store.id, store_users.c.user_id == user_id)
    async with rt.db.transaction() as conn:
        updated = await conn.execute(update(store_users).where(*where).values(**values))
        if not updated.rowcount:
            try:
                async with conn.savepoint():
                    await conn.execute(
                        store_users.insert().values(store_id=store.id, user_id=user_id, **values)
                    )
            except IntegrityError:  # a concurrent /bc/load inserted it first
                await conn.execute(update(store_users).where(*where).values(**values))
    return AppUser(store.id, user_id, email, is_owner)


async def find_user(rt: Runtime, store: StoreRecord, user_id: int) -> AppUser | None:
    """The user if BigCommerce sent them here and did not remove them since."""
    async with rt.db.read() as conn:
        row = (
            (
                await conn.execute(
                    select(store_users).where(
                        store_users.c.store_id == store.id, store_users.c.user_id == user_id
                    )
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    return AppUser(store.id, row["user_id"], row["email"], bool(row["is_owner"]), bool(row["may_act"]))


async def forget_user(rt: Runtime, claims: BcClaims) -> bool:
    """A verified ``/bc/remove_user`` (used once): forget that user; False if they were not known."""
    store = await installed_store(rt, claims.store_hash)
    await use_once(rt, claims)
    async with rt.db.transaction() as conn:
        result = await conn.execute(
            delete(store_users).where(
                store_users.c.store_id == store.id, store_users.c.user_id == claims.user_id
            )
        )
    return bool(result.rowcount)
