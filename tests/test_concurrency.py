"""Two bcpay instances on one database: exactly one attempt, exactly one status update.

Two apps (each with its own engine, pool and runtime, as two server
processes would have) share the database and the fakes. On PostgreSQL this
exercises row locks, SKIP LOCKED and the claim lock; on SQLite, BEGIN IMMEDIATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import httpx
import pytest

from bcpay import effects, outbox, refunds
from bcpay.effects import Worker
from bcpay.sandbox.celerypay import FakeOptions
from bcpay.server.app import create_app
from bcpay.storage import queries as q
from bcpay.storage.records import JobRecord
from tests.world import STORE_HASH, World, open_world


@contextlib.asynccontextmanager
async def second_instance(
    world: World, http: httpx.AsyncClient | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Worker]]:
    """Another bcpay 'process' on the same database and fakes (through ``http`` if given)."""
    upstream = http or world.rt.http  # the fakes' transports; a real second process has its own pool
    app = create_app(world.settings, http=upstream, run_worker=False)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000")
        try:
            yield client, Worker(app.state.runtime, owner="second")
        finally:
            await client.aclose()


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        yield w


async def test_concurrent_starts_on_two_instances_make_one_attempt(world: World) -> None:
    order = world.place_order()
    body = {"store_hash": STORE_HASH, "order_id": order["id"], "cart_id": order["cart_id"]}
    async with second_instance(world) as (other, _):
        answers = await asyncio.gather(*(
            (world.client if i % 2 else other).post("/api/v1/payments", json=body) for i in range(10)
        ))
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert len({a.json()["token"] for a in answers}) == 1
    assert len(world.cp.payments) == 1


async def test_same_notification_twenty_times_on_two_instances_applies_once(world: World) -> None:
    order = world.place_order()
    start = (await world.start(order)).json()
    payment_id = start["cashier_url"].rsplit("/", 1)[1]
    await world.cp.pay(payment_id)
    [event] = world.events_of(payment_id)
    async with second_instance(world) as (other, other_worker):
        import json
        import time

        from bcpay.signatures import sign_notification
        from tests.world import MERCHANT_ID, MERCHANT_SECRET

        raw = json.dumps(event).encode()
        ts = int(time.time())
        headers = {"CeleryPay-Merchant": MERCHANT_ID, "CeleryPay-Timestamp": str(ts),
                   "CeleryPay-Signature": sign_notification(MERCHANT_SECRET, ts, raw)}
        answers = await asyncio.gather(*(
            (world.client if i % 2 else other).post(f"/notify/celerypay/{STORE_HASH}", content=raw, headers=headers)
            for i in range(20)
        ))
        assert {a.status_code for a in answers} == {200}
        outcomes = sorted(a.json()["outcome"] for a in answers)
        assert outcomes.count("queued") == 1 and outcomes.count("duplicate") == 19
        # both workers race for the job
        await asyncio.gather(world.run_jobs(), other_worker.run_once(), world.run_jobs(), other_worker.run_once())
        # The read-back job one worker ran may have queued the status change after the other stopped looking.
        await asyncio.gather(world.run_jobs(), other_worker.run_once())
        await world.run_jobs()
    assert len(world.status_puts(order["id"])) == 1
    assert world.order(order["id"])["status_id"] == 11


class Probe:
    """A job handler that logs each job's entry and exit; the first ``hold`` jobs wait for ``release``."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.log: list[tuple[str, int, str | None]] = []  # ("enter" | "exit", job id, the worker's owner)
        self.release = asyncio.Event()
        self._changed = asyncio.Event()

    async def __call__(self, rt: object, job: JobRecord) -> str:
        entered = sum(1 for step, *_ in self.log if step == "enter")
        self.log.append(("enter", job.id, job.lease_owner))
        self._changed.set()
        if entered < self.hold:
            await self.release.wait()
        self.log.append(("exit", job.id, job.lease_owner))
        return "apply"

    def inside(self) -> set[int]:
        """The jobs entered and not yet left."""
        return {i for step, i, _ in self.log if step == "enter"} - {i for step, i, _ in self.log if step == "exit"}

    async def until_inside(self, n: int) -> None:
        """Wait (10 s at most) until ``n`` jobs are inside at once."""
        async with asyncio.timeout(10):
            while len(self.inside()) < n:
                self._changed.clear()
                await self._changed.wait()


