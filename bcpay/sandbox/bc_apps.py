"""The fake BigCommerce's side of an app's life after its install: callbacks and uninstall.

The install itself (``/oauth2/token``) lives with the rest of the platform
in :mod:`bcpay.sandbox.bc_state`; this is what happens when a merchant
removes the app (reference section 1 and "Post app uninstall actions" in the
webhooks overview): its tokens stop working, ``store/app/uninstalled`` goes
out, its hooks and scripts are deleted and its ``/uninstall`` callback is
called with a ``signed_payload_jwt``.
"""

from __future__ import annotations

import uuid

import httpx
import jwt

from bcpay.sandbox.bc_state import FakeBigCommerce, WebhookDelivery


def revoke_tokens(state: FakeBigCommerce, store_hash: str, *, client_id: str) -> int:
    """Make the store refuse (401) every token of ``client_id``; how many there were."""
    store = state.store(store_hash)
    revoked = [t for t, grant in store.tokens.items() if grant.client_id == client_id]
    for token in revoked:
        del store.tokens[token]
    return len(revoked)


def signed_payload_jwt(state: FakeBigCommerce, store_hash: str, client_id: str, *, user_id: int = 24654,
                       user_email: str = "merchant@example.com", url: str = "/") -> str:
    """A callback's ``signed_payload_jwt`` as BigCommerce makes it (reference section 1): HS256 with the
    app's client secret, a fresh ``jti``, valid for 24 hours."""
    issued = int(state.clock().timestamp())
    claims = {
        "aud": client_id, "iss": "bc", "iat": issued, "nbf": issued, "exp": issued + 86400,
        "jti": str(uuid.uuid4()), "sub": f"stores/{store_hash}",
        "user": {"id": user_id, "email": user_email, "locale": "en-US"},
        "owner": {"id": 24654, "email": "merchant@example.com"}, "url": url, "channel_id": None,
    }
    return jwt.encode(claims, state.apps[client_id], algorithm="HS256")


async def uninstall_app(state: FakeBigCommerce, http: httpx.AsyncClient, store_hash: str, *, client_id: str,
                        uninstall_url: str | None = None) -> list[WebhookDelivery]:
    """The merchant uninstalls an app; returns the ``store/app/uninstalled`` deliveries.

    In BigCommerce's order: the tokens first (a 401 from then on), then the
    webhook to the app's hooks, then the hooks, scripts and App Extensions go, then the
    callback (server to server, so through ``http``).
    """
    store = state.store(store_hash)
    revoke_tokens(state, store_hash, client_id=client_id)
    deliveries = await state.fire_webhook(http, store_hash, "store/app/uninstalled",
                                          {"type": "store", "id": int(store.store_id)}, client_id=client_id)
    for hook_id in [i for i, h in store.hooks.items() if h["client_id"] == client_id]:
        del store.hooks[hook_id]
    for script_uuid in [u for u, s in store.scripts.items() if s["api_client_id"] == client_id]:
        del store.scripts[script_uuid]
    for extension_id in [i for i, e in store.app_extensions.items() if e["client_id"] == client_id]:
        del store.app_extensions[extension_id]
    if uninstall_url is not None:
        await http.get(uninstall_url, params={"signed_payload_jwt": signed_payload_jwt(state, store_hash, client_id)})
    return deliveries
