"""The per-store BigCommerce rate limiter: fake-clock unit tests and one small real run."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import httpx
import pytest
import respx
from builders import STORE_HASH, order_json

from bcpay.clients.bigcommerce import BigCommerceClient
from bcpay.clients.ratelimit import RateLimiter, RateLimiterRegistry, Report
from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.bigcommerce import Chaos, Quota, create_bigcommerce_api

BASE = f"https://api.bc.test/stores/{STORE_HASH}"


class FakeTime:
    """A shared fake clock; sleeping moves it forward to the sleeper's wake-up time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now = max(self.now, self.now + seconds)
        await asyncio.sleep(0)


def answer(
    left: int, reset_ms: int, status: int = 200, quota: int = 150, window_ms: int = 30000
) -> httpx.Response:
    return httpx.Response(
        status,
        headers={
            "X-Rate-Limit-Requests-Left": str(left),
            "X-Rate-Limit-Time-Reset-Ms": str(reset_ms),
            "X-Rate-Limit-Requests-Quota": str(quota),
            "X-Rate-Limit-Time-Window-Ms": str(window_ms),
        },
    )


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


@pytest.fixture
def limiter(ft: FakeTime) -> RateLimiter:
    return RateLimiter(reserve=2, margin=0.0, clock=ft.clock, sleep=ft.sleep)


async def test_requests_go_at_once_while_quota_is_left(limiter: RateLimiter, ft: FakeTime) -> None:
    """With plenty left, acquire never sleeps."""
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=20000))
    for _ in range(10):
        await limiter.acquire()
    assert ft.sleeps == [] and limiter.in_flight == 10


async def test_at_the_reserve_acquire_waits_for_the_window_reset(
    limiter: RateLimiter, ft: FakeTime
) -> None:
    """left - in_flight at the reserve: the next request waits exactly until the reset."""
    await limiter.acquire()
    limiter.record(answer(left=3, reset_ms=12500))
    await limiter.acquire()  # 3 - 0 > 2: goes
    await limiter.acquire()  # 3 - 1 = 2: at the reserve, waits
    assert ft.sleeps == [12.5] and ft.now == 1012.5
    assert limiter.left == 150  # a new window: the full quota is assumed


async def test_unknown_quota_lets_only_one_request_probe(
    limiter: RateLimiter, ft: FakeTime
) -> None:
    """Before any answer, a second task waits until the first one's answer arrives."""
    await limiter.acquire()
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not second.done()
    limiter.record(answer(left=100, reset_ms=30000))
    await asyncio.wait_for(second, 1)
    assert limiter.in_flight == 1


async def test_a_429_blocks_every_task_of_the_store_until_reset(
    limiter: RateLimiter, ft: FakeTime
) -> None:
    """After a 429 each acquire waits for the reported reset."""
    await limiter.acquire()
    limiter.record(answer(left=0, reset_ms=4000, status=429))
    assert limiter.throttled == 1
    await asyncio.gather(limiter.acquire(), limiter.acquire())
    assert ft.now == 1004.0 and ft.sleeps[0] == 4.0


async def test_a_short_429_inside_a_long_window_blocks_only_until_its_reset(
    limiter: RateLimiter, ft: FakeTime
) -> None:
    """A burst 429 saying 1 s must not hold the store for the rest of a 30 s window."""
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=29000))
    await limiter.acquire()
    limiter.record(answer(left=0, reset_ms=1000, status=429))
    await limiter.acquire()
    assert ft.now == pytest.approx(1001.0)


async def test_a_429_without_headers_blocks_for_the_default(ft: FakeTime) -> None:
    """Platform-load 429s carry no reset: the default block applies."""
    lim = RateLimiter(margin=0.0, default_block=1.0, clock=ft.clock, sleep=ft.sleep)
    await lim.acquire()
    lim.record(httpx.Response(429))
    await lim.acquire()
    assert ft.now == pytest.approx(1001.0)


