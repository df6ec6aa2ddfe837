"""The BigCommerce OAuth scopes bcpay needs (reference section 2, payment-methods OpenAPI).

A module of its own, importing nothing, so the CLI can show the list without
loading the library.
"""

from __future__ import annotations

# Orders and their metafields, scripts, store information, and reading payment
# methods (to check the offline method's display name).
REQUIRED_SCOPES: tuple[str, ...] = (
    "store_v2_orders",
    "store_v2_content",
    "store_v2_information_read_only",
    "store_payments_methods_read",
)

# Multi-storefront (reference section 11): the storefront channels and their sites' domains. Asked for, not
# required: without them bcpay serves channel 1 on the store's URL only, as before, and doctor says so.
CHANNEL_SCOPES: tuple[str, ...] = (
    "store_channel_settings_read_only",
    "store_sites_read_only",
)

# The order page's panel (App Extensions, reference section 14), for app installs: asked for, not required.
EXTENSION_SCOPES: tuple[str, ...] = ("store_app_extensions_manage",)
