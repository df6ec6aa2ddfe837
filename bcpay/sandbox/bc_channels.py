"""The fake BigCommerce's channels and sites (multi-storefront, reference section 11).

Shapes from ``openapi/channels.v3.yml`` (``ChannelWithoutCurrencies``, ``Site``,
``Url``) and ``openapi/sites.v3.yml``: ``GET /v3/channels`` always lists the
default storefront, channel 1; ``GET /v3/channels/{id}/site`` answers the
channel's site with its typed URLs and ``is_checkout_url_customized`` (when
false, checkout "falls back to the default channel's primary URL"). Changing a
channel's name or status fires ``store/channel/updated``, creating one
``store/channel/created`` (``integrations_webhooks_events_channels.mdx``); a
site's URL change fires nothing, as on BigCommerce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bcpay.sandbox.bc_rules import int_param, paginate
from bcpay.sandbox.bc_state import JSON, FakeApiError, iso8601

if TYPE_CHECKING:
    import httpx

    from bcpay.sandbox.bc_state import FakeBigCommerce, Store

STATUSES = ("active", "prelaunch", "inactive", "connected", "disconnected", "archived", "deleted",
            "terminated")
ENABLED = frozenset({"prelaunch", "active", "connected"})  # is_enabled, as channels.v3.yml derives it
TYPES = ("pos", "marketplace", "storefront", "marketing")
# GET /v3/channels query parameters (channels.v3.yml); anything else is a client bug worth a 400.
LIST_PARAMS = frozenset({
    "include", "available", "status:in", "type:in", "platform:in", "date_created", "date_created:min",
    "date_created:max", "date_modified", "date_modified:min", "date_modified:max", "limit", "page"})


def add_channel(state: FakeBigCommerce, store_hash: str, *, name: str, url: str | None,
                channel_id: int | None = None, status: str = "active", type_: str = "storefront",
                platform: str = "bigcommerce", checkout_url: str | None = None) -> JSON:
    """Create a channel (and its site when ``url`` is given); returns the channel."""
    store = state.store(store_hash)
    if status not in STATUSES or type_ not in TYPES:
        raise FakeApiError(422, "invalid channel status or type")
    cid = channel_id if channel_id is not None else max(store.channels, default=0) + 1
    if cid in store.channels:
        raise FakeApiError(409, f"channel {cid} exists")
    now = iso8601(state.clock())
    channel: JSON = {
        "id": cid, "external_id": "", "is_listable_from_ui": True, "is_visible": True,
        "is_enabled": status in ENABLED, "status": status, "name": name, "type": type_,
        "platform": platform, "date_created": now, "date_modified": now, "icon_url": "",
    }
    store.channels[cid] = channel
    if url is not None:
        set_site(state, store_hash, cid, url=url, checkout_url=checkout_url)
    return channel


def set_site(state: FakeBigCommerce, store_hash: str, channel_id: int, *, url: str,
             checkout_url: str | None = None) -> JSON:
    """Create or change a channel's site: its primary URL and, optionally, a custom checkout URL."""
    store = state.store(store_hash)
    if channel_id not in store.channels:
        raise FakeApiError(404, "The channel was not found.")
    now = iso8601(state.clock())
    old = store.sites.get(channel_id)
    url = url.rstrip("/")
    urls = [{"url": url, "type": "primary", "created_at": now, "updated_at": now},
            {"url": url, "type": "canonical", "created_at": now, "updated_at": now}]
    if checkout_url:
        urls.append({"url": checkout_url.rstrip("/"), "type": "checkout", "created_at": now, "updated_at": now})
    site: JSON = {
        "id": old["id"] if old else 1000 + channel_id - 1, "url": url, "channel_id": channel_id,
        "created_at": old["created_at"] if old else now, "updated_at": now, "ssl_status": "shared",
        "urls": urls, "is_checkout_url_customized": bool(checkout_url),
    }
    store.sites[channel_id] = site
    if channel_id == 1:
        store.secure_url = url
    return site


def update_channel(state: FakeBigCommerce, store_hash: str, channel_id: int, **fields: Any) -> JSON:
    """Change a channel's ``name`` or ``status`` as the control panel would."""
    store = state.store(store_hash)
    channel = store.channels.get(channel_id)
    if channel is None:
        raise FakeApiError(404, "The channel was not found.")
    if "status" in fields and fields["status"] not in STATUSES:
        raise FakeApiError(422, "invalid channel status")
    channel.update({k: v for k, v in fields.items() if k in ("name", "status")})
    channel["is_enabled"] = channel["status"] in ENABLED
    channel["date_modified"] = iso8601(state.clock())
    return channel


async def fire_channel_event(state: FakeBigCommerce, http: httpx.AsyncClient, store_hash: str,
                             scope: str, channel_id: int) -> None:
    """``store/channel/created`` or ``/updated`` with ``data {type: channel, id}`` (channels.mdx)."""
    await state.fire_webhook(http, store_hash, scope, {"type": "channel", "id": channel_id})


def _filter(channels: list[JSON], request: Request) -> list[JSON]:
    q = request.query_params
    unknown = set(q) - LIST_PARAMS
    if unknown:
        raise FakeApiError(400, f"unknown query parameters: {', '.join(sorted(unknown))}")
    for name, key in (("status:in", "status"), ("type:in", "type"), ("platform:in", "platform")):
        if q.get(name):
            wanted = {v.strip() for v in q[name].split(",")}
            if key == "status" and not wanted <= set(STATUSES):
                raise FakeApiError(422, "invalid status filter", {"status:in": "invalid value"})
            channels = [c for c in channels if c[key] in wanted]
    if "available" in q:
        if q["available"] not in ("true", "false"):
            raise FakeApiError(422, "available must be true or false", {"available": "invalid value"})
        available = q["available"] == "true"
        channels = [c for c in channels if (c["status"] not in ("deleted", "terminated")) == available]
    return channels


async def list_channels(request: Request, store: Store) -> Response:
    """``GET /v3/channels``: every channel, channel 1 first, paginated (limit at most 250)."""
    limit = int_param(request, "limit", 50) or 50
    if limit > 250:
        raise FakeApiError(422, "limit must be at most 250", {"limit": "invalid value"})
    channels = _filter([dict(c) for c in sorted(store.channels.values(), key=lambda c: c["id"])], request)
    return JSONResponse(paginate(channels, request))


async def get_channel_site(request: Request, store: Store) -> Response:
    """``GET /v3/channels/{id}/site``: the site, or 404 for a channel without one."""
    channel_id = request.path_params["channel_id"]
    if channel_id not in store.channels:
        raise FakeApiError(404, "The channel was not found.")
    site = store.sites.get(channel_id)
    if site is None:
        raise FakeApiError(404, "The site was not found.")
    return JSONResponse({"data": site, "meta": {}})


def check_script_channel(store: Store, script: JSON) -> None:
    """A script's ``channel_id`` must name a channel; at most 50 scripts per channel (scripts.v3.yml)."""
    channel_id = script.get("channel_id", 1)
    if channel_id not in store.channels:
        raise FakeApiError(422, f"Channel {channel_id} does not exist.", {"channel_id": "invalid channel"})
    same = [s for s in store.scripts.values() if s.get("channel_id") == channel_id and s is not script]
    if len(same) >= 50:
        raise FakeApiError(422, "A channel can have at most 50 scripts.", {"channel_id": "limit reached"})