async def test_platform_load_429s_keep_what_is_known_of_the_quota(limiter: RateLimiter, ft: FakeTime) -> None:
    """A 429 without quota headers is not the quota (reference section 9): the count and the window end stay,
    so the store is not handed a made-up fresh window when the block ends."""
    await limiter.acquire()
    limiter.record(answer(left=10, reset_ms=20000))
    await limiter.acquire()
    limiter.record(httpx.Response(429))
    assert (limiter.left, limiter.reset_at, limiter.quota, limiter.throttled) == (10, 1020.0, 150, 1)
    ft.now += 5.0  # well past the block, still inside BigCommerce's window
    for _ in range(8):  # 10 left, 2 in reserve: 8 go, the next waits for BigCommerce's reset
        await limiter.acquire()
    assert ft.now == 1005.0
    await limiter.acquire()
    assert ft.now == pytest.approx(1020.0)


async def test_platform_load_429s_in_a_row_back_off_doubling_up_to_the_cap(ft: FakeTime) -> None:
    """1, 2, 4, 8 s... at most max_block; any other answer starts over."""
    limiter = RateLimiter(margin=0.0, default_block=1.0, max_block=6.0, clock=ft.clock, sleep=ft.sleep)
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=30000))
    waits = []
    for _ in range(5):
        await limiter.acquire()
        limiter.record(httpx.Response(429))
        started = ft.now
        await limiter.acquire()
        waits.append(ft.now - started)
        limiter.record(None)
    assert waits == [1.0, 2.0, 4.0, 6.0, 6.0] and limiter.busy_streak == 5
    limiter.record(answer(left=90, reset_ms=20000))
    await limiter.acquire()
    limiter.record(httpx.Response(429))
    started = ft.now
    await limiter.acquire()
    assert ft.now - started == 1.0


async def test_a_platform_load_429_with_x_retry_after_waits_that_long(limiter: RateLimiter, ft: FakeTime) -> None:
    """Older BigCommerce docs name X-Retry-After (seconds): when sent, it is the wait."""
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=30000))
    await limiter.acquire()
    limiter.record(httpx.Response(429, headers={"X-Retry-After": "3"}))
    await limiter.acquire()
    assert ft.now == pytest.approx(1003.0) and limiter.left == 100


async def test_an_x_retry_after_of_a_day_holds_the_store_a_minute(limiter: RateLimiter, ft: FakeTime) -> None:
    """One header must not park a store and its jobs for a day: the wait is capped, and the next 429
    (if the load lasts) brings a fresh one."""
    from bcpay.clients.ratelimit import RETRY_AFTER_CAP, retry_after_seconds

    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=30000))
    await limiter.acquire()
    started = ft.now
    limiter.record(httpx.Response(429, headers={"X-Retry-After": "86400"}))
    await limiter.acquire()
    assert RETRY_AFTER_CAP == 60.0 and 60.0 <= ft.now - started <= 61.0
    assert retry_after_seconds(httpx.Response(429, headers={"X-Retry-After": "86400"})) == 60.0


async def test_out_of_order_answers_keep_the_lowest_count_in_a_window(
    limiter: RateLimiter, ft: FakeTime
) -> None:
    """A late answer reporting more left does not raise the count within the window."""
    await limiter.acquire()
    limiter.record(answer(left=10, reset_ms=20000))
    await limiter.acquire()
    await limiter.acquire()
    limiter.record(answer(left=8, reset_ms=19990))
    limiter.record(answer(left=9, reset_ms=19995))
    assert limiter.left == 8


async def test_a_new_window_replaces_the_count(limiter: RateLimiter, ft: FakeTime) -> None:
    """An answer implying a reset a window later starts a new window."""
    await limiter.acquire()
    limiter.record(answer(left=5, reset_ms=100))
    ft.now += 0.2
    await limiter.acquire()
    limiter.record(answer(left=149, reset_ms=29900))
    assert limiter.left == 149 and limiter.reset_at == pytest.approx(1000.2 + 29.9)


async def test_a_changed_quota_replaces_a_long_window_at_once(limiter: RateLimiter, ft: FakeTime) -> None:
    """The store's quota changes to a short window: no waiting out the old 30 s window."""
    await limiter.acquire()
    limiter.record(answer(left=140, reset_ms=29000))
    for left in (39, 38, 3):
        await limiter.acquire()
        limiter.record(answer(left=left, reset_ms=380, quota=40, window_ms=400))
    assert limiter.left == 3 and limiter.reset_at == pytest.approx(1000.38)
    await limiter.acquire()  # 3 left, 2 in reserve: this one goes; the next waits for the short reset
    await limiter.acquire()
    assert ft.now == pytest.approx(1000.38)


