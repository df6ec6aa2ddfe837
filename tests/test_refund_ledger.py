"""Refunds through BigCommerce's refund ledger, both ways, against the sandbox fakes."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, update

from bcpay import outbox, provisioning, refund_ledger, refunds, stores
from bcpay.storage import queries as q
from bcpay.storage.schema import anomalies, jobs, payments
from bcpay.storage.schema import refunds as refund_rows
from tests.world import STORE_HASH, World, open_world


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key, bc_webhooks=True) as w:
        await w.add_store()
        await w.register_webhooks()
        yield w


async def paid(world: World, total: str = "20.00") -> tuple[dict[str, Any], str]:
    order, pid = await world.paid_order(total)
    assert world.order(order["id"])["status_id"] == 11
    return order, pid


async def settle(world: World) -> None:
    """CeleryPay's refund notifications delivered and every job run."""
    await world.run_jobs()
    await world.cp.deliver_due()
    await world.run_jobs()


async def rows(world: World) -> list[dict[str, Any]]:
    async with world.rt.db.read() as conn:
        return [dict(r) for r in (await conn.execute(select(refund_rows).order_by(refund_rows.c.id))).mappings()]


async def open_anomalies(world: World, kind: str) -> list[dict[str, Any]]:
    async with world.rt.db.read() as conn:
        found = await conn.execute(select(anomalies).where(anomalies.c.kind == kind, anomalies.c.state == "open"))
        return [dict(r) for r in found.mappings()]


async def bcpay_refund(world: World, order_id: int, amount: int | None) -> refunds.RefundResult:
    """A refund from the CLI (no key: "refund-...")."""
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    attempt = await refunds.paid_attempt(world.rt, store, order_id)
    return await refunds.request_refund(world.rt, store, attempt, amount=amount, reason="customer asked")


async def deliver_again(world: World, order_id: int, refund_id: int, hash_: str) -> None:
    """The refund's webhook once more, with another hash (BigCommerce sent it again as a new delivery)."""
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert store.webhook_secret_enc
    body = json.dumps({"scope": "store/order/refund/created", "store_id": "1", "producer": f"stores/{STORE_HASH}",
                       "hash": hash_, "created_at": 1795000000,
                       "data": {"type": "order", "id": order_id, "refund": {"refund_id": refund_id}}}).encode()
    answer = await world.client.post(f"/webhooks/bigcommerce/{STORE_HASH}", content=body, headers={
        "Content-Type": "application/json",
        provisioning.WEBHOOK_SECRET_HEADER: world.rt.vault.open(store.webhook_secret_enc)})
    assert answer.status_code == 200


# --- BigCommerce -> CeleryPay ---------------------------------------------------------------


async def test_the_refund_webhook_is_registered_with_the_others(world: World) -> None:
    """Provisioning registers store/order/refund/created next to the status and app hooks."""
    scopes = {h["scope"] for h in world.bc.stores[STORE_HASH].hooks.values()}
    assert "store/order/refund/created" in scopes and "store/order/statusUpdated" in scopes


async def test_a_control_panel_refund_is_made_at_celerypay_once(world: World) -> None:
    """A partial refund in BigCommerce refunds that amount at CeleryPay, keyed by BigCommerce's refund id."""
    order, pid = await paid(world)
    refund = await world.refund_in_bigcommerce(order["id"], "5.00")
    await settle(world)
    assert world.cp.payments[pid]["refunded_amount"] == 500
    [row] = await rows(world)
    assert row["bc_refund_id"] == refund["id"] and row["status"] == "succeeded"
    assert row["idempotency_key"] == f"bc-refund-{refund['id']}" and row["amount"] == 500
    [made] = world.cp.refunds.values()
    assert made["amount"] == 500 and made["id"] == row["celerypay_id"]
    bc_order = world.order(order["id"])
    assert bc_order["status_id"] == 14  # BigCommerce set it; bcpay did not write another status
    assert [p["status_id"] for p in world.status_puts(order["id"])] == [11]
    assert (f"refund {row['merchant_refund_no']} of 5.00 USD, CeleryPay refund {row['celerypay_id']}, "
            f"BigCommerce refund {refund['id']}") in bc_order["staff_notes"]