async def queue_probes(world: World, *payment_ids: int) -> None:
    async with world.rt.db.transaction() as conn:
        for payment_id in payment_ids:
            await outbox.enqueue(conn, "probe", {"payment_id": payment_id}, now=world.rt.now())


async def test_two_instances_never_run_two_jobs_of_one_payment_at_the_same_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one instance runs payment 1's first job, the other claims nothing; it runs the second
    job once the first is done, counted as its first attempt."""
    probe = Probe(hold=1)
    monkeypatch.setitem(effects.HANDLERS, "probe", probe)
    await queue_probes(world, 1, 1)
    async with second_instance(world) as (_, other):
        first, second = Worker(world.rt, owner="first", batch=1), Worker(other.rt, owner="second", batch=1)
        running = asyncio.create_task(first.run_once())
        await probe.until_inside(1)
        assert await second.run_once() == 0
        probe.release.set()
        assert await running == 1
        assert await second.run_once() == 1
    assert probe.log == [("enter", 1, "first"), ("exit", 1, "first"), ("enter", 2, "second"), ("exit", 2, "second")]
    assert [(j.id, j.state, j.attempts) for j in await outbox.list_jobs(world.rt.db)] == [(2, "done", 1), (1, "done", 1)]


async def test_two_instances_never_run_jobs_of_two_payments_of_one_order_at_the_same_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job reads the order and then writes it: while one instance runs payment 1's job of order 7,
    the other leaves payment 2's (same order) queued and runs payment 3's (order 8) at once."""
    probe = Probe(hold=2)
    monkeypatch.setitem(effects.HANDLERS, "probe", probe)
    async with world.rt.db.transaction() as conn:
        for payment_id, order_id in ((1, 7), (2, 7), (3, 8)):
            await outbox.enqueue(conn, "probe", {"payment_id": payment_id, "order_id": order_id}, now=world.rt.now(),
                                 store_id=1)
    async with second_instance(world) as (_, other):
        first, second = Worker(world.rt, owner="first", batch=1), Worker(other.rt, owner="second", batch=2)
        running = [asyncio.create_task(first.run_once())]
        await probe.until_inside(1)
        running.append(asyncio.create_task(second.run_once()))
        await probe.until_inside(2)
        assert probe.inside() == {1, 3}
        probe.release.set()
        assert await asyncio.gather(*running) == [1, 1]
        assert await second.run_once() == 1
    assert [(step, i) for step, i, _ in probe.log][-2:] == [("enter", 2), ("exit", 2)]


