"""Refund and payment events whose ids are long, or whose refund number another store also uses.

CeleryPay's ids go up to ``evt_``/``ref_`` + 64 characters and a refund number
is unique per merchant only (contract, "POST /v1/payments/{id}/refunds"); each
store has its own merchant. Both used to lose the event on PostgreSQL: a 500
that CeleryPay retries for 47 hours and then abandons. (SQLite never enforced
the VARCHAR length; there the long-id tests check the round trip only.)
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import String, insert, select

from bcpay import notifications, stores
from bcpay.clients.celerypay import Refund
from bcpay.sandbox.celerypay import FakeOptions
from bcpay.sandbox.celerypay_rules import RefundRequest
from bcpay.storage import migrate
from bcpay.storage import queries as q
from bcpay.storage.db import Database
from bcpay.storage.schema import metadata, payments, refunds
from tests.world import MERCHANT_ID, STORE_HASH, STORE_URL, World, open_world

LONG_EVENT_ID = "evt_" + "E" * 64  # 68 characters: the longest EVENT_ID the parser accepts
LONG_REFUND_ID = "ref_" + "R" * 64  # the same for REFUND_ID

OTHER_HASH = "other456"
OTHER_URL = "https://other.example.com"
OTHER_MERCHANT = "mch_OtherMerchant000002"
OTHER_SECRET = "o" * 20 + "ther-secret-for-tests-0123456789"
OTHER_TOKEN = "bc-access-token-of-the-other-store"


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key, cp_options=FakeOptions(refund_auto=False)) as w:
        await w.add_store()
        yield w


async def add_other_store(world: World) -> None:
    """A second store on the same bcpay, with its own BigCommerce store and CeleryPay merchant."""
    world.bc.add_store(OTHER_HASH, secure_url=OTHER_URL, name="Other Shop", access_token=OTHER_TOKEN)
    world.cp.add_merchant(OTHER_MERCHANT, OTHER_SECRET)
    await stores.register(world.rt, OTHER_HASH, access_token=OTHER_TOKEN, source="api_account",
                          scopes=" ".join(stores.REQUIRED_SCOPES))
    await stores.configure_merchant(world.rt, OTHER_HASH, merchant_id=OTHER_MERCHANT, api_secret=OTHER_SECRET)


async def pay_order(world: World, store_hash: str, origin: str, total: str = "20.00") -> tuple[int, str]:
    """An order of ``store_hash`` paid at CeleryPay and applied; (order id, CeleryPay payment id)."""
    order = world.bc.create_order(store_hash, total=Decimal(total))
    started = await world.client.post(
        "/api/v1/payments",
        json={"store_hash": store_hash, "order_id": order["id"], "cart_id": order["cart_id"]},
        headers={"Origin": origin},
    )
    assert started.status_code == 200, started.text
    pid = started.json()["cashier_url"].rsplit("/", 1)[1]
    await world.cp.pay(pid)
    await world.cp.deliver_due()
    await world.run_jobs()
    return order["id"], pid


async def refund_rows(world: World) -> list[dict[str, Any]]:
    async with world.rt.db.read() as conn:
        rows = (await conn.execute(select(refunds).order_by(refunds.c.id))).mappings().all()
    return [dict(r) for r in rows]


async def test_a_68_character_event_id_is_stored_and_the_payment_applied(world: World) -> None:
    """The longest event id the contract's parser accepts fits its column: 200, stored, applied."""
    order = world.place_order("20.00")
    pid = (await world.start(order)).json()["cashier_url"].rsplit("/", 1)[1]
    await world.cp.pay(pid)
    event = {**world.events_of(pid)[-1], "id": LONG_EVENT_ID}

    assert (await world.notify(event)).status_code == 200
    assert (await world.notify(event)).status_code == 200  # the dedupe key still works at full length
    await world.run_jobs()

    async with world.rt.db.read() as conn:
        stored = [e["event_id"] for e in await q.list_events(conn)]
    assert stored == [LONG_EVENT_ID]
    assert world.order(order["id"])["status_id"] == 11


