"""The unpaid hold: orders never paid are cancelled after the store's hold, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from bcpay import outbox, stores, unpaid
from bcpay.effects import Worker
from bcpay.storage import queries as q
from tests.world import STORE_HASH, World, open_world

HOLD = 60  # minutes: a new store's default with the 30-minute expiry


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        yield w


def payment_id_of(body: dict[str, Any]) -> str:
    url = body["cashier_url"]
    assert isinstance(url, str)
    return url.rsplit("/", 1)[1]


async def audit_actions(world: World, order_id: int) -> list[str]:
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
        return [row["action"] for row in await q.audit_entries(conn, store.id, order_id)]


async def sweep_and_run(world: World) -> None:
    await world.worker.sweep()
    await world.run_jobs()


def cancels(world: World, order_id: int) -> list[dict[str, Any]]:
    return [body for body in world.status_puts(order_id) if body["status_id"] == 5]


async def test_a_new_store_holds_unpaid_orders_for_the_expiry_plus_thirty_minutes(world: World) -> None:
    """`stores.register` gives a new store its own hold: 1800 s of expiry is 30 minutes, plus 30."""
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert store.settings == {"unpaid_hold": HOLD}
    assert world.rt.policy(store).unpaid_hold == HOLD == stores.default_unpaid_hold(world.settings)


async def test_a_store_bcpay_already_served_keeps_its_orders(world: World) -> None:
    """Registering an existing store again (a reinstall) leaves its settings, so no hold appears on upgrade."""
    await stores.update_settings(world.rt, STORE_HASH, {"unpaid_hold": None})
    await world.add_store()
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert store.settings == {} and world.rt.policy(store).unpaid_hold == 0


async def test_an_order_whose_snippet_never_ran_is_cancelled_after_the_hold(world: World) -> None:
    """No attempt at all: listed from BigCommerce by the sweep, cancelled with a note and an audit row."""
    order = world.place_order()
    world.travel(timedelta(minutes=HOLD - 1))
    await sweep_and_run(world)
    assert world.order(order["id"])["status_id"] == 7 and not cancels(world, order["id"])

    world.travel(timedelta(minutes=2))
    await sweep_and_run(world)
    assert world.order(order["id"])["status_id"] == 5
    assert "OKCloud Pay: not paid within 60 minutes; order cancelled" in world.order(order["id"])["staff_notes"]
    assert await audit_actions(world, order["id"]) == ["cancel_unpaid"]
    assert world.rt.metrics.value("bcpay_unpaid_cancelled_total") == 1

    await sweep_and_run(world)  # the next sweep finds nothing more to do
    assert len(cancels(world, order["id"])) == 1
    listed = [r.query for r in world.bc.requests if r.method == "GET" and r.path.endswith("/v2/orders")]
    assert listed and all("status_id=7" in query and "max_date_created=" in query for query in listed)


async def test_orders_older_than_the_lookback_are_not_swept_away(world: World) -> None:
    """A hold switched on must not cancel a store's months-old orders left Awaiting Payment."""
    from datetime import UTC, datetime

    ancient = world.place_order(created=datetime.now(UTC) - unpaid.LOOKBACK - timedelta(days=1))
    recent = world.place_order(created=datetime.now(UTC) - timedelta(minutes=HOLD + 1))
    await sweep_and_run(world)
    assert world.order(ancient["id"])["status_id"] == 7 and world.order(recent["id"])["status_id"] == 5


async def test_orders_of_other_methods_and_a_hold_of_zero_are_left_alone(world: World) -> None:
    """Another payment method's order is not bcpay's; `unpaid_hold = 0` keeps every order as before."""
    other = world.place_order(payment_method="Bank Deposit")
    ours = world.place_order()
    await stores.update_settings(world.rt, STORE_HASH, {"unpaid_hold": 0})
    world.travel(timedelta(hours=5))
    await sweep_and_run(world)
    assert world.order(other["id"])["status_id"] == 7 and world.order(ours["id"])["status_id"] == 7

    await stores.update_settings(world.rt, STORE_HASH, {"unpaid_hold": HOLD})
    await sweep_and_run(world)
    assert world.order(other["id"])["status_id"] == 7 and world.order(ours["id"])["status_id"] == 5


async def test_a_pending_payment_is_cancelled_at_celerypay_before_the_order(world: World) -> None:
    """A hold shorter than the cashier's expiry: the payment is cancelled at CeleryPay first, then the order."""
    await stores.update_settings(world.rt, STORE_HASH, {"unpaid_hold": 10})
    order = world.place_order()
    body = (await world.start(order)).json()
    world.travel(timedelta(minutes=11))
    await sweep_and_run(world)
    assert world.cp.payment_record(payment_id_of(body)).status == "cancelled"
    assert world.order(order["id"])["status_id"] == 5
    async with world.rt.db.read() as conn:
        attempt = await q.get_payment_by_token(conn, body["token"])
    assert attempt is not None and attempt.status == "cancelled"
    actions = await audit_actions(world, order["id"])
    assert actions.index("payment_cancelled") < actions.index("cancel_unpaid")


