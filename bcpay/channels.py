"""Multi-storefront: a store's storefront channels, their sites, and what bcpay does per channel.

Reference section 11. ``GET /v3/channels`` lists the store's channels (channel
1, the default storefront, always among them); each storefront channel's site
(``GET /v3/channels/{id}/site``) gives its domains. bcpay keeps them in the
``channels`` table, read at install, ``provision``, ``/bc/load``, on the
``store/channel/created`` / ``updated`` webhooks and by the worker's sweep
(a site's domain can change without any webhook), and uses them for:

- the snippet: one Script Manager script per channel that takes orders (scripts
  belong to one channel), see :func:`bcpay.provisioning.install_script`;
- CORS: a channel's site origins may call bcpay for that store only;
- the return hop: a shopper goes back to the order's channel's checkout domain
  (its ``checkout`` URL where customised; otherwise checkout "falls back to the
  default channel's primary URL", sites.v3.yml);
- per-channel settings (``channels.settings_json``): ``method_name`` and
  ``accepted_methods`` where a channel names the offline method differently,
  ``offers: false`` for a channel that does not offer OKCloud Pay, and
  ``lang``, the snippet's language when the page declares none.

A store whose token lacks the channel scopes (an API account made before this
release) keeps working as one channel: channel 1 on ``stores.store_url``.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from bcpay.clients.bigcommerce import Site
from bcpay.errors import InvalidInputError, NotFoundError, UpstreamRejected
from bcpay.runtime import Runtime, StorePolicy
from bcpay.storage import channel_queries as cq
from bcpay.storage.channel_queries import ChannelRecord
from bcpay.storage.records import StoreRecord

log = logging.getLogger("bcpay.channels")

DEFAULT_CHANNEL = 1
STOREFRONT = "storefront"
# Statuses of a storefront channel that takes orders. `prelaunch` too: the merchant places test orders on a
# storefront before launching it (channels.v3.yml: `is_enabled` is true for prelaunch, active, connected).
TAKES_ORDERS = frozenset({"active", "prelaunch", "connected"})
GONE = frozenset({"deleted", "terminated"})
# How old the stored channels may get before the sweep reads them again: a site's domain can change without
# any webhook (store/channel/updated fires for name, status and visibility only, channels.mdx).
MAX_AGE = timedelta(hours=6)
# The settings a merchant may give one channel, with their types.
SETTINGS: dict[str, type] = {"method_name": str, "accepted_methods": list, "offers": bool, "lang": str}
LANGS = frozenset({"auto", "en", "zh"})


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower case ("" for anything that is not http(s))."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower()


def takes_orders(channel: ChannelRecord) -> bool:
    """A storefront channel in a status where shoppers check out."""
    return channel.status in TAKES_ORDERS


def wants_snippet(channel: ChannelRecord) -> bool:
    """Does bcpay's snippet belong on this channel (it takes orders and offers OKCloud Pay)?"""
    return takes_orders(channel) and channel.settings.get("offers") is not False


def fallback(store: StoreRecord) -> ChannelRecord:
    """Channel 1 as bcpay knew it before channels: the store's own URL (no channel rows yet, or no scopes)."""
    url = store.store_url.rstrip("/")
    urls = (("primary", url),) if url else ()
    return ChannelRecord(store_id=store.id, channel_id=DEFAULT_CHANNEL, name=store.name, platform="bigcommerce",
                         status="active", site_url=url, urls=urls, checkout_customized=None)


async def stored(rt: Runtime, store: StoreRecord) -> list[ChannelRecord]:
    """The store's channels as last read (none yet: an empty list)."""
    async with rt.db.read() as conn:
        return await cq.list_channels(conn, store.id)


async def known(rt: Runtime, store: StoreRecord) -> list[ChannelRecord]:
    """The stored channels, or channel 1 on the store's URL when none were read yet."""
    return await stored(rt, store) or [fallback(store)]