async def test_a_webhook_delivered_again_refunds_nothing_more(world: World) -> None:
    """The same refund/created delivered three times (new hashes: BigCommerce retried) is one refund."""
    order, pid = await paid(world)
    refund = await world.refund_in_bigcommerce(order["id"], "5.00")
    await deliver_again(world, order["id"], refund["id"], "again-1")
    await settle(world)
    await deliver_again(world, order["id"], refund["id"], "again-2")
    await settle(world)
    assert world.cp.payments[pid]["refunded_amount"] == 500
    assert len(await rows(world)) == 1
    async with world.rt.db.read() as conn:
        assert await q.count(conn, jobs, jobs.c.kind == refund_ledger.JOB) == 1


async def test_several_partial_refunds_add_up_to_the_whole(world: World) -> None:
    """Two refunds in BigCommerce: two refunds at CeleryPay; the payment ends refunded."""
    order, pid = await paid(world)
    first = await world.refund_in_bigcommerce(order["id"], "5.00")
    await settle(world)
    second = await world.refund_in_bigcommerce(order["id"], "15.00")
    await settle(world)
    assert world.cp.payments[pid]["refunded_amount"] == 2000 and world.cp.payments[pid]["status"] == "refunded"
    assert [(r["bc_refund_id"], r["amount"]) for r in await rows(world)] == [(first["id"], 500), (second["id"], 1500)]
    assert world.order(order["id"])["status_id"] == 4


async def test_more_than_is_left_at_celerypay_is_not_refunded_and_said_so(world: World) -> None:
    """CeleryPay has 5.00 left (15.00 refunded from bcpay without the ledger): a BigCommerce refund of 10.00
    is not made; an anomaly and a staff note say the money did NOT go back."""
    order, pid = await paid(world)
    await stores.update_settings(world.rt, STORE_HASH, {"refund_from_bigcommerce": False})
    await bcpay_refund(world, order["id"], 1500)
    await settle(world)
    await stores.update_settings(world.rt, STORE_HASH, {"refund_from_bigcommerce": True})
    world.order(order["id"])["status_id"] = 11  # the merchant set it back to be able to refund
    refund = await world.refund_in_bigcommerce(order["id"], "5.01")
    await settle(world)
    assert world.cp.payments[pid]["refunded_amount"] == 1500
    [anomaly] = await open_anomalies(world, refund_ledger.NOT_MADE)
    assert f"BigCommerce refund {refund['id']} of 5.01" in anomaly["detail"]
    assert "more than what is left to refund (5.00 USD)" in anomaly["detail"]
    assert "NOT" in anomaly["detail"] and anomaly["amount"] == 501
    notes = world.order(order["id"])["staff_notes"]
    assert f"BigCommerce refund {refund['id']} of 5.01 USD was NOT refunded at CeleryPay" in notes
    assert "The money did NOT go back to the shopper." in notes


async def test_celerypay_down_during_the_job_retries_and_loses_nothing(world: World) -> None:
    """CeleryPay answers 503 to every try: the job is retried; once it is back, the one refund is made."""
    order, pid = await paid(world)
    world.cp.fail_next(world.rt.settings.celerypay.max_retries + 1, status=503)
    refund = await world.refund_in_bigcommerce(order["id"], "7.00")
    await world.run_jobs()
    assert world.cp.payments[pid]["refunded_amount"] == 0
    [row] = await rows(world)
    assert row["status"] == "requested" and row["bc_refund_id"] == refund["id"]
    [job] = [j for j in await outbox.list_jobs(world.rt.db) if j.kind == refund_ledger.JOB]
    assert job.state == "queued" and job.attempts == 1
    async with world.rt.db.transaction() as conn:  # its backoff is over
        await conn.execute(update(jobs).where(jobs.c.id == job.id).values(run_after=world.rt.now()))
    await settle(world)
    assert world.cp.payments[pid]["refunded_amount"] == 700
    [row] = await rows(world)
    assert row["status"] == "succeeded"


