"""Provisioning a store: the snippet, the webhooks, and the checks around them.

Every step is idempotent: run it twice and the second run changes nothing.
Used by ``bcpay provision`` (and its part commands), the app install, the
settings page and ``bcpay doctor``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from bcpay import channels
from bcpay.clients.bigcommerce import AcceptedMethod, Hook, InventorySettings, Script, ScriptSpec
from bcpay.errors import BcpayError, NotFoundError, RateLimited, UpstreamRejected, UpstreamUnavailable
from bcpay.rules import STATUS_NAMES
from bcpay.runtime import Runtime
from bcpay.scopes import CHANNEL_SCOPES
from bcpay.snippet import SCRIPT_DESCRIPTION, SCRIPT_NAME, script_tag
from bcpay.storage import channel_queries as cq
from bcpay.storage import queries as q
from bcpay.storage.channel_queries import ChannelRecord
from bcpay.storage.records import StoreRecord
from bcpay.stores import REQUIRED_SCOPES

# What the server handles, and why (README "Webhooks"):
# - statusUpdated: a merchant cancelling an order cancels its open CeleryPay
#   payment (so it cannot be paid any more), and Refunded can refund at
#   CeleryPay when payments.refund_on_status is on;
# - app/uninstalled: forget the store's secrets even if /bc/uninstall is missed.
# - channel/created, channel/updated: a new storefront, or one switched on or off, gets (or loses) its
#   snippet at once (reference section 11; channels.mdx).
WEBHOOK_SCOPES = ("store/order/statusUpdated", "store/order/refund/created", "store/app/uninstalled",
                  "store/channel/created", "store/channel/updated")
WEBHOOK_SECRET_HEADER = "X-Bcpay-Secret"
PAYMENT_SETTINGS_PATH = "/manage/settings/payment"
SCRIPTS_PER_APP = 10  # scripts.v3.yml: "Each app can have 10 scripts installed."
log = logging.getLogger("bcpay.provisioning")


@dataclass(frozen=True)
class Check:
    """One line of a provisioning checklist or doctor report."""

    name: str
    ok: bool
    detail: str
    fix: list[str] = field(default_factory=list)


def desired_script(rt: Runtime, store: StoreRecord, channel: ChannelRecord | None = None) -> ScriptSpec:
    """The Script Manager script bcpay wants on the store's ``channel`` (channel 1 when not given)."""
    policy = channels.policy(rt, store, channel)
    return ScriptSpec(
        name=SCRIPT_NAME,
        description=SCRIPT_DESCRIPTION,
        kind="script_tag",
        html=script_tag(rt.settings.app.public_url, store.store_hash, policy.method_name,
                        default_lang=channels.lang(channel)),
        load_method="default",
        location="footer",
        visibility="order_confirmation",
        auto_uninstall=True,
        consent_category="essential",
        enabled=True,
        channel_id=channel.channel_id if channel is not None else channels.DEFAULT_CHANNEL,
    )


def script_digest(rt: Runtime, store: StoreRecord, known: list[ChannelRecord] | None = None) -> str:
    """The hash of every tag bcpay wants on the store, one per channel (``stores.script_hash`` when current).

    Without ``known`` (no channels read yet) it is channel 1's tag alone.
    """
    wanted = [c for c in (known or [channels.fallback(store)]) if channels.wants_snippet(c)]
    text = "\n".join(f"{c.channel_id}:{desired_script(rt, store, c).html}" for c in wanted)
    return hashlib.sha256(text.encode()).hexdigest()


async def store_digest(rt: Runtime, store: StoreRecord) -> str:
    """:func:`script_digest` over the store's stored channels."""
    return script_digest(rt, store, await channels.stored(rt, store))


def _tag_digest(spec: ScriptSpec) -> str:
    return hashlib.sha256((spec.html or "").encode()).hexdigest()


def _script_state(script: Script) -> tuple[object, ...]:
    return (script.html, script.visibility, script.location, script.enabled, script.kind, script.consent_category)


def _spec_state(spec: ScriptSpec) -> tuple[object, ...]:
    return (spec.html, spec.visibility, spec.location, spec.enabled, spec.kind, spec.consent_category)


