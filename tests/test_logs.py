"""Log lines: JSON or text, and with JSON nothing else on stderr."""

from __future__ import annotations

import json
import logging
import warnings

import pytest

from bcpay.logs import JsonFormatter, TextFormatter, redact_tokens, setup_logging
from bcpay.server.entry import uvicorn_log_config


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_logs_carry_other_libraries_warnings_and_python_warnings_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A library's warning and a ``warnings.warn`` are JSON lines too; a library's info stays out."""
    setup_logging("json", "info")
    logging.getLogger("some.library").info("chatter")
    logging.getLogger("some.library").warning("disk ünicode %s", "x" * 10_000)
    logging.getLogger("bcpay.test").info("ours", extra={"fields": {"store": "abc123"}})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a\nmultiline warning", RuntimeWarning, stacklevel=1)
    records = json_lines(capsys.readouterr().err)
    assert [(r["logger"], r["level"]) for r in records] == [
        ("some.library", "warning"), ("bcpay.test", "info"), ("py.warnings", "warning")]
    assert records[0]["message"] == "disk ünicode " + "x" * 10_000
    assert records[1]["store"] == "abc123"
    assert "a\nmultiline warning" in str(records[2]["message"])


def test_text_logs_leave_the_root_logger_and_warnings_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """Text is as it always was: only the bcpay loggers are set up."""
    root = logging.getLogger()
    before = root.handlers[:]
    setup_logging("text", "info")
    assert root.handlers == before
    logging.getLogger("bcpay.test").warning("plain")
    assert " WARNING bcpay.test plain" in capsys.readouterr().err


def test_uvicorn_logs_through_bcpay_json_formatter_and_keep_their_own_text() -> None:
    """JSON: uvicorn's loggers get bcpay's formatter on stderr; text: uvicorn's own configuration."""
    from uvicorn.config import LOGGING_CONFIG

    config = uvicorn_log_config("json")
    assert config["formatters"]["json"]["()"] == "bcpay.logs.JsonFormatter"
    assert {name: logger.get("handlers") for name, logger in config["loggers"].items()} == {
        "uvicorn": ["json"], "uvicorn.error": None, "uvicorn.access": ["json"]}
    assert config["handlers"]["json"]["stream"] == "ext://sys.stderr"
    assert uvicorn_log_config("text") == LOGGING_CONFIG
    assert uvicorn_log_config("text") is not LOGGING_CONFIG


def test_both_formatters_blank_payment_tokens_in_bcpay_paths() -> None:
    """An upstream's error text or a traceback that carried /pay/{token} into a message loses the token."""
    token = "13lSDnrm8_uv8WvYQWx2rWtf5CanzQqt"
    text = f"CeleryPay said: return_url http://x/pay/{token}/return is bad; see /api/v1/payments/{token}, #bcpay_token={token}"
    assert token not in redact_tokens(text) and redact_tokens(text).count("{token}") == 3
    assert redact_tokens("POST /api/v1/payments 200, pay_A1b2C3d4E5f6G7h8I9j0K1l2") == (
        "POST /api/v1/payments 200, pay_A1b2C3d4E5f6G7h8I9j0K1l2")  # CeleryPay's ids are not tokens
    try:
        raise ValueError(f"failed on /pay/{token}")
    except ValueError:
        import sys

        record = logging.LogRecord("bcpay.x", logging.WARNING, __file__, 1, "at /pay/%s", (token,), sys.exc_info())
    for formatter in (TextFormatter(), JsonFormatter()):
        assert token not in formatter.format(record)
