"""Notification delivery of the fake CeleryPay: the outbox, its retry schedule and its faults.

Contract, "Notifications": each event is POSTed to the payment's notify_url,
signed; anything but a 2xx within 10 s is a failed delivery, retried after
15 s, 1 min, 5 min, 15 min, 1 h, 3 h, 6 h, 12 h and 24 h, then abandoned.
The fake divides that schedule by ``time_scale`` and can deliver late
(``notify_delay``), more than once (``duplicates``) and out of order
(``reorder``) so receivers meet every behaviour the contract allows.
Nothing happens on its own: :meth:`Outbox.deliver_due` sends what is due by the
injected clock, so tests drive time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

RETRY_SCHEDULE: tuple[int, ...] = (15, 60, 300, 900, 3600, 10800, 21600, 43200, 86400)
DELIVERY_TIMEOUT = 10.0

Signer = Callable[[str, int, bytes], str]
"""(merchant_id, timestamp, body) -> the CeleryPay-Signature header value."""


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt, as recorded for assertions."""

    url: str
    event_id: str
    event_type: str
    payment_id: str
    attempt: int  # 1 is the first try, 10 the ninth retry
    status_code: int | None  # None when no answer came
    error: str | None  # transport error, or None
    at: float  # clock time of the attempt

    @property
    def ok(self) -> bool:
        """True when the receiver answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for the admin API)."""
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Job:
    """One copy of one event on its way: the next attempt and when it is due."""

    seq: int
    event: dict[str, Any]
    body: bytes
    url: str
    merchant_id: str
    payment_id: str
    attempt: int
    due: float


class Outbox:
    """Events waiting for delivery, and the record of every attempt."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        signer: Signer,
        time_scale: float,
        notify_delay: float,
        duplicates: int,
        reorder: bool,
        seed: int,
    ) -> None:
        self._clock = clock
        self._signer = signer
        self._time_scale = time_scale
        self._notify_delay = notify_delay
        self._copies = 1 + duplicates
        self._reorder = reorder
        self._rng = random.Random(seed)
        self._jobs: list[_Job] = []
        self._seq = 0
        self.deliveries: list[Delivery] = []
        self.abandoned: list[str] = []  # event ids whose last retry failed

    def enqueue(
        self, event: dict[str, Any], *, url: str, merchant_id: str, payment_id: str
    ) -> None:
        """Schedule ``event`` (and its duplicate copies) for a first attempt."""
        # The body is serialised once: every attempt and copy sends the same bytes.
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        due = self._clock() + self._notify_delay
        for _ in range(self._copies):
            self._seq += 1
            self._jobs.append(_Job(self._seq, event, body, url, merchant_id, payment_id, 1, due))

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Scheduled attempts: event id, attempt number and due time."""
        return [
            {"event_id": j.event["id"], "attempt": j.attempt, "due": j.due, "url": j.url}
            for j in sorted(self._jobs, key=lambda j: (j.due, j.seq))
        ]

    def next_due(self) -> float | None:
        """Clock time of the earliest scheduled attempt, or None when idle."""
        return min((j.due for j in self._jobs), default=None)

    def _take_due(self) -> list[_Job]:
        now = self._clock()
        due = sorted((j for j in self._jobs if j.due <= now), key=lambda j: (j.due, j.seq))
        self._jobs = [j for j in self._jobs if j.due > now]
        if self._reorder:
            due = self._shuffle_per_payment(due)
        return due

    def _shuffle_per_payment(self, jobs: list[_Job]) -> list[_Job]:
        # Each payment keeps the slots its events had in the batch, but its events
        # are permuted across those slots; a permutation equal to the original is
        # rotated, so "reorder" always really reorders a payment's distinct events.
        by_payment: dict[str, list[_Job]] = {}
        for job in jobs:
            by_payment.setdefault(job.payment_id, []).append(job)
        for group in by_payment.values():
            original = [j.event["id"] for j in group]
            self._rng.shuffle(group)
            if len(set(original)) > 1 and [j.event["id"] for j in group] == original:
                group.append(group.pop(0))
        cursors = {payment: iter(group) for payment, group in by_payment.items()}
        return [next(cursors[job.payment_id]) for job in jobs]

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        """Attempt every delivery whose time has come; returns the number of attempts."""
        jobs = self._take_due()
        for job in jobs:
            await self._attempt(http, job)
        return len(jobs)

    async def _attempt(self, http: httpx.AsyncClient, job: _Job) -> None:
        timestamp = int(self._clock())
        headers = {
            "CeleryPay-Merchant": job.merchant_id,
            "CeleryPay-Timestamp": str(timestamp),
            "CeleryPay-Signature": self._signer(job.merchant_id, timestamp, job.body),
            "Content-Type": "application/json",
        }
        status: int | None = None
        error: str | None = None
        try:
            response = await http.post(
                job.url, content=job.body, headers=headers, timeout=DELIVERY_TIMEOUT
            )
            status = response.status_code
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"
        record = Delivery(
            job.url,
            job.event["id"],
            job.event["type"],
            job.payment_id,
            job.attempt,
            status,
            error,
            self._clock(),
        )
        self.deliveries.append(record)
        if record.ok:
            return
        if job.attempt > len(RETRY_SCHEDULE):
            self.abandoned.append(job.event["id"])
            return
        job.due = self._clock() + RETRY_SCHEDULE[job.attempt - 1] / self._time_scale
        job.attempt += 1
        self._jobs.append(job)