async def install_script(rt: Runtime, store: StoreRecord, *, remove: bool = False,
                         channel_id: int | None = None) -> str:
    """Create, update or remove bcpay's script on each channel that takes orders; returns what it did.

    One script per channel (Script Manager scripts belong to one channel,
    reference section 11), keyed on (name, channel): never two on a channel,
    and a channel's copy is only ever deleted for that channel (inactive,
    deleted, not offering the method) or as a second copy on the same channel.
    A script on a channel bcpay has not read is left alone. The app's limit of
    10 scripts is never hit: a channel past it is reported (``limit``). With
    ``channel_id`` only that channel is touched. A store with channel 1 only
    answers one word (created, updated, unchanged, removed, absent).
    """
    known = await channels.stored(rt, store)
    if not known and not remove:
        known = await channels.refresh(rt, store)
    known = known or [channels.fallback(store)]
    if channel_id is not None and channels.find(known, channel_id) is None:
        raise NotFoundError(f"store {store.store_hash} has no channel {channel_id}", code="unknown_channel")
    bc = rt.bigcommerce(store)
    scripts = await bc.list_scripts()
    ours: dict[int, list[Script]] = {}
    for script in scripts:
        if script.name == SCRIPT_NAME:
            ours.setdefault(script.channel_id or channels.DEFAULT_CHANNEL, []).append(script)
    wanted = {} if remove else {c.channel_id: c for c in known if channels.wants_snippet(c)}
    known_ids = {c.channel_id for c in known}
    in_scope = (lambda cid: cid == channel_id) if channel_id is not None else (lambda cid: True)
    actions: dict[int, str] = {}
    uuids: dict[int, str | None] = {}
    count = len(scripts)
    for cid, copies in sorted(ours.items()):
        if not in_scope(cid):
            continue
        if cid not in wanted:
            if remove or cid in known_ids:
                for script in copies:
                    await bc.delete_script(script.uuid)
                    count -= 1
                actions[cid] = "removed"
                uuids[cid] = None
            continue
        for script in copies[1:]:  # a second copy on the same channel: two tags on one page
            await bc.delete_script(script.uuid)
            count -= 1
    for cid, channel in sorted(wanted.items()):
        if not in_scope(cid):
            continue
        spec = desired_script(rt, store, channel)
        copies = ours.get(cid, [])
        if copies:
            keep = copies[0]
            if _script_state(keep) != _spec_state(spec) or len(copies) > 1:
                await bc.update_script(keep.uuid, spec)
                actions[cid] = "updated"
            else:
                actions[cid] = "unchanged"
            uuids[cid] = keep.uuid
        elif count >= SCRIPTS_PER_APP:
            actions[cid] = "limit"
            uuids[cid] = None
            log.warning("store %s: no snippet on channel %s: BigCommerce allows %s scripts per app",
                        store.store_hash, cid, SCRIPTS_PER_APP)
        else:
            uuids[cid] = (await bc.create_script(spec)).uuid
            count += 1
            actions[cid] = "created"
    if not remove:
        for channel in known:
            if channel.channel_id not in actions and in_scope(channel.channel_id):
                actions[channel.channel_id] = "no snippet: " + (
                    f"channel {channel.status}" if not channels.takes_orders(channel) else "method not offered")
    now = rt.now()
    stored_rows = {c.channel_id for c in await channels.stored(rt, store)}
    async with rt.db.transaction() as conn:
        for cid, uuid in uuids.items():
            if cid in stored_rows:
                spec_hash = None if uuid is None else _tag_digest(desired_script(rt, store, wanted[cid]))
                await cq.update_channel(conn, store.id, cid, now, script_uuid=uuid, script_hash=spec_hash)
        installed = {cid: u for cid, u in uuids.items() if u}
        first = installed.get(channels.DEFAULT_CHANNEL) or next(iter(installed.values()), None)
        if channel_id is None:
            await q.update_store(conn, store.id, now, script_uuid=first,
                                 script_hash=None if remove else script_digest(rt, store, known))
        elif first is not None and store.script_uuid is None:
            await q.update_store(conn, store.id, now, script_uuid=first)
    return _summary(actions, remove=remove)


