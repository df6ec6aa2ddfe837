"""Refunds, expiry sweep and double payments against the sandbox fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bcpay import refunds
from bcpay.errors import InvalidInputError, UpstreamUnavailable
from bcpay.sandbox.celerypay import FakeOptions
from bcpay.storage import queries as q
from tests.world import STORE_HASH, World, open_world


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key, cp_options=FakeOptions(refund_auto=False)) as w:
        await w.add_store()
        yield w


async def paid(world: World, total: str = "20.00") -> tuple[dict[str, Any], str]:
    return await world.paid_order(total)


async def refund(world: World, order_id: int, amount: int | None) -> refunds.RefundResult:
    store = await world_store(world)
    attempt = await refunds.paid_attempt(world.rt, store, order_id)
    return await refunds.request_refund(world.rt, store, attempt, amount=amount, reason="customer asked")


async def world_store(world: World):  # type: ignore[no-untyped-def]
    async with world.rt.db.read() as conn:
        return await q.require_store(conn, STORE_HASH)


async def test_partial_then_second_partial_up_to_the_total(world: World) -> None:
    order, pid = await paid(world, "20.00")
    first = await refund(world, order["id"], 500)  # type: ignore[arg-type]
    assert first.status == "pending" and first.merchant_refund_no.endswith("-r1")
    await world.cp.settle_refunds()
    await world.cp.deliver_due()
    await world.run_jobs()
    bc_order = world.order(order["id"])  # type: ignore[arg-type]
    assert bc_order["status_id"] == 14 and "refunded 5.00 USD of 20.00 USD" in bc_order["staff_notes"]

    second = await refund(world, order["id"], None)  # type: ignore[arg-type]
    assert second.amount == 1500
    await world.cp.settle_refunds()
    await world.cp.deliver_due()
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 4  # type: ignore[arg-type]
    assert world.cp.payments[pid]["status"] == "refunded"


async def test_over_refund_is_rejected_before_calling_celerypay(world: World) -> None:
    order, _pid = await paid(world, "20.00")
    await refund(world, order["id"], 1500)  # type: ignore[arg-type]
    calls_before = len(world.cp.refunds)
    with pytest.raises(InvalidInputError, match=r"6.00 USD is more than what is left to refund \(5.00 USD\)"):
        await refund(world, order["id"], 600)  # type: ignore[arg-type]
    assert len(world.cp.refunds) == calls_before


async def test_refund_notifications_duplicated_and_reordered_apply_once(world: World) -> None:
    order, _pid = await paid(world, "20.00")
    await refund(world, order["id"], 500)  # type: ignore[arg-type]
    await world.cp.settle_refunds()
    await refund(world, order["id"], 1500)  # type: ignore[arg-type]
    await world.cp.settle_refunds()
    refund_events = [e for e in world.cp.events if e["type"].startswith("refund.")]
    assert len(refund_events) == 2
    for event in [refund_events[1], refund_events[0], refund_events[1], refund_events[0]]:
        assert (await world.notify(event)).status_code == 200
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 4  # type: ignore[arg-type]
    puts = [p["status_id"] for p in world.status_puts(order["id"])]  # type: ignore[arg-type]
    assert puts == [11]  # each refund written to BigCommerce's ledger once, which set the status itself
    ledger = world.bc.stores[STORE_HASH].refunds.values()
    assert sorted(r["total_amount"] for r in ledger) == [5.0, 15.0]


async def test_expiry_sweep_applies_a_lost_expiry_notification(db_url: str, secret_key: str) -> None:
    async with open_world(db_url, secret_key, payments={"on_expired": "cancel"}) as w:
        await w.add_store()
        order = w.place_order()
        body = (await w.start(order)).json()
        pid = body["cashier_url"].rsplit("/", 1)[1]
        w.cp.payment_record(pid).expires_at = 0  # type: ignore[assignment]
        await w.cp.expire_due()  # expired at CeleryPay; its notification is never delivered
        later = w.rt.now() + timedelta(hours=1)
        w.rt.clock = lambda: later
        assert await w.worker.sweep() == 1
        await w.run_jobs()
        assert w.order(order["id"])["status_id"] == 5
        assert (await w.status(body["token"])).json()["state"] == "expired"


async def paid_twice(w: World) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An order of 10.00 paid by a second attempt, then by the first one, which bcpay held as failed:
    (order, first attempt's start answer, second's)."""
    from sqlalchemy import update

    from bcpay.storage.schema import payments

    order = w.place_order("10.00")
    first = (await w.start(order)).json()
    async with w.rt.db.transaction() as conn:
        await conn.execute(update(payments).where(payments.c.token == first["token"]).values(status="failed"))
    second = (await w.start(order)).json()
    for body in (second, first):
        await w.cp.pay(body["cashier_url"].rsplit("/", 1)[1])
        await w.cp.deliver_due()
        await w.run_jobs()
    return order, first, second