async def test_an_order_paid_by_two_attempts_is_refunded_from_the_one_that_paid_it(world: World) -> None:
    """The first attempt failed, the second paid: the BigCommerce refund comes from the second."""
    order = world.place_order("10.00")
    first = (await world.start(order)).json()
    async with world.rt.db.transaction() as conn:
        await conn.execute(update(payments).where(payments.c.token == first["token"]).values(status="failed"))
    second = (await world.start(order)).json()
    pid = second["cashier_url"].rsplit("/", 1)[1]
    await world.cp.pay(pid)
    await world.cp.deliver_due()
    await world.run_jobs()
    await world.refund_in_bigcommerce(order["id"], "4.00")
    await settle(world)
    assert world.cp.payments[pid]["refunded_amount"] == 400
    async with world.rt.db.read() as conn:
        paid_one = await q.get_payment_by_token(conn, second["token"])
    [row] = await rows(world)
    assert paid_one is not None and row["payment_id"] == paid_one.id


async def test_a_store_turned_off_makes_nothing_at_celerypay(world: World) -> None:
    """refund_from_bigcommerce = false: the refund webhook's job does nothing."""
    order, pid = await paid(world)
    await stores.update_settings(world.rt, STORE_HASH, {"refund_from_bigcommerce": False})
    await world.refund_in_bigcommerce(order["id"], "5.00")
    await settle(world)
    assert world.cp.payments[pid]["refunded_amount"] == 0 and await rows(world) == []


async def test_refund_on_status_still_works_when_the_ledger_is_off(db_url: str, secret_key: str) -> None:
    """The deprecated refund_on_status refunds a Refunded order only with refund_from_bigcommerce off."""
    async with open_world(db_url, secret_key, bc_webhooks=True) as w:
        await w.add_store()
        await w.register_webhooks()
        await stores.update_settings(w.rt, STORE_HASH, {"refund_on_status": True})
        order, pid = await paid(w)
        await w.refund_in_bigcommerce(order["id"], "20.00")  # Refunded: both hooks fire
        await settle(w)
        assert w.cp.payments[pid]["refunded_amount"] == 2000
        assert len(await rows(w)) == 1  # the ledger's refund only: refund_on_status stood aside


async def test_refund_on_status_at_start_is_a_deprecation_warning(
        db_url: str, secret_key: str, caplog: pytest.LogCaptureFixture) -> None:
    """A store with refund_on_status on: the server says at start that it is deprecated."""
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        await stores.update_settings(w.rt, STORE_HASH, {"refund_on_status": True})
        with caplog.at_level(logging.WARNING, logger="bcpay.refund_ledger"):
            await refund_ledger.warn_deprecated(w.rt)
    assert "payments.refund_on_status is deprecated and goes away in the next release" in caplog.text
    assert f"(on for {STORE_HASH})" in caplog.text


# --- CeleryPay -> BigCommerce -----------------------------------------------------------------


def ledger(world: World, order_id: int) -> list[dict[str, Any]]:
    return [r for r in world.bc.stores[STORE_HASH].refunds.values() if r["order_id"] == order_id]