def _summary(actions: dict[int, str], *, remove: bool) -> str:
    if not actions:
        return "absent" if remove else "unchanged"
    if set(actions) == {channels.DEFAULT_CHANNEL}:
        return actions[channels.DEFAULT_CHANNEL]
    return ", ".join(f"channel {cid}: {what}" for cid, what in sorted(actions.items()))


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


# The order page's panel (App Extensions, reference section 14): BigCommerce puts "${id}" in place of the
# order id and sends that URL in the /bc/load JWT's `url` claim (bcpay.server.order_panel).
EXTENSION_URL = "/orders/${id}/okcloud-pay"
EXTENSION_LABEL = "OKCloud Pay payment"
EXTENSION_LOCALES = {"zh-CN": "OKCloud Pay 付款"}


async def register_app_extension(rt: Runtime, store: StoreRecord) -> str:
    """The Orders page's "OKCloud Pay payment" panel, once per store (idempotent); returns what it did.

    For app installs only: the panel opens through ``/bc/load``, which a store
    added with its own API account never calls. An extension of ours with an
    old label is replaced, a second copy removed.
    """
    if store.source != "app":
        return "not an app install"
    bc = rt.bigcommerce(store)
    ours = [e for e in await bc.list_app_extensions() if e.model == "ORDERS" and e.url == EXTENSION_URL]
    current = [e for e in ours if e.label == EXTENSION_LABEL and e.context == "PANEL"]
    for extra in [e for e in ours if e not in current[:1]]:
        await bc.delete_app_extension(extra.id)
    if current:
        return "unchanged" if len(ours) == 1 else "updated"
    await bc.create_app_extension(model="ORDERS", context="PANEL", url=EXTENSION_URL, label=EXTENSION_LABEL,
                                  locales=EXTENSION_LOCALES)
    return "updated" if ours else "created"


async def remove_app_extension(rt: Runtime, store: StoreRecord) -> int:
    """Delete bcpay's Orders-page panel (``stores remove``); how many there were."""
    if store.source != "app":
        return 0
    bc = rt.bigcommerce(store)
    ours = [e for e in await bc.list_app_extensions() if e.url == EXTENSION_URL]
    for extension in ours:
        await bc.delete_app_extension(extension.id)
    return len(ours)


async def extension_check(rt: Runtime, store: StoreRecord) -> Check:
    """Register the panel where it belongs and say how it went (never fails the install: it is an extra)."""
    try:
        action = await register_app_extension(rt, store)
    except BcpayError as exc:
        log.warning("store %s: order-page panel not registered: %s", store.store_hash, exc.message[:200])
        return Check("order page panel", False, f"not registered: {exc.message[:200]}",
                     ["Give the app the App Extensions (manage) scope and install it again."])
    return Check("order page panel", True, action)


def control_panel_base(store: StoreRecord) -> str:
    """The store's control panel: ``control_panel_base_url`` is the bare host (store_information.v2.yml);
    a "/manage" suffix, as the sandbox reports it, is tolerated."""
    base = store.control_panel_url or f"https://store-{store.store_hash}.mybigcommerce.com"
    return base.rstrip("/").removesuffix("/manage")