async def test_an_earlier_reset_in_the_same_window_size_starts_over(limiter: RateLimiter, ft: FakeTime) -> None:
    """A reset far earlier than the one known (same window size) is the newer truth."""
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=29000))
    await limiter.acquire()
    limiter.record(answer(left=148, reset_ms=1000))
    assert limiter.left == 148 and limiter.reset_at == pytest.approx(1001.0)


async def test_a_transport_error_frees_the_slot(limiter: RateLimiter) -> None:
    """record(None) after a failed request releases the in-flight slot."""
    await limiter.acquire()
    limiter.record(None)
    assert limiter.in_flight == 0


class Ledger:
    """A quota ledger that answers from a script and keeps what it was told."""

    def __init__(self, *answers: float | Exception) -> None:
        self.answers = list(answers)
        self.reports: list[Report | None] = []

    async def claim(self, *, quota: int, window: float, reserve: int, report: Report | None) -> float:
        self.reports.append(report)
        answer = self.answers.pop(0) if self.answers else 0.0
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_with_a_ledger_a_refused_slot_waits_for_the_window_the_ledger_names(ft: FakeTime) -> None:
    """The probe goes unclaimed; then the ledger decides, and BigCommerce's count rides along."""
    ledger = Ledger(7.5, 0.0)
    limiter = RateLimiter(reserve=2, margin=0.0, clock=ft.clock, sleep=ft.sleep, ledger=ledger,
                          wall=lambda: 5000.0)
    await limiter.acquire()
    assert ledger.reports == []
    limiter.record(answer(left=100, reset_ms=20000))
    await limiter.acquire()
    assert ft.sleeps == [7.5] and limiter.in_flight == 1
    assert ledger.reports == [Report(window_end=5020.0, used=50), None]


async def test_a_failing_ledger_leaves_the_process_paced_alone_for_a_while_and_says_so(
    ft: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    """A database outage must not stop BigCommerce calls: one warning, no claim for ``ledger_rest``
    seconds, then a claim again, and one note when it answers."""
    caplog.set_level(logging.INFO, logger="bcpay.ratelimit")
    ledger = Ledger(OSError("database away"), 0.0)
    limiter = RateLimiter(reserve=2, margin=0.0, clock=ft.clock, sleep=ft.sleep, ledger=ledger, ledger_rest=30.0)
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=20000))
    for _ in range(3):
        await limiter.acquire()
    assert ft.sleeps == [] and limiter.in_flight == 3 and len(ledger.reports) == 1  # one try, then rest
    ft.now += 31.0
    await limiter.acquire()
    assert len(ledger.reports) == 2
    assert ledger.reports[1] == ledger.reports[0]  # the report the failed claim carried is not lost
    messages = [r.getMessage() for r in caplog.records if r.name == "bcpay.ratelimit"]
    assert messages == ["the shared BigCommerce quota is unavailable; this process paces itself alone and tries "
                        "again in 30 s", "the shared BigCommerce quota is available again"]


class HangingLedger:
    """A ledger whose claims never answer (a process holding the row's lock, a database out of reach)."""

    def __init__(self) -> None:
        self.claims = 0

    async def claim(self, *, quota: int, window: float, reserve: int, report: Report | None) -> float:
        self.claims += 1
        await asyncio.Event().wait()
        return 0.0


async def test_a_ledger_that_does_not_answer_in_time_counts_as_failed() -> None:
    """Payments never wait on the ledger longer than ``ledger_timeout``."""
    ledger = HangingLedger()
    limiter = RateLimiter(reserve=2, ledger=ledger, ledger_timeout=0.05)
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=20000))
    started = time.monotonic()
    await limiter.acquire()
    await limiter.acquire()
    assert time.monotonic() - started < 1.0 and ledger.claims == 1 and limiter.ledger_failed