async def test_auto_refund_of_a_double_payment(db_url: str, secret_key: str) -> None:
    async with open_world(db_url, secret_key, payments={"refund_duplicates": "auto"}) as w:
        await w.add_store()
        order, first, _second = await paid_twice(w)
        await w.cp.deliver_due()
        await w.run_jobs()
        first_pid = first["cashier_url"].rsplit("/", 1)[1]
        assert w.cp.payments[first_pid]["status"] == "refunded"
        assert w.order(order["id"])["status_id"] == 11
        assert len(w.status_puts(order["id"])) == 1


async def test_a_double_payments_refund_found_not_made_is_queued_again_from_that_payment(
    db_url: str, secret_key: str
) -> None:
    """`refund-resolve --not-made` on bcpay's own refund of a double payment: `bcpay refund ORDER` would
    take the money from the payment that paid the order, so the worker refunds the double one again."""
    from sqlalchemy import insert

    from bcpay.storage.schema import REFUND_IN_DOUBT
    from bcpay.storage.schema import refunds as refunds_table

    async with open_world(db_url, secret_key) as w:  # refund_duplicates: manual
        await w.add_store()
        order, first, second = await paid_twice(w)
        store = await world_store(w)
        async with w.rt.db.transaction() as conn:  # the worker's refund of the double one, left in doubt
            double = await q.get_payment_by_token(conn, first["token"])
            assert double is not None and double.outcome == "duplicate_payment"
            await conn.execute(insert(refunds_table).values(
                payment_id=double.id, merchant_refund_no="abc123-x-r1", idempotency_key="job-999", amount=1000,
                currency="USD", status=REFUND_IN_DOUBT, reason="double_payment", created_at=w.rt.now(),
                updated_at=w.rt.now()))
        result = await refunds.resolve_doubt(w.rt, store, "abc123-x-r1", celerypay_id=None)  # type: ignore[arg-type]
        assert result.status == "queued_again"
        await w.run_jobs()
        first_pid, second_pid = (b["cashier_url"].rsplit("/", 1)[1] for b in (first, second))
        assert w.cp.payments[first_pid]["refunded_amount"] == 1000
        assert w.cp.payments[second_pid]["refunded_amount"] == 0 and w.order(order["id"])["status_id"] == 11


async def test_a_refund_whose_call_failed_is_sent_again_with_the_same_key_and_done_once(world: World) -> None:
    """A retried job (same key) resends the same request: one refund at CeleryPay, nothing held back."""
    order, _ = await paid(world, "20.00")
    store = await world_store(world)
    attempt = await refunds.paid_attempt(world.rt, store, order["id"])  # type: ignore[arg-type]
    tries = world.rt.settings.celerypay.max_retries + 1  # one call, retries included
    world.cp.fail_next(tries, status=503)  # CeleryPay down for the whole call
    with pytest.raises(UpstreamUnavailable):
        await refunds.request_refund(world.rt, store, attempt, amount=700, key="job-77")
    again = await refunds.request_refund(world.rt, store, attempt, amount=700, key="job-77")
    assert again.status == "pending" and again.amount == 700 and again.merchant_refund_no.endswith("-r1")
    assert [r["amount"] for r in world.cp.refunds.values()] == [700]
    async with world.rt.db.read() as conn:
        assert await refunds.refundable(conn, attempt) == 2000 - 700
    third = await refunds.request_refund(world.rt, store, attempt, amount=700, key="job-77")
    assert third.celerypay_id == again.celerypay_id and len(world.cp.refunds) == 1
    with pytest.raises(InvalidInputError, match="another amount"):
        await refunds.request_refund(world.rt, store, attempt, amount=800, key="job-77")