def _site_values(site: Site | None) -> dict[str, Any]:
    if site is None:
        return {"site_url": "", "urls": [], "checkout_customized": None}
    urls = [("primary", site.url)] if not any(t == "primary" for t, _ in site.urls) else []
    return {"site_url": site.url.rstrip("/"), "urls": [*urls, *site.urls],
            "checkout_customized": site.checkout_customized}


async def refresh(rt: Runtime, store: StoreRecord) -> list[ChannelRecord]:
    """Read the store's storefront channels and their sites from BigCommerce and store them.

    A channel BigCommerce no longer lists is kept as ``deleted`` (its snippet is
    removed by the next install). Without the channel scopes (403) nothing is
    read: the store stays a one-channel store on its own URL, and a warning says so.
    """
    bc = rt.bigcommerce(store)
    try:
        listed = [c for c in await bc.list_channels() if c.type in (STOREFRONT, "")]
    except UpstreamRejected as exc:
        if exc.status != 403:
            raise
        log.warning("store %s: no channel scopes (403); bcpay uses channel 1 on %s only",
                    store.store_hash, store.store_url or "its URL")
        one = fallback(store)
        async with rt.db.transaction() as conn:
            await cq.upsert_channel(conn, store.id, DEFAULT_CHANNEL, rt.now(), name=one.name[:255],
                                    status="active", site_url=one.site_url, urls=list(one.urls), read_at=rt.now())
            return await cq.list_channels(conn, store.id)
    sites: dict[int, Site | None] = {}
    for channel in listed:
        if channel.status in GONE:
            continue
        try:
            sites[channel.id] = await bc.channel_site(channel.id)
        except UpstreamRejected as exc:
            if exc.status != 403:
                raise
            sites[channel.id] = None
    now = rt.now()
    async with rt.db.transaction() as conn:
        before = {c.channel_id: c for c in await cq.list_channels(conn, store.id)}
        for channel in listed:
            values: dict[str, Any] = {"name": channel.name[:255], "platform": channel.platform[:64],
                                      "status": channel.status[:24], "read_at": now}
            if channel.id in sites:
                values.update(_site_values(sites[channel.id]))
            if channel.id == DEFAULT_CHANNEL and not values.get("site_url") and store.store_url:
                values.update(site_url=store.store_url.rstrip("/"), urls=[("primary", store.store_url.rstrip("/"))])
            await cq.upsert_channel(conn, store.id, channel.id, now, **values)
        listed_ids = {c.id for c in listed}
        for channel_id in before:
            if channel_id not in listed_ids:
                await cq.update_channel(conn, store.id, channel_id, now, status="deleted", read_at=now)
        return await cq.list_channels(conn, store.id)


async def queue_refresh(rt: Runtime, store: StoreRecord) -> bool:
    """Queue a read of the store's channels (and the snippet fixes it leads to) for the worker; one at a time."""
    from bcpay import outbox

    if not store.access_token_enc:
        return False
    async with rt.db.transaction() as conn:
        return await outbox.enqueue(conn, "refresh_channels", {}, now=rt.now(), store_id=store.id,
                                    dedupe_key=f"refresh_channels:{store.id}")


def find(channels: list[ChannelRecord], channel_id: int | None) -> ChannelRecord | None:
    """The channel with this id, if known."""
    return next((c for c in channels if c.channel_id == (channel_id or DEFAULT_CHANNEL)), None)


def policy(rt: Runtime, store: StoreRecord, channel: ChannelRecord | None) -> StorePolicy:
    """The store's policy with the channel's own method names (``offers: false``: it accepts none)."""
    base = rt.policy(store)
    if channel is None:
        return base
    s = channel.settings
    method = str(s.get("method_name") or base.method_name)
    names = s.get("accepted_methods")
    if names:
        accepted = tuple(str(n) for n in names)
    elif s.get("method_name"):
        accepted = (method,)
    else:
        accepted = base.accepted_methods
    if method not in accepted:
        accepted = (method, *accepted)
    if s.get("offers") is False:
        accepted = ()
    return dataclasses.replace(base, method_name=method, accepted_methods=accepted)