async def test_a_task_cancelled_while_claiming_gives_its_slot_back() -> None:
    """A job's time limit can cancel a task waiting on the ledger: the slot must not stay taken."""
    limiter = RateLimiter(reserve=2, ledger=HangingLedger(), ledger_timeout=60.0)
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=20000))
    waiting = [asyncio.create_task(limiter.acquire()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert limiter.in_flight == 5
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert limiter.in_flight == 0


async def test_a_platform_load_429_tells_the_shared_ledger_nothing(ft: FakeTime) -> None:
    """No report from a 429 without quota headers: it would cut the shared window short for every process.
    BigCommerce's last real count still rides along with the next claim."""
    ledger = Ledger()
    limiter = RateLimiter(reserve=2, margin=0.0, clock=ft.clock, sleep=ft.sleep, ledger=ledger, wall=lambda: 5000.0)
    await limiter.acquire()
    limiter.record(answer(left=100, reset_ms=20000))
    await limiter.acquire()
    limiter.record(httpx.Response(429))
    await limiter.acquire()
    assert ledger.reports == [Report(window_end=5020.0, used=50), None]
    limiter.record(httpx.Response(429))
    await limiter.acquire()
    assert ledger.reports[-1] is None and limiter.quota == 150 and limiter.window == 30.0


async def test_the_ledger_waits_until_the_window_is_known(ft: FakeTime) -> None:
    """A first answer that is a 429 without the window header says the quota but not the window: no claim
    yet (a guessed window would restart every process's count); the window header on a 429 is read."""
    ledger = Ledger()
    limiter = RateLimiter(reserve=2, margin=0.0, clock=ft.clock, sleep=ft.sleep, ledger=ledger)
    await limiter.acquire()
    limiter.record(httpx.Response(429, headers={"X-Rate-Limit-Requests-Quota": "150",
                                                "X-Rate-Limit-Time-Reset-Ms": "1000"}))
    await limiter.acquire()
    assert ledger.reports == [] and not limiter.window_known
    limiter.record(answer(left=0, reset_ms=1000, status=429))
    assert limiter.window_known and limiter.window == 30.0
    await limiter.acquire()
    assert len(ledger.reports) == 1


def test_the_registry_shares_one_limiter_per_store() -> None:
    """Same store, same limiter; other store, another."""
    registry = RateLimiterRegistry()
    assert registry.for_store("a") is registry.for_store("a")
    assert registry.for_store("a") is not registry.for_store("b")


class QuotaServer:
    """A fake BigCommerce quota: ``quota`` requests per fixed window on ``clock``."""

    def __init__(self, clock: Callable[[], float], quota: int, window: float) -> None:
        self.clock, self.quota, self.window = clock, quota, window
        self.start = clock()
        self.counts: dict[int, int] = {}
        self.throttled_windows: list[int] = []
        self.served = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        elapsed = self.clock() - self.start
        index = int(elapsed // self.window)
        reset_ms = int(((index + 1) * self.window - elapsed) * 1000)  # floor, like a strict server
        used = self.counts.get(index, 0)
        headers = {
            "X-Rate-Limit-Requests-Quota": str(self.quota),
            "X-Rate-Limit-Time-Window-Ms": str(int(self.window * 1000)),
            "X-Rate-Limit-Time-Reset-Ms": str(reset_ms),
        }
        if used >= self.quota:
            self.throttled_windows.append(index)
            return httpx.Response(429, headers=headers)
        self.counts[index] = used + 1
        self.served += 1
        headers["X-Rate-Limit-Requests-Left"] = str(self.quota - used - 1)
        oid = int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json=order_json(id=oid), headers=headers)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def reconcile(
    http: httpx.AsyncClient, limiter: RateLimiter, tasks: int, orders: int, **kw: object
) -> list[int]:
    client = BigCommerceClient(
        http,
        api_url="https://api.bc.test",
        store_hash=STORE_HASH,
        access_token="t" * 20,
        limiter=limiter,
        jitter=lambda: 0.0,
        **kw,
    )  # type: ignore[arg-type]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for oid in range(1, orders + 1):
        queue.put_nowait(oid)
    done: list[int] = []

    async def worker() -> None:
        while not queue.empty():
            done.append((await client.get_order(queue.get_nowait())).id)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return done


@respx.mock
async def test_a_reconcile_runs_at_the_quota_without_429s_on_a_fake_clock(
    http: httpx.AsyncClient, ft: FakeTime
) -> None:
    """1000 orders, 20 tasks, 150 per 30 s: no 429 at all, and no window wasted."""
    server = QuotaServer(ft.clock, quota=150, window=30.0)
    respx.get(url__regex=rf"{BASE}/v2/orders/\d+").mock(side_effect=server)
    limiter = RateLimiter(reserve=2, margin=0.01, clock=ft.clock, sleep=ft.sleep)
    done = await reconcile(http, limiter, tasks=20, orders=1000, sleep=ft.sleep)
    assert sorted(done) == list(range(1, 1001))
    assert server.throttled_windows == [] and limiter.throttled == 0
    # 148 per window (2 kept in reserve): 1000 orders need 7 windows, so ~6 resets of waiting.
    assert ft.now - 1000.0 < math.ceil(1000 / 148) * 30.0
    assert max(server.counts.values()) <= 150 and len(server.counts) == math.ceil(1000 / 148)


@respx.mock
async def test_twenty_real_tasks_see_no_429_after_the_first_window(http: httpx.AsyncClient) -> None:
    """Real clock, 40 ms windows of 20 requests, 20 concurrent tasks: zero 429s."""
    server = QuotaServer(time.monotonic, quota=20, window=0.04)
    respx.get(url__regex=rf"{BASE}/v2/orders/\d+").mock(side_effect=server)
    limiter = RateLimiter(reserve=2)
    started = time.monotonic()
    done = await reconcile(http, limiter, tasks=20, orders=80)
    assert sorted(done) == list(range(1, 81))
    assert [w for w in server.throttled_windows if w > 0] == []
    assert server.throttled_windows == []  # the probe learns the quota before the crowd goes
    assert time.monotonic() - started < 2.0


async def test_a_reconcile_through_the_sandbox_with_platform_load_429s_stays_inside_the_quota(ft: FakeTime) -> None:
    """The fake's chaos 429s (every 7th call, no quota headers) slow the run down but never push it past the
    enforced quota: every 429 seen is a platform-load one, and every order is read."""
    state = FakeBigCommerce()
    state.add_store(STORE_HASH, secure_url="https://shop.example.com", access_token="t" * 20)
    order_ids = [state.create_order(STORE_HASH, total=Decimal("10.00"))["id"] for _ in range(300)]
    chaos = Chaos(burst_429_every=7)
    app = create_bigcommerce_api(state, quota=Quota(requests=40, window_ms=30000, enforce=True, clock=ft.clock),
                                 chaos=chaos)
    limiter = RateLimiter(reserve=2, margin=0.01, clock=ft.clock, sleep=ft.sleep)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.bc.test") as http:
        client = BigCommerceClient(http, api_url="https://api.bc.test", store_hash=STORE_HASH, access_token="t" * 20,
                                   limiter=limiter, sleep=ft.sleep, jitter=lambda: 0.0, max_retries=10)
        orders = await asyncio.gather(*(client.get_order(oid) for oid in order_ids))
    assert sorted(o.id for o in orders) == sorted(order_ids)
    bursts = chaos._calls // 7
    assert bursts > 0 and state.rate_limited == bursts == limiter.throttled, "a quota 429: the limiter overran"


@respx.mock
async def test_without_a_limiter_the_same_reconcile_is_throttled(
    http: httpx.AsyncClient, ft: FakeTime
) -> None:
    """Control: the fake quota does throttle 20 unlimited tasks, so the tests above can fail."""
    server = QuotaServer(ft.clock, quota=150, window=30.0)
    respx.get(url__regex=rf"{BASE}/v2/orders/\d+").mock(side_effect=server)
    client = BigCommerceClient(
        http,
        api_url="https://api.bc.test",
        store_hash=STORE_HASH,
        access_token="t" * 20,
        sleep=ft.sleep,
        jitter=lambda: 0.0,
        max_retries=50,
    )
    ids = await asyncio.gather(*(client.get_order(oid) for oid in range(1, 201)))
    assert len(ids) == 200 and server.throttled_windows