async def test_a_resend_refused_for_its_signature_keeps_the_refund_held(world: World) -> None:
    """The first call's answer was lost (it may have made the refund); the resend meets a 401 (a clock
    off, a secret mid-rotation). That says nothing about the refund: its amount stays held, and a later
    resend settles it once. Failing it freed the money for a second refund."""
    from bcpay.errors import UpstreamRejected

    order, _ = await paid(world, "20.00")
    store = await world_store(world)
    attempt = await refunds.paid_attempt(world.rt, store, order["id"])  # type: ignore[arg-type]
    world.cp.fail_next(world.rt.settings.celerypay.max_retries + 1, status=503)  # no answer at all
    with pytest.raises(UpstreamUnavailable):
        await refunds.request_refund(world.rt, store, attempt, amount=2000, key="job-5")
    world.clock.offset += timedelta(hours=1)  # CeleryPay's clock only: bcpay's signatures are stale to it
    with pytest.raises(UpstreamRejected) as refused:
        await refunds.request_refund(world.rt, store, attempt, amount=2000, key="job-5")
    assert refused.value.status == 401
    world.clock.offset = timedelta(0)
    async with world.rt.db.read() as conn:
        assert await refunds.refundable(conn, attempt) == 0  # still held: it may have been made
    done = await refunds.request_refund(world.rt, store, attempt, amount=2000, key="job-5")
    assert done.amount == 2000 and [r["amount"] for r in world.cp.refunds.values()] == [2000]


async def test_a_request_left_unanswered_no_longer_holds_its_amount_back(world: World) -> None:
    """An operator's refund whose call failed is settled by the next request, which then refunds the rest."""
    from sqlalchemy import update

    from bcpay.storage.schema import refunds as refunds_table

    order, _ = await paid(world, "20.00")
    world.cp.fail_next(world.rt.settings.celerypay.max_retries + 1, status=503)  # down: nothing is done
    with pytest.raises(UpstreamUnavailable):
        await refund(world, order["id"], 500)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"is more than what is left to refund \(15.00 USD\)"):  # just now: it may still be in flight
        await refund(world, order["id"], 2000)  # type: ignore[arg-type]
    async with world.rt.db.transaction() as conn:  # three minutes later
        await conn.execute(update(refunds_table).values(updated_at=world.rt.now() - timedelta(minutes=3)))
    rest = await refund(world, order["id"], None)  # type: ignore[arg-type]
    assert rest.amount == 1500 and rest.merchant_refund_no.endswith("-r2")
    assert sorted(r["amount"] for r in world.cp.refunds.values()) == [500, 1500]
    async with world.rt.db.read() as conn:
        statuses = [r["status"] for r in (await conn.execute(select(refunds_table))).mappings()]
    assert statuses == ["pending", "pending"]


async def test_a_late_pending_answer_never_undoes_a_succeeded_refund(world: World) -> None:
    """CeleryPay's 201 ('pending') settled while the 'refund.succeeded' notification is committing.

    The race is PostgreSQL's (on SQLite every write transaction already waits for the other).
    """
    import asyncio

    from sqlalchemy import update

    from bcpay import payflow
    from bcpay.storage.schema import refunds as refunds_table

    order, pid = await paid(world, "20.00")
    result = await refund(world, order["id"], 500)  # type: ignore[arg-type]
    store = await world_store(world)
    assert result.celerypay_id is not None
    stale = await world.rt.celerypay(store).get_refund(pid, result.celerypay_id)
    assert stale.status == "pending"
    attempt = await refunds.paid_attempt(world.rt, store, order["id"])  # type: ignore[arg-type]
    async with world.rt.db.transaction() as conn:  # the notification's transaction, not yet committed
        await payflow.lock_order(conn, world.rt, store.id, attempt.order_id)
        await conn.execute(update(refunds_table).values(status="succeeded"))
        late = asyncio.create_task(refunds.settle(world.rt, store, attempt, stale))
        await asyncio.sleep(0.3)
        assert not late.done()  # it waits for the order (and the row) instead of reading around it
    await late
    async with world.rt.db.read() as conn:
        assert [r["status"] for r in (await conn.execute(select(refunds_table))).mappings()] == ["succeeded"]


async def test_the_sweep_settles_a_refund_whose_notification_was_lost(world: World) -> None:
    from sqlalchemy import update

    from bcpay.storage.schema import refunds as refunds_table

    order, _ = await paid(world, "20.00")
    await refund(world, order["id"], 500)  # type: ignore[arg-type]
    await world.cp.settle_refunds()  # succeeded at CeleryPay; its notification never arrives
    assert await world.worker.sweep() == 0  # just made: not asked about yet
    async with world.rt.db.transaction() as conn:
        await conn.execute(update(refunds_table).values(updated_at=world.rt.now() - timedelta(minutes=11)))
    assert await world.worker.sweep() == 1
    async with world.rt.db.read() as conn:
        assert [r["status"] for r in (await conn.execute(select(refunds_table))).mappings()] == ["succeeded"]
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 14  # type: ignore[arg-type]
    assert await world.worker.sweep() == 0