def lang(channel: ChannelRecord | None) -> str:
    """The snippet's fallback language on this channel ("" when none is set)."""
    value = channel.settings.get("lang") if channel is not None else None
    return value if isinstance(value, str) and value in LANGS - {"auto"} else ""


def origins(channel: ChannelRecord) -> set[str]:
    """Every origin of the channel's site (primary, canonical, checkout), for CORS."""
    found = {origin_of(channel.site_url)} if channel.site_url else set()
    found.update(origin_of(u) for _, u in channel.urls)
    found.discard("")
    return found


def checkout_base(channels: list[ChannelRecord], channel_id: int | None, store: StoreRecord) -> str:
    """Where the order's channel's checkout (and its confirmation page) lives, no trailing slash.

    Its ``checkout`` URL where the channel customised one; otherwise, as
    BigCommerce falls back, the default channel's primary URL (sites.v3.yml,
    ``is_checkout_url_customized``); the store's URL when nothing is known.
    """
    channel = find(channels, channel_id)
    if channel is not None:
        checkout = channel.url_of("checkout")
        if checkout and channel.checkout_customized is not False:
            return checkout.rstrip("/")
        if channel.channel_id == DEFAULT_CHANNEL and channel.site_url:
            return channel.site_url.rstrip("/")
    default = find(channels, DEFAULT_CHANNEL)
    if default is not None and default.site_url:
        checkout = default.url_of("checkout")
        if checkout and default.checkout_customized is not False:
            return checkout.rstrip("/")
        return default.site_url.rstrip("/")
    return store.store_url.rstrip("/")


def site_of(channels: list[ChannelRecord], channel_id: int | None, store: StoreRecord) -> tuple[str, str]:
    """(name, URL) of the order's channel's site, for the pay page's "back to the shop" link."""
    channel = find(channels, channel_id)
    if channel is not None and channel.site_url and channel.channel_id != DEFAULT_CHANNEL:
        return channel.name or store.name or store.store_hash, channel.site_url
    if channel is not None and channel.site_url:
        return store.name or channel.name or store.store_hash, channel.site_url
    return store.name or store.store_hash, store.store_url


def clean_settings(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The channel's settings after ``changes`` (a value of None removes a key); raises on a bad one."""
    merged = dict(current)
    for key, value in changes.items():
        if key not in SETTINGS:
            raise InvalidInputError(f"unknown channel setting {key!r}", code="invalid_channel_setting")
        if value is None:
            merged.pop(key, None)
            continue
        if not isinstance(value, SETTINGS[key]) or (key == "lang" and value not in LANGS):
            raise InvalidInputError(f"channel setting {key!r} has the wrong type or value",
                                    code="invalid_channel_setting")
        if isinstance(value, list) and not all(isinstance(v, str) and v.strip() for v in value):
            raise InvalidInputError("accepted_methods must be non-empty names", code="invalid_channel_setting")
        if isinstance(value, str) and key == "method_name" and not value.strip():
            raise InvalidInputError("method_name must not be empty", code="invalid_channel_setting")
        merged[key] = value
    return merged


async def configure(rt: Runtime, store: StoreRecord, channel_id: int, changes: dict[str, Any]) -> ChannelRecord:
    """Change one channel's settings (reading the channels first if bcpay has none yet)."""
    channels = await stored(rt, store) or await refresh(rt, store)
    channel = find(channels, channel_id)
    if channel is None:
        raise NotFoundError(f"store {store.store_hash} has no channel {channel_id}", code="unknown_channel")
    settings = clean_settings(channel.settings, changes)
    async with rt.db.transaction() as conn:
        await cq.update_channel(conn, store.id, channel_id, rt.now(), settings=settings)
        fresh = find(await cq.list_channels(conn, store.id), channel_id)
    assert fresh is not None
    return fresh
