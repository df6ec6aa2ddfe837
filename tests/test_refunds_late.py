"""Refund requests whose answer was lost, sent again after CeleryPay's 24-hour idempotency window.

CeleryPay replays a POST repeated with the same Idempotency-Key and body only
"within 24 hours" (contract, "Idempotency"), and says nothing of what a reused
merchant_refund_no answers afterwards. Past the window a refusal may mean the
first request made the refund: it must never fail the row and free its amount
(a double refund), and a refund CeleryPay never got must still be made, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bcpay import refunds
from bcpay.errors import ConflictError, InvalidInputError, NotFoundError, UpstreamNotFound, UpstreamUnavailable
from bcpay.sandbox.celerypay import FakeOptions
from bcpay.sandbox.celerypay_rules import RefundRequest
from bcpay.storage import queries as q
from bcpay.storage.records import PaymentRecord, StoreRecord
from bcpay.storage.schema import refunds as refunds_table
from tests.world import MERCHANT_ID, STORE_HASH, World, open_world

A_DAY_LATER = timedelta(hours=25)


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    # No retries inside one call: an answer lost once is lost for that call (as when the process dies).
    async with open_world(db_url, secret_key, cp_options=FakeOptions(refund_auto=False),
                          celerypay={"max_retries": 0}) as w:
        await w.add_store()
        yield w


async def paid(world: World, total: str = "20.00") -> tuple[int, str]:
    """An order paid at CeleryPay and applied: (order id, CeleryPay payment id)."""
    order = world.place_order(total)
    pid = (await world.start(order)).json()["cashier_url"].rsplit("/", 1)[1]
    await world.cp.pay(pid)
    await world.cp.deliver_due()
    await world.run_jobs()
    return order["id"], pid


async def store_and_attempt(world: World, order_id: int) -> tuple[StoreRecord, PaymentRecord]:
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    return store, await refunds.paid_attempt(world.rt, store, order_id)


async def refund(world: World, order_id: int, amount: int | None = None) -> refunds.RefundResult:
    store, attempt = await store_and_attempt(world, order_id)
    return await refunds.request_refund(world.rt, store, attempt, amount=amount, reason="customer asked")


async def refund_lost(world: World, order_id: int, *, made: bool) -> None:
    """A full refund whose answer never comes back; CeleryPay did the work (``made``) or never saw it."""
    world.cp.fail_next(1, status=503, after_work=made)
    with pytest.raises(UpstreamUnavailable):
        await refund(world, order_id)


async def rows(world: World) -> list[dict[str, Any]]:
    async with world.rt.db.read() as conn:
        return [dict(r) for r in (await conn.execute(select(refunds_table).order_by(refunds_table.c.id))).mappings()]


async def left_to_refund(world: World, order_id: int) -> int:
    _, attempt = await store_and_attempt(world, order_id)
    async with world.rt.db.read() as conn:
        return await refunds.refundable(conn, attempt)


async def anomalies(world: World, state: str | None = "open") -> list[dict[str, Any]]:
    async with world.rt.db.read() as conn:
        return await q.list_anomalies(conn, state=state)


async def test_a_refund_made_but_refused_when_sent_again_a_day_later_stays_held_until_celerypay_settles_it(
    world: World,
) -> None:
    """Refused past the window: in doubt, not failed; the money stays held, one anomaly; the notification settles it."""
    order_id, pid = await paid(world)
    await refund_lost(world, order_id, made=True)
    [made] = world.cp.refunds.values()  # CeleryPay has it, pending; bcpay only knows it asked
    world.travel(A_DAY_LATER)

    await world.worker.sweep()  # sends it again: CeleryPay no longer replays, and refuses the used number

    [row] = await rows(world)
    assert row["status"] == "in_doubt" and row["celerypay_id"] is None
    assert await left_to_refund(world, order_id) == 0
    [anomaly] = await anomalies(world)
    assert (anomaly["kind"], anomaly["amount"]) == ("refund_in_doubt", 2000)
    assert f"refund-resolve {row['merchant_refund_no']} --store {STORE_HASH}" in anomaly["detail"]
    with pytest.raises(InvalidInputError, match="nothing is left to refund"):
        await refund(world, order_id)  # the operator trying the same refund again
    await world.worker.sweep()  # never sent again by itself, never a second anomaly
    assert len(world.cp.refunds) == 1 and len(await anomalies(world, state=None)) == 1

    await world.cp.settle_refunds([made["id"]])
    await world.cp.deliver_due()  # refund.succeeded, signed a day later
    await world.run_jobs()

    [row] = await rows(world)
    assert (row["status"], row["celerypay_id"]) == ("succeeded", made["id"])
    assert await anomalies(world) == []
    assert world.order(order_id)["status_id"] == 4
    assert world.cp.payments[pid]["refunded_amount"] == 2000


async def test_a_refund_celerypay_shows_as_made_is_not_sent_again_and_can_be_settled_by_its_id(world: World) -> None:
    """More refunded at CeleryPay than bcpay's settled refunds explain: no resend; `--made ref_...` settles it."""
    order_id, _ = await paid(world)
    await refund_lost(world, order_id, made=True)
    [made] = world.cp.refunds.values()
    await world.cp.settle_refunds([made["id"]])  # succeeded; its notification not delivered yet
    world.travel(A_DAY_LATER)
    store, _ = await store_and_attempt(world, order_id)
    number = (await rows(world))[0]["merchant_refund_no"]

    with pytest.raises(InvalidInputError, match="nothing is left to refund"):
        await refund(world, order_id, 100)  # a new refund first settles the old request: in doubt, still held

    [row] = await rows(world)
    assert row["status"] == "in_doubt" and len(world.cp.refunds) == 1
    [anomaly] = await anomalies(world)
    assert "CeleryPay shows 20.00 USD refunded that no settled refund of bcpay accounts for" in anomaly["detail"]
    with pytest.raises(UpstreamNotFound):  # an id CeleryPay does not know for this payment settles nothing
        await refunds.resolve_doubt(world.rt, store, number, celerypay_id="ref_" + "N" * 24)
    with pytest.raises(ConflictError, match="20.00 USD refunded that no settled refund of bcpay accounts for"):
        await refunds.resolve_doubt(world.rt, store, number, celerypay_id=None)  # "not made": CeleryPay says else
    assert (await rows(world))[0]["status"] == "in_doubt"
    assert await left_to_refund(world, order_id) == 0

    settled = await refunds.resolve_doubt(world.rt, store, number, celerypay_id=made["id"])
    await world.run_jobs()

    assert (settled.status, settled.celerypay_id) == ("succeeded", made["id"])
    assert [r["status"] for r in await rows(world)] == ["succeeded"]
    assert await anomalies(world) == []
    assert world.order(order_id)["status_id"] == 4


