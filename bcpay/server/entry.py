"""The importable app factory ``bcpay serve`` hands to uvicorn.

uvicorn workers are separate processes: each imports
``bcpay.server.entry:app_from_env`` and builds its own app from the same
sources the CLI read (``$BCPAY_CONFIG`` or ``./bcpay.toml``, then
``BCPAY_*`` variables), which ``bcpay serve`` exports before starting them.
:func:`uvicorn_log_config` is the ``log_config`` it hands uvicorn, which every
worker process applies before it imports the app.
"""

from __future__ import annotations

import copy
from typing import Any

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


def uvicorn_log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's ``log_config``: its own for text; for JSON, its loggers through bcpay's formatter.

    uvicorn configures its loggers itself ("Started server process", "Uvicorn running on ..."),
    so with ``server.log_format = "json"`` they would stay text lines among bcpay's JSON ones.
    """
    from uvicorn.config import LOGGING_CONFIG

    if log_format != "json":
        return copy.deepcopy(LOGGING_CONFIG)  # a copy: uvicorn may write use_colors into it
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "bcpay.logs.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
        },
    }
