"""Process-local counters rendered in the Prometheus text format.

Each server process keeps its own counters (scrape every process, as with any
multi-process Prometheus target); queue depth and age come from the database
at scrape time, so they are the same whichever process answers.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import ClassVar

import httpx


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class Metrics:
    """Counters keyed by (metric name, label pairs)."""

    HELP: ClassVar[dict[str, str]] = {
        "bcpay_http_requests_total": "HTTP requests answered, by route and status.",
        "bcpay_notifications_total": "CeleryPay notifications received, by outcome.",
        "bcpay_bigcommerce_calls_total": "Calls to the BigCommerce API, by status class.",
        "bcpay_bigcommerce_429_total": "BigCommerce answers with status 429.",
        "bcpay_jobs_total": "Outbox jobs run, by kind and result.",
        "bcpay_payments_started_total": "Payment starts, by result.",
        "bcpay_unpaid_cancelled_total": "Orders cancelled because they were not paid within the store's unpaid hold.",
    }
    # The labels each counter is counted by (tests/test_metrics.py holds every inc() to them).
    LABELS: ClassVar[dict[str, tuple[str, ...]]] = {
        "bcpay_http_requests_total": ("route", "status"),
        "bcpay_notifications_total": ("outcome",),
        "bcpay_bigcommerce_calls_total": ("status",),
        "bcpay_bigcommerce_429_total": (),
        "bcpay_jobs_total": ("kind", "result"),
        "bcpay_payments_started_total": ("result",),
        "bcpay_unpaid_cancelled_total": (),
    }
    # Gauges read from the database at every scrape: the same whichever process answers.
    GAUGES: ClassVar[dict[str, str]] = {
        "bcpay_outbox_depth": "Queued outbox jobs.",
        "bcpay_outbox_oldest_age_seconds": "Age of the oldest queued job.",
        "bcpay_outbox_dead": "Dead outbox jobs waiting for an operator.",
    }

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._lock = threading.Lock()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        """Add ``amount`` to a counter."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counts[key] += amount

    def value(self, name: str, **labels: str) -> int:
        """The current value of one counter (for tests and health pages)."""
        return self._counts.get((name, tuple(sorted(labels.items()))), 0)

    def bigcommerce_response(self, response: httpx.Response) -> None:
        """Hook the BigCommerce client calls for every response."""
        self.inc("bcpay_bigcommerce_calls_total", status=f"{response.status_code // 100}xx")
        if response.status_code == 429:
            self.inc("bcpay_bigcommerce_429_total")

    def render(self, gauges: dict[str, tuple[str, float]] | None = None) -> str:
        """Prometheus text exposition of every counter plus the given gauges."""
        lines: list[str] = []
        with self._lock:
            items: list[tuple[tuple[str, tuple[tuple[str, str], ...]], int]] = sorted(self._counts.items())
        seen: set[str] = set()
        for (name, labels), value in items:
            if name not in seen:
                seen.add(name)
                lines.append(f"# HELP {name} {self.HELP.get(name, name)}")
                lines.append(f"# TYPE {name} counter")
            lines.append(f"{name}{_labels(labels)} {value}")
        for gauge, (help_text, reading) in sorted((gauges or {}).items()):
            lines.append(f"# HELP {gauge} {help_text}")
            lines.append(f"# TYPE {gauge} gauge")
            lines.append(f"{gauge} {reading:g}")
        return "\n".join(lines) + "\n"