async def test_a_bcpay_refund_is_written_to_the_ledger_once_and_its_webhook_ignored(world: World) -> None:
    """A CLI refund that succeeded: a quote, then an offline refund naming bcpay's number; the
    refund/created webhook it fires is recognised, so CeleryPay is not asked to refund again."""
    order, pid = await paid(world)
    result = await bcpay_refund(world, order["id"], 500)
    await settle(world)
    [entry] = ledger(world, order["id"])
    assert entry["reason"] == f"OKCloud Pay refund {result.merchant_refund_no}" and entry["total_amount"] == 5.0
    assert [(p["provider_id"], p["offline"], p["amount"]) for p in entry["payments"]] == [("bankdeposit", True, 5.0)]
    [row] = await rows(world)
    assert row["bc_refund_id"] == entry["id"]
    assert any(d.payload["scope"] == "store/order/refund/created" for d in world.bc.webhook_deliveries)
    async with world.rt.db.read() as conn:  # the webhook's job ran and stood aside
        assert await q.count(conn, jobs, jobs.c.kind == refund_ledger.JOB, jobs.c.state == "done") == 1
    assert world.cp.payments[pid]["refunded_amount"] == 500 and len(world.cp.refunds) == 1
    bc_order = world.order(order["id"])
    assert bc_order["status_id"] == 14 and bc_order["refunded_amount"] == "5.0000"
    assert (f"refund {result.merchant_refund_no} of 5.00 USD, CeleryPay refund {result.celerypay_id}, "
            f"BigCommerce refund {entry['id']}") in bc_order["staff_notes"]
    from bcpay import operations

    [shown] = (await operations.payment_detail(world.rt, pid, STORE_HASH))["refunds"]  # `bcpay payments show`
    assert (shown["merchant_refund_no"], shown["celerypay_id"], shown["bigcommerce_refund_id"]) == (
        result.merchant_refund_no, result.celerypay_id, entry["id"])


async def test_the_webhook_before_the_id_was_kept_is_recognised_by_its_reason(world: World) -> None:
    """bcpay's write reached BigCommerce but its answer was lost: the webhook's job finds bcpay's number in
    the reason, keeps the id, refunds nothing; the write, tried again, finds it and writes nothing more."""
    order, pid = await paid(world)
    result = await bcpay_refund(world, order["id"], 500)
    from bcpay.sandbox import bc_refunds

    number = result.merchant_refund_no
    _previous, entry = bc_refunds.create_refund(world.bc, STORE_HASH, order["id"], {
        "items": [{"item_type": "ORDER", "item_id": order["id"], "amount": 5, "reason": f"OKCloud Pay refund {number}"}],
        "payments": [{"provider_id": "bankdeposit", "amount": 5, "offline": True}]})
    await deliver_again(world, order["id"], entry["id"], "lost-answer")
    await settle(world)
    assert len(ledger(world, order["id"])) == 1
    [row] = await rows(world)
    assert row["bc_refund_id"] == entry["id"] and world.cp.payments[pid]["refunded_amount"] == 500


async def test_two_refunds_settled_before_their_jobs_both_reach_the_ledger(db_url: str, secret_key: str) -> None:
    """Both refunds succeeded before either job ran: the first does not set Refunded ahead of the second's
    write (BigCommerce would refuse it), so both are in the ledger and the order ends Refunded."""
    from bcpay.sandbox.celerypay import FakeOptions

    async with open_world(db_url, secret_key, bc_webhooks=True, cp_options=FakeOptions(refund_auto=False)) as w:
        await w.add_store()
        await w.register_webhooks()
        order, pid = await paid(w)
        for amount in (500, 1500):
            await bcpay_refund(w, order["id"], amount)
            await w.cp.settle_refunds()
        await settle(w)
        assert sorted(r["total_amount"] for r in ledger(w, order["id"])) == [5.0, 15.0]
        assert w.order(order["id"])["status_id"] == 4
        assert await open_anomalies(w, refund_ledger.NOT_WRITTEN) == []
        assert w.cp.payments[pid]["refunded_amount"] == 2000