async def test_a_68_character_refund_id_is_stored_and_read_back(world: World) -> None:
    """A refund made in CeleryPay's dashboard with the longest refund id is recorded, and the order follows."""
    order_id, pid = await pay_order(world, STORE_HASH, STORE_URL)
    made = world.cp.create_refund(MERCHANT_ID, pid, RefundRequest(amount=500, merchant_refund_no="R1"),
                                  refund_id=LONG_REFUND_ID)
    world.cp.settle_refund(made)
    event = copy.deepcopy(world.events_of(pid)[-1])
    assert event["data"]["id"] == LONG_REFUND_ID

    assert (await world.notify(event)).status_code == 200
    await world.run_jobs()

    [row] = await refund_rows(world)
    assert (row["celerypay_id"], row["merchant_refund_no"], row["status"]) == (LONG_REFUND_ID, "R1", "succeeded")
    assert "refunded 5.00 USD of 20.00 USD" in world.order(order_id)["staff_notes"]


async def test_the_same_refund_number_in_two_stores_makes_two_refunds(world: World) -> None:
    """Each store's dashboard refund "R1" is answered 200 and recorded on its own payment."""
    await add_other_store(world)
    _, pid_a = await pay_order(world, STORE_HASH, STORE_URL)
    _, pid_b = await pay_order(world, OTHER_HASH, OTHER_URL)
    for merchant, pid, amount in ((MERCHANT_ID, pid_a, 500), (OTHER_MERCHANT, pid_b, 700)):
        made = world.cp.create_refund(merchant, pid, RefundRequest(amount=amount, merchant_refund_no="R1"))
        world.cp.settle_refund(made)

    await world.cp.deliver_due()
    await world.run_jobs()

    refund_deliveries = [d for d in world.cp.deliveries if d.event_type == "refund.succeeded"]
    assert [(d.payment_id, d.status_code) for d in refund_deliveries] == [(pid_a, 200), (pid_b, 200)]
    rows = await refund_rows(world)
    by_payment = {r["payment_id"]: (r["merchant_refund_no"], r["amount"], r["celerypay_id"]) for r in rows}
    async with world.rt.db.read() as conn:
        a = await q.find_payment(conn, celerypay_id=pid_a)
        b = await q.find_payment(conn, celerypay_id=pid_b)
    assert a is not None and b is not None
    assert by_payment == {
        a.id: ("R1", 500, world.events_of(pid_a)[-1]["data"]["id"]),
        b.id: ("R1", 700, world.events_of(pid_b)[-1]["data"]["id"]),
    }


async def test_another_stores_refund_number_leaves_a_pending_refund_alone(world: World) -> None:
    """Store A's pending "R1" keeps its id and state when store B's "R1" succeeds."""
    await add_other_store(world)
    _, pid_a = await pay_order(world, STORE_HASH, STORE_URL)
    _, pid_b = await pay_order(world, OTHER_HASH, OTHER_URL)
    async with world.rt.db.read() as conn:
        a = await q.find_payment(conn, celerypay_id=pid_a)
        b = await q.find_payment(conn, celerypay_id=pid_b)
    assert a is not None and b is not None

    def refund(ref_id: str, pid: str, status: str) -> Refund:
        return Refund.from_json({
            "id": ref_id, "object": "refund", "payment_id": pid, "merchant_refund_no": "R1", "amount": 500,
            "currency": "USD", "status": status, "created_at": "2026-11-25T20:00:00Z",
            "updated_at": "2026-11-25T20:00:00Z",
        })

    async with world.rt.db.transaction() as conn:
        await notifications.record_refund_event_for(world.rt, conn, a, refund("ref_A1", pid_a, "pending"))
    async with world.rt.db.transaction() as conn:
        await notifications.record_refund_event_for(world.rt, conn, b, refund("ref_B1", pid_b, "succeeded"))

    rows = await refund_rows(world)
    assert [(r["payment_id"], r["celerypay_id"], r["status"]) for r in rows] == [
        (a.id, "ref_A1", "pending"),
        (b.id, "ref_B1", "succeeded"),
    ]


async def test_a_refund_event_finds_bcpays_own_refund_by_number_before_its_id_is_known(world: World) -> None:
    """A row written before CeleryPay answered (no id yet) is the one the event updates, not a new one."""
    _, pid = await pay_order(world, STORE_HASH, STORE_URL)
    async with world.rt.db.transaction() as conn:
        payment = await q.find_payment(conn, celerypay_id=pid)
        assert payment is not None
        await conn.execute(insert(refunds).values(
            payment_id=payment.id, merchant_refund_no="R1", idempotency_key="k", amount=500, currency="USD",
            status="requested", created_at=world.rt.now(), updated_at=world.rt.now(),
        ))
        await notifications.record_refund_event_for(world.rt, conn, payment, Refund.from_json({
            "id": "ref_X1", "object": "refund", "payment_id": pid, "merchant_refund_no": "R1", "amount": 500,
            "currency": "USD", "status": "pending", "created_at": None, "updated_at": None,
        }))
    assert [(r["celerypay_id"], r["status"]) for r in await refund_rows(world)] == [("ref_X1", "pending")]