async def test_a_refund_celerypay_never_got_is_made_once_when_sent_a_day_later(world: World) -> None:
    """Nothing refunded at CeleryPay and the resend accepted: the one refund with that number, no anomaly."""
    order_id, pid = await paid(world)
    await refund_lost(world, order_id, made=False)
    assert world.cp.refunds == {}
    world.travel(A_DAY_LATER)

    await world.worker.sweep()
    await world.worker.sweep()

    [made] = world.cp.refunds.values()
    [row] = await rows(world)
    assert (row["status"], row["celerypay_id"], made["amount"]) == ("pending", made["id"], 2000)
    await world.cp.settle_refunds()
    await world.cp.deliver_due()
    await world.run_jobs()
    assert [r["status"] for r in await rows(world)] == ["succeeded"]
    assert world.cp.payments[pid]["refunded_amount"] == 2000 and await anomalies(world) == []


async def test_a_refund_in_doubt_that_celerypay_never_made_is_freed_with_not_made(world: World) -> None:
    """Refused for another reason (the dashboard refunded it all meanwhile); `--not-made` fails it, and only it."""
    order_id, pid = await paid(world)
    await refund_lost(world, order_id, made=False)
    dashboard = world.cp.create_refund(MERCHANT_ID, pid, RefundRequest(amount=2000, merchant_refund_no="D1"))
    world.cp.settle_refund(dashboard)
    world.travel(A_DAY_LATER)
    await world.cp.deliver_due()  # bcpay records the dashboard's refund
    await world.run_jobs()

    await world.worker.sweep()  # all that is refunded is explained: sent again, refused (fully refunded): in doubt
    ours = next(r for r in await rows(world) if r["merchant_refund_no"] != "D1")
    assert ours["status"] == "in_doubt"
    store, _ = await store_and_attempt(world, order_id)

    freed = await refunds.resolve_doubt(world.rt, store, ours["merchant_refund_no"], celerypay_id=None)

    assert freed.status == "failed"
    assert sorted(r["status"] for r in await rows(world)) == ["failed", "succeeded"]
    [anomaly] = await anomalies(world, state=None)
    assert anomaly["state"] == "resolved" and "not made at CeleryPay (operator)" in anomaly["detail"]
    with pytest.raises(NotFoundError, match="has no refund in doubt numbered"):
        await refunds.resolve_doubt(world.rt, store, ours["merchant_refund_no"], celerypay_id=None)


async def test_a_refund_marked_not_made_that_celerypay_then_settles_is_recorded_and_shown(world: World) -> None:
    """Still pending at CeleryPay, an operator's `--not-made` passes its check; CeleryPay's refund.succeeded
    later is not dropped: the row is succeeded and an anomaly says the freed amount may have gone twice."""
    order_id, pid = await paid(world)
    await refund_lost(world, order_id, made=True)  # made, still pending at CeleryPay
    world.travel(A_DAY_LATER)
    await world.worker.sweep()  # resent after the window and refused: in doubt
    [row] = await rows(world)
    assert row["status"] == "in_doubt"
    store, _ = await store_and_attempt(world, order_id)
    await refunds.resolve_doubt(world.rt, store, row["merchant_refund_no"], celerypay_id=None)  # wrongly
    assert [r["status"] for r in await rows(world)] == ["failed"]

    await world.cp.settle_refunds()
    await world.cp.deliver_due()
    await world.run_jobs()

    assert [r["status"] for r in await rows(world)] == ["succeeded"]
    assert [a["kind"] for a in await anomalies(world)] == ["refund_failed_then_made"]
    assert world.cp.payments[pid]["refunded_amount"] == 2000 and await left_to_refund(world, order_id) == 0


async def test_a_refund_in_doubt_keeps_its_anomaly_open_until_the_refund_is_settled(world: World) -> None:
    """Resolving the anomaly by hand would leave the refund in doubt, its amount held, with nothing open
    pointing at it: refused, with the command that settles it (which then resolves the anomaly)."""
    from bcpay import operations

    order_id, _ = await paid(world)
    await refund_lost(world, order_id, made=True)
    world.travel(A_DAY_LATER)
    await world.worker.sweep()
    [row] = await rows(world)
    [anomaly] = await anomalies(world)
    assert (row["status"], anomaly["kind"]) == ("in_doubt", "refund_in_doubt")
    with pytest.raises(ConflictError, match="refund-resolve"):
        await operations.resolve_anomaly(world.rt, anomaly["id"], "looked at it")
    assert [a["state"] for a in await anomalies(world, state=None)] == ["open"]
