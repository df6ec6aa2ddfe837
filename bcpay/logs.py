"""Logging: one line per event, text or JSON, with secrets masked.

Tokens, secrets and shopper emails are never logged in full: call
:func:`mask` on anything that might be one before it reaches a log line.
Both formatters also blank any payment token in a bcpay path
(``/pay/{token}``, ``/api/v1/payments/{token}``, ``bcpay_token=``) that an
upstream's error text or a traceback carried into a message
(:func:`redact_tokens`): whoever holds a token sees that payment's page.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any


def mask(value: str | None, keep: int = 4) -> str:
    """``abcd…`` for tokens; ``j***@example.com`` for emails."""
    if not value:
        return ""
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return value[:keep] + "…" if len(value) > keep else "…"


_TOKEN_IN_PATH = re.compile(r"(/pay/|/api/v1/payments/|bcpay_token=)[A-Za-z0-9_-]{8,64}")


def redact_tokens(text: str) -> str:
    """``text`` with every payment token in a bcpay path or fragment replaced by ``{token}``."""
    return _TOKEN_IN_PATH.sub(r"\1{token}", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the record's structured ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_tokens(record.getMessage()),
        }
        data.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            data["exc"] = redact_tokens(self.formatException(record.exc_info))
        return json.dumps(data, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return redact_tokens(base)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Configure the ``bcpay`` loggers once (the faces call this, never the library).

    With ``json`` every line on stderr must parse: other libraries' warnings (the root logger,
    at ``warning`` or above) and Python's ``warnings`` are written as JSON too; uvicorn's own
    loggers are configured by :func:`bcpay.server.entry.uvicorn_log_config`. Text leaves them be.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    ours = logging.getLogger("bcpay")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    if fmt == "json":
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(max(logging.WARNING, ours.level))
        logging.captureWarnings(True)
