"""Reconcile over the in-process fakes: findings, fixes, and BigCommerce's rate quota."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bcpay import payflow
from bcpay.errors import ConflictError, InvalidInputError
from bcpay.reconcile import Finding, Pacer, Report, reconcile, run_jobs
from bcpay.sandbox.bc_state import Quota
from bcpay.storage import queries as q
from bcpay.storage.records import StoreRecord
from bcpay.storage.schema import anomalies, jobs, payments
from tests.world import PUBLIC_URL, STORE_HASH, World, open_world


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key, payments={"unstarted_after": 3600}) as w:
        await w.add_store()
        yield w


async def store_of(w: World) -> StoreRecord:
    async with w.rt.db.read() as conn:
        return await q.require_store(conn, STORE_HASH)


async def started(w: World, total: str = "19.99") -> tuple[dict[str, object], str]:
    """An order with a pending CeleryPay payment."""
    order = w.place_order(total)
    answer = (await w.start(order)).json()
    return order, str(answer["cashier_url"]).rsplit("/", 1)[1]


def since() -> datetime:
    return datetime.now(UTC) - timedelta(days=7)


async def run(w: World, *, fix: bool = False, concurrency: int = 8) -> Report:
    return await reconcile(w.rt, await store_of(w), since=since(), fix=fix, concurrency=concurrency)


def expire_at_celerypay(w: World, payment_id: str) -> None:
    """Let a payment's expiry pass at the fake (it expires when next looked at)."""
    real = w.cp.clock
    w.cp.clock = lambda: real() + 86400 * 2
    try:
        w.cp.payable_payment(payment_id)
    except ConflictError:
        pass
    finally:
        w.cp.clock = real


async def test_two_thousand_orders_within_the_quota_with_every_kind_found(world: World) -> None:
    """2,050 orders, BigCommerce enforcing 40 requests per 400 ms: no 429, flat memory, right findings."""
    w = world
    w.bc.quota = Quota(requests=40, window_ms=400, enforce=True)
    old = datetime.now(UTC) - timedelta(hours=2)
    for n in range(1700):
        w.place_order(f"{10 + n % 50}.00")  # recent, never started: not yet a finding
    for _ in range(200):
        w.place_order("15.00", created=old)  # never started, long enough ago
    paid_elsewhere = [w.place_order("30.00", status_id=11)["id"] for _ in range(40)]
    ids: list[str] = []
    for _ in range(100):
        ids.append((await started(w))[1])
    for pid in ids[:30]:
        await w.cp.pay(pid)
    for pid in ids[30:40]:
        await w.cp.decline(pid)
    for pid in ids[40:60]:
        expire_at_celerypay(w, pid)
    assert w.bc.rate_limited == 0

    seen: list[tuple[int, int]] = []
    started_at = time.monotonic()
    report = await reconcile(w.rt, await store_of(w), since=since(), concurrency=8,
                             on_progress=lambda checked, listed, done: seen.append((checked, listed)))
    elapsed = time.monotonic() - started_at

    assert report.checked == 2040
    assert report.counts == {"never_started": 200, "paid_not_applied": 30, "failed": 10, "expired": 20,
                             "pending": 40, "paid_without_payment": 40}
    assert {f.order_id for f in report.findings if f.kind == "paid_without_payment"} == set(paid_elsewhere)
    # A report writes nothing: no attempt rows for links; it says how to get one.
    never = [f for f in report.findings if f.kind == "never_started"]
    assert all(f.pay_link is None and f"bcpay pay-link {f.order_id} --store" in f.detail for f in never)
    async with w.rt.db.read() as conn:
        assert await q.count(conn, payments) == 100
    assert report.fixed == 0
    assert w.bc.rate_limited == 0, "the shared limiter must keep every call inside the quota"
    # Streamed: never more than the bounded queue (and the tasks holding one each) ahead of the checks.
    assert max(listed - checked for checked, listed in seen) <= 3 * 8
    assert elapsed < 30


async def test_a_fix_run_gives_a_pay_link_for_an_order_never_started(world: World) -> None:
    w = world
    order = w.place_order("15.00", created=datetime.now(UTC) - timedelta(hours=2))
    [finding] = (await run(w, fix=True)).findings
    assert finding.kind == "never_started" and finding.order_id == order["id"]
    assert finding.pay_link is not None and "/pay/" in finding.pay_link
    page = await w.client.get(finding.pay_link.removeprefix(PUBLIC_URL))
    assert page.status_code == 200 and "15.00" in page.text
    # The link opened an attempt row that CeleryPay has not seen yet: the order stays in the report.
    for fix in (False, True):
        [again] = (await run(w, fix=fix)).findings
        assert (again.kind, again.order_id, again.fixed) == ("never_started", order["id"], False)
        assert "never reached CeleryPay" in again.detail


