"""Provisioning a store: the snippet, the webhooks, and the checks around them.

Every step is idempotent: run it twice and the second run changes nothing.
Used by ``bcpay provision`` (and its part commands), the app install, the
settings page and ``bcpay doctor``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from bcpay.clients.bigcommerce import Hook, ScriptSpec
from bcpay.errors import BcpayError, RateLimited, UpstreamRejected, UpstreamUnavailable
from bcpay.runtime import Runtime
from bcpay.snippet import SCRIPT_DESCRIPTION, SCRIPT_NAME, script_tag
from bcpay.storage import queries as q
from bcpay.storage.records import StoreRecord
from bcpay.stores import REQUIRED_SCOPES

# What the server handles, and why (README "Webhooks"):
# - statusUpdated: a merchant cancelling an order cancels its open CeleryPay
#   payment (so it cannot be paid any more), and Refunded can refund at
#   CeleryPay when payments.refund_on_status is on;
# - app/uninstalled: forget the store's secrets even if /bc/uninstall is missed.
WEBHOOK_SCOPES = ("store/order/statusUpdated", "store/app/uninstalled")
WEBHOOK_SECRET_HEADER = "X-Bcpay-Secret"
PAYMENT_SETTINGS_PATH = "/manage/settings/payment"


@dataclass(frozen=True)
class Check:
    """One line of a provisioning checklist or doctor report."""

    name: str
    ok: bool
    detail: str
    fix: list[str] = field(default_factory=list)


def desired_script(rt: Runtime, store: StoreRecord) -> ScriptSpec:
    """The Script Manager script bcpay wants on the store."""
    return ScriptSpec(
        name=SCRIPT_NAME,
        description=SCRIPT_DESCRIPTION,
        kind="script_tag",
        html=script_tag(rt.settings.app.public_url, store.store_hash, rt.policy(store).method_name),
        load_method="default",
        location="footer",
        visibility="order_confirmation",
        auto_uninstall=True,
        consent_category="essential",
        enabled=True,
    )


def script_digest(rt: Runtime, store: StoreRecord) -> str:
    """The hash of the script tag bcpay wants on the store (``stores.script_hash`` when current)."""
    return hashlib.sha256((desired_script(rt, store).html or "").encode()).hexdigest()


async def install_script(rt: Runtime, store: StoreRecord, *, remove: bool = False) -> str:
    """Create, update or remove bcpay's script; never leaves two. Returns what it did."""
    bc = rt.bigcommerce(store)
    ours = [s for s in await bc.list_scripts() if s.name == SCRIPT_NAME]
    spec = desired_script(rt, store)
    action = "unchanged"
    if remove:
        for script in ours:
            await bc.delete_script(script.uuid)
        action = "removed" if ours else "absent"
        uuid = None
    elif not ours:
        uuid = (await bc.create_script(spec)).uuid
        action = "created"
    else:
        keep, *extra = ours
        for script in extra:
            await bc.delete_script(script.uuid)
        current = (keep.html, keep.visibility, keep.location, keep.enabled, keep.kind, keep.consent_category)
        wanted = (spec.html, spec.visibility, spec.location, spec.enabled, spec.kind, spec.consent_category)
        if current != wanted or extra:
            await bc.update_script(keep.uuid, spec)
            action = "updated"
        uuid = keep.uuid
    async with rt.db.transaction() as conn:
        await q.update_store(conn, store.id, rt.now(), script_uuid=uuid,
                             script_hash=None if remove else script_digest(rt, store))
    return action


def webhook_url(rt: Runtime, store: StoreRecord) -> str:
    """Where BigCommerce delivers this store's webhooks."""
    return rt.public_url(f"/webhooks/bigcommerce/{store.store_hash}")


def _secret(rt: Runtime, store: StoreRecord) -> str:
    if not store.webhook_secret_enc:
        raise BcpayError("this store has no webhook secret (re-register it)", code="no_webhook_secret")
    return rt.vault.open(store.webhook_secret_enc)


async def our_hooks(rt: Runtime, store: StoreRecord) -> list[Hook]:
    """The store's hooks that point at this server."""
    destination = webhook_url(rt, store)
    return [h for h in await rt.bigcommerce(store).list_hooks() if h.destination == destination]


async def register_webhooks(rt: Runtime, store: StoreRecord) -> dict[str, str]:
    """Create missing hooks, re-activate switched-off ones, fix their secret header."""
    bc = rt.bigcommerce(store)
    headers = {WEBHOOK_SECRET_HEADER: _secret(rt, store)}
    existing = {h.scope: h for h in await our_hooks(rt, store)}
    done: dict[str, str] = {}
    for scope in WEBHOOK_SCOPES:
        hook = existing.get(scope)
        if hook is None:
            await bc.create_hook(scope=scope, destination=webhook_url(rt, store), headers=headers, is_active=True)
            done[scope] = "created"
        elif not hook.is_active or hook.headers != headers:
            await bc.update_hook(hook.id, is_active=True, headers=headers)
            done[scope] = "reactivated" if not hook.is_active else "updated"
        else:
            done[scope] = "unchanged"
    return done


async def remove_webhooks(rt: Runtime, store: StoreRecord) -> int:
    """Delete this server's hooks on the store."""
    hooks = await our_hooks(rt, store)
    for hook in hooks:
        await rt.bigcommerce(store).delete_hook(hook.id)
    return len(hooks)


def control_panel_base(store: StoreRecord) -> str:
    """The store's control panel: ``control_panel_base_url`` is the bare host (store_information.v2.yml);
    a "/manage" suffix, as the sandbox reports it, is tolerated."""
    base = store.control_panel_url or f"https://store-{store.store_hash}.mybigcommerce.com"
    return base.rstrip("/").removesuffix("/manage")