async def test_two_instances_run_jobs_of_two_payments_at_the_same_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs of different payments do not wait for each other: both are inside at once."""
    probe = Probe(hold=2)
    monkeypatch.setitem(effects.HANDLERS, "probe", probe)
    await queue_probes(world, 1, 2)
    async with second_instance(world) as (_, other):
        first, second = Worker(world.rt, owner="first", batch=1), Worker(other.rt, owner="second", batch=1)
        running = [asyncio.create_task(first.run_once())]
        await probe.until_inside(1)
        running.append(asyncio.create_task(second.run_once()))
        await probe.until_inside(2)
        assert probe.log == [("enter", 1, "first"), ("enter", 2, "second")]
        probe.release.set()
        assert await asyncio.gather(*running) == [1, 1]


async def test_two_refunds_status_jobs_on_two_instances_update_the_order_once(db_url: str, secret_key: str) -> None:
    """Each instance took one refund's status job of one payment: both read Paid and both wrote
    Refunded (two PUTs, two staff notes). The second now waits, then finds the order refunded."""
    async with open_world(db_url, secret_key, cp_options=FakeOptions(refund_auto=False),
                          payments={"refund_from_bigcommerce": False}) as world:  # the status path
        await world.add_store()
        order = world.place_order("20.00")
        payment_id = (await world.start(order)).json()["cashier_url"].rsplit("/", 1)[1]
        await world.cp.pay(payment_id)
        await world.cp.deliver_due()
        await world.run_jobs()
        async with world.rt.db.read() as conn:
            store = await q.require_store(conn, STORE_HASH)
        for amount in (500, 1500):
            attempt = await refunds.paid_attempt(world.rt, store, order["id"])
            await refunds.request_refund(world.rt, store, attempt, amount=amount, reason="customer asked")
            await world.cp.settle_refunds()
        await world.cp.deliver_due()
        await world.run_checks()
        assert [j.kind for j in await outbox.list_jobs(world.rt.db, state=outbox.QUEUED)] == ["refund_status"] * 2

        async def network(seconds: float) -> None:  # a BigCommerce call lets other tasks run, as a real one does
            for _ in range(20):
                await asyncio.sleep(0)

        world.bc.chaos.latency, world.bc.chaos.sleep = 0.05, network
        async with second_instance(world) as (_, other):
            first, second = Worker(world.rt, owner="first", batch=1), Worker(other.rt, owner="second", batch=1)
            await asyncio.gather(first.run_once(), second.run_once())
            await world.run_jobs()
        assert [p["status_id"] for p in world.status_puts(order["id"])] == [11, 4]
        assert world.order(order["id"])["staff_notes"].count("OKCloud Pay: refunded") == 1


class HeldStatusPut(httpx.AsyncBaseTransport):
    """BigCommerce as one instance reaches it: its first PUT of ``status_id`` waits, unsent, for ``release``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, status_id: int) -> None:
        self.inner, self.status_id = inner, status_id
        self.held, self.release = asyncio.Event(), asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and not self.held.is_set() and b'"status_id":%d' % self.status_id in request.content:
            self.held.set()
            await self.release.wait()
        return await self.inner.handle_async_request(request)


async def test_an_expired_attempts_cancel_never_overwrites_the_paid_status_of_the_next(
    db_url: str, secret_key: str
) -> None:
    """Attempt A expired; its cancel_order read the order (Awaiting Payment), found no paid or open
    attempt, and its PUT is slow. Meanwhile attempt B is started and paid. B's mark_paid, on the other
    instance, wrote Paid and the cancel then wrote Cancelled over it: a paid order silently cancelled.
    mark_paid now waits for the order's cancel, re-reads the order and keeps B's capture apart."""
    from bcpay.sandbox.bigcommerce import create_bigcommerce_api

    async with open_world(db_url, secret_key, payments={"on_expired": "cancel"}) as world:
        await world.add_store()
        order = world.place_order()
        first = (await world.start(order)).json()
        world.cp.payment_record(first["cashier_url"].rsplit("/", 1)[1]).expires_at = 0  # type: ignore[assignment]
        assert await world.cp.expire_due()
        await world.cp.deliver_due()
        await world.run_checks()
        assert [j.kind for j in await outbox.list_jobs(world.rt.db, state=outbox.QUEUED)] == ["cancel_order"]
        held = HeldStatusPut(httpx.ASGITransport(app=create_bigcommerce_api(world.bc)), status_id=5)
        async with httpx.AsyncClient(mounts={"all://bc.test": held,
                                             "all://celerypay.test": httpx.ASGITransport(app=world.cp.app)}) as slow:
            async with second_instance(world, http=slow) as (_, other):
                cancelling = asyncio.create_task(Worker(other.rt, owner="second", batch=1).run_once())
                async with asyncio.timeout(10):
                    await held.held.wait()
                second = (await world.start(order)).json()
                assert second["token"] != first["token"]
                await world.cp.pay(second["cashier_url"].rsplit("/", 1)[1])
                await world.cp.deliver_due()
                assert await world.worker.run_once() == 0  # mark_paid waits for the order's cancel
                held.release.set()
                assert await cancelling == 1
        await world.run_jobs()
        assert [p["status_id"] for p in world.status_puts(order["id"])] == [5]
        async with world.rt.db.read() as conn:
            anomalies = await q.list_anomalies(conn)
        assert [(a["kind"], a["payment_id"], a["amount"]) for a in anomalies] == [("paid_after_cancel", 2, 1999)]


