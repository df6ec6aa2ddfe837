"""BigCommerce webhooks: secret header, dedupe on hash, cancel propagation, uninstall."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bcpay import outbox, provisioning
from bcpay.sandbox.bc_apps import revoke_tokens
from bcpay.storage import queries as q
from bcpay.storage.schema import jobs
from tests.world import STORE_HASH, World, open_world


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        yield w


async def secret(world: World) -> str:
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert store.webhook_secret_enc
    return world.rt.vault.open(store.webhook_secret_enc)


def payload(scope: str, order_id: int = 0, hash_: str = "h1", **data: Any) -> bytes:
    return json.dumps({
        "scope": scope, "store_id": "1001", "producer": f"stores/{STORE_HASH}", "hash": hash_,
        "created_at": 1795000000, "data": {"type": "order", "id": order_id, **data},
    }).encode()


async def post(world: World, body: bytes, secret_value: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if secret_value is not None:
        headers[provisioning.WEBHOOK_SECRET_HEADER] = secret_value
    answer = await world.client.post(f"/webhooks/bigcommerce/{STORE_HASH}", content=body, headers=headers)
    return answer.status_code


async def test_calls_without_or_with_a_wrong_secret_are_refused(world: World) -> None:
    body = payload("store/order/statusUpdated", 1)
    assert await post(world, body, None) == 401
    assert await post(world, body, "wrong") == 401
    async with world.rt.db.read() as conn:
        assert await q.count(conn, jobs) == 0


async def test_cancelling_an_order_cancels_its_open_celerypay_payment(world: World) -> None:
    order = world.place_order()
    start = (await world.start(order)).json()
    pid = start["cashier_url"].rsplit("/", 1)[1]
    world.bc.set_order_status(STORE_HASH, order["id"], 5)
    body = payload("store/order/statusUpdated", order["id"], status={"previous_status_id": 7, "new_status_id": 5})
    value = await secret(world)
    assert await post(world, body, value) == 200
    assert await post(world, body, value) == 200  # duplicate delivery, same hash
    assert await world.run_jobs() == 1
    assert world.cp.payments[pid]["status"] == "cancelled"
    status = (await world.status(start["token"])).json()
    assert status["state"] == "cancelled" and status["cashier_url"] is None


async def test_orders_without_a_bcpay_payment_are_left_alone(world: World) -> None:
    order = world.place_order()
    world.bc.set_order_status(STORE_HASH, order["id"], 5)
    assert await post(world, payload("store/order/statusUpdated", order["id"], hash_="h9"), await secret(world)) == 200
    await world.run_jobs()
    assert world.cp.payments == {}


async def test_refunded_status_refunds_only_when_enabled(db_url: str, secret_key: str) -> None:
    from bcpay import stores

    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        order = w.place_order("8.00")
        start = (await w.start(order)).json()
        pid = start["cashier_url"].rsplit("/", 1)[1]
        await w.cp.pay(pid)
        await w.cp.deliver_due()
        await w.run_jobs()
        w.bc.set_order_status(STORE_HASH, order["id"], 4)
        value = await secret(w)
        assert await post(w, payload("store/order/statusUpdated", order["id"], hash_="a"), value) == 200
        await w.run_jobs()
        assert w.cp.payments[pid]["refunded_amount"] == 0  # default: refund_on_status = false
        # Deprecated; it acts only where refunds do not come through BigCommerce's ledger.
        await stores.update_settings(w.rt, STORE_HASH, {"refund_on_status": True, "refund_from_bigcommerce": False})
        assert await post(w, payload("store/order/statusUpdated", order["id"], hash_="b"), value) == 200
        await w.run_jobs()
        assert w.cp.payments[pid]["status"] == "refunded"


async def test_app_uninstalled_webhook_forgets_the_store_secrets(world: World) -> None:
    value = await secret(world)
    revoke_tokens(world.bc, STORE_HASH, client_id="sandbox-client-id")  # BigCommerce did uninstall it
    assert await post(world, payload("store/app/uninstalled", hash_="u1"), value) == 200
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert not store.installed and store.access_token_enc is None and store.celerypay_secret_enc is None
    assert await post(world, payload("store/app/uninstalled", hash_="u2"), value) == 401


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"scope": "x"}',
    json.dumps({"scope": "store/order/statusUpdated", "hash": "z", "data": {"id": "7"}}).encode(),
    # An id no order can have (and SQLite cannot store): it queued a job that failed forever.
    json.dumps({"scope": "store/order/statusUpdated", "hash": "z", "data": {"id": 10**26}}).encode(),
])
async def test_malformed_webhooks_get_400_and_queue_nothing(world: World, body: bytes) -> None:
    assert await post(world, body, await secret(world)) == 400
    assert await outbox.list_jobs(world.rt.db, state=None, store_id=None, limit=10) == []


async def test_webhooks_for_another_store_are_refused(world: World) -> None:
    body = json.dumps({"scope": "store/order/statusUpdated", "producer": "stores/other", "hash": "x",
                       "data": {"id": 5}}).encode()
    assert await post(world, body, await secret(world)) == 400


@pytest.mark.parametrize("source", ["app", "api_account"])
async def test_deliveries_signed_as_standard_webhooks_are_verified_with_the_app_secret(
    world: World, source: str
) -> None:
    """The fake signs like BigCommerce's newer docs say: for an app install the right app secret passes
    and another is a 401. A store added with its own API account signs with that account's secret, which
    bcpay never sees: our secret header alone authenticates its deliveries."""
    async with world.rt.db.transaction() as conn:
        store = await q.require_store(conn, STORE_HASH)
        await q.update_store(conn, store.id, world.rt.now(), source=source)
        store = await q.require_store(conn, STORE_HASH)
    await provisioning.register_webhooks(world.rt, store)
    order = world.place_order()
    start = (await world.start(order)).json()
    pid = start["cashier_url"].rsplit("/", 1)[1]
    world.bc.set_order_status(STORE_HASH, order["id"], 5)
    change = {"type": "order", "id": order["id"], "status": {"previous_status_id": 7, "new_status_id": 5}}

    world.bc.webhook_signing_key = b"the-secret-of-another-app"
    [other] = await world.bc.fire_webhook(world.client, STORE_HASH, "store/order/statusUpdated", change)
    if source == "api_account":
        assert other.status == 200 and await world.run_jobs() == 1
        assert world.cp.payments[pid]["status"] == "cancelled"
        return
    assert other.status == 401
    assert await world.run_jobs() == 0 and world.cp.payments[pid]["status"] == "pending"

    world.bc.webhook_signing_key = world.settings.app.client_secret.get().encode()
    [accepted] = await world.bc.fire_webhook(world.client, STORE_HASH, "store/order/statusUpdated", change)
    assert accepted.status == 200
    assert await world.run_jobs() == 1
    assert world.cp.payments[pid]["status"] == "cancelled"