async def test_a_payment_paid_at_celerypay_but_not_yet_notified_is_applied_never_cancelled(world: World) -> None:
    """CeleryPay is asked before cancelling: its capture pays the order, and nothing is cancelled there."""
    await stores.update_settings(world.rt, STORE_HASH, {"unpaid_hold": 10})  # inside the expiry: the sweep's
    order = world.place_order()  # look-up of expired payments does not see it
    body = (await world.start(order)).json()
    await world.cp.pay(payment_id_of(body))  # the notification is never delivered
    world.travel(timedelta(minutes=11))
    await sweep_and_run(world)
    assert world.order(order["id"])["status_id"] == 11
    assert world.cp.payment_record(payment_id_of(body)).status == "succeeded"
    assert not cancels(world, order["id"]) and "cancel_unpaid" not in await audit_actions(world, order["id"])


async def test_an_order_paid_one_second_before_the_sweep_is_never_cancelled(world: World) -> None:
    """Paid and notified a second before the sweep, its order update still queued: the order is paid."""
    order = world.place_order()
    body = (await world.start(order)).json()
    world.travel(timedelta(minutes=HOLD + 1))
    world.cp.payment_record(payment_id_of(body)).expires_at += 7200  # the shopper is still at the cashier
    await world.cp.pay(payment_id_of(body))
    await world.cp.deliver_due()
    await world.run_checks()  # the capture is recorded; its mark_paid waits in the outbox
    world.travel(timedelta(seconds=1))
    await world.worker.sweep()
    queued = [j for j in await outbox.list_jobs(world.rt.db, state=outbox.QUEUED) if j.kind == unpaid.KIND]
    assert [j.payload for j in queued] == [{"order_id": order["id"]}]
    assert await unpaid.cancel_unpaid(world.rt, queued[0]) == "skipped"  # even if it ran before mark_paid
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 11 and not cancels(world, order["id"])


async def test_a_cancel_queued_before_the_payment_landed_leaves_the_paid_order(world: World) -> None:
    """The sweep queued the cancel; the capture arrives before the job runs: the job sees it and stops."""
    order = world.place_order()
    body = (await world.start(order)).json()
    world.travel(timedelta(minutes=HOLD + 1))
    world.cp.payment_record(payment_id_of(body)).expires_at += 7200
    assert await unpaid.queue_due(world.rt) == 1
    await world.cp.pay(payment_id_of(body))
    await world.cp.deliver_due()
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 11 and not cancels(world, order["id"])


async def test_two_workers_never_cancel_one_order_twice(world: World) -> None:
    """Two workers, each with its own database pool as two processes have, sweep and run at once, twice over:
    one status write and one audit row per order."""
    from bcpay.runtime import open_runtime

    orders = [world.place_order() for _ in range(3)]
    world.travel(timedelta(minutes=HOLD + 1))
    async with open_runtime(world.settings, http=world.rt.http, clock=world.clock.now) as other:
        first, second = Worker(world.rt, owner="one"), Worker(other, owner="two")
        for _ in range(2):
            await asyncio.gather(first.sweep(), second.sweep())
            while sum(await asyncio.gather(first.run_once(), second.run_once())):
                pass
    for order in orders:
        assert world.order(order["id"])["status_id"] == 5
        assert len(cancels(world, order["id"])) == 1
        assert (await audit_actions(world, order["id"])).count("cancel_unpaid") == 1
    assert not await outbox.list_jobs(world.rt.db, state=outbox.QUEUED)


async def test_reconcile_and_metrics_count_the_orders_the_hold_cancelled(world: World) -> None:
    """`bcpay reconcile` reports how many orders of its period were cancelled unpaid; /metrics counts them."""
    from bcpay import reconcile

    orders = [world.place_order() for _ in range(2)]
    world.travel(timedelta(minutes=HOLD + 1))
    await sweep_and_run(world)
    assert [world.order(o["id"])["status_id"] for o in orders] == [5, 5]
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    report = await reconcile.reconcile(world.rt, store, since=world.rt.now() - timedelta(days=1))
    try:
        assert report.cancelled_unpaid == 2 and report.json_head()["cancelled_unpaid"] == 2
        assert report.counts == {}  # cancelled orders are no finding
    finally:
        report.close()
    later = await reconcile.reconcile(world.rt, store, since=world.rt.now() + timedelta(seconds=1))
    assert later.cancelled_unpaid == 0
    later.close()
    metrics = (await world.client.get("/metrics")).text
    assert "# TYPE bcpay_unpaid_cancelled_total counter" in metrics
    assert "\nbcpay_unpaid_cancelled_total 2\n" in metrics


async def test_a_payment_still_being_created_leaves_the_order_for_a_later_sweep(world: World) -> None:
    """A pay link opened a moment ago (its row may be creating at CeleryPay): the order waits; once the row is
    given up as never created, a later sweep cancels it."""
    from bcpay import payflow

    order = world.place_order()
    world.travel(timedelta(minutes=HOLD + 1))
    await payflow.pay_link(world.rt, STORE_HASH, order["id"])  # a "creating" row, touched now
    await sweep_and_run(world)
    assert world.order(order["id"])["status_id"] == 7 and not cancels(world, order["id"])

    world.travel(payflow.CREATION_GRACE + timedelta(minutes=1))
    await sweep_and_run(world)
    assert world.order(order["id"])["status_id"] == 5
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
        [attempt] = await q.order_attempts(conn, store.id, order["id"])
    assert (attempt.status, attempt.failure_code) == ("failed", payflow.NOT_CREATED)