async def test_a_job_is_cut_off_before_its_lease_runs_out_even_after_a_slow_claim(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler's time comes from the lease it holds, not from lease_seconds: a claim that waited
    for SQLite's lock leaves less, and running past the lease would let a second worker run the job too."""
    from dataclasses import replace
    from datetime import timedelta

    from bcpay import effects, outbox

    ran: list[str] = []

    async def slow(rt: object, job: object) -> str:
        ran.append("started")
        await asyncio.sleep(30)
        ran.append("finished")  # never: cut at the lease
        return "apply"

    monkeypatch.setitem(effects.HANDLERS, "slow", slow)
    async with world.rt.db.transaction() as conn:
        await outbox.enqueue(conn, "slow", {}, now=world.rt.now())
    [job] = await outbox.claim(world.rt.db, owner=world.worker.owner, now=world.rt.now(), lease_seconds=60)
    assert job.lease_until is not None
    job = replace(job, lease_until=world.rt.now() + timedelta(seconds=7))  # the claim took 53 of its 60 s
    await asyncio.wait_for(world.worker._run(job), timeout=10)
    assert ran == ["started"]
    [back] = await outbox.list_jobs(world.rt.db, state=outbox.QUEUED)
    assert back.last_error == "took longer than 2 s"


async def test_a_worker_whose_database_is_away_backs_off_and_logs_once(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A PostgreSQL restart must not make every process log a traceback twenty times a second."""
    import logging

    from bcpay import outbox

    calls: list[float] = []
    real_claim = outbox.claim

    async def failing_claim(*args: object, **kwargs: object) -> list[object]:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) <= 5:
            raise OSError("connection refused")
        return await real_claim(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "claim", failing_claim)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="bcpay.effects")
    task = asyncio.create_task(world.worker.run_forever(stop))
    for _ in range(100):
        await asyncio.sleep(0.1)
        if len(calls) > 6:
            break
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    gaps = [b - a for a, b in itertools.pairwise(calls[:6])]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps  # growing waits
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "retrying with backoff" in errors[0].getMessage()
    assert any("recovered after 5 failed rounds" in r.getMessage() for r in caplog.records)


async def test_shutdown_with_a_job_still_running_is_clean(
    sqlite_url: str, secret_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process worker gets a grace period; a job past it is stopped without the lifespan failing."""
    from bcpay import effects, outbox
    from bcpay.server import app as app_module
    from tests.world import world_settings

    started = asyncio.Event()

    async def slow(rt: object, job: object) -> str:
        started.set()
        await asyncio.sleep(30)
        return "apply"

    monkeypatch.setitem(effects.HANDLERS, "slow", slow)
    monkeypatch.setattr(app_module, "SHUTDOWN_GRACE", 0.2)
    app = create_app(world_settings(sqlite_url, secret_key), run_worker=True)
    async with app.router.lifespan_context(app):
        rt = app.state.runtime
        async with rt.db.transaction() as conn:
            await outbox.enqueue(conn, "slow", {}, now=rt.now())
        app.state.worker.wakeup.set()
        await asyncio.wait_for(started.wait(), timeout=10)
    # leaving the lifespan did not raise: the job was stopped after the grace period