async def test_fix_applies_celerypay_truth_once_and_jobs_update_the_order(world: World) -> None:
    w = world
    paid_order, paid = await started(w, "19.99")
    expired_order, gone = await started(w, "5.00")
    await w.cp.pay(paid)
    expire_at_celerypay(w, gone)

    first = await run(w, fix=True)
    assert {(f.kind, f.order_id, f.fixed) for f in first.findings} == {
        ("paid_not_applied", paid_order["id"], True), ("expired", expired_order["id"], True)}
    second = await run(w, fix=True)
    assert [(f.kind, f.fixed) for f in second.findings] == [("paid_not_applied", False)]
    assert "outbox" in second.findings[0].detail
    async with w.rt.db.read() as conn:
        assert [r.kind for r in (await conn.execute(select(jobs.c.kind))).all()] == ["mark_paid"]
    assert await run_jobs(w.rt) == 1
    assert [b["status_id"] for b in w.status_puts(paid_order["id"])] == [11]
    assert (await run(w, fix=True)).findings == []


async def stuck_in_creating(w: World, order: dict[str, object], *, age: timedelta = timedelta(hours=1)) -> None:
    """The order's attempt as a process leaves it that died before CeleryPay answered its creation."""
    async with w.rt.db.transaction() as conn:
        await conn.execute(update(payments).where(payments.c.order_id == order["id"]).values(
            status="creating", celerypay_id=None, cashier_url=None, created_at=datetime.now(UTC) - age,
            updated_at=datetime.now(UTC) - age))


async def attempts_of_order(w: World, order: dict[str, object]) -> list[tuple[str, str | None, str | None]]:
    async with w.rt.db.read() as conn:
        found = await q.order_attempts(conn, (await store_of(w)).id, int(str(order["id"])))
    return [(a.status, a.celerypay_id, a.failure_code) for a in found]


async def test_an_attempt_celerypay_never_created_is_reported_by_every_run(world: World) -> None:
    """A `creating` attempt with no payment at CeleryPay stays in every report; a report writes nothing."""
    w = world
    order = w.place_order("12.00", created=datetime.now(UTC) - timedelta(hours=2))
    attempt = await payflow.pay_link(w.rt, STORE_HASH, order["id"])  # an attempt row, never sent to CeleryPay
    await stuck_in_creating(w, order)
    for _ in range(3):
        [finding] = (await run(w)).findings
        assert (finding.kind, finding.order_id, finding.fixed) == ("never_started", order["id"], False)
        assert f"{STORE_HASH}-{order['id']}-1 never reached CeleryPay" in finding.detail
        assert f"bcpay pay-link {order['id']} --store {STORE_HASH}" in finding.detail
        assert finding.amount == 1200 and finding.currency == "USD"
    assert await attempts_of_order(w, order) == [("creating", None, None)]
    assert attempt.startswith(PUBLIC_URL + "/pay/")


async def test_fix_gives_up_a_creation_celerypay_never_saw_and_keeps_reporting_the_order(world: World) -> None:
    """--fix finds no payment by merchant order number: the attempt is not_created, the order stays reported."""
    w = world
    order = w.place_order("12.00", created=datetime.now(UTC) - timedelta(hours=2))
    await payflow.pay_link(w.rt, STORE_HASH, order["id"])  # CeleryPay never saw this attempt
    await stuck_in_creating(w, order)

    [first] = (await run(w, fix=True)).findings
    assert (first.kind, first.fixed) == ("never_started", True)
    assert await attempts_of_order(w, order) == [("failed", None, "not_created")]
    for _ in range(2):
        [again] = (await run(w, fix=True)).findings
        assert (again.kind, again.order_id, again.fixed) == ("never_started", order["id"], False)
        assert again.pay_link is not None
    assert [f.kind for f in (await run(w)).findings] == ["never_started"]
    # The link works: the shopper's "Pay now" opens a new attempt at CeleryPay; then it is merely pending.
    page = await w.client.post(again.pay_link.removeprefix(PUBLIC_URL), follow_redirects=False)
    assert page.status_code in (200, 303), page.text
    assert [k for k, *_ in await attempts_of_order(w, order)] == ["failed", "pending"]
    assert [f.kind for f in (await run(w)).findings] == ["pending"]