def payment_method_fix(store: StoreRecord, method_name: str, channel: ChannelRecord | None = None) -> list[str]:
    """The control-panel steps to show the offline method under our name (no API can rename it)."""
    link = control_panel_base(store) + PAYMENT_SETTINGS_PATH
    where = f" for the {channel.name or f'channel {channel.channel_id}'} storefront" if channel is not None else ""
    return [
        f"Open {link} (Settings > Payments){where}.",
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


def _fix_snippet(store: StoreRecord, channel_id: int | None = None) -> list[str]:
    tail = f" --channel {channel_id}" if channel_id is not None else ""
    return [f"bcpay install-script {store.store_hash}{tail}"]


def _snippet_problem(rt: Runtime, store: StoreRecord, channel: ChannelRecord, scripts: list[Script]) -> str | None:
    """What is wrong with bcpay's snippet on this channel (None: present, enabled, current, essential)."""
    if not scripts:
        return "not installed"
    if len(scripts) > 1:
        return f"installed {len(scripts)} times"
    [script] = scripts
    spec = desired_script(rt, store, channel)
    if not script.enabled:
        return "installed but disabled"
    if script.html != spec.html:
        return "installed but outdated"
    if script.consent_category != spec.consent_category:
        # Script Manager lets a merchant change it; behind a cookie-consent banner only essential scripts
        # load before the shopper consents, so the shopper would never be sent to the cashier.
        return (f'consent category is "{script.consent_category}", not "{spec.consent_category}": with a '
                "cookie-consent banner, shoppers who have not consented never load it")
    return None


async def _scripts_by_channel(rt: Runtime, store: StoreRecord) -> dict[int, list[Script]]:
    ours: dict[int, list[Script]] = {}
    for script in await rt.bigcommerce(store).list_scripts():
        if script.name == SCRIPT_NAME:
            ours.setdefault(script.channel_id or channels.DEFAULT_CHANNEL, []).append(script)
    return ours


async def check_script(rt: Runtime, store: StoreRecord) -> Check:
    """bcpay's snippet is installed and current on channel 1 (a store with one storefront)."""
    channel = channels.find(await channels.known(rt, store), channels.DEFAULT_CHANNEL) or channels.fallback(store)
    problem = _snippet_problem(rt, store, channel, (await _scripts_by_channel(rt, store)).get(channel.channel_id, []))
    if problem is None:
        return Check("storefront snippet", True, "installed and current")
    return Check("storefront snippet", False, problem, _fix_snippet(store))


@dataclass(frozen=True)
class _Accepted:
    """What ``GET /v3/payments/methods`` said for a channel's newest order (``methods`` None: not asked)."""

    order_id: int | None
    methods: list[AcceptedMethod] | None
    why: str


async def _accepted_on(rt: Runtime, store: StoreRecord, channel: ChannelRecord) -> _Accepted:
    bc = rt.bigcommerce(store)
    order_id = await bc.latest_order_id(channel_id=channel.channel_id)
    if order_id is None:
        return _Accepted(None, None, "the channel has no order to ask /v3 with")
    try:
        return _Accepted(order_id, await bc.accepted_methods(order_id), "")
    except UpstreamRejected as exc:
        return _Accepted(order_id, None, f"/v3 refused ({exc.status})")


async def method_on_channel(rt: Runtime, store: StoreRecord, channel: ChannelRecord, answer: _Accepted, *,
                            v3_lists_offline: bool) -> tuple[bool, str]:
    """Is the channel's method name offered at that channel's checkout, and how bcpay knows.

    ``GET /v3/payments/methods`` answers per order, so per channel: it is asked
    with the channel's newest order. Whether it lists offline methods is
    unconfirmed (reference section 7): an answer without any offline method
    counts as "not offered here" only when v3 listed one for another channel of
    the store (``v3_lists_offline``). Otherwise, or where the channel has no
    order yet or v3 refuses, the deprecated store-wide ``GET /v2/payments/methods``
    answers, and the detail says so.
    """
    wanted = channels.policy(rt, store, channel).method_name
    why = answer.why
    if answer.methods is not None:
        where = f"v3, for order {answer.order_id}"
        if wanted in [m.name for m in answer.methods]:
            return True, f'"{wanted}" is offered ({where})'
        if v3_lists_offline or any(m.offline for m in answer.methods):
            return False, f'"{wanted}" is not offered at this channel\'s checkout ({where})'
        why = "/v3 lists no offline method"
    names = [m.name for m in await rt.bigcommerce(store).payment_methods()]
    if wanted in names:
        return True, f'"{wanted}" is enabled on the store (v2; {why})'
    return False, f'no enabled payment method is named "{wanted}" (v2; {why})'


async def _unless_error(name: str, run: Awaitable[Check]) -> Check:
    """One check of several: an API error fails this line only."""
    try:
        return await run
    except BcpayError as exc:
        return Check(name, False, f"could not check: {exc.message[:200]}")


async def check_channels(rt: Runtime, store: StoreRecord) -> list[Check]:
    """One line per storefront channel: snippet present, enabled, current, ``essential``, method offered.

    A store with channel 1 only gets the two checks it always had (offline
    payment method, storefront snippet). A channel that takes no orders, or
    where OKCloud Pay is switched off, must carry no snippet.
    """
    known = await channels.known(rt, store)
    if [c.channel_id for c in known] == [channels.DEFAULT_CHANNEL]:
        found = [await _unless_error("offline payment method", check_payment_method(rt, store)),
                 await _unless_error("storefront snippet", check_script(rt, store))]
        try:
            await rt.bigcommerce(store).list_channels()
        except BcpayError as exc:
            if not isinstance(exc, UpstreamRejected) or exc.status != 403:
                return found  # the token or BigCommerce is the problem: the lines above say so
            # Works as before, on one channel; a second storefront would get no snippet until the scopes come.
            found.append(Check("storefront channels", True,
                               f"not read: the token lacks {', '.join(CHANNEL_SCOPES)}, so bcpay serves channel 1 "
                               "only", ["For other storefront channels, give the API account these scopes and run "
                                        f"`bcpay stores add {store.store_hash}` again (or re-install the app)."]))
        return found
    ours = await _scripts_by_channel(rt, store)
    answers = {c.channel_id: await _accepted_on(rt, store, c) for c in known if channels.wants_snippet(c)}
    v3_lists_offline = any(m.offline for a in answers.values() for m in a.methods or ())
    found = []
    for channel in known:
        label = f"channel {channel.channel_id} ({channel.name or '?'})"
        scripts = ours.get(channel.channel_id, [])
        fix = _fix_snippet(store, channel.channel_id)
        if not channels.wants_snippet(channel):
            why = (f"{channel.status}: takes no orders" if not channels.takes_orders(channel)
                   else "OKCloud Pay is switched off here")
            found.append(Check(label, False, f"{why}, but bcpay's snippet is still on it", fix) if scripts
                         else Check(label, True, f"{why}; no snippet, as it should be"))
            continue
        problem = _snippet_problem(rt, store, channel, scripts)
        offered, method = await method_on_channel(rt, store, channel, answers[channel.channel_id],
                                                  v3_lists_offline=v3_lists_offline)
        if problem is None and offered:
            found.append(Check(label, True, f"snippet installed and current; {method}"))
            continue
        steps = (fix if problem else []) + ([] if offered else payment_method_fix(
            store, channels.policy(rt, store, channel).method_name, channel))
        found.append(Check(label, False, "; ".join(filter(None, [
            f"snippet {problem}" if problem else "snippet installed and current", method])), steps))
    return found


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


INVENTORY_SETTINGS_PATH = "/manage/settings/inventory"
ORDER_NOTIFICATIONS_PATH = "/manage/settings/order-notifications"


def cancels_orders(rt: Runtime, store: StoreRecord) -> bool:
    """Whether bcpay cancels this store's unpaid orders (the unpaid hold, or ``on_expired = "cancel"``)."""
    policy = rt.policy(store)
    return policy.unpaid_hold > 0 or policy.on_expired == "cancel"


def inventory_fix(store: StoreRecord, channels_named: list[str]) -> list[str]:
    """The control-panel steps that make a cancelled order return its stock (no API write of bcpay's does)."""
    steps = [
        f"Open {control_panel_base(store)}{INVENTORY_SETTINGS_PATH} (Settings > Inventory).",
        'Under stock level adjustment, switch on returning stock when an order is refunded or cancelled '
        "(refund_order_stock_adjustment) and save.",
    ]
    if channels_named:
        steps.append(f"A storefront with inventory settings of its own ({', '.join(channels_named)}): do the "
                     "same in Channel Manager, that storefront's settings, Inventory.")
    steps.append("Run this check again.")
    return steps


async def check_inventory(rt: Runtime, store: StoreRecord) -> Check:
    """Does a cancelled order give its stock back, globally and on every storefront that sets its own?

    ``GET /v3/settings/inventory`` (reference section 13): stock taken when the
    order is placed (``update_stock_behavior``) comes back on cancel only with
    ``refund_order_stock_adjustment``; a channel's unset field inherits the global one.
    """
    name = "stock of cancelled orders"
    bc = rt.bigcommerce(store)
    base = await bc.inventory_settings()
    storefronts = [c for c in await channels.known(rt, store) if channels.takes_orders(c)]
    kept: list[str] = []
    overriding: list[str] = []  # storefronts that keep stock by a setting of their own, not the global one
    for channel in storefronts:
        own = await bc.inventory_settings(channel.channel_id)
        if not _returns_stock(own.over(base)):
            label = f"{channel.name or 'channel'} ({channel.channel_id})"
            kept.append(label)
            if own.refund_order_stock_adjustment is not None or own.update_stock_behavior is not None:
                overriding.append(label)
    if not storefronts and not _returns_stock(base):
        kept.append("the store")
    if not kept:
        held = base.update_stock_behavior == "order_completed_or_shipped"
        return Check(name, True, "stock is taken only when an order ships or completes: an unpaid order holds none"
                     if held and not storefronts else "a cancelled order returns its stock")
    detail = f"a cancelled order does not return its stock on {', '.join(kept)}"
    if cancels_orders(rt, store):
        detail += ": the unpaid orders bcpay cancels keep their items off sale"
    return Check(name, True, detail, inventory_fix(store, overriding))


def _returns_stock(settings: InventorySettings) -> bool:
    # Stock taken only at shipping or completion is never held by an unpaid order.
    taken_late = settings.update_stock_behavior == "order_completed_or_shipped"
    return taken_late or settings.refund_order_stock_adjustment is not False


def instructions_wording(rt: Runtime, store: StoreRecord) -> str:
    """What to write in the offline method's payment instructions: BigCommerce's order e-mail quotes them."""
    policy = rt.policy(store)
    text = f"You will be taken to {policy.method_name} to complete payment."
    if policy.unpaid_hold > 0:
        text += f" An order not paid within {policy.unpaid_hold} minutes is cancelled."
    return text


def email_steps(rt: Runtime, store: StoreRecord) -> Check:
    """The e-mail settings only a person can make: no BigCommerce API reads or writes them (section 13)."""
    policy = rt.policy(store)
    base = control_panel_base(store)
    paid = STATUS_NAMES.get(policy.paid_status_id, str(policy.paid_status_id))
    steps = [
        f"Open {base}{PAYMENT_SETTINGS_PATH} (Settings > Payments), edit the offline method \"{policy.method_name}\" "
        f"and set its payment instructions to: {instructions_wording(rt, store)}",
        f"Open {base}{ORDER_NOTIFICATIONS_PATH} (Settings > Order Notifications) and tick the e-mail for "
        f"{paid}: that is the shopper's receipt once the payment arrives.",
    ]
    if cancels_orders(rt, store):
        steps.append("Tick the e-mail for Cancelled as well: a shopper whose order was cancelled unpaid hears of it.")
    return Check("order e-mails", True, "not checked: no BigCommerce API reads the payment instructions or the "
                 "status e-mails, so doctor cannot see them; make these settings once by hand", steps)


async def provision(rt: Runtime, store: StoreRecord) -> list[Check]:
    """Everything a store needs, idempotent: token, snippet, webhooks, payment method."""
    token = await check_token(rt, store)
    checks = [token]
    if not token.ok:
        return checks
    known = await channels.refresh(rt, store)
    taking = [c for c in known if channels.takes_orders(c)]
    checks.append(Check("storefront channels", True, ", ".join(
        f"{c.channel_id} {c.name or '?'} ({c.status}{', ' + c.site_url if c.site_url else ''})" for c in known)
        or "none", [] if taking else ["No storefront channel takes orders."]))
    action = await install_script(rt, store)
    checks.append(Check("storefront snippet", "limit" not in action, action,
                        [] if "limit" not in action else [
                            f"BigCommerce allows {SCRIPTS_PER_APP} scripts per app: switch OKCloud Pay off on a "
                            "channel that does not need it (`bcpay channels configure STORE N --no-method`)."]))
    hooks = await register_webhooks(rt, store)
    checks.append(Check("webhooks", True, ", ".join(f"{k}: {v}" for k, v in hooks.items())))
    checks.append(await check_payment_method(rt, store))
    if store.source == "app":
        checks.append(await extension_check(rt, store))
    try:
        checks.append(await check_inventory(rt, store))
    except BcpayError as exc:
        checks.append(Check("stock of cancelled orders", True, f"could not check: {exc.message[:200]}"))
    checks.append(email_steps(rt, store))
    return checks
