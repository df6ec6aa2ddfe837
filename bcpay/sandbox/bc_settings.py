"""The fake BigCommerce's store settings: ``GET /v3/settings/inventory`` (settings.v3.yml, reference section 13).

Without ``channel_id`` the global settings; with it, that channel's, where a
field the channel does not override is ``null`` ("not overridden on a channel
level ... values are inherited from global level"). An unknown channel is a
422, the status the spec gives for settings that "could not be applied".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bcpay.sandbox.bc_rules import int_param
from bcpay.sandbox.bc_state import JSON, FakeApiError

if TYPE_CHECKING:
    from bcpay.sandbox.bc_state import FakeBigCommerce, Store


def set_inventory(state: FakeBigCommerce, store_hash: str, *, channel_id: int | None = None, **fields: Any) -> JSON:
    """Change the global inventory settings, or one channel's overrides (``None`` removes an override)."""
    store = state.store(store_hash)
    unknown = set(fields) - set(store.inventory)
    if unknown:
        raise FakeApiError(422, f"unknown inventory settings: {', '.join(sorted(unknown))}")
    if channel_id is None:
        if any(v is None for v in fields.values()):
            raise FakeApiError(422, "global inventory settings cannot be null")
        store.inventory.update(fields)
        return store.inventory
    if channel_id not in store.channels:
        raise FakeApiError(422, f"channel {channel_id} does not exist")
    own = store.channel_inventory.setdefault(channel_id, dict.fromkeys(store.inventory))
    own.update(fields)
    return own


def _settings_of(store: Store, channel_id: int | None) -> JSON:
    if channel_id is None:
        return dict(store.inventory)
    if channel_id not in store.channels:
        raise FakeApiError(422, f"channel {channel_id} does not exist")
    return dict(store.channel_inventory.get(channel_id) or dict.fromkeys(store.inventory))


async def get_inventory(request: Request, store: Store) -> Response:
    """``GET /v3/settings/inventory[?channel_id=]``."""
    unknown = set(request.query_params) - {"channel_id"}
    if unknown:
        raise FakeApiError(400, f"unknown query parameters: {', '.join(sorted(unknown))}")
    return JSONResponse({"data": _settings_of(store, int_param(request, "channel_id")), "meta": {}})