async def test_fix_leaves_a_creation_still_in_flight_alone_but_reports_it(world: World) -> None:
    """A `creating` attempt younger than the creation grace may be in flight: reported, not given up."""
    w = world
    order = w.place_order("12.00", created=datetime.now(UTC) - timedelta(hours=2))
    await payflow.pay_link(w.rt, STORE_HASH, order["id"])
    await stuck_in_creating(w, order, age=timedelta(seconds=5))
    [finding] = (await run(w, fix=True)).findings
    assert (finding.kind, finding.fixed) == ("never_started", False)
    assert await attempts_of_order(w, order) == [("creating", None, None)]


async def test_fix_leaves_an_old_pay_link_attempt_alone_while_its_creation_is_on_the_way(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pay link's row sat unused for an hour; the shopper's "Pay now" starts its creation, and --fix runs
    before CeleryPay has answered (a lookup finds nothing yet): the attempt is not given up, it ends pending."""
    import asyncio

    from bcpay.clients.celerypay import CeleryPayClient

    w = world
    order = w.place_order("12.00", created=datetime.now(UTC) - timedelta(hours=2))
    link = await payflow.pay_link(w.rt, STORE_HASH, order["id"])
    await stuck_in_creating(w, order)
    entered, go_on = asyncio.Event(), asyncio.Event()
    create = CeleryPayClient.create_payment

    async def held(self: CeleryPayClient, **fields: object) -> object:
        entered.set()
        await go_on.wait()
        return await create(self, **fields)  # type: ignore[arg-type]

    monkeypatch.setattr(CeleryPayClient, "create_payment", held)
    pay_now = asyncio.create_task(w.client.post(link.removeprefix(PUBLIC_URL), follow_redirects=False))
    await asyncio.wait_for(entered.wait(), 5)
    [finding] = (await run(w, fix=True)).findings
    assert (finding.kind, finding.fixed) == ("never_started", False)
    go_on.set()
    page = await pay_now
    assert page.status_code in (200, 303), page.text
    [(status, payment_id, failure)] = await attempts_of_order(w, order)
    assert (status, failure) == ("pending", None) and payment_id is not None


async def test_a_pay_link_attempt_given_up_as_its_creation_starts_gives_way_to_a_new_attempt(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--fix gives the old row up between "Pay now" finding it and stamping it: that row is never sent to
    CeleryPay, the shopper gets a second attempt, and CeleryPay sees one payment for the order."""
    w = world
    order = w.place_order("12.00", created=datetime.now(UTC) - timedelta(hours=2))
    link = await payflow.pay_link(w.rt, STORE_HASH, order["id"])
    await stuck_in_creating(w, order)
    restamp = q.restamp_creating

    async def given_up_first(conn: Any, payment_id: int, **kwargs: Any) -> bool:
        # The sweep's update, committed just before this one (on SQLite it cannot interleave otherwise).
        seen = (await q.get_payment(conn, payment_id)).updated_at
        assert await q.give_up_creating(conn, payment_id, seen=seen, now=w.rt.now(),
                                        failure_code=payflow.NOT_CREATED, failure_message="the payment was never created")
        return await restamp(conn, payment_id, **kwargs)

    monkeypatch.setattr(q, "restamp_creating", given_up_first)
    page = await w.client.post(link.removeprefix(PUBLIC_URL), follow_redirects=False)
    assert page.status_code in (200, 303), page.text
    assert [(s, f) for s, _, f in await attempts_of_order(w, order)] == [("failed", "not_created"), ("pending", None)]
    assert [p["merchant_order_no"] for p in w.cp.payments.values()] == [f"{STORE_HASH}-{order['id']}-2"]


async def test_fix_applies_a_payment_celerypay_created_whose_answer_was_lost(world: World) -> None:
    """Found by merchant order number: --fix records the payment, so the order is just pending."""
    w = world
    order, pid = await started(w, "12.00")
    await stuck_in_creating(w, order)
    [report] = (await run(w)).findings
    assert (report.kind, report.celerypay_id, report.fixed) == ("pending", pid, False)
    [fixed] = (await run(w, fix=True)).findings
    assert (fixed.kind, fixed.celerypay_id, fixed.fixed) == ("pending", pid, True)
    assert await attempts_of_order(w, order) == [("pending", pid, None)]
    [after] = (await run(w, fix=True)).findings
    assert (after.kind, after.fixed) == ("pending", False)


async def test_amount_mismatch_and_double_payment_are_reported_and_fixed_as_anomalies(world: World) -> None:
    w = world
    short_order, short = await started(w, "19.99")
    await w.cp.pay(short, amount=999)
    # A creation bcpay thought lost (failed, no payment id) that the shopper paid anyway, plus a second attempt.
    double_order, first_pid = await started(w, "8.00")
    async with w.rt.db.transaction() as conn:
        await conn.execute(update(payments).where(payments.c.celerypay_id == first_pid)
                           .values(status="failed", celerypay_id=None, failure_code="not_created"))
    second_pid = str((await w.start(double_order)).json()["cashier_url"]).rsplit("/", 1)[1]
    await w.cp.pay(first_pid)
    await w.cp.pay(second_pid)

    report = await run(w, fix=True)
    kinds = sorted((f.kind, f.order_id) for f in report.findings)
    assert kinds == sorted([("amount_mismatch", short_order["id"]), ("double_payment", double_order["id"]),
                            ("paid_not_applied", double_order["id"]), ("paid_not_applied", double_order["id"])])
    async with w.rt.db.read() as conn:
        found = sorted((r.kind, r.order_id) for r in (await conn.execute(select(anomalies))).all())
    assert found == sorted([("amount_mismatch", short_order["id"]), ("double_payment", double_order["id"])])
    await run_jobs(w.rt)
    assert w.order(short_order["id"])["status_id"] == 12
    assert [b["status_id"] for b in w.status_puts(double_order["id"])] == [11]


async def test_an_unreachable_payment_is_an_error_finding_and_the_run_goes_on(world: World) -> None:
    w = world
    order, _ = await started(w)
    w.cp.fail_next(10)
    report = await run(w)
    assert [(f.kind, f.order_id) for f in report.findings] == [("error", order["id"])]
    assert "celerypay" in report.findings[0].detail.lower()


async def test_unconfigured_store_and_bad_concurrency_are_refused(world: World) -> None:
    store = await store_of(world)
    with pytest.raises(InvalidInputError, match="concurrency must be at least 1"):
        await reconcile(world.rt, store, since=since(), concurrency=0)
    async with world.rt.db.transaction() as conn:
        await q.update_store(conn, store.id, datetime.now(UTC), celerypay_secret_enc=None)
    with pytest.raises(ConflictError, match="not installed and configured"):
        await reconcile(world.rt, await store_of(world), since=since())


async def test_pacer_spaces_calls_to_the_rate() -> None:
    """100 calls at 50/s take 2 s of (fake) time, evenly spaced."""
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    pacer = Pacer(50.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(100):
        await pacer.wait()
    assert now[0] == pytest.approx(99 / 50)
    assert all(w == pytest.approx(0.02) for w in waits)


async def test_orders_with_another_payment_method_are_ignored(world: World) -> None:
    world.place_order("10.00", payment_method="Cash on Delivery", created=datetime.now(UTC) - timedelta(hours=3))
    world.place_order("10.00", payment_method="Cash on Delivery", status_id=11)
    report = await run(world)
    assert report.checked == 0 and report.findings == []


def test_a_report_keeps_its_findings_on_disk_in_kind_order() -> None:
    """Counts in memory, findings spooled: 20,000 of them cost next to nothing, and read back whole."""
    report = Report(STORE_HASH, datetime(2026, 11, 1, tzinfo=UTC))
    tracemalloc.start()
    try:
        for n in range(20_000):
            kind = ("pending", "never_started", "paid_not_applied")[n % 3]
            report.add(Finding(kind, STORE_HASH, n, f"order {n} detail " * 4, amount=1000 + n, currency="USD",
                               pay_link=f"https://bcpay.example/pay/tok{n}", fixed=kind == "paid_not_applied"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"findings must not pile up in memory (peak {peak} bytes)"
    assert report.counts == {"paid_not_applied": 6666, "never_started": 6667, "pending": 6667}
    assert report.fixed == 6666
    found = list(report.iter_findings())
    assert [f.kind for f in found] == ["paid_not_applied"] * 6666 + ["never_started"] * 6667 + ["pending"] * 6667
    assert [f.order_id for f in found[:3]] == [2, 5, 8]
    assert found[-1] == Finding("pending", STORE_HASH, 19998, "order 19998 detail " * 4, amount=20998,
                                currency="USD", pay_link="https://bcpay.example/pay/tok19998")
    report.close()
    assert report.findings == []