async def test_bigcommerce_refusing_the_write_sets_the_status_and_says_so(world: World) -> None:
    """The quote offers no offline method: the status is set as before, and an anomaly says the ledger
    could not be written."""
    world.bc.stores[STORE_HASH].offline_refunds = False
    order, _pid = await paid(world)
    result = await bcpay_refund(world, order["id"], 500)
    await settle(world)
    assert ledger(world, order["id"]) == []
    assert [p["status_id"] for p in world.status_puts(order["id"])] == [11, 14]
    [anomaly] = await open_anomalies(world, refund_ledger.NOT_WRITTEN)
    assert f"refund {result.merchant_refund_no} of 5.00 USD was made at CeleryPay but could not be written" in (
        anomaly["detail"])
    assert "offers no offline refund method" in anomaly["detail"]
    [row] = await rows(world)
    assert row["bc_refund_id"] == refund_ledger.REFUSED
    assert "not in BigCommerce's refund ledger" in world.order(order["id"])["staff_notes"]


async def test_the_refund_of_a_double_payment_stays_out_of_the_ledger(db_url: str, secret_key: str) -> None:
    """refund_duplicates = auto: the double payment is refunded at CeleryPay, never written to BigCommerce."""
    from tests.test_refunds import paid_twice

    async with open_world(db_url, secret_key, bc_webhooks=True, payments={"refund_duplicates": "auto"}) as w:
        await w.add_store()
        await w.register_webhooks()
        order, first, _second = await paid_twice(w)
        await settle(w)
        assert w.cp.payments[first["cashier_url"].rsplit("/", 1)[1]]["status"] == "refunded"
        assert ledger(w, order["id"]) == [] and w.order(order["id"])["status_id"] == 11


async def test_a_refund_celerypay_fails_later_is_said_not_to_have_gone_back(db_url: str, secret_key: str) -> None:
    """CeleryPay takes the refund, then reports it failed: an anomaly and a staff note, once."""
    from bcpay.sandbox.celerypay import FakeOptions

    async with open_world(db_url, secret_key, bc_webhooks=True, cp_options=FakeOptions(refund_auto=False)) as w:
        await w.add_store()
        await w.register_webhooks()
        order, pid = await paid(w)
        refund = await w.refund_in_bigcommerce(order["id"], "6.00")
        await settle(w)
        await w.cp.settle_refunds(succeed=False)
        await settle(w)
        await settle(w)
        assert w.cp.payments[pid]["refunded_amount"] == 0
        [row] = await rows(w)
        assert row["status"] == "failed" and row["bc_refund_id"] == refund["id"]
        [anomaly] = await open_anomalies(w, refund_ledger.NOT_MADE)
        assert "CeleryPay reported the refund failed" in anomaly["detail"] and anomaly["amount"] == 600
        notes = w.order(order["id"])["staff_notes"]
        assert notes.count(f"BigCommerce refund {refund['id']} of 6.00 USD was NOT refunded at CeleryPay") == 1


async def test_a_merchant_reason_naming_a_written_refund_is_not_taken_for_bcpays(world: World) -> None:
    """A control-panel refund whose reason copies the number of a refund bcpay already wrote is the merchant's
    own: it is refunded at CeleryPay."""
    order, pid = await paid(world)
    result = await bcpay_refund(world, order["id"], 500)
    await settle(world)
    await world.refund_in_bigcommerce(order["id"], "3.00", reason=f"OKCloud Pay refund {result.merchant_refund_no}")
    await settle(world)
    assert world.cp.payments[pid]["refunded_amount"] == 800
    assert len(ledger(world, order["id"])) == 2 and len(await rows(world)) == 2


async def test_the_server_warns_at_start_when_refund_on_status_is_on(
        db_url: str, secret_key: str, caplog: pytest.LogCaptureFixture) -> None:
    """payments.refund_on_status = true in the config: the server's start says it is deprecated; off, nothing."""
    with caplog.at_level(logging.WARNING, logger="bcpay.refund_ledger"):
        async with open_world(db_url, secret_key):
            pass
        assert "refund_on_status is deprecated" not in caplog.text
        async with open_world(db_url, secret_key, payments={"refund_on_status": True}):
            pass
    assert "payments.refund_on_status is deprecated" in caplog.text and "(on for no store)" in caplog.text