async def test_the_migrated_schema_matches_the_model(db_url: str) -> None:
    """Migrations and schema.py agree; on SQLite a string's declared length is no difference.

    SQLite neither enforces nor uses VARCHAR lengths (VARCHAR(64) and TEXT
    both have TEXT affinity), so 0003 widens those columns on PostgreSQL only.
    """
    db = Database(db_url)
    sqlite = db_url.startswith("sqlite")

    def compare_type(context: Any, inspected: Any, model: Any, inspected_type: Any, model_type: Any) -> bool | None:
        if sqlite and isinstance(inspected_type, String) and isinstance(model_type, String):
            return False
        return None  # Alembic's own comparison

    def diff(conn: Any) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": compare_type})
        return list(compare_metadata(context, metadata))

    try:
        async with db.read() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await db.dispose()


async def test_a_database_at_0002_upgrades_keeping_its_rows(tmp_path: Path) -> None:
    """0002 -> head keeps payments and refunds, then takes long ids and a second store's refund number."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    await check_upgrade_from_0002(url)


@pytest.mark.postgres
async def test_a_postgres_database_at_0002_upgrades_keeping_its_rows(pg_empty: str) -> None:
    """The same on PostgreSQL, where the column types really change."""
    await check_upgrade_from_0002(pg_empty)


async def check_upgrade_from_0002(url: str) -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    db = Database(url)
    try:
        assert await migrate.upgrade(db, "0002") == (None, "0002")
        async with db.transaction() as conn:
            store_ids, ids = [], []
            for store_hash in ("abc123", OTHER_HASH):
                store = await q.upsert_store(conn, store_hash, now, source="api_account", name="Shop")
                # The ORM's queries name today's columns; at 0002 the row goes in with the columns it had.
                new_id = (await conn.execute(insert(payments).values(
                    token=f"tok-{store_hash}", store_id=store.id, order_id=1, attempt_no=1,
                    merchant_order_no=f"{store_hash}-1-1", idempotency_key="k", amount=2000, currency="USD",
                    status="succeeded", created_at=now, updated_at=now,
                ).returning(payments.c.id))).scalar_one()
                store_ids.append(store.id)
                ids.append(new_id)
            await conn.execute(insert(refunds).values(
                payment_id=ids[0], merchant_refund_no="R1", idempotency_key="k", celerypay_id="ref_old1",
                amount=500, currency="USD", status="pending", created_at=now, updated_at=now,
            ))

        assert await migrate.upgrade(db) == ("0002", migrate.head_revision())

        async with db.transaction() as conn:
            [kept] = (await conn.execute(select(refunds))).mappings().all()
            assert (kept["payment_id"], kept["celerypay_id"], kept["status"]) == (ids[0], "ref_old1", "pending")
            assert len((await conn.execute(select(payments))).all()) == 2
            await conn.execute(insert(refunds).values(
                payment_id=ids[1], merchant_refund_no="R1", idempotency_key="k", celerypay_id=LONG_REFUND_ID,
                amount=700, currency="USD", status="pending", created_at=now, updated_at=now,
            ))
            assert await q.record_event(
                conn, event_id=LONG_EVENT_ID, store_id=store_ids[1], type_="refund.succeeded", celerypay_payment_id=None,
                raw_body="{}", outcome="received", now=now,
            )
            await q.update_payment(conn, ids[1], failure_code="x" * 300)
        async with db.read() as conn:
            assert [e["event_id"] for e in await q.list_events(conn)] == [LONG_EVENT_ID]
            assert (await q.get_payment(conn, ids[1])).failure_code == "x" * 300
            numbers = (await conn.execute(select(refunds.c.payment_id, refunds.c.merchant_refund_no))).all()
        assert sorted(numbers) == [(ids[0], "R1"), (ids[1], "R1")]
    finally:
        await db.dispose()