def payment_method_fix(store: StoreRecord, method_name: str) -> list[str]:
    """The control-panel steps to show the offline method under our name (no API can rename it)."""
    link = control_panel_base(store) + PAYMENT_SETTINGS_PATH
    return [
        f"Open {link} (Settings > Payments).",
        "Under Offline payment methods, enable one method, e.g. Pay in Store.",
        f'Set its display name to exactly "{method_name}" and save.',
        "Run this check again.",
    ]


async def check_payment_method(rt: Runtime, store: StoreRecord) -> Check:
    """Is an enabled payment method named as bcpay expects?"""
    wanted = rt.policy(store).method_name
    methods = await rt.bigcommerce(store).payment_methods()
    names = [m.name for m in methods]
    if wanted in names:
        return Check("offline payment method", True, f'"{wanted}" is enabled')
    close = [n for n in names if n.strip().lower() == wanted.strip().lower()]
    detail = f'no enabled payment method is named "{wanted}"'
    if close:
        detail += f' (found "{close[0]}": the name must match exactly)'
    return Check("offline payment method", False, detail, payment_method_fix(store, wanted))


async def check_token(rt: Runtime, store: StoreRecord) -> Check:
    """The token works and carries the scopes bcpay needs (as far as we know them)."""
    try:
        info = await rt.bigcommerce(store).store_info()
    except UpstreamRejected as exc:
        return Check("API token", False, f"BigCommerce refused the token ({exc.status})",
                     ["Re-install the app, or create a new API account and run `bcpay stores add` again."])
    missing = [s for s in REQUIRED_SCOPES if store.scopes and not _has_scope(store.scopes, s)]
    if missing:
        return Check("API token", False, f"token works for {info.name} but lacks scopes: {', '.join(missing)}",
                     ["Give the API account these scopes (Advanced Settings > API Accounts) and re-add it."])
    return Check("API token", True, f"works for {info.name} ({info.secure_url})")


def _has_scope(scopes: tuple[str, ...], needed: str) -> bool:
    """A read-write scope also satisfies its read-only form, and vice versa for checks of presence."""
    base = needed.removesuffix("_read_only")
    return any(s in (needed, base) or s.removesuffix("_read_only") == base for s in scopes)


async def check_script(rt: Runtime, store: StoreRecord) -> Check:
    """bcpay's snippet is installed and current."""
    spec = desired_script(rt, store)
    ours = [s for s in await rt.bigcommerce(store).list_scripts() if s.name == SCRIPT_NAME]
    if not ours:
        return Check("storefront snippet", False, "not installed", [f"bcpay install-script {store.store_hash}"])
    if len(ours) > 1 or ours[0].html != spec.html or not ours[0].enabled:
        return Check("storefront snippet", False, "installed but outdated or disabled",
                     [f"bcpay install-script {store.store_hash}"])
    if ours[0].consent_category != spec.consent_category:
        # Script Manager lets a merchant change it; behind a cookie-consent banner only essential scripts
        # load before the shopper consents, so the shopper would never be sent to the cashier.
        return Check("storefront snippet", False,
                     f'consent category is "{ours[0].consent_category}", not "{spec.consent_category}": with a '
                     "cookie-consent banner, shoppers who have not consented never load it",
                     [f"bcpay install-script {store.store_hash}"])
    return Check("storefront snippet", True, "installed and current")


async def check_webhooks(rt: Runtime, store: StoreRecord) -> Check:
    """Both hooks exist and are active."""
    hooks = {h.scope: h for h in await our_hooks(rt, store)}
    missing = [s for s in WEBHOOK_SCOPES if s not in hooks]
    inactive = [s for s, h in hooks.items() if not h.is_active]
    if missing or inactive:
        detail = "; ".join(filter(None, [
            f"missing: {', '.join(missing)}" if missing else "",
            f"switched off by BigCommerce: {', '.join(inactive)}" if inactive else "",
        ]))
        return Check("webhooks", False, detail, [f"bcpay webhooks register {store.store_hash}"])
    return Check("webhooks", True, f"{len(hooks)} active")


async def check_celerypay(rt: Runtime, store: StoreRecord) -> Check:
    """CeleryPay accepts the merchant credentials (a signed, harmless call)."""
    if not store.merchant_id:
        return Check("CeleryPay credentials", False, "not configured",
                     [f"bcpay stores configure {store.store_hash} --merchant-id mch_..."])
    try:
        await rt.celerypay(store).ping()
    except (UpstreamUnavailable, RateLimited) as exc:
        # Down, slow or busy says nothing about the credentials: new ones would not help.
        return Check("CeleryPay credentials", False, f"CeleryPay did not answer ({exc.message}); not checked",
                     ["Payments cannot start while CeleryPay does not answer: run this check again later."])
    except BcpayError as exc:
        return Check("CeleryPay credentials", False, f"CeleryPay refused them: {exc.code}",
                     [f"bcpay stores configure {store.store_hash} --merchant-id {store.merchant_id}"])
    return Check("CeleryPay credentials", True, f"{store.merchant_id} accepted ({store.environment})")


async def provision(rt: Runtime, store: StoreRecord) -> list[Check]:
    """Everything a store needs, idempotent: token, snippet, webhooks, payment method."""
    token = await check_token(rt, store)
    checks = [token]
    if not token.ok:
        return checks
    action = await install_script(rt, store)
    checks.append(Check("storefront snippet", True, action))
    hooks = await register_webhooks(rt, store)
    checks.append(Check("webhooks", True, ", ".join(f"{k}: {v}" for k, v in hooks.items())))
    checks.append(await check_payment_method(rt, store))
    return checks
