"""The storefront snippet: its file, its content hash and its Script Manager tag.

The script is served at ``/static/inject.<hash>.js`` (immutable, long cache)
and installed through the Script Manager as a ``script_tag`` whose HTML
carries an SRI ``integrity`` hash (PCI DSS 4.0 6.4.3) and the configuration in
``data-`` attributes, including Stencil's ``{{checkout.order.id}}``.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from bcpay.storage import queries as q

if TYPE_CHECKING:
    from bcpay.runtime import Runtime

SCRIPT_NAME = "bcpay: OKCloud Pay on the order confirmation page"
SCRIPT_DESCRIPTION = "Sends the shopper to OKCloud Pay (CeleryPay) and shows the payment status."


@dataclass(frozen=True)
class Asset:
    """The snippet's bytes with its hashes."""

    body: bytes
    short_hash: str  # for the URL and the ETag
    integrity: str  # sha384-... for SRI


@lru_cache(maxsize=1)
def asset() -> Asset:
    """Read ``bcpay/assets/inject.js`` once per process."""
    body = resources.files("bcpay.assets").joinpath("inject.js").read_bytes()
    digest = hashlib.sha384(body).digest()
    return Asset(
        body=body,
        short_hash=hashlib.sha256(body).hexdigest()[:16],
        integrity="sha384-" + base64.b64encode(digest).decode("ascii"),
    )


def script_url(public_url: str) -> str:
    """The content-addressed URL of the current snippet."""
    return f"{public_url.rstrip('/')}/static/inject.{asset().short_hash}.js"


def script_tag(public_url: str, store_hash: str, method_name: str, lang: str = "auto", *,
               default_lang: str = "") -> str:
    """The exact HTML installed in the Script Manager (kind ``script_tag``).

    ``default_lang`` is the channel's language, used when the page declares none
    (``<html lang>``); the attribute is left out when there is none, so a tag
    without it stays what it was.
    """
    attrs = {
        "src": script_url(public_url),
        "integrity": asset().integrity,
        "crossorigin": "anonymous",
        "data-bcpay-url": public_url.rstrip("/"),
        "data-store-hash": store_hash,
        "data-method-name": method_name,
        "data-lang": lang,
    }
    if default_lang:
        attrs["data-default-lang"] = default_lang
    rendered = " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
    # Stencil substitutes {{checkout.order.id}} on the confirmation page; left raw elsewhere. async, not
    # defer: a deferred script holds back DOMContentLoaded (the theme's and tag managers' "ready") until
    # bcpay's host has answered; the snippet waits for the document itself.
    return f'<script {rendered} data-order-id="{{{{checkout.order.id}}}}" async></script>'


async def keep_current(rt: Runtime) -> None:
    """Store this version in the database, so that every bcpay host can serve it (``bcpay serve`` start)."""
    current = asset()
    async with rt.db.transaction() as conn:
        await q.save_snippet_version(conn, current.short_hash, current.body, rt.now())


async def stored_version(rt: Runtime, short_hash: str) -> bytes | None:
    """An earlier version some bcpay server served: stores' tags may still name it after a release, or
    while old and new hosts run side by side, until the worker has rewritten them."""
    async with rt.db.read() as conn:
        return await q.snippet_version(conn, short_hash)
