"""The importable app factory ``bcpay serve`` hands to uvicorn.

uvicorn workers are separate processes: each imports
``bcpay.server.entry:app_from_env`` and builds its own app from the same
sources the CLI read (``$BCPAY_CONFIG`` or ``./bcpay.toml``, then
``BCPAY_*`` variables), which ``bcpay serve`` exports before starting them.
"""

from __future__ import annotations

from starlette.applications import Starlette

from bcpay.config import load_settings
from bcpay.logs import setup_logging
from bcpay.server.app import create_app

FACTORY = "bcpay.server.entry:app_from_env"


def app_from_env() -> Starlette:
    """Build the server app from the config file and environment of this process."""
    settings = load_settings()
    setup_logging(settings.server.log_format, settings.server.log_level)
    return create_app(settings, long_lived=True)
